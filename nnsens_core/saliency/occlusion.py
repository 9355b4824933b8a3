"""Occlusion saliency (Zeiler & Fergus 2014): slide a patch over the image and record how much the
class score drops; the engine runs the model's leading conv chain incrementally where it can.

It takes inputs ``x`` (N, C, H, W) in model-input space and explain ``classes[i]`` for image ``i``.
The class score ``f`` is the softmax probability (``score="prob"``) or the logit (``"logit"``).
Perturbed pixels are replaced by a *reference* image: a Gaussian blur of the input
(``reference="blur"``, ``blur_sigma`` pixels, reflect padding) or a constant grey level
(``reference="constant"``, ``constant`` in [0, 1] image units, mapped through the model's
normalisation when a :class:`~nnsens_core.zoo.ModelSpec` is given).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .. import _incremental, _split
from .. import _validate as v
from .._batching import Progress, map_batches
from ..device import inference_model, resolve_device
from ..errors import NnsensError
from ._common import (
    _classes,
    check_model_input,
    check_reference_settings,
    class_score,
    reference_image,
)
from .registry import Method, register


@dataclass(frozen=True)
class OcclusionConfig:
    """Slide a ``window`` x ``window`` patch with ``stride``; the map at a pixel is the mean drop
    ``f(x) - f(x with the patch replaced by the reference)`` over the patches covering it.

    Positions are ``0, stride, 2 stride, ...`` plus a last one flush with the far edge, so every
    pixel is covered. ``batch_size``: occluded images per forward pass.
    ``incremental``: ``"auto"`` computes the layers a VGG-like model applies first (convs, pools,
    pointwise layers, e.g. ``features``) incrementally, only where the occluded window reaches,
    and runs the rest of the model on their output, when the model allows it (see
    :func:`occlusion`); ``"off"`` always runs the full model. Both give the same maps up to float
    rounding.
    """
    window: int = 8
    stride: int = 4
    reference: str = "constant"
    blur_sigma: float = 5.0
    constant: float = 0.0
    score: str = "prob"
    batch_size: int = 128
    incremental: str = "auto"

    def __post_init__(self):
        v.positive("window", self.window, integer=True)
        v.positive("stride", self.stride, integer=True)
        check_reference_settings(self)
        v.positive("batch_size", self.batch_size, integer=True)
        v.one_of("incremental", self.incremental, _incremental.CHOICES)


def _positions(size: int, window: int, stride: int) -> list[int]:
    last = size - window
    pos = list(range(0, last + 1, stride))
    if pos[-1] != last:
        pos.append(last)
    return pos


def occlusion_positions(shape, cfg: OcclusionConfig) -> list[tuple[int, int]]:
    """(top, left) of every patch for an image of ``shape`` (..., H, W)."""
    h, w = shape[-2:]
    if cfg.window > min(h, w):
        raise NnsensError(f"window={cfg.window} is larger than the {h}x{w} image; use at most "
                          f"{min(h, w)}")
    return [(t, l) for t in _positions(h, cfg.window, cfg.stride)
            for l in _positions(w, cfg.window, cfg.stride)]


class _IncrementalLogits:
    """Logits of occluded images from the incremental engine: the model's first layers (``head``)
    box by box (:func:`nnsens_core._incremental.prepare_windows`), then the rest (``tail``) on the
    head's output. One engine per image (built when its first position comes, dropped after)."""

    def __init__(self, split: _split.Split, xd, ref, tops, lefts, window):
        self.split, self.xd, self.ref = split, xd, ref
        self.tops, self.lefts, self.window = tops, lefts, window
        self.image, self.engine, self.ref_map = None, None, None

    def __call__(self, img: int, j: torch.Tensor) -> torch.Tensor:
        """Head outputs ``(len(j), C, H, W)`` of image ``img`` occluded at positions ``j``."""
        if self.image != img:
            self.engine = None      # release the previous image's activations first
            self.engine = _incremental.prepare_windows(self.split.layers, self.xd[img], self.tops,
                                                       self.lefts, self.window)
            self.ref_map = _incremental._Map(self.ref[img])
            self.image = img
        ti, tj = j // len(self.lefts), j % len(self.lefts)
        return self.engine.outputs(ti, tj, self.engine.input_boxes(ti, tj, self.ref_map))


