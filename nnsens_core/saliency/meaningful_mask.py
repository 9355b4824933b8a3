"""The meaningful-perturbation mask (Fong & Vedaldi 2017) on images and volumes, per input or for a
group of inputs (Thibeau-Sutre et al. 2020): the smallest smooth region whose deletion (replacement
by a reference) drops the class score, found by gradient descent on a low-resolution mask.

* :func:`perturbation_mask` -- one mask per input (the registered ``mask`` saliency method);
  images ``(N, C, H, W)`` with an ``r x r`` mask (bilinear upsampling) or volumes
  ``(N, C, D, H, W)`` with an ``r x r x r`` mask (trilinear upsampling).
* :func:`group_mask` -- one mask for a whole set of inputs (e.g. every AD patient), the set going
  through the model in chunks of ``batch_size`` with gradient accumulation (memory bounded by one
  chunk).
* :data:`PAPER_MASK` / :meth:`MaskConfig.paper` -- the settings of Thibeau-Sutre et al.: norm-form
  penalties and masked voxels pushed to the maximum intensity (1 in [0, 1] units).
* :func:`formula` -- the exact objective a config optimises, as text (for captions).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate as v
from .._batching import Progress, batch_slices, map_batches
from .._results import Result
from ..device import inference_model, resolve_device
from ..errors import NnsensError
from ._common import (SCORES, _classes, check_model_input, class_score, reference_image,
                      scaled_steps)
from .registry import Method, register

# "max": 1.0 and "black": 0.0 in [0, 1] image units (through spec.normalize), "constant": the
# config's ``constant``, "blur": the Gaussian-blurred input.
MASK_REFERENCES = ("blur", "constant", "max", "black")
FORMS = ("mean", "norm")
REDUCES = ("mean", "sum")


@dataclass(frozen=True)
class MaskConfig:
    """Meaningful-perturbation mask (deletion game)::

        m* = argmin_m  F + lambda1 * P1(1 - m) + lambda2 * P2(grad m)
        X'_m = M * X + (1 - M) * R,   M = upsample(m)   (bilinear on images, trilinear on volumes)

    ``F`` is the score ``f`` (``score``: softmax probability or logit of the explained class) of the
    perturbed input; for a group mask (:func:`group_mask`) the scores of the whole set, summed or
    averaged (``reduce``). The penalties depend on ``form``:

    * ``form="mean"`` (default, Fong & Vedaldi style): ``P1(v) = mean |v|^beta1``,
      ``P2(g) = mean |g|^beta2``;
    * ``form="norm"`` (Thibeau-Sutre et al.): ``P1(v) = ||v||_beta1 = (sum |v|^beta1)^(1/beta1)``,
      ``P2(g) = ||g||_beta2 = (sum |g|^beta2)^(1/beta2)``.

    ``m`` lives on a ``resolution``-per-axis grid (``r x r`` or ``r x r x r``) in [0, 1] (1 keeps
    the pixel / voxel), starts at ``init`` and is updated by Adam (``lr``) for ``steps`` steps,
    clipped to [0, 1] after each. ``grad m`` are the finite differences of the low-resolution mask
    along every spatial axis (all of them in one sum / mean). The reference ``R``
    (``reference``): ``"blur"`` (the input blurred with ``blur_sigma`` pixels), ``"constant"``
    (``constant`` in [0, 1] image units), ``"max"`` (1.0: the paper's choice, masked voxels pushed to
    the maximum of the normalised intensity) or ``"black"`` (0.0); constants are mapped through
    ``spec.normalize`` when a spec is given. The saliency map is ``1 - M``: what must be deleted
    to drop the score. ``batch_size`` inputs are optimised together (per-input masks: each has its
    own loss term, so the result does not depend on it; group masks: the chunk of the set that goes
    through the model at once).
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
    form: str = "mean"
    reduce: str = "mean"

    def __post_init__(self):
        for nm in ("lambda1", "lambda2"):
            v.non_negative(nm, getattr(self, nm))
        for nm in ("beta1", "beta2", "lr"):
            v.positive(nm, getattr(self, nm))
        v.positive("steps", self.steps, integer=True)
        v.positive("resolution", self.resolution, integer=True)
        v.in_range("init", self.init, 0.0, 1.0)
        v.one_of("reference", self.reference, MASK_REFERENCES)
        v.non_negative("blur_sigma", self.blur_sigma)
        v.in_range("constant", self.constant, 0.0, 1.0)
        v.one_of("score", self.score, SCORES)
        v.positive("batch_size", self.batch_size, integer=True)
        v.one_of("form", self.form, FORMS)
        v.one_of("reduce", self.reduce, REDUCES)

    @classmethod
    def paper(cls, **overrides) -> MaskConfig:
        """The settings of Thibeau-Sutre et al. (2020), with ``overrides`` applied: norm-form
        penalties (beta1 = 1, beta2 = 3), reference ``"max"``, probability score, averaged group
        score. The lambdas suit an ``8^3`` mask (``||1 - m||_1`` up to 512): deleting a tenth of it
        costs about ``0.005 * 51 = 0.26`` of probability."""
        return dataclasses.replace(PAPER_MASK, **overrides)


