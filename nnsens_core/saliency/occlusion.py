"""Occlusion saliency (Zeiler & Fergus 2014): slide a patch over the image and record how much the
class score drops; the engine runs the model's leading conv chain incrementally where it can.

It takes inputs ``x`` (N, C, H, W) in model-input space and explain ``classes[i]`` for image ``i``;
volumes ``x`` (N, C, D, H, W) are occluded by a ``window``-sided cube (every occluded volume one full
forward pass: the incremental engine is 2-D only).
The class score ``f`` is the softmax probability (``score="prob"``) or the logit (``"logit"``).
Perturbed pixels are replaced by a *reference* image: a Gaussian blur of the input
(``reference="blur"``, ``blur_sigma`` pixels, reflect padding) or a constant grey level
(``reference="constant"``, ``constant`` in [0, 1] image units, mapped through the model's
normalisation when a :class:`~nnsens_core.zoo.ModelSpec` is given).
"""
from __future__ import annotations

import dataclasses
import itertools
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
    """Slide a ``window`` x ``window`` patch (on volumes a ``window``-sided cube) with ``stride``
    along every spatial axis; the map at a pixel (voxel) is the mean drop
    ``f(x) - f(x with the patch replaced by the reference)`` over the patches covering it.

    ``window`` / ``stride`` in pixels; ``None`` (the default) scales with the image: 1/8 and 1/16
    of its shorter side (:data:`WINDOW_FRACTION`, :data:`STRIDE_FRACTION`; rounded, at least
    1 px), so 8 / 4 px at 64 px and 28 / 14 px at 224 px: 15 x 15 positions whatever the size
    (:meth:`sized` gives the pixel values for a shape).

    Positions on each axis are ``0, stride, 2 stride, ...`` plus a last one flush with the far
    edge, so every pixel is covered. ``batch_size``: occluded images per forward pass.
    ``incremental``: ``"auto"`` computes the layers a VGG-like model applies first (convs, pools,
    pointwise layers, e.g. ``features``) incrementally, only where the occluded window reaches,
    and runs the rest of the model on their output, when the model allows it (see
    :func:`occlusion`); ``"off"`` always runs the full model. Both give the same maps up to float
    rounding.
    """
    window: int | None = None
    stride: int | None = None
    reference: str = "constant"
    blur_sigma: float = 5.0
    constant: float = 0.0
    score: str = "prob"
    batch_size: int = 32
    incremental: str = "auto"

    def __post_init__(self):
        for name in ("window", "stride"):
            if getattr(self, name) is not None:
                v.positive(name, getattr(self, name), integer=True)
        check_reference_settings(self)
        v.positive("batch_size", self.batch_size, integer=True)
        v.one_of("incremental", self.incremental, _incremental.CHOICES)

    def sized(self, spatial) -> "OcclusionConfig":
        """This config with ``window`` / ``stride`` in pixels for inputs of spatial size
        ``spatial`` (``(H, W)`` or, for volumes, ``(D, H, W)``): a ``None`` becomes its fraction of
        the shortest side; pixel values are kept."""
        side = min(int(s) for s in spatial)
        return dataclasses.replace(
            self, window=self.window if self.window is not None else _fraction(side, WINDOW_FRACTION),
            stride=self.stride if self.stride is not None else _fraction(side, STRIDE_FRACTION))


WINDOW_FRACTION = 1 / 8
"""Default occlusion window: this share of the image's shorter side."""
STRIDE_FRACTION = 1 / 16
"""Default occlusion stride: this share of the image's shorter side."""


def _fraction(side: int, share: float) -> int:
    return max(1, int(side * share + 0.5))


def _positions(size: int, window: int, stride: int) -> list[int]:
    last = size - window
    pos = list(range(0, last + 1, stride))
    if pos[-1] != last:
        pos.append(last)
    return pos


