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
import math
from dataclasses import dataclass

import torch
from torch import nn

from .. import _approx, _batching, _incremental, _split
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

    Approximate modes (each result then reports its error against exact on a sample, see
    :func:`occlusion`'s details):
    ``tau``: projective-field thresholding in the incremental engine (0 = exact, the default;
    see :mod:`nnsens_core._approx`), calibrated per image on ``approx_sample // 4`` (at least 4)
    positions; needs ``incremental="auto"``.
    ``drill_top`` < 1 (or a ``coarse_stride``): adaptive drill-down: the positions at
    ``coarse_stride`` (a multiple of ``stride``; default 2 x ``stride``) first, then the
    ``stride`` positions only where the coarse drops, interpolated, are largest in magnitude
    (this top fraction of all positions); the others take the interpolated drops.
    ``approx_sample``: positions (random, seeded) whose exact drops (full forward passes)
    measure the error of an approximate result.
    """
    window: int | None = None
    stride: int | None = None
    reference: str = "constant"
    blur_sigma: float = 5.0
    constant: float = 0.0
    score: str = "prob"
    batch_size: int = 32
    incremental: str = "auto"
    tau: float = 0.0
    drill_top: float = 1.0
    coarse_stride: int | None = None
    approx_sample: int = 32

    def __post_init__(self):
        for name in ("window", "stride", "coarse_stride"):
            if getattr(self, name) is not None:
                v.positive(name, getattr(self, name), integer=True)
        check_reference_settings(self)
        v.positive("batch_size", self.batch_size, integer=True)
        v.one_of("incremental", self.incremental, _incremental.CHOICES)
        _approx.check_tau(self.tau)
        if self.tau > 0 and self.incremental != "auto":
            raise NnsensError(f"tau={self.tau!r} (approximate incremental inference) needs "
                              f"incremental='auto', not {self.incremental!r}; set tau=0")
        v.in_range("drill_top", self.drill_top, 0, 1, lo_open=True)
        _check_coarse(self.stride, self.coarse_stride)
        _approx.check_sample("approx_sample", self.approx_sample)

    @property
    def approximate(self) -> bool:
        """True when the maps are approximate (thresholding or drill-down)."""
        return self.tau > 0 or self.drill_top < 1 or self.coarse_stride is not None

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


def _check_coarse(stride, coarse) -> None:
    if stride is not None and coarse is not None and (coarse <= stride or coarse % stride):
        raise NnsensError(f"coarse_stride={coarse} must be a multiple of stride={stride} larger "
                          f"than it (e.g. {2 * stride})")


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

    def __init__(self, split: _split.Split, xd, ref, tops, lefts, window, tau=0.0, calibrate=8):
        self.split, self.xd, self.ref = split, xd, ref
        self.tops, self.lefts, self.window = tops, lefts, window
        self.tau, self.calibrate = tau, calibrate
        self.image, self.engine, self.ref_map = None, None, None
        self.caps: dict[int, dict] = {}     # image -> the calibrated caps (tau > 0)

    def __call__(self, img: int, j: torch.Tensor) -> torch.Tensor:
        """Head outputs ``(len(j), C, H, W)`` of image ``img`` occluded at positions ``j``."""
        if self.image != img:
            self.engine = None      # release the previous image's activations first
            self.ref_map = _incremental._Map(self.ref[img])
            self.engine = _incremental.prepare_windows(self.split.layers, self.xd[img], self.tops,
                                                       self.lefts, self.window, approx=self.tau > 0)
            if self.tau > 0:        # calibrate on a sample of this image's positions
                n = len(self.tops) * len(self.lefts)
                cal = _approx.samples(n, self.calibrate, seed=img)[0].to(j.device)
                ti, tj = cal // len(self.lefts), cal % len(self.lefts)
                caps = self.engine.calibrate(self.tau, ti, tj,
                                             self.engine.input_boxes(ti, tj, self.ref_map))
                self.engine = self.engine.with_caps(caps)
                self.caps[img] = caps
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
    ``head_layers`` (the names of the chain's layers). Approximate configs
    (:attr:`OcclusionConfig.approximate`) add ``approx``: the error of the drops against exact
    ones (full forward passes) at ``cfg.approx_sample`` random positions (``rel_l2``,
    ``spearman``, ``sample``; with ``tau`` the calibrated ``caps`` per image), and with
    drill-down ``drill_down`` (the coarse stride and how many positions were computed).
    """
    dev = resolve_device(device)
    net = inference_model(model, dev)
    x, n_out = check_model_input(net, x, spec, dev)
    cfg = cfg.sized(x.shape[2:])
    if x.ndim == 5:
        maps = _occlusion_volumes(net, x, classes, n_out, cfg, dev, spec, progress)
        details = {"engine": "full", "engine_reason": "volumes: the incremental engine is 2-D only"}
        if cfg.approximate:
            details["approx_reason"] = "volumes: exact (approximate modes are 2-D only)"
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
    fine_r, fine_c = _positions(h, cfg.window, cfg.stride), _positions(w, cfg.window, cfg.stride)
    if isinstance(split, str):
        details["engine_reason"] = split
    elif split is not None:
        details = {"engine": "incremental", "head_layers": split.names}
        head = _IncrementalLogits(split, xd, ref, fine_r, fine_c, cfg.window, cfg.tau,
                                  max(4, cfg.approx_sample // 4))

    def exact_drops(idx: torch.Tensor) -> torch.Tensor:   # full forward passes
        i, j = idx // p, idx % p
        return base[i] - class_score(net(torch.where(patch_masks(j), ref[i], xd[i])), cls[i], cfg.score)

    def drops_of(flat: torch.Tensor, prog) -> torch.Tensor:
        """Drops at flat (image, position) indices ``flat`` (ascending)."""
        def fn(sl: slice) -> torch.Tensor:
            idx = flat[sl]
            if details["engine"] != "incremental":
                return exact_drops(idx)
            i, j = idx // p, idx % p
            with torch.inference_mode():
                outs = [head(img, j[i == img]) for img in i.unique().tolist()]
                logits = split.tail(torch.cat(outs))
            return base[i] - class_score(logits, cls[i], cfg.score)
        return map_batches(fn, len(flat), cfg.batch_size, prog, out_device=dev)

    everything = torch.arange(n * p, device=dev)
    drill = (cfg.drill_top < 1 or cfg.coarse_stride is not None) and n * p > 0
    n_check = min(cfg.approx_sample, n * p) if cfg.approximate else 0
    if not drill:
        d = drops_of(everything, _stage(progress, 0, n * p + n_check)).view(n, p)
    else:
        d, drilled = _drill_down(drops_of, cfg, n, h, w, fine_r, fine_c, progress, n_check, dev)
        details["drill_down"] = drilled
    if cfg.approximate and n * p:
        chk = _approx.samples(n * p, n_check, seed=cfg.approx_sample)[0].to(dev)
        prog = _stage(progress, n * p, n * p + len(chk))
        exact = map_batches(lambda sl: exact_drops(chk[sl]), len(chk), cfg.batch_size, prog,
                            out_device=dev)
        details["approx"] = _approx.error_report(d.reshape(-1)[chk], exact, tau=cfg.tau,
                                                 drill_top=cfg.drill_top)
        if details["engine"] == "incremental" and cfg.tau > 0:
            details["approx"]["caps"] = {int(k): {int(i): list(c) for i, c in v.items()}
                                         for k, v in head.caps.items()}
        elif cfg.tau > 0:
            details["approx"]["tau_ignored"] = "the incremental engine does not apply to this model"
    all_masks = patch_masks(torch.arange(p, device=dev))[:, 0].to(d.dtype)  # (p, H, W)
    total = torch.einsum("np,phw->nhw", d, all_masks)
    count = all_masks.sum(0)
    maps = (total / count.clamp_min(1)).cpu()
    return (maps, details) if return_details else maps


def _stage(progress, start: int, total: int):
    return None if progress is None else _batching.sub_progress(progress, start=start, total=total)


def _interp_matrix(fine: list[int], coarse: list[int], dev) -> torch.Tensor:
    """``(len(fine), len(coarse))`` linear-interpolation weights of values at ``coarse``
    coordinates (ascending, spanning ``fine``'s range) onto ``fine`` coordinates."""
    m = torch.zeros(len(fine), len(coarse), dtype=torch.float64)
    for a, f in enumerate(fine):
        k = max(0, min(len(coarse) - 2, sum(c <= f for c in coarse) - 1))
        if len(coarse) == 1:
            m[a, 0] = 1.0
            continue
        t = (f - coarse[k]) / (coarse[k + 1] - coarse[k])
        m[a, k], m[a, k + 1] = 1 - t, t
    return m.to(dev)


def _drill_down(drops_of, cfg: OcclusionConfig, n, h, w, fine_r, fine_c, progress, n_check, dev):
    """Adaptive drill-down: drops ``(n, P)`` at every fine position, computed at the coarse
    positions and at the top ``cfg.drill_top`` of all positions ranked by the magnitude of the
    interpolated coarse drops, interpolated elsewhere; and what was done (a dict)."""
    cs = cfg.coarse_stride or 2 * cfg.stride
    _check_coarse(cfg.stride, cs)
    coarse_r, coarse_c = _positions(h, cfg.window, cs), _positions(w, cfg.window, cs)
    nr, nc = len(fine_r), len(fine_c)
    p = nr * nc
    ir = torch.tensor([fine_r.index(t) for t in coarse_r], device=dev)
    ic = torch.tensor([fine_c.index(t) for t in coarse_c], device=dev)
    at_coarse = (ir[:, None] * nc + ic[None, :]).reshape(-1)                      # (Pc,)
    top = math.ceil(cfg.drill_top * p)
    total = n * (len(at_coarse) + top) + n_check                                   # at most
    first = (torch.arange(n, device=dev)[:, None] * p + at_coarse.sort().values[None]).reshape(-1)
    d_c = drops_of(first, _stage(progress, 0, total)).view(n, len(coarse_r), len(coarse_c))
    a_r, a_c = _interp_matrix(fine_r, coarse_r, dev), _interp_matrix(fine_c, coarse_c, dev)
    d = torch.einsum("ra,nab,cb->nrc", a_r, d_c.double(), a_c).to(d_c.dtype).reshape(n, p)
    d[:, at_coarse.sort().values] = d_c.reshape(n, -1)
    chosen = torch.zeros(n, p, dtype=torch.bool, device=dev)
    chosen.scatter_(1, d.abs().topk(top, dim=1).indices, True)
    chosen[:, at_coarse] = False                                                  # already exact
    second = chosen.reshape(-1).nonzero().squeeze(1)
    if len(second):
        d.view(-1)[second] = drops_of(second, _stage(progress, len(first), total))
    computed = len(first) + len(second)
    return d, {"coarse_stride": cs, "top": cfg.drill_top, "computed": computed,
               "computed_fraction": computed / max(n * p, 1)}


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
                  progress: Progress | None = None, details: dict | None = None) -> torch.Tensor:
    """The registry's occlusion: ``details`` (when given) gets :func:`occlusion`'s details
    (``engine``, ``engine_reason`` / ``head_layers``; ``approx`` and ``drill_down`` when the
    config is approximate)."""
    if details is None:
        return occlusion(model, x, targets, cfg, device, spec, progress)
    maps, got = occlusion(model, x, targets, cfg, device, spec, progress, return_details=True)
    details.update(got)
    return maps


register(Method("occlusion", "Occlusion", _occlusion_fn, OcclusionConfig, signed=True, reports=True,
                description="how much the class score drops when a small patch of the image is covered: "
                            "red = covering it lowers the score (the region supports the class), "
                            "blue = covering it raises the score"))