PAPER_MASK = MaskConfig(lambda1=0.005, lambda2=0.05, beta1=1.0, beta2=3.0, steps=200, lr=0.1,
                        resolution=8, init=1.0, reference="max", score="prob", form="norm",
                        reduce="mean")


def formula(cfg: MaskConfig, group: bool = False) -> str:
    """The exact objective ``cfg`` optimises, as one line of text (for captions)."""
    f = "p" if cfg.score == "prob" else "logit"
    if group:
        agg = "mean_i" if cfg.reduce == "mean" else "sum_i"
        fterm = f"{agg} {f}_y(X'_i)"
    else:
        fterm = f"{f}_y(X')"
    if cfg.form == "norm":
        p1 = f"||1 - m||_{cfg.beta1:g}"
        p2 = f"||grad m||_{cfg.beta2:g}"
        how = "||v||_b = (sum |v|^b)^(1/b)"
    else:
        p1 = f"mean|1 - m|^{cfg.beta1:g}"
        p2 = f"mean|grad m|^{cfg.beta2:g}"
        how = "means over the mask cells / finite differences"
    ref = {"blur": f"blur(X, sigma={cfg.blur_sigma:g})", "constant": f"{cfg.constant:g}",
           "max": "1 (max intensity)", "black": "0"}[cfg.reference]
    return (f"min_m {fterm} + {cfg.lambda1:g}*{p1} + {cfg.lambda2:g}*{p2}, "
            f"X' = M*X + (1 - M)*{ref}, M = upsample(m), m on a {cfg.resolution}-per-axis grid "
            f"in [0, 1] ({how})")


# --------------------------------------------------------------------------- pieces

def _root(s: torch.Tensor, p: float) -> torch.Tensor:
    """``s^(1/p)`` for ``s >= 0`` with a zero (not NaN) gradient at ``s = 0``."""
    if p == 1:
        return s
    safe = s.clamp_min(1e-30)
    return torch.where(s > 0, safe.pow(1.0 / p), torch.zeros_like(s))


