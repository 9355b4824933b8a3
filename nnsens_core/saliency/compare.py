"""Saliency comparison: run many explanation methods on the same images and score them.

:func:`explain` returns ``{method: (N, H, W) maps}`` (``(N, D, H, W)`` for volumes
``(N, C, D, H, W)``), every map scaled per image to [0, 1]
(min-max; a constant map becomes all zeros; signed maps, e.g. occlusion and the activation-
maximization difference map, are clipped at 0 first, keeping the evidence *for* the class).
:func:`evaluate_dataset` runs :func:`explain` over a dataset with ground-truth masks and scores
each map with :mod:`nnsens_core.saliency.metrics` (GT IoU, pointing game, relevance mass).

The methods, their labels and their settings come from :mod:`nnsens_core.saliency.registry`
(``registry.names()``): the Grad-CAM family, ``am``, ``occlusion``, ``sensitivity``, ``mask`` and
the gradient methods, plus any method registered later.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .. import _approx
from .. import _validate as v
from .._batching import Progress, map_batches, sub_progress
from .._results import Result
from ..device import inference_model, resolve_device
from ..errors import NnsensError
from . import metrics as mt
from . import registry
from ._common import check_model_input, normalize_maps
from .registry import config_for, default_config, parse_methods

__all__ = ["DEFAULT_METHODS", "Evaluation", "TARGETS", "approximation_errors", "combine_errors",
           "config_for", "default_config", "evaluate_dataset", "explain", "normalize_maps",
           "parse_methods", "predict_proba",
           "sanity_check"]

DEFAULT_METHODS = ("gradcam", "am", "occlusion", "mask")
CHANCE_DRAWS = 50
"""Random-map draws behind the chance level of every dataset metric."""


def explain(model: nn.Module, spec, x: torch.Tensor, classes, methods: Sequence[str],
            cfgs: Mapping[str, object] | None = None, device="auto",
            progress: Progress | None = None, details: dict | None = None) -> dict[str, torch.Tensor]:
    """Maps ``{method: (N, H, W)}`` in [0, 1] explaining ``classes[i]`` for image ``x[i]``
    (``(N, D, H, W)`` for volumes ``x`` (N, C, D, H, W)).

    ``model`` is an ``nn.Module`` or a LoadedModel (``spec=None`` then takes its spec). ``x`` is
    (N, C, H, W) in model-input space (``spec.normalize(images01)``); ``classes`` one int per image
    (or one for all); ``methods`` registered names or aliases (or ``"all"``); ``cfgs`` maps method
    names (or ``"cam"`` for every CAM method, ``"gradients"`` for every gradient method) to config
    objects (defaults otherwise: :func:`config_for` with the images' size, so defaults that scale
    with the image do). ``progress(done, total, stage=method)`` runs from 0 to
    ``1000 * len(methods)``, moving within each method as it reports (occlusion positions,
    AM / mask steps, gradient batches).

    ``details``: a dict that gets ``{method: what the method reported}`` for every method that
    reports (registered with ``reports=True``; see :mod:`~nnsens_core.saliency.registry`), e.g.
    ``details["occlusion"]["approx"]``, the measured error of approximate occlusion maps against
    exact ones (:func:`approximation_errors` keeps only those).
    """
    if details is not None and not isinstance(details, dict):
        raise NnsensError(f"details must be a dict (filled per method) or None, got "
                          f"{type(details).__name__}")
    if spec is None:
        spec = getattr(model, "spec", None)
    methods = parse_methods(methods)
    dev = resolve_device(device)
    net = inference_model(model, dev)
    out: dict[str, torch.Tensor] = {}
    total = 1000 * len(methods)
    for k, name in enumerate(methods):
        method = registry.get(name)
        sub = sub_progress(progress, name, k * 1000, total, span=1000)
        got: dict | None = {} if details is not None and method.reports else None
        maps = method(net, x, classes, config_for(name, cfgs, tuple(x.shape[2:]), model), spec=spec,
                      device=dev, progress=sub, details=got)
        if got:
            details[name] = got
        out[name] = normalize_maps(maps, clip_negative=method.signed)
        if progress is not None:
            progress((k + 1) * 1000, total, stage=name)
    return out


def approximation_errors(details: Mapping[str, dict] | None) -> dict[str, dict]:
    """``{method: approx report}`` of the methods whose maps are approximate, from the
    ``details`` of :func:`explain` (empty when every map is exact)."""
    return {m: d["approx"] for m, d in (details or {}).items() if d.get("approx")}


def combine_errors(parts: Sequence[Mapping[str, dict]]) -> dict[str, dict]:
    """The approximation errors of several parts (batches, chunks) of one result: per method the
    worst ``rel_l2``, the lowest ``spearman``, the summed ``sample`` and the number of ``parts``
    (:func:`nnsens_core._approx.combine`); methods in order of first appearance."""
    names = list(dict.fromkeys(m for part in parts for m in part))
    return {m: _approx.combine([part.get(m) for part in parts]) for m in names}


# --------------------------------------------------------------------------- predictions

@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, device="auto", batch_size: int = 256) -> torch.Tensor:
    """Softmax probabilities (N, K) on CPU."""
    dev = resolve_device(device)
    net = inference_model(model, dev)
    x, _ = check_model_input(net, x, None, dev)
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
    chance: dict = field(default_factory=dict)
    """``{method: {"iou" | "pointing" | "mass": metrics.Chance}}``: each metric (mean over the
    images) between random maps of the same smoothness and the same masks."""
    roi_share: float | None = None
    """Share of the pixels inside the region of interest the metrics were restricted to (mean over
    the images); None: the whole image counted."""
    approx: dict = field(default_factory=dict)
    """``{method: report}`` for the methods whose maps are approximate (e.g. occlusion with
    ``tau`` > 0 or drill-down): the error against exact values on sampled perturbations, over every
    batch of images: the worst ``rel_l2``, the lowest ``spearman``, the ``sample`` count summed and
    the number of ``parts`` (batches) measured (:func:`combine_errors`); empty when every map is
    exact. One line for people: :func:`nnsens_core._approx.describe_error`."""

    def summary(self):
        """Mean ± std per method and class (plus ``all``), see :func:`metrics.summarize`."""
        return mt.summarize(self.records)

    def to_frame(self):
        """The per-image records (one row per image x method)."""
        return self.records

    def arrays(self) -> dict[str, np.ndarray]:
        """``indices``, ``map_<method>`` and, for each approximate method, ``approx_<method>``:
        float64 ``[rel_l2, spearman, sample, parts]`` (see :attr:`approx`)."""
        out = {"indices": self.indices, **{f"map_{m}": v.numpy() for m, v in self.maps.items()}}
        for m, r in self.approx.items():
            out[f"approx_{m}"] = np.array([r["rel_l2"], r["spearman"], r["sample"], r["parts"]],
                                          dtype=np.float64)
        return out

    def _payload(self) -> dict:
        """``{"methods": {m: {"iou", "pointing", "mass", "n", "per_class": {c: {...}}}}, ...}``."""
        table = self.summary()
        cfg = self.config
        out: dict = {"definitions": {
            "iou": "IoU of the top-k map pixels (k = GT mask area) with the GT mask"
                   + ("" if cfg.p is None else f"; top-{cfg.p} region"),
            "pointing": "share of images whose map maximum lies in the GT mask "
                        f"(tolerance {cfg.tolerance} px or voxels, Euclidean; empty masks "
                        "excluded)",
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
            ch = self.chance.get(method)
            if ch:
                entry["chance"] = {k: {"mean": c.mean, "low": c.low, "high": c.high, "n": c.n}
                                   for k, c in ch.items()}
            if self.approx.get(method):
                entry["approx"] = self.approx[method]
            out["methods"][method] = entry
        if self.approx:
            out["definitions"]["approx"] = (
                "approximate maps only: the error of the approximate values against exact ones "
                "at sampled perturbations (full forward passes): rel_l2 = ||approx - exact|| / "
                "||exact|| (the worst over the parts: batches of images), spearman = the rank "
                "correlation (the lowest), sample = perturbations measured in all, parts = "
                "batches measured; the maps npz holds approx_<method> = [rel_l2, spearman, "
                "sample, parts]")
        if self.roi_share is not None:
            out["roi"] = {"share": self.roi_share}
            out["definitions"]["roi"] = (
                "every metric over the pixels inside the region of interest only (top-k / top-p "
                "regions among them, the mask's part inside, the maximum inside, the map's total "
                "inside); share: mean share of the image inside")
        if self.chance:
            out["definitions"]["chance"] = (
                "the metric (mean over the images) between random maps of the same smoothness and "
                "values as each map and the same masks: mean and 95 % interval over n seeded draws")
        return out


def evaluation_indices(data, indices, target: str, batch_size: int) -> np.ndarray:
    """The checked arguments of a dataset evaluation (here and in its chunked, distributed form):
    ``target`` and ``batch_size`` valid, ground-truth masks present; returns the image indices
    (all when ``indices`` is None), each within the dataset."""
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
    return idx


def evaluate_dataset(model: nn.Module, spec, data, methods: Sequence[str],
                     cfgs: Mapping[str, object] | None = None, indices=None, target: str = "label",
                     p: float | None = None, tolerance: float = 0.0, batch_size: int = 32,
                     device="auto", progress: Progress | None = None, roi=None,
                     chance: bool = True) -> Evaluation:
    """Explain ``data`` (an :class:`~nnsens_core.data.ImageData` with ``masks``: images
    ``(n, C, H, W)`` with masks ``(n, H, W)``, or volumes ``(n, C, D, H, W)`` with masks
    ``(n, D, H, W)``; any object with ``images``, ``labels``, ``masks``, ``class_names``, ``name``
    and ``len()``) image by image
    (``target="label"``: the true class; ``"pred"``: the predicted class) and score the maps against
    the masks (:func:`metrics.localization` with ``p``, ``tolerance``).

    ``indices`` selects a subset (default: all). ``batch_size`` images are explained at a time.
    ``roi``: a region of interest, one boolean mask per image of ``data`` (e.g. ``data.roi``, the
    ultrasound fan); every metric and chance level then counts only the pixels inside
    (``within=`` of :mod:`~nnsens_core.saliency.metrics`). None (default): the whole image.
    ``chance=False`` leaves out the chance levels (:func:`chance_levels`; the chunks of a
    distributed evaluation, whose merged maps get them at once).
    """
    import pandas as pd
    t0 = time.perf_counter()
    idx = evaluation_indices(data, indices, target, batch_size)
    methods = parse_methods(methods)
    if spec is None:
        spec = getattr(model, "spec", None)
    dev = resolve_device(device)
    net = inference_model(model, dev)
    x01, _ = check_model_input(net, torch.as_tensor(data.images[idx], dtype=torch.float32), spec, dev)
    x = spec.normalize(x01) if spec is not None else x01
    probs = predict_proba(net, x, dev)
    labels = np.asarray(data.labels[idx], dtype=np.int64)
    preds = probs.argmax(1).numpy()
    cls = labels if target == "label" else preds
    masks = np.asarray(data.masks[idx], dtype=bool)
    within = roi_within(data, roi, idx)
    n_batches = -(-len(idx) // batch_size)
    maps: dict[str, list[torch.Tensor]] = {m: [] for m in methods}
    errors: list[dict] = []
    for b in range(n_batches):
        sl = slice(b * batch_size, min((b + 1) * batch_size, len(idx)))
        sub = sub_progress(progress, "", b * 1000, n_batches * 1000, span=1000)
        details: dict = {}
        got = explain(net, spec, x[sl], cls[sl].tolist(), methods, cfgs, dev, sub, details=details)
        errors.append(approximation_errors(details))
        for m in methods:
            maps[m].append(got[m])
    full = {m: torch.cat(vs) for m, vs in maps.items()}
    names = list(data.class_names)
    rows = []
    for m in methods:
        loc = mt.localization(full[m], masks, p, tolerance) if within is None else \
            mt.localization(full[m], masks, p, tolerance, within)
        for i in range(len(idx)):
            rows.append({"index": int(idx[i]), "label": int(labels[i]), "pred": int(preds[i]),
                         "target": int(cls[i]), "class": names[labels[i]],
                         "correct": bool(labels[i] == preds[i]), "method": m,
                         "iou": loc["iou"][i], "pointing": loc["pointing"][i], "mass": loc["mass"][i]})
    settings = EvaluationSettings(tuple(methods), target, p, tolerance,
                                  {m: config_for(m, cfgs, tuple(x.shape[2:]), model) for m in methods})
    levels = chance_levels(full, masks, p, tolerance, within) if chance else {}
    return Evaluation(pd.DataFrame(rows), full, idx, probs, settings, time.perf_counter() - t0,
                      levels, roi_share(within), combine_errors(errors))


def roi_within(data, roi, idx) -> np.ndarray | None:
    """The region of interest of the evaluated images ``idx`` (``roi``: one mask per image of
    ``data``), or None."""
    if roi is None:
        return None
    roi = np.asarray(roi)
    if roi.shape != (len(data), *np.asarray(data.images).shape[2:]):
        raise NnsensError(f"roi has shape {roi.shape}; give one mask per image of the dataset "
                          f"{(len(data), *np.asarray(data.images).shape[2:])} (e.g. data.roi)")
    return roi[idx].astype(bool)


def roi_share(within) -> float | None:
    """The mean share of the evaluated images inside their region of interest."""
    return None if within is None else float(within.reshape(len(within), -1).mean())


def chance_levels(maps: Mapping[str, torch.Tensor], masks, p, tolerance, within=None) -> dict:
    """``{method: {metric: chance level}}`` of an evaluation's maps (all its images at once):
    :func:`metrics.chance_level` with :data:`CHANCE_DRAWS` seeded draws (the same random maps for
    the three metrics, as each would draw them with ``seed=0``)."""
    out = {}
    for m, v in maps.items():  # one set of random maps per method serves the three metrics
        rnd = mt.random_like(v, CHANCE_DRAWS, 0, within)
        out[m] = {k: mt.chance_level(k, v, masks=masks, n=CHANCE_DRAWS, seed=0, p=p,
                                     tolerance=tolerance, random_a=rnd, within=within)
                  for k in ("iou", "pointing", "mass")}
    return out


def sanity_check(model: nn.Module, spec, x: torch.Tensor, classes, methods: Sequence[str],
                 cfgs: Mapping[str, object] | None = None, layers: Sequence[str] | None = None,
                 metric: str = "spearman", seed: int = 0, device="auto",
                 progress: Progress | None = None, within=None) -> mt.RandomizationResult:
    """Cascading randomization (:func:`metrics.cascading_randomization`) of ``model`` (deep-copied)
    with the maps of :func:`explain` (images or volumes); ``layers`` default to every
    Conv2d/Conv3d/Linear, top first; ``within``: a region of interest per input (similarities
    inside it only)."""
    dev = resolve_device(device)
    methods = parse_methods(methods)
    if spec is None:
        spec = getattr(model, "spec", None)

    def fn(m: nn.Module):
        return explain(m, spec, x, classes, methods, cfgs, dev)

    return mt.cascading_randomization(inference_model(model, dev), fn, layers, metric, seed, progress,
                                      within=within)


