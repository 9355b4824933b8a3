"""Saliency comparison: run many explanation methods on the same images and score them.

:func:`explain` returns ``{method: (N, H, W) maps}``, every map scaled per image to [0, 1]
(min-max; a constant map becomes all zeros; signed maps, i.e. occlusion and the activation-
maximization difference map, are clipped at 0 first, keeping the evidence *for* the class).
:func:`evaluate` runs :func:`explain` over a dataset with ground-truth masks and scores each map
with :mod:`nnsens_core.metrics` (GT IoU, pointing game, relevance mass).

Methods (:data:`METHODS`): the Grad-CAM family of :mod:`nnsens_core.cam`; ``am`` (activation-
maximization difference map, :mod:`nnsens_core.activation_max`); ``occlusion`` and ``mask``
(meaningful perturbation) from :mod:`nnsens_core.masks`; ``sensitivity`` (local pixel sensitivity
of a block, :mod:`nnsens_core.perturbation`; class-agnostic); the gradient methods ``gradient``,
``gradxinput``, ``ig`` (Integrated Gradients) and ``smoothgrad`` of :mod:`nnsens_core.gradients`.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .. import _validate as v
from .._batching import Progress, map_batches, sub_progress
from .._results import Result
from ..activation_max import AMConfig, difference_map
from ..device import inference_model, resolve_device
from ..errors import NnsensError
from ..local_sensitivity import LocalConfig, sensitivity_map
from ..zoo import image_blocks
from . import metrics as mt
from ._common import _classes, check_batch
from .cam import CAM_LABELS, CAM_METHODS, CLASS_AGNOSTIC, CamConfig, cam_maps
from .gradients import LABELS as GRADIENT_LABELS
from .gradients import METHODS as GRADIENT_METHODS
from .gradients import SIGNED as GRADIENT_SIGNED
from .gradients import GradientConfig, gradient_maps
from .meaningful_mask import MaskConfig, perturbation_mask
from .occlusion import OcclusionConfig, occlusion

OTHER_METHODS = ("am", "occlusion", "sensitivity", "mask")
METHODS: tuple[str, ...] = CAM_METHODS + OTHER_METHODS + GRADIENT_METHODS
LABELS = {**CAM_LABELS, "am": "AM difference", "occlusion": "Occlusion",
          "sensitivity": "Local sensitivity", "mask": "Perturbation mask", **GRADIENT_LABELS}
SIGNED = frozenset({"occlusion", "am"}) | GRADIENT_SIGNED
CLASS_FREE = CLASS_AGNOSTIC | {"sensitivity"}
DEFAULT_METHODS = ("gradcam", "am", "occlusion", "mask")


@dataclass(frozen=True)
class SensitivityConfig:
    """Local pixel sensitivity of module ``block`` (``None``: the model's last detected block)."""
    block: str | None = None
    local: object = None  # perturbation.LocalConfig; None = gradient estimate, 16 probes
    aggregate: str = "mean"

    def __post_init__(self):
        if self.block is not None and not isinstance(self.block, str):
            raise NnsensError(f"block={self.block!r} must be a module name (str)")


def unavailable(method: str) -> str | None:
    """Why ``method`` cannot run, or None when it can (every method of :data:`METHODS` can)."""
    if method not in METHODS:
        return f"method {method!r} is unknown; use one of {METHODS}"
    return None


def available_methods() -> list[str]:
    return [m for m in METHODS if unavailable(m) is None]


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """``"gradcam,am"`` or a list -> validated method names (``"cam"`` = Grad-CAM, ``"all"``)."""
    items = [s.strip().lower() for s in (text.split(",") if isinstance(text, str) else text)]
    items = [s for s in items if s]
    alias = {"cam": "gradcam", "grad-cam": "gradcam", "gradcampp": "gradcam++",
             "gradcam-plus-plus": "gradcam++", "perturbation": "mask", "local": "sensitivity",
             "saliency": "gradient", "inputxgradient": "gradxinput", "integrated-gradients": "ig",
             "integratedgradients": "ig"}
    out: list[str] = []
    for s in items:
        if s == "all":
            out += [m for m in available_methods() if m not in out]
            continue
        s = alias.get(s, s)
        if s not in METHODS:
            raise NnsensError(f"method {s!r} is unknown; use a comma list of {', '.join(METHODS)}")
        if s not in out:
            out.append(s)
    if not out:
        raise NnsensError("no method given; use e.g. gradcam,am,occlusion,mask")
    return out


def default_config(method: str):
    """The default config object of ``method``."""
    if method in CAM_METHODS:
        return CamConfig(method)
    if method == "occlusion":
        return OcclusionConfig()
    if method == "mask":
        return MaskConfig()
    if method == "sensitivity":
        return SensitivityConfig()
    if method in GRADIENT_METHODS:
        return GradientConfig()
    if method == "am":
        return AMConfig()
    raise NnsensError(f"method {method!r} is unknown; use one of {METHODS}")


def config_for(method: str, cfgs: Mapping[str, object] | None):
    """``cfgs[method]``, else for a CAM method ``cfgs["cam"]`` with its ``method`` replaced, for a
    gradient method ``cfgs["gradients"]``, else the default."""
    cfgs = cfgs or {}
    if method in cfgs and cfgs[method] is not None:
        cfg = cfgs[method]
        if method in CAM_METHODS and isinstance(cfg, CamConfig) and cfg.method != method:
            cfg = dataclasses.replace(cfg, method=method)
        return cfg
    if method in CAM_METHODS and isinstance(cfgs.get("cam"), CamConfig):
        return dataclasses.replace(cfgs["cam"], method=method)
    if method in GRADIENT_METHODS and isinstance(cfgs.get("gradients"), GradientConfig):
        return cfgs["gradients"]
    return default_config(method)


def normalize_maps(maps: torch.Tensor, clip_negative: bool = False) -> torch.Tensor:
    """Per-image min-max scaling to [0, 1] of ``(N, H, W)`` (constant maps -> 0); with
    ``clip_negative`` values below 0 are set to 0 first."""
    m = maps.detach().float().cpu()
    if clip_negative:
        m = m.clamp_min(0)
    flat = m.flatten(1)
    lo, hi = flat.min(1)[0], flat.max(1)[0]
    span = (hi - lo).view(-1, 1, 1)
    out = (m - lo.view(-1, 1, 1)) / torch.where(span > 0, span, torch.ones_like(span))
    out[span.view(-1) <= 0] = 0
    return out.clamp_(0, 1)


def _run_one(method: str, model: nn.Module, spec, x: torch.Tensor, classes: list[int], cfg,
             dev: torch.device, progress) -> torch.Tensor:
    if method in CAM_METHODS:
        return cam_maps(model, x, classes, cfg, dev, progress)
    if method == "occlusion":
        return occlusion(model, x, classes, cfg, dev, spec, progress)
    if method == "mask":
        return perturbation_mask(model, x, classes, cfg, dev, spec, progress)
    if method in GRADIENT_METHODS:
        return gradient_maps(model, x, classes, method, cfg, dev, spec, progress)
    if method == "am":
        return difference_map(model, spec, x, torch.as_tensor(classes, dtype=torch.long), cfg, dev,
                              progress=progress)
    if method == "sensitivity":
        local = cfg.local if cfg.local is not None else LocalConfig(method="gradient", n_probes=16)
        block = cfg.block or default_block(model)
        return sensitivity_map(model, x, block, local, dev, cfg.aggregate, progress)
    raise NnsensError(f"method {method!r} is unknown; use one of {METHODS}")  # pragma: no cover


def default_block(model: nn.Module) -> str:
    """The last detected block (VGG: after the last max-pool, ResNet: ``layer4``)."""
    blocks = image_blocks(model)
    if blocks:
        return list(blocks.values())[-1]
    from ..zoo import last_conv_layer
    return last_conv_layer(model)


def explain(model: nn.Module, spec, x: torch.Tensor, classes, methods: Sequence[str],
            cfgs: Mapping[str, object] | None = None, device="auto",
            progress: Progress | None = None) -> dict[str, torch.Tensor]:
    """Maps ``{method: (N, H, W)}`` in [0, 1] explaining ``classes[i]`` for image ``x[i]``.

    ``x`` is (N, C, H, W) in model-input space (``spec.normalize(images01)``); ``classes`` one int
    per image (or one for all); ``cfgs`` maps method names (or ``"cam"`` for every CAM method) to
    config objects (defaults otherwise). ``progress(done, total, stage=method)`` runs from 0 to
    ``1000 * len(methods)``.
    """
    check_batch(x)
    if spec is not None and getattr(spec, "input_shape", None) and \
            tuple(x.shape[1:]) != tuple(spec.input_shape):
        raise NnsensError(f"the images are {tuple(x.shape[1:])} (C, H, W) but the model expects "
                          f"{tuple(spec.input_shape)}; resize them or pick another model")
    methods = parse_methods(methods)
    dev = resolve_device(device)
    net = inference_model(model, dev)
    cls = _classes(classes, len(x), None)
    out: dict[str, torch.Tensor] = {}
    total = 1000 * len(methods)
    for k, method in enumerate(methods):
        reason = unavailable(method)
        if reason:
            raise NnsensError(reason)
        cfg = config_for(method, cfgs)
        sub = sub_progress(progress, method, k * 1000, total, span=1000)
        maps = _run_one(method, net, spec, x, cls, cfg, dev, sub)
        maps = torch.as_tensor(maps).detach().float().cpu()
        if maps.shape != (len(x), *x.shape[2:]):
            raise NnsensError(f"method {method!r} returned maps of shape {tuple(maps.shape)}; "
                              f"expected {(len(x), *x.shape[2:])}")
        out[method] = normalize_maps(maps, clip_negative=method in SIGNED)
        if progress is not None:
            progress((k + 1) * 1000, total, stage=method)
    return out


# --------------------------------------------------------------------------- predictions

@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, device="auto", batch_size: int = 256) -> torch.Tensor:
    """Softmax probabilities (N, K) on CPU."""
    dev = resolve_device(device)
    net = inference_model(model, dev)
    return map_batches(lambda sl: torch.softmax(net(x[sl].to(dev)), -1), len(x), batch_size)


