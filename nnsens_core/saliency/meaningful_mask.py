"""The meaningful-perturbation mask (Fong & Vedaldi 2017): the smallest smooth region whose deletion
(replacement by the reference image of :func:`~nnsens_core.saliency._common.reference_image`) drops
the class score, found by gradient descent on a low-resolution mask per image.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

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
        check_reference_settings(self)
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
    dev = resolve_device(device)
    net = inference_model(model, dev)
    x, n_out = check_model_input(net, x, spec, dev)
    n, _, h, w = x.shape
    if cfg.resolution > min(h, w):
        raise NnsensError(f"resolution={cfg.resolution} is finer than the {h}x{w} image; use at "
                          f"most {min(h, w)}")
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


def _mask_fn(model, x, targets, cfg: MaskConfig, *, spec=None, device="auto",
             progress: Progress | None = None) -> torch.Tensor:
    return perturbation_mask(model, x, targets, cfg, device, spec, progress)


register(Method("mask", "Perturbation mask", _mask_fn, MaskConfig, aliases=("perturbation",),
                description="1 - the smallest smooth mask whose deletion drops the class score "
                            "(meaningful perturbation)"))