@torch.no_grad()
def occlusion(model: nn.Module, x: torch.Tensor, classes, cfg: OcclusionConfig = OcclusionConfig(),
              device="auto", spec=None, progress: Progress | None = None,
              return_details: bool = False):
    """Signed occlusion maps ``(N, H, W)`` (positive: the patch supports ``classes[i]``).

    With ``cfg.incremental="auto"``, when the model's traced graph (``torch.fx``) starts with a
    chain of convs / pools / pointwise layers fed the raw input whose last output is read once
    (VGG: ``features``, read by ``avgpool``), that chain runs incrementally for each occluded
    image and the rest of the model runs on its output; otherwise every occluded image is one full
    forward pass. With ``return_details`` also returns a dict: ``engine`` (``"incremental"`` or
    ``"full"``), ``engine_reason`` (why ``"auto"`` fell back) and, for the incremental engine,
    ``head_layers`` (the names of the chain's layers).
    """
    dev = resolve_device(device)
    net = inference_model(model, dev)
    x, n_out = check_model_input(net, x, spec, dev)
    n, _, h, w = x.shape
    pos = occlusion_positions(x.shape, cfg)
    p = len(pos)
    xd = x.detach().to(dev)
    ref = reference_image(xd, cfg.reference, cfg.blur_sigma, cfg.constant, spec)
    cls = torch.tensor(_classes(classes, n, n_out), device=dev, dtype=torch.long)
    base = map_batches(lambda sl: class_score(net(xd[sl]), cls[sl], cfg.score), n, cfg.batch_size,
                       out_device=None)
    tops = torch.tensor([t for t, _ in pos], device=dev)
    lefts = torch.tensor([l for _, l in pos], device=dev)
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)

    def patch_masks(j: torch.Tensor) -> torch.Tensor:  # (b, 1, H, W) bool: True inside the patch
        t, l = tops[j].view(-1, 1, 1), lefts[j].view(-1, 1, 1)
        return ((rows >= t) & (rows < t + cfg.window) & (cols >= l) & (cols < l + cfg.window))[:, None]

    details: dict = {"engine": "full"}
    split = _split.split_head(net) if cfg.incremental == "auto" and n * p else None
    if isinstance(split, str):
        details["engine_reason"] = split
    elif split is not None:
        details = {"engine": "incremental", "head_layers": split.names}
        head = _IncrementalLogits(split, xd, ref, _positions(h, cfg.window, cfg.stride),
                                  _positions(w, cfg.window, cfg.stride), cfg.window)

    def drops(sl: slice) -> torch.Tensor:
        idx = torch.arange(sl.start, sl.stop, device=dev)
        i, j = idx // p, idx % p
        if details["engine"] == "incremental":
            with torch.inference_mode():
                images = range(sl.start // p, (sl.stop - 1) // p + 1)
                outs = [head(img, j[i == img]) for img in images]
                logits = split.tail(torch.cat(outs))
        else:
            logits = net(torch.where(patch_masks(j), ref[i], xd[i]))
        return base[i] - class_score(logits, cls[i], cfg.score)

    d = map_batches(drops, n * p, cfg.batch_size, progress).view(n, p).to(dev)
    all_masks = patch_masks(torch.arange(p, device=dev))[:, 0].to(d.dtype)  # (p, H, W)
    total = torch.einsum("np,phw->nhw", d, all_masks)
    count = all_masks.sum(0)
    maps = (total / count.clamp_min(1)).cpu()
    return (maps, details) if return_details else maps


def _occlusion_fn(model, x, targets, cfg: OcclusionConfig, *, spec=None, device="auto",
                  progress: Progress | None = None) -> torch.Tensor:
    return occlusion(model, x, targets, cfg, device, spec, progress)


register(Method("occlusion", "Occlusion", _occlusion_fn, OcclusionConfig, signed=True,
                description="drop of the class score when a sliding patch is replaced by the "
                            "reference"))
