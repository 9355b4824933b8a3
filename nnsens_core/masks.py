"""Perturbation saliency: occlusion and the meaningful-perturbation mask (Fong & Vedaldi 2017).

Both take inputs ``x`` (N, C, H, W) in model-input space and explain ``classes[i]`` for image ``i``.
The class score ``f`` is the softmax probability (``score="prob"``) or the logit (``"logit"``).
Perturbed pixels are replaced by a *reference* image: a Gaussian blur of the input
(``reference="blur"``, ``blur_sigma`` pixels, reflect padding) or a constant grey level
(``reference="constant"``, ``constant`` in [0, 1] image units, mapped through the model's
normalisation when a :class:`~nnsens_core.zoo.ModelSpec` is given).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import _incremental, _split
from . import config as v
from ._batching import Progress, map_batches
from .cam import _classes, _on_device, check_batch
from .device import resolve_device
from .errors import NnsensError

REFERENCES = ("blur", "constant")
SCORES = ("prob", "logit")


# --------------------------------------------------------------------------- shared pieces

def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) with reflect padding (radius ``ceil(3 sigma)``,
    capped at the image size minus one)."""
    if sigma <= 0:
        return x.clone()
    h, w = x.shape[-2:]
    out = x
    for dim, size in ((-1, w), (-2, h)):
        r = max(1, min(int(math.ceil(3 * sigma)), size - 1))
        t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
        k = torch.exp(-0.5 * (t / sigma) ** 2)
        k = (k / k.sum()).view(1, 1, -1) if dim == -1 else (k / k.sum()).view(1, 1, -1, 1)
        c = out.shape[1]
        if dim == -1:
            padded = F.pad(out, (r, r, 0, 0), mode="reflect")
            out = F.conv2d(padded, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        else:
            padded = F.pad(out, (0, 0, r, r), mode="reflect")
            out = F.conv2d(padded, k.expand(c, 1, -1, 1), groups=c)
    return out


def reference_image(x: torch.Tensor, reference: str = "blur", blur_sigma: float = 5.0,
                    constant: float = 0.0, spec=None) -> torch.Tensor:
    """The image that replaces perturbed pixels (same shape and space as ``x``)."""
    v.one_of("reference", reference, REFERENCES)
    if reference == "blur":
        return gaussian_blur(x, blur_sigma)
    grey = torch.full_like(x, float(constant))
    return spec.normalize(grey) if spec is not None else grey


def class_score(logits: torch.Tensor, classes: torch.Tensor, score: str) -> torch.Tensor:
    """``f`` per row: softmax probability or logit of ``classes[i]``."""
    vals = torch.softmax(logits, dim=-1) if score == "prob" else logits
    return vals.gather(1, classes.view(-1, 1)).squeeze(1)


# --------------------------------------------------------------------------- occlusion

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
        v.one_of("reference", self.reference, REFERENCES)
        v.non_negative("blur_sigma", self.blur_sigma)
        v.in_range("constant", self.constant, 0.0, 1.0)
        v.one_of("score", self.score, SCORES)
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
    check_batch(x)
    dev = resolve_device(device)
    net = _on_device(model, dev)
    n, _, h, w = x.shape
    pos = occlusion_positions(x.shape, cfg)
    p = len(pos)
    xd = x.detach().to(dev)
    ref = reference_image(xd, cfg.reference, cfg.blur_sigma, cfg.constant, spec)
    n_out = net(xd[:1]).shape[-1]
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


# --------------------------------------------------------------------------- meaningful perturbation

@dataclass(frozen=True)
class MaskConfig:
    """Meaningful-perturbation mask (deletion game), per image::

        m* = argmin_m  f(X'_m) + lambda1 * mean(|1 - m|^beta1) + lambda2 * mean(|grad m|^beta2)
        X'_m = M * X + (1 - M) * reference,   M = upsample(m)  (bilinear, to H x W)

    ``m`` lives on a ``resolution`` x ``resolution`` grid in [0, 1] (1 keeps the pixel), starts at
    ``init`` and is updated by Adam (``lr``) for ``steps`` steps, clipped to [0, 1] after each.
    ``grad m`` are the horizontal and vertical finite differences of the low-resolution mask (both
    included in the mean). The saliency map is ``1 - M``: what must be deleted to drop the score.
    ``batch_size`` images are optimised together (each has its own mask and loss term, so the
    result does not depend on it).
    """
    lambda1: float = 0.05
    lambda2: float = 0.2
    beta1: float = 1.0
    beta2: float = 3.0
    steps: int = 150
    lr: float = 0.1
    resolution: int = 8
    init: float = 1.0
    reference: str = "blur"
    blur_sigma: float = 5.0
    constant: float = 0.0
    score: str = "prob"
    batch_size: int = 32

    def __post_init__(self):
        for nm in ("lambda1", "lambda2"):
            v.non_negative(nm, getattr(self, nm))
        for nm in ("beta1", "beta2", "lr"):
            v.positive(nm, getattr(self, nm))
        v.positive("steps", self.steps, integer=True)
        v.positive("resolution", self.resolution, integer=True)
        v.in_range("init", self.init, 0.0, 1.0)
        v.one_of("reference", self.reference, REFERENCES)
        v.non_negative("blur_sigma", self.blur_sigma)
        v.in_range("constant", self.constant, 0.0, 1.0)
        v.one_of("score", self.score, SCORES)
        v.positive("batch_size", self.batch_size, integer=True)


def mask_objective(f: torch.Tensor, m: torch.Tensor, cfg: MaskConfig) -> torch.Tensor:
    """Per-image objective ``(N,)`` for scores ``f`` (N,) and low-resolution masks ``m`` (N, r, r)."""
    area = (1 - m).abs().pow(cfg.beta1).flatten(1).mean(1)
    dx = (m[:, :, 1:] - m[:, :, :-1]).abs().pow(cfg.beta2).flatten(1)
    dy = (m[:, 1:, :] - m[:, :-1, :]).abs().pow(cfg.beta2).flatten(1)
    tv = torch.cat([dx, dy], 1).mean(1) if dx.shape[1] + dy.shape[1] else torch.zeros_like(area)
    return f + cfg.lambda1 * area + cfg.lambda2 * tv


def perturbation_mask(model: nn.Module, x: torch.Tensor, classes, cfg: MaskConfig = MaskConfig(),
                      device="auto", spec=None, progress: Progress | None = None,
                      return_details: bool = False):
    """Saliency maps ``1 - M`` (N, H, W) in [0, 1]; with ``return_details`` also a dict with the
    low-resolution masks ``m`` (N, r, r), ``score_before``/``score_after`` (N,) (``f`` of the input
    and of the perturbed input) and the final ``objective`` (N,)."""
    check_batch(x)
    dev = resolve_device(device)
    net = _on_device(model, dev)
    n, _, h, w = x.shape
    if cfg.resolution > min(h, w):
        raise NnsensError(f"resolution={cfg.resolution} is finer than the {h}x{w} image; use at "
                          f"most {min(h, w)}")
    with torch.no_grad():
        n_out = net(x[:1].detach().to(dev)).shape[-1]
    cls_all = torch.tensor(_classes(classes, n, n_out), dtype=torch.long)

    def one(sl: slice):
        xb = x[sl].detach().to(dev)
        cls = cls_all[sl].to(dev)
        ref = reference_image(xb, cfg.reference, cfg.blur_sigma, cfg.constant, spec)
        with torch.no_grad():
            f0 = class_score(net(xb), cls, cfg.score)
        m = torch.full((len(xb), cfg.resolution, cfg.resolution), float(cfg.init), device=dev,
                       requires_grad=True)
        opt = torch.optim.Adam([m], lr=cfg.lr)
        for _ in range(cfg.steps):
            big = F.interpolate(m[:, None], size=(h, w), mode="bilinear", align_corners=False)
            xp = big * xb + (1 - big) * ref
            loss = mask_objective(class_score(net(xp), cls, cfg.score), m, cfg).sum()
            (m.grad,) = torch.autograd.grad(loss, [m])  # no gradients land on the model
            opt.step()
            with torch.no_grad():
                m.clamp_(0, 1)
        with torch.no_grad():
            big = F.interpolate(m[:, None], size=(h, w), mode="bilinear", align_corners=False)
            f1 = class_score(net(big * xb + (1 - big) * ref), cls, cfg.score)
            obj = mask_objective(f1, m, cfg)
        return (1 - big[:, 0]).clamp(0, 1), m.detach(), f0, f1, obj

    out = map_batches(one, n, cfg.batch_size, progress)
    if out is None:
        empty = torch.zeros((0, h, w))
        return (empty, {}) if return_details else empty
    sal, m, f0, f1, obj = out
    if return_details:
        return sal, {"m": m, "score_before": f0, "score_after": f1, "objective": obj}
    return sal