# --------------------------------------------------------------------------- dataset evaluation

TARGETS = ("label", "pred")


@dataclass(frozen=True)
class EvaluationSettings:
    """Settings of a dataset evaluation: methods, class explained, IoU region, pointing tolerance
    and each method's config."""
    methods: tuple[str, ...]
    target: str = "label"
    p: float | None = None
    tolerance: float = 0.0
    configs: dict = field(default_factory=dict)


@dataclass
class Evaluation(Result):
    """Per-image records (pandas DataFrame, one row per image x method), the maps and the inputs.

    ``records`` columns: ``index`` (into the dataset), ``label``/``pred``/``target`` (class ids),
    ``class`` (name of the true label), ``correct``, ``method``, ``iou``, ``pointing``, ``mass``.
    """
    records: object
    maps: dict[str, torch.Tensor]
    indices: np.ndarray
    probs: torch.Tensor
    config: EvaluationSettings
    seconds: float = 0.0

    def summary(self):
        """Mean ± std per method and class (plus ``all``), see :func:`metrics.summarize`."""
        return mt.summarize(self.records)

    def to_frame(self):
        """The per-image records (one row per image x method)."""
        return self.records

    def arrays(self) -> dict[str, np.ndarray]:
        return {"indices": self.indices, **{f"map_{m}": v.numpy() for m, v in self.maps.items()}}

    def _payload(self) -> dict:
        """``{"methods": {m: {"iou", "pointing", "mass", "n", "per_class": {c: {...}}}}, ...}``."""
        table = self.summary()
        cfg = self.config
        out: dict = {"definitions": {
            "iou": "IoU of the top-k map pixels (k = GT mask area) with the GT mask"
                   + ("" if cfg.p is None else f"; top-{cfg.p} region"),
            "pointing": "share of images whose map maximum lies in the GT mask "
                        f"(tolerance {cfg.tolerance} px; empty masks excluded)",
            "mass": "share of the map's total inside the GT mask"},
            "n_images": int(len(self.indices)), "methods": {},
            "accuracy": float(self.records["correct"].to_numpy()[:len(self.indices)].mean())}
        for method in dict.fromkeys(self.records["method"]):
            entry: dict = {"per_class": {}}
            for (m, c), row in table.loc[[method]].iterrows():
                vals = {k: row[f"{k}_mean"] for k in ("iou", "pointing", "mass")}
                vals.update({f"{k}_std": row[f"{k}_std"] for k in ("iou", "pointing", "mass")})
                vals["n"] = int(row["iou_n"])
                if c == "all":
                    entry.update(vals)
                else:
                    entry["per_class"][c] = vals
            out["methods"][method] = entry
        return out