def occlusion_positions(shape, cfg: OcclusionConfig, spatial: int = 2) -> list[tuple[int, ...]]:
    """Corner of every patch, ``(top, left)`` for an image of ``shape`` (..., H, W) or, with
    ``spatial=3``, ``(front, top, left)`` for a volume of ``shape`` (..., D, H, W); in C order."""
    if spatial not in (2, 3) or len(shape) < spatial:
        raise NnsensError(f"spatial={spatial!r} must be 2 (images) or 3 (volumes) and shape "
                          f"{tuple(shape)} must have that many trailing spatial sizes")
    sizes = tuple(int(s) for s in shape[-spatial:])
    cfg = cfg.sized(sizes)
    if cfg.window > min(sizes):
        what = "x".join(map(str, sizes))
        raise NnsensError(f"window={cfg.window} is larger than the {what} "
                          f"{'image' if spatial == 2 else 'volume'}; use at most {min(sizes)}")
    return list(itertools.product(*(_positions(n, cfg.window, cfg.stride) for n in sizes)))


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
    """Signed occlusion maps ``(N, H, W)``, or ``(N, D, H, W)`` for volumes ``x`` (N, C, D, H, W)
    (positive: the patch supports ``classes[i]``).

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
    cfg = cfg.sized(x.shape[2:])
    if x.ndim == 5:
        maps = _occlusion_volumes(net, x, classes, n_out, cfg, dev, spec, progress)
        details = {"engine": "full", "engine_reason": "volumes: the incremental engine is 2-D only"}
        return (maps, details) if return_details else maps
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


def _axis_cover(size: int, starts: list[int], window: int, device) -> torch.Tensor:
    """``(len(starts), size)`` float: 1 where the window starting at ``starts[k]`` covers the index."""
    idx = torch.arange(size, device=device)
    st = torch.tensor(starts, device=device).view(-1, 1)
    return ((idx >= st) & (idx < st + window)).float()


def _occlusion_volumes(net, x, classes, n_out, cfg: OcclusionConfig, dev, spec,
                       progress: Progress | None) -> torch.Tensor:
    """Occlusion maps ``(N, D, H, W)`` of volumes ``x`` (N, C, D, H, W): every (volume, cube)
    pair one full forward pass, ``cfg.batch_size`` per batch. A cube's mask is the product of one
    window indicator per axis, so the per-voxel sums over the covering cubes are three small
    matrix products (no ``(positions, D, H, W)`` mask stack)."""
    n, _, *sizes = x.shape
    occlusion_positions(x.shape, cfg, spatial=3)               # the window check
    starts = [_positions(s, cfg.window, cfg.stride) for s in sizes]
    counts = [len(s) for s in starts]
    p = counts[0] * counts[1] * counts[2]
    xd = x.detach().to(dev)
    ref = reference_image(xd, cfg.reference, cfg.blur_sigma, cfg.constant, spec)
    cls = torch.tensor(_classes(classes, n, n_out), device=dev, dtype=torch.long)
    if n == 0:
        return torch.zeros((0, *sizes))
    base = map_batches(lambda sl: class_score(net(xd[sl]), cls[sl], cfg.score), n, cfg.batch_size,
                       out_device=None)
    cover = [_axis_cover(s, st, cfg.window, dev) for s, st in zip(sizes, starts)]  # (P_a, size_a)
    lo = [torch.tensor(st, device=dev) for st in starts]
    grid = [torch.arange(s, device=dev) for s in sizes]

    def drops(sl: slice) -> torch.Tensor:
        idx = torch.arange(sl.start, sl.stop, device=dev)
        i, j = idx // p, idx % p
        a, b, c = j // (counts[1] * counts[2]), (j // counts[2]) % counts[1], j % counts[2]
        inside = None
        for axis, k in enumerate((a, b, c)):
            t = lo[axis][k].view(-1, 1)
            ok = (grid[axis] >= t) & (grid[axis] < t + cfg.window)        # (b, size_axis)
            shape = [-1, 1, 1, 1]
            shape[axis + 1] = sizes[axis]
            ok = ok.view(shape)
            inside = ok if inside is None else inside & ok
        logits = net(torch.where(inside[:, None], ref[i], xd[i]))
        return base[i] - class_score(logits, cls[i], cfg.score)

    with torch.no_grad():
        d = map_batches(drops, n * p, cfg.batch_size, progress).view(n, *counts).to(dev)
    total = torch.einsum("nabc,ad,be,cf->ndef", d.float(), *cover)
    count = torch.einsum("ad,be,cf->def", *cover)
    return (total / count.clamp_min(1)).cpu()


def _occlusion_fn(model, x, targets, cfg: OcclusionConfig, *, spec=None, device="auto",
                  progress: Progress | None = None) -> torch.Tensor:
    return occlusion(model, x, targets, cfg, device, spec, progress)


register(Method("occlusion", "Occlusion", _occlusion_fn, OcclusionConfig, signed=True,
                description="how much the class score drops when a small patch of the image is covered: "
                            "red = covering it lowers the score (the region supports the class), "
                            "blue = covering it raises the score"))