def mask_penalties(m: torch.Tensor, cfg: MaskConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P1(1 - m), P2(grad m))`` per mask, each ``(N,)``, for masks ``m`` ``(N, *grid)`` (2-D or
    3-D grid); see :class:`MaskConfig` for ``form``."""
    n = m.shape[0]
    area = (1 - m).abs().pow(cfg.beta1).reshape(n, -1)
    diffs = [torch.diff(m, dim=ax).abs().pow(cfg.beta2).reshape(n, -1) for ax in range(1, m.ndim)
             if m.shape[ax] > 1]
    tv = torch.cat(diffs, 1) if diffs else m.new_zeros((n, 0))
    if cfg.form == "mean":
        p1 = area.mean(1)
        p2 = tv.mean(1) if tv.shape[1] else m.new_zeros(n)
    else:
        p1 = _root(area.sum(1), cfg.beta1)
        p2 = _root(tv.sum(1), cfg.beta2)
    return p1, p2


def mask_objective(f: torch.Tensor, m: torch.Tensor, cfg: MaskConfig) -> torch.Tensor:
    """Per-mask objective ``(N,)`` for scores ``f`` (N,) and low-resolution masks ``m``
    ``(N, r, r)`` or ``(N, r, r, r)``: ``f + lambda1 * P1(1 - m) + lambda2 * P2(grad m)``."""
    p1, p2 = mask_penalties(m, cfg)
    return f + cfg.lambda1 * p1 + cfg.lambda2 * p2


def upsample(m: torch.Tensor, size) -> torch.Tensor:
    """Low-resolution masks ``(N, *grid)`` -> ``(N, 1, *size)`` (bilinear for 2-D, trilinear for
    3-D, ``align_corners=False``)."""
    size = tuple(int(s) for s in size)
    mode = {2: "bilinear", 3: "trilinear"}.get(len(size))
    if mode is None or m.ndim - 1 != len(size):
        raise NnsensError(f"masks of shape {tuple(m.shape)} cannot be upsampled to {size}; give "
                          "(N, r, r) masks for images or (N, r, r, r) masks for volumes")
    return F.interpolate(m[:, None], size=size, mode=mode, align_corners=False)


def mask_reference(x: torch.Tensor, reference: str = "max", constant: float = 0.0,
                   blur_sigma: float = 5.0, spec=None) -> torch.Tensor:
    """The reference ``R`` replacing deleted pixels / voxels (same shape and space as ``x``):
    ``"max"`` = 1.0 and ``"black"`` = 0.0 and ``"constant"`` = ``constant`` in [0, 1] units (through
    ``spec.normalize`` when a spec is given), ``"blur"`` = ``x`` blurred with ``blur_sigma``."""
    v.one_of("reference", reference, MASK_REFERENCES)
    if reference in ("max", "black"):
        reference, constant = "constant", (1.0 if reference == "max" else 0.0)
    return reference_image(x, reference, blur_sigma, constant, spec)


def _check_resolution(cfg: MaskConfig, spatial) -> None:
    if cfg.resolution > min(spatial):
        raise NnsensError(f"resolution={cfg.resolution} is finer than the "
                          f"{'x'.join(map(str, spatial))} input; use at most {min(spatial)}")


# --------------------------------------------------------------------------- per input

def perturbation_mask(model: nn.Module, x: torch.Tensor, classes, cfg: MaskConfig = MaskConfig(),
                      device="auto", spec=None, progress: Progress | None = None,
                      return_details: bool = False):
    """Saliency maps ``1 - M`` ``(N, H, W)`` or ``(N, D, H, W)`` in [0, 1], one mask per input;
    with ``return_details`` also a dict with the low-resolution masks ``m`` ``(N, *grid)``,
    ``score_before``/``score_after`` (N,) (``f`` of the input and of the perturbed input) and the
    final ``objective`` (N,). ``progress(done, total)`` counts optimisation steps (each batch of
    ``cfg.batch_size`` inputs runs ``cfg.steps``)."""
    dev = resolve_device(device)
    net = inference_model(model, dev)
    x, n_out = check_model_input(net, x, spec, dev)
    n, spatial = len(x), tuple(x.shape[2:])
    _check_resolution(cfg, spatial)
    cls_all = torch.tensor(_classes(classes, n, n_out), dtype=torch.long)
    grid = (cfg.resolution,) * len(spatial)
    total = -(-n // cfg.batch_size) * cfg.steps

    def one(sl: slice):
        first = sl.start // cfg.batch_size * cfg.steps
        xb = x[sl].detach().to(dev)
        cls = cls_all[sl].to(dev)
        ref = mask_reference(xb, cfg.reference, cfg.constant, cfg.blur_sigma, spec)
        with torch.no_grad():
            f0 = class_score(net(xb), cls, cfg.score)
        m = torch.full((len(xb), *grid), float(cfg.init), device=dev, requires_grad=True)
        opt = torch.optim.Adam([m], lr=cfg.lr)
        for step in range(cfg.steps):
            big = upsample(m, spatial)
            xp = big * xb + (1 - big) * ref
            loss = mask_objective(class_score(net(xp), cls, cfg.score), m, cfg).sum()
            (m.grad,) = torch.autograd.grad(loss, [m])  # no gradients land on the model
            opt.step()
            with torch.no_grad():
                m.clamp_(0, 1)
            if progress is not None:
                progress(first + step + 1, total)
        with torch.no_grad():
            big = upsample(m, spatial)
            f1 = class_score(net(big * xb + (1 - big) * ref), cls, cfg.score)
            obj = mask_objective(f1, m, cfg)
        return (1 - big[:, 0]).clamp(0, 1), m.detach(), f0, f1, obj

    out = map_batches(one, n, cfg.batch_size)
    if out is None:
        empty = torch.zeros((0, *spatial))
        return (empty, {}) if return_details else empty
    sal, m, f0, f1, obj = out
    if return_details:
        return sal, {"m": m, "score_before": f0, "score_after": f1, "objective": obj}
    return sal


# --------------------------------------------------------------------------- group mask

@dataclass
class GroupMaskResult(Result):
    """One mask for a set of inputs (:func:`group_mask`).

    ``m``: the low-resolution keep mask ``(r, r)`` / ``(r, r, r)``; ``mask``: ``M = upsample(m)``
    at the input size (1 keeps, 0 deletes); ``saliency``: ``1 - mask``; ``score_before`` /
    ``score_after``: ``f`` of each input (N,) unperturbed and perturbed by the final mask;
    ``history``: the objective at each step (before that step's update); ``objective``: the
    objective of the final mask; ``classes``: the explained class of each input.
    """
    m: np.ndarray
    mask: np.ndarray
    score_before: np.ndarray
    score_after: np.ndarray
    history: np.ndarray
    objective: float
    classes: np.ndarray
    config: MaskConfig = MaskConfig()
    seconds: float = 0.0

    @property
    def saliency(self) -> np.ndarray:
        return 1.0 - self.mask

    @property
    def formula(self) -> str:
        return formula(self.config, group=True)

    def to_frame(self):
        import pandas as pd
        return pd.DataFrame({"class": self.classes, "score_before": self.score_before,
                             "score_after": self.score_after},
                            index=pd.RangeIndex(len(self.classes), name="input"))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"m": self.m, "mask": self.mask, "score_before": self.score_before,
                "score_after": self.score_after, "history": self.history}

    def _payload(self) -> dict:
        return {"formula": self.formula, "objective": self.objective,
                "mean_score_before": float(np.mean(self.score_before)) if len(self.classes) else None,
                "mean_score_after": float(np.mean(self.score_after)) if len(self.classes) else None,
                "deleted_fraction": float(np.mean(1.0 - self.mask)),
                "history": self.history, "n_inputs": len(self.classes)}


def group_mask(model: nn.Module, x: torch.Tensor, classes, cfg: MaskConfig = PAPER_MASK, *,
               spec=None, device="auto", progress: Progress | None = None) -> GroupMaskResult:
    """One mask ``m`` for every input of ``x`` (``(N, C, H, W)`` or ``(N, C, D, H, W)``)::

        m* = argmin_m  R_i f(X'_m,i) + lambda1 * P1(1 - m) + lambda2 * P2(grad m)

    with ``R_i`` the mean (``cfg.reduce="mean"``) or sum over the set of the score of
    ``classes[i]`` (typically the true class: the mask moves the set away from it, e.g. AD
    patients towards controls), ``X'_m,i = M * X_i + (1 - M) * R_i`` and ``P1``, ``P2`` as in
    :class:`MaskConfig`. Each step sends the set through the model in chunks of ``cfg.batch_size``
    and accumulates the gradient (memory: one chunk), so the mask does not depend on the chunk size.
    ``progress(done, total)`` counts the steps.
    """
    t0 = time.perf_counter()
    if spec is None:
        spec = getattr(model, "spec", None)
    dev = resolve_device(device)
    net = inference_model(model, dev)
    x, n_out = check_model_input(net, x, spec, dev)
    n, spatial = len(x), tuple(x.shape[2:])
    if n == 0:
        raise NnsensError("x is an empty batch; a group mask needs at least one input")
    _check_resolution(cfg, spatial)
    cls_all = torch.tensor(_classes(classes, n, n_out), dtype=torch.long)
    chunks = list(batch_slices(n, cfg.batch_size))
    refs = [mask_reference(x[sl].to(dev), cfg.reference, cfg.constant, cfg.blur_sigma, spec)
            .detach().cpu() for sl in chunks]
    scale = 1.0 / n if cfg.reduce == "mean" else 1.0

    def scores(big):
        out = []
        for sl, ref in zip(chunks, refs):
            xb = x[sl].to(dev)
            out.append(class_score(net(big * xb + (1 - big) * ref.to(dev)), cls_all[sl].to(dev),
                                   cfg.score))
        return torch.cat(out)

    with torch.no_grad():
        f0 = scores(torch.ones((1, 1, *spatial), device=dev)).cpu()
    m = torch.full((1,) + (cfg.resolution,) * len(spatial), float(cfg.init), device=dev,
                   requires_grad=True)
    opt = torch.optim.Adam([m], lr=cfg.lr)
    history = np.zeros(cfg.steps)
    for step in range(cfg.steps):
        grad = torch.zeros_like(m)
        value = 0.0
        for sl, ref in zip(chunks, refs):
            big = upsample(m, spatial)
            xb = x[sl].to(dev)
            f = class_score(net(big * xb + (1 - big) * ref.to(dev)), cls_all[sl].to(dev),
                            cfg.score).sum() * scale
            (g,) = torch.autograd.grad(f, [m])
            grad += g
            value += float(f.detach())
        p1, p2 = mask_penalties(m, cfg)
        reg = (cfg.lambda1 * p1 + cfg.lambda2 * p2).sum()
        (g,) = torch.autograd.grad(reg, [m])
        history[step] = value + float(reg.detach())
        m.grad = grad + g
        opt.step()
        with torch.no_grad():
            m.clamp_(0, 1)
        if progress is not None:
            progress(step + 1, cfg.steps)
    with torch.no_grad():
        big = upsample(m, spatial)
        f1 = scores(big).cpu()
        p1, p2 = mask_penalties(m, cfg)
        obj = float(f1.sum() * scale + cfg.lambda1 * p1.sum() + cfg.lambda2 * p2.sum())
    return GroupMaskResult(m=m.detach()[0].cpu().numpy(), mask=big[0, 0].cpu().numpy(),
                           score_before=f0.numpy(), score_after=f1.numpy(), history=history,
                           objective=obj, classes=cls_all.numpy(), config=cfg,
                           seconds=time.perf_counter() - t0)


def _mask_fn(model, x, targets, cfg: MaskConfig, *, spec=None, device="auto",
             progress: Progress | None = None) -> torch.Tensor:
    return perturbation_mask(model, x, targets, cfg, device, spec, progress)


def _sized(cfg: MaskConfig, spatial, gflop: float | None = None) -> MaskConfig:
    """The default on images of ``spatial`` size (on a model costing ``gflop`` a pass): fewer steps
    above 64x64 (:func:`scaled_steps`);
    the mask stays on its low-resolution grid (8 x 8), upsampled to the image."""
    return dataclasses.replace(cfg, steps=scaled_steps(cfg.steps, spatial, gflop))


register(Method("mask", "Perturbation mask", _mask_fn, MaskConfig, aliases=("perturbation",),
                description="the smallest smooth region that, when blurred away, removes the class "
                            "(meaningful perturbation); brighter = must be kept for this prediction",
                sized=_sized))