def evaluate(model: nn.Module, spec, data, methods: Sequence[str],
             cfgs: Mapping[str, object] | None = None, indices=None, target: str = "label",
             p: float | None = None, tolerance: float = 0.0, batch_size: int = 32, device="auto",
             progress: Progress | None = None) -> Evaluation:
    """Explain ``data`` (an :class:`~nnsens_core.data.ImageData` with ``masks``) image by image
    (``target="label"``: the true class; ``"pred"``: the predicted class) and score the maps against
    the masks (:func:`metrics.localization` with ``p``, ``tolerance``).

    ``indices`` selects a subset (default: all). ``batch_size`` images are explained at a time.
    """
    import pandas as pd
    t0 = time.perf_counter()
    v.one_of("target", target, TARGETS)
    v.positive("batch_size", batch_size, integer=True)
    if data.masks is None:
        raise NnsensError(f"the dataset {data.name!r} has no ground-truth masks; upload masks "
                          "(an .npz with images, labels and masks) or use the phantom")
    idx = np.arange(len(data)) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
    if len(idx) == 0:
        raise NnsensError("no images selected; widen the subset")
    if idx.min() < 0 or idx.max() >= len(data):
        raise NnsensError(f"indices must lie in 0..{len(data) - 1}")
    methods = parse_methods(methods)
    for m in methods:
        reason = unavailable(m)
        if reason:
            raise NnsensError(reason)
    dev = resolve_device(device)
    net = inference_model(model, dev)
    x01 = torch.as_tensor(data.images[idx], dtype=torch.float32)
    x = spec.normalize(x01) if spec is not None else x01
    probs = predict_proba(net, x, dev)
    labels = np.asarray(data.labels[idx], dtype=np.int64)
    preds = probs.argmax(1).numpy()
    cls = labels if target == "label" else preds
    masks = np.asarray(data.masks[idx], dtype=bool)
    n_batches = -(-len(idx) // batch_size)
    maps: dict[str, list[torch.Tensor]] = {m: [] for m in methods}
    for b in range(n_batches):
        sl = slice(b * batch_size, min((b + 1) * batch_size, len(idx)))
        sub = sub_progress(progress, "", b * 1000, n_batches * 1000, span=1000)
        got = explain(net, spec, x[sl], cls[sl].tolist(), methods, cfgs, dev, sub)
        for m in methods:
            maps[m].append(got[m])
    full = {m: torch.cat(vs) for m, vs in maps.items()}
    names = list(data.class_names)
    rows = []
    for m in methods:
        loc = mt.localization(full[m], masks, p, tolerance)
        for i in range(len(idx)):
            rows.append({"index": int(idx[i]), "label": int(labels[i]), "pred": int(preds[i]),
                         "target": int(cls[i]), "class": names[labels[i]],
                         "correct": bool(labels[i] == preds[i]), "method": m,
                         "iou": loc["iou"][i], "pointing": loc["pointing"][i], "mass": loc["mass"][i]})
    settings = EvaluationSettings(tuple(methods), target, p, tolerance,
                                  {m: config_for(m, cfgs) for m in methods})
    return Evaluation(pd.DataFrame(rows), full, idx, probs, settings, time.perf_counter() - t0)


def sanity_check(model: nn.Module, spec, x: torch.Tensor, classes, methods: Sequence[str],
                 cfgs: Mapping[str, object] | None = None, layers: Sequence[str] | None = None,
                 metric: str = "spearman", seed: int = 0, device="auto",
                 progress: Progress | None = None) -> mt.RandomizationResult:
    """Cascading randomization (:func:`metrics.cascading_randomization`) of ``model`` (deep-copied)
    with the maps of :func:`explain`; ``layers`` default to every Conv2d/Linear, top first."""
    dev = resolve_device(device)
    methods = parse_methods(methods)

    def fn(m: nn.Module):
        return explain(m, spec, x, classes, methods, cfgs, dev)

    return mt.cascading_randomization(inference_model(model, dev), fn, layers, metric, seed, progress)


