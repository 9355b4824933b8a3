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


def _patch_masks(tops, lefts, h: int, w: int, window: int, j: torch.Tensor) -> torch.Tensor:
    """``(len(j), 1, H, W)`` bool: True inside the patches at positions ``j``."""
    rows = torch.arange(h, device=tops.device).view(1, h, 1)
    cols = torch.arange(w, device=tops.device).view(1, 1, w)
    t, l = tops[j].view(-1, 1, 1), lefts[j].view(-1, 1, 1)
    return ((rows >= t) & (rows < t + window) & (cols >= l) & (cols < l + window))[:, None]


def _corner_tensors(pos, dev) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.tensor([t for t, _ in pos], device=dev),
            torch.tensor([l for _, l in pos], device=dev))


class _Occluder:
    """The drops ``f(x_i) - f(x_i occluded at position j)`` of images ``x`` (N, C, H, W) at flat
    (image, position) indices ``i * P + j``: the base scores, the reference image and the engine
    (incremental head + tail, or full forward passes), set up once per call."""

    def __init__(self, net, x, classes, n_out, cfg: OcclusionConfig, dev, spec):
        self.net, self.cfg, self.dev = net, cfg, dev
        self.n, _, self.h, self.w = x.shape
        pos = occlusion_positions(x.shape, cfg)
        self.p = len(pos)
        self.xd = xd = x.detach().to(dev)
        self.ref = reference_image(xd, cfg.reference, cfg.blur_sigma, cfg.constant, spec)
        self.cls = cls = torch.tensor(_classes(classes, self.n, n_out), device=dev, dtype=torch.long)
        self.base = map_batches(lambda sl: class_score(net(xd[sl]), cls[sl], cfg.score), self.n,
                                cfg.batch_size, out_device=None)
        self.tops, self.lefts = _corner_tensors(pos, dev)
        self.details: dict = {"engine": "full"}
        self.split = _split.split_head(net) if cfg.incremental == "auto" and self.n * self.p else None
        self.fine_r = _positions(self.h, cfg.window, cfg.stride)
        self.fine_c = _positions(self.w, cfg.window, cfg.stride)
        self.head = None
        if isinstance(self.split, str):
            self.details["engine_reason"] = self.split
            self.split = None
        elif self.split is not None:
            self.details = {"engine": "incremental", "head_layers": self.split.names}
            self.head = _IncrementalLogits(self.split, xd, self.ref, self.fine_r, self.fine_c,
                                           cfg.window, cfg.tau, max(4, cfg.approx_sample // 4))

    def exact_drops(self, idx: torch.Tensor) -> torch.Tensor:
        """Drops at flat indices ``idx`` by full forward passes."""
        i, j = idx // self.p, idx % self.p
        masks = _patch_masks(self.tops, self.lefts, self.h, self.w, self.cfg.window, j)
        occluded = torch.where(masks, self.ref[i], self.xd[i])
        return self.base[i] - class_score(self.net(occluded), self.cls[i], self.cfg.score)

    def drops(self, flat: torch.Tensor, prog) -> torch.Tensor:
        """Drops at flat indices ``flat`` (ascending), ``cfg.batch_size`` per batch."""
        def fn(sl: slice) -> torch.Tensor:
            idx = flat[sl]
            if self.head is None:
                return self.exact_drops(idx)
            i, j = idx // self.p, idx % self.p
            with torch.inference_mode():
                outs = [self.head(img, j[i == img]) for img in i.unique().tolist()]
                logits = self.split.tail(torch.cat(outs))
            return self.base[i] - class_score(logits, self.cls[i], self.cfg.score)
        return map_batches(fn, len(flat), self.cfg.batch_size, prog, out_device=self.dev)


def _maps_2d(d: torch.Tensor, shape, cfg: OcclusionConfig) -> torch.Tensor:
    """Maps ``(N, H, W)`` (CPU) from the drops ``d`` (N, P) of images of ``shape`` (..., H, W):
    at each pixel the mean drop over the patches covering it (``cfg`` sized)."""
    h, w = int(shape[-2]), int(shape[-1])
    tops, lefts = _corner_tensors(occlusion_positions(shape, cfg), d.device)
    p = len(tops)
    all_masks = _patch_masks(tops, lefts, h, w, cfg.window, torch.arange(p, device=d.device))
    all_masks = all_masks[:, 0].to(d.dtype)                                   # (p, H, W)
    total = torch.einsum("np,phw->nhw", d, all_masks)
    count = all_masks.sum(0)
    return (total / count.clamp_min(1)).cpu()


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
    Large exact jobs split into blocks of (image, position) pairs: :func:`occlusion_drops`.
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
    occ = _Occluder(net, x, classes, n_out, cfg, dev, spec)
    n, p, details = occ.n, occ.p, occ.details
    everything = torch.arange(n * p, device=dev)
    drill = (cfg.drill_top < 1 or cfg.coarse_stride is not None) and n * p > 0
    n_check = min(cfg.approx_sample, n * p) if cfg.approximate else 0
    if not drill:
        d = occ.drops(everything, _stage(progress, 0, n * p + n_check)).view(n, p)
    else:
        d, drilled = _drill_down(occ.drops, cfg, n, occ.h, occ.w, occ.fine_r, occ.fine_c,
                                 progress, n_check, dev)
        details["drill_down"] = drilled
    if cfg.approximate and n * p:
        chk = _approx.samples(n * p, n_check, seed=cfg.approx_sample)[0].to(dev)
        prog = _stage(progress, n * p, n * p + len(chk))
        exact = map_batches(lambda sl: occ.exact_drops(chk[sl]), len(chk), cfg.batch_size, prog,
                            out_device=dev)
        details["approx"] = _approx.error_report(d.reshape(-1)[chk], exact, tau=cfg.tau,
                                                 drill_top=cfg.drill_top)
        if details["engine"] == "incremental" and cfg.tau > 0:
            details["approx"]["caps"] = {int(k): {int(i): list(c) for i, c in v.items()}
                                         for k, v in occ.head.caps.items()}
        elif cfg.tau > 0:
            details["approx"]["tau_ignored"] = "the incremental engine does not apply to this model"
    maps = _maps_2d(d, x.shape, cfg)
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
    pair one full forward pass, ``cfg.batch_size`` per batch."""
    occlusion_positions(x.shape, cfg, spatial=3)               # the window check
    if len(x) == 0:
        return torch.zeros((0, *x.shape[2:]))
    d = _volume_drops(net, x, classes, n_out, cfg, dev, spec, progress)
    return _maps_3d(d.view(len(x), -1), x.shape, cfg)


def _volume_counts(shape, cfg: OcclusionConfig) -> tuple[list[list[int]], list[int]]:
    sizes = [int(s) for s in shape[-3:]]
    starts = [_positions(s, cfg.window, cfg.stride) for s in sizes]
    return starts, [len(s) for s in starts]


def _volume_drops(net, x, classes, n_out, cfg: OcclusionConfig, dev, spec, progress,
                  select: tuple[int, int] | None = None) -> torch.Tensor:
    """Drops at flat (volume, cube) indices ``select`` (``(start, stop)``, default all; cube
    index in C order of :func:`occlusion_positions`), batched as the whole run cut at ``start``."""
    n, _, *sizes = x.shape
    occlusion_positions(x.shape, cfg, spatial=3)               # the window check
    starts, counts = _volume_counts(x.shape, cfg)
    p = counts[0] * counts[1] * counts[2]
    lo, hi = (0, n * p) if select is None else select
    xd = x.detach().to(dev)
    ref = reference_image(xd, cfg.reference, cfg.blur_sigma, cfg.constant, spec)
    cls = torch.tensor(_classes(classes, n, n_out), device=dev, dtype=torch.long)
    base = map_batches(lambda sl: class_score(net(xd[sl]), cls[sl], cfg.score), n, cfg.batch_size,
                       out_device=None)
    lo_t = [torch.tensor(st, device=dev) for st in starts]
    grid = [torch.arange(s, device=dev) for s in sizes]

    def drops(sl: slice) -> torch.Tensor:
        idx = torch.arange(lo + sl.start, lo + sl.stop, device=dev)
        i, j = idx // p, idx % p
        a, b, c = j // (counts[1] * counts[2]), (j // counts[2]) % counts[1], j % counts[2]
        inside = None
        for axis, k in enumerate((a, b, c)):
            t = lo_t[axis][k].view(-1, 1)
            ok = (grid[axis] >= t) & (grid[axis] < t + cfg.window)        # (b, size_axis)
            shape = [-1, 1, 1, 1]
            shape[axis + 1] = sizes[axis]
            ok = ok.view(shape)
            inside = ok if inside is None else inside & ok
        logits = net(torch.where(inside[:, None], ref[i], xd[i]))
        return base[i] - class_score(logits, cls[i], cfg.score)

    with torch.no_grad():
        return map_batches(drops, hi - lo, cfg.batch_size, progress).to(dev)


def _maps_3d(d: torch.Tensor, shape, cfg: OcclusionConfig) -> torch.Tensor:
    """Maps ``(N, D, H, W)`` from the drops ``d`` (N, P) of volumes of ``shape`` (..., D, H, W).
    A cube's mask is the product of one window indicator per axis, so the per-voxel sums over the
    covering cubes are three small matrix products (no ``(positions, D, H, W)`` mask stack)."""
    sizes = [int(s) for s in shape[-3:]]
    starts, counts = _volume_counts(shape, cfg)
    cover = [_axis_cover(s, st, cfg.window, d.device) for s, st in zip(sizes, starts)]
    total = torch.einsum("nabc,ad,be,cf->ndef", d.float().view(len(d), *counts), *cover)
    count = torch.einsum("ad,be,cf->def", *cover)
    return (total / count.clamp_min(1)).cpu()


@torch.no_grad()
def occlusion_drops(model: nn.Module, x: torch.Tensor, classes, cfg: OcclusionConfig, start: int,
                    stop: int, device="auto", spec=None,
                    progress: Progress | None = None) -> tuple[torch.Tensor, dict]:
    """One block of an exact :func:`occlusion` run: the drops ``f(x_i) - f(x_i occluded at j)``
    (CPU, ``(stop - start,)``) at flat indices ``i * P + j`` from ``start`` to ``stop - 1`` (``P``
    positions per image or volume, in the order of :func:`occlusion_positions`), and the engine
    details. The batches (``cfg.batch_size``) are those of the whole run cut at ``start``: with
    ``start`` a multiple of ``cfg.batch_size`` the drops are the whole run's bit for bit, and
    :func:`occlusion_from_drops` of all blocks is :func:`occlusion`'s maps. Every block scores the
    N unoccluded images again (N forward passes). Exact configs only."""
    if cfg.approximate:
        raise NnsensError(f"blocks of occlusion positions need an exact config; tau={cfg.tau!r}, "
                          f"drill_top={cfg.drill_top!r}, coarse_stride={cfg.coarse_stride!r} "
                          "calibrate or drill down over all positions: set tau=0, drill_top=1, "
                          "coarse_stride=None, or run it in one piece with occlusion()")
    dev = resolve_device(device)
    net = inference_model(model, dev)
    x, n_out = check_model_input(net, x, spec, dev)
    cfg = cfg.sized(x.shape[2:])
    spatial = x.ndim - 2
    total = len(x) * len(occlusion_positions(x.shape, cfg, spatial=spatial))
    start, stop = int(start), int(stop)
    if not 0 <= start <= stop <= total:
        raise NnsensError(f"positions {start}..{stop} are outside 0..{total} ({len(x)} inputs x "
                          f"{total // max(len(x), 1)} positions)")
    if spatial == 3:
        d = _volume_drops(net, x, classes, n_out, cfg, dev, spec, progress, (start, stop))
        return d.cpu(), {"engine": "full",
                         "engine_reason": "volumes: the incremental engine is 2-D only"}
    occ = _Occluder(net, x, classes, n_out, cfg, dev, spec)
    d = occ.drops(torch.arange(start, stop, device=dev), progress)
    return d.cpu(), dict(occ.details)


def occlusion_from_drops(drops: torch.Tensor, shape, cfg: OcclusionConfig) -> torch.Tensor:
    """The :func:`occlusion` maps ``(N, H, W)`` / ``(N, D, H, W)`` of inputs of ``shape``
    (N, C, H, W) / (N, C, D, H, W) from all their drops (flat, ``N * P``, as
    :func:`occlusion_drops` gives them)."""
    n, spatial = int(shape[0]), len(shape) - 2
    cfg = cfg.sized(shape[2:])
    p = len(occlusion_positions(shape, cfg, spatial=spatial))
    if drops.numel() != n * p:
        raise NnsensError(f"{drops.numel()} drops for {n} inputs x {p} positions; give all "
                          f"{n * p} (every block of the run)")
    d = drops.reshape(n, p)
    return _maps_3d(d, shape, cfg) if spatial == 3 else _maps_2d(d, shape, cfg)


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
