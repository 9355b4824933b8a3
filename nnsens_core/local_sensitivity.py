"""Local (pixel-perturbation) sensitivity of CNN blocks (paper §3).

For an input ``x`` (model-input space, shape (C, H, W)) and blocks ``B_q`` (named sub-modules),
every pixel (or k x k patch) ``p`` of every channel is perturbed by ``delta`` and

* ``formula="diff_norm"`` (default): ``s_q(p) = || B_q(x + delta e_p) - B_q(x) ||_2``
* ``formula="norm_diff"`` (the paper):  ``s_q(p) = || B_q(x + delta e_p) ||_2 - || B_q(x) ||_2``

``delta`` is a fixed ``epsilon`` or Gaussian noise ``N(0, sigma^2)`` drawn once per perturbed pixel
from a seeded generator (so the result never depends on the batch size).

Finite differences (``method="finite"``) evaluate every perturbation exactly, in one of two ways
(``LocalConfig.incremental``; ``LocalResult.extra["engine"]`` says which ran):

* ``"incremental"`` (default where it applies: all blocks are children of one ``nn.Sequential``
  of convs, pools and pointwise layers fed the model input, e.g. VGG ``features``): each layer
  computes only the box of its output that the perturbed tile can reach, from the stored
  unperturbed activations around it (Krypton-style incremental inference, see
  :mod:`nnsens_core._incremental`); equal to the full pass up to float rounding;
* ``"full"``: ONE forward pass per perturbation; all blocks are read from that pass by forward
  hooks, which reduce each block output to its norm on the spot, and the pass stops right after
  the last block. Perturbed batches are built with one ``repeat`` and one ``scatter_add_`` on a
  flat view (no Python work per perturbation).

Both count one forward pass per perturbation in ``n_forward`` and progress.

The fast mode (``method="gradient"``) replaces the finite differences by first-order estimates:

* ``norm_diff``: ``s_q(p) ~ <delta e_p, grad_x ||B_q(x)||>`` (exact first order; one backward per
  block, all blocks in one batched backward);
* ``diff_norm``: ``s_q(p) ~ || J_q (delta e_p) ||``, the Jacobian column norm, estimated with
  ``n_probes`` random vector-Jacobian products: ``||J u||^2 = E_v[(v^T J u)^2]`` for
  ``v ~ N(0, I)``.

:func:`engine_agreement` reports Spearman rank correlation and relative error between two results;
:class:`LocalBatchResult` holds several images run with one config (the CLI's and the page's export).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Mapping

import numpy as np
import torch
from torch import nn

from . import _approx, _incremental
from . import _validate as v
from . import stats
from ._batching import Progress, map_batches, sub_progress
from ._blocks import (
    AGGREGATES,
    _auto_batch,
    _BlockTap,
    _bytes_per_item,
    _first_conv_channels,
    aggregate_channels,
    detect_blocks,  # noqa: F401 - public here (the page's block detection, TorchScript too)
    order_of_magnitude,  # noqa: F401 - public here (the page prints maps as value x 10^n)
    pool_tiles,  # noqa: F401 - public here (LocalResult.tiles, the page's tile pooling)
    resolve_blocks,
)
from ._script_chain import OUTPUT_MODULE, block_choices, is_script  # noqa: F401 - pages use them
from ._local_results import LocalBatchResult, LocalResult, MeasureComparison, decays_with_depth  # noqa: F401
from .device import resolve_device
from .errors import NnsensError

FORMULAS = ("diff_norm", "norm_diff")
NOISES = ("fixed", "gaussian")
METHODS = ("finite", "gradient")
FORMULA_TEXT = {"diff_norm": "‖B(x+δ) − B(x)‖₂ (norm of the difference)",
                "norm_diff": "‖B(x+δ)‖₂ − ‖B(x)‖₂ (difference of norms, the paper's)"}
"""The formula each ``LocalConfig.formula`` computes, for captions and the CLI."""


@dataclass(frozen=True)
class LocalConfig:
    """How pixels are perturbed and what is measured.

    epsilon: the fixed perturbation (model-input units) when ``noise="fixed"``.
    noise: ``"fixed"`` (delta = epsilon) or ``"gaussian"`` (delta ~ N(0, sigma^2), seeded).
    formula: ``"diff_norm"`` ||B(x+d)-B(x)|| or ``"norm_diff"`` ||B(x+d)||-||B(x)|| (paper).
    patch: perturb k x k patches (one value per patch, spread over its pixels in the maps).
    method: ``"finite"`` (one forward per perturbation) or ``"gradient"`` (fast estimate).
    n_probes: random probes of the Jacobian-column-norm estimate (gradient + diff_norm).
    batch_size: perturbations per forward pass; ``None`` picks one from a memory budget.
    incremental: ``"auto"`` computes finite differences incrementally (only the activation boxes
        a perturbation reaches) when the model allows it, else by full forward passes; ``"off"``
        always uses full forward passes. Both give the same maps up to float rounding.
    tau: approximate incremental inference (projective-field thresholding, see
        :mod:`nnsens_core._approx`): 0 (default) = exact; in (0, 1) each layer computes only the
        box around a perturbation where its change exceeded ``tau`` x that layer's largest change
        on a calibration sample. Needs ``method="finite"`` and ``incremental="auto"``.
    approx_sample: perturbations (random, seeded with ``seed``) run exactly to calibrate (and as
        many others to measure the error reported in ``LocalResult.extra["approx"]``) when
        ``tau`` > 0.
    """
    epsilon: float = 0.1
    noise: str = "fixed"
    sigma: float = 0.1
    seed: int = 0
    formula: str = "diff_norm"
    patch: int = 1
    method: str = "finite"
    n_probes: int = 32
    batch_size: int | None = None
    incremental: str = "auto"
    tau: float = 0.0
    approx_sample: int = 32

    def __post_init__(self):
        v.positive("epsilon", self.epsilon)
        v.one_of("noise", self.noise, NOISES)
        v.positive("sigma", self.sigma)
        v.one_of("formula", self.formula, FORMULAS)
        v.positive("patch", self.patch, integer=True)
        v.one_of("method", self.method, METHODS)
        v.one_of("incremental", self.incremental, _incremental.CHOICES)
        v.positive("n_probes", self.n_probes, integer=True)
        _approx.check_tau(self.tau)
        _approx.check_sample("approx_sample", self.approx_sample)
        if self.tau > 0 and (self.method != "finite" or self.incremental != "auto"):
            raise NnsensError(f"tau={self.tau!r} (approximate incremental inference) needs "
                              f"method='finite' and incremental='auto', not method={self.method!r}, "
                              f"incremental={self.incremental!r}; set tau=0 or change them")
        if self.batch_size is not None:
            v.positive("batch_size", self.batch_size, integer=True)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise NnsensError(f"seed={self.seed!r} must be a whole number")


PRESETS: dict[str, dict] = {
    # the paper: difference of block-output norms for one pixel of one channel moved by a fixed ε,
    # by finite differences; blocks = VGG after each max-pool / ResNet layer1..4 (auto-detected)
    "paper": {"formula": "norm_diff", "noise": "fixed", "epsilon": 0.1, "patch": 1,
              "method": "finite"},
    # nnsens' default: norm of the difference (>= 0; decays with depth on the demo VGG)
    "nnsens": {"formula": "diff_norm", "noise": "fixed", "epsilon": 0.1, "patch": 1,
               "method": "finite"},
}
"""Named settings (``LocalConfig`` fields); both use the detected blocks and untiled maps."""
PRESET_BLOCKS = "auto (VGG: after each max-pool; ResNet: layer1..layer4)"


def preset(name: str, **overrides) -> LocalConfig:
    """The :class:`LocalConfig` of preset ``name`` (:data:`PRESETS`), with ``overrides`` applied
    on top (e.g. ``preset("paper", patch=4)``)."""
    v.one_of("preset", name, tuple(PRESETS))
    return LocalConfig(**{**PRESETS[name], **overrides})


def describe(cfg: LocalConfig) -> str:
    """One line naming the formula and the perturbation a config uses (captions, CLI)."""
    delta = (f"δ = ε = {cfg.epsilon:g}" if cfg.noise == "fixed" else
             f"δ ~ N(0, {cfg.sigma:g}²), seed {cfg.seed}")
    how = "finite differences" if cfg.method == "finite" else "gradient estimate"
    return (f"s = {FORMULA_TEXT[cfg.formula]}; {delta} on one "
            + ("pixel" if cfg.patch == 1 else f"{cfg.patch}×{cfg.patch} patch")
            + f" of one channel; {how}")


def _perturbations(shape, cfg: LocalConfig) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Flat indices ``(P, k*k)`` and deltas ``(P, k*k)`` of every perturbation, channel-major.

    Perturbation ``p`` = (channel c, tile row ti, tile col tj). Pixels of an edge tile that fall
    outside the image get delta 0 (their index is clamped to a valid one).
    """
    c, h, w = shape
    k = cfg.patch
    nh, nw = -(-h // k), -(-w // k)
    ti = torch.arange(nh).view(nh, 1, 1, 1) * k + torch.arange(k).view(1, 1, k, 1)   # (nh,1,k,1)
    tj = torch.arange(nw).view(1, nw, 1, 1) * k + torch.arange(k).view(1, 1, 1, k)   # (1,nw,1,k)
    valid = (ti < h) & (tj < w)                                                          # (nh,nw,k,k)
    pix = ti.clamp(max=h - 1) * w + tj.clamp(max=w - 1)                                   # (nh,nw,k,k)
    pix, valid = pix.reshape(nh * nw, k * k), valid.reshape(nh * nw, k * k)
    chan = torch.arange(c).view(c, 1, 1) * (h * w)
    idx = (chan + pix[None]).reshape(c * nh * nw, k * k)
    valid = valid[None].expand(c, -1, -1).reshape(c * nh * nw, k * k)
    if cfg.noise == "fixed":
        delta = torch.full(idx.shape, float(cfg.epsilon))
    else:
        gen = torch.Generator().manual_seed(cfg.seed)
        delta = torch.randn(idx.shape, generator=gen) * cfg.sigma
    return idx, delta * valid, (nh, nw)


def count_forwards(shape, cfg: LocalConfig, n_images: int = 1, n_blocks: int = 1) -> int:
    """Forward passes a run will make (known up front, for progress bars)."""
    c, h, w = shape
    k = cfg.patch
    per = c * (-(-h // k)) * (-(-w // k)) if cfg.method == "finite" else (
        n_blocks * (cfg.n_probes if cfg.formula == "diff_norm" else 1))
    return n_images * (per + 1)


def _spread(values: torch.Tensor, shape, k: int) -> torch.Tensor:
    """``(Q, C*nh*nw)`` per-perturbation values -> ``(Q, C, H, W)`` maps."""
    c, h, w = shape
    nh, nw = -(-h // k), -(-w // k)
    m = values.reshape(values.shape[0], c, nh, nw)
    if k > 1:
        m = m.repeat_interleave(k, dim=2).repeat_interleave(k, dim=3)[:, :, :h, :w]
    return m.contiguous()


# --------------------------------------------------------------------------- main entry points

def local_sensitivity(model: nn.Module, x: torch.Tensor, blocks: Mapping[str, str] | list[str] | None,
                      cfg: LocalConfig = LocalConfig(), device="auto", progress: Progress | None = None,
                      expected_shape=None, _offset: int = 0, _total: int | None = None) -> LocalResult:
    """Sensitivity maps ``(blocks, C, H, W)`` of one image ``x`` (C, H, W) in model-input space.

    ``blocks`` is ``{label: module name}`` (``None`` = detected VGG/ResNet blocks; module name
    ``""`` = the model output). TorchScript models (no forward hooks) are read stage by stage
    along their forward chain, checked against the model output on ``x``
    (:mod:`~nnsens_core._script_chain`), with full forward passes (no incremental engine).
    ``expected_shape`` (e.g. ``spec.input_shape``) turns a wrong channel count or size into a
    clear error. ``progress(done, total)`` counts forward passes (:func:`count_forwards`).
    """
    x, mapping, dev = _checked(model, x, blocks, cfg, device, expected_shape)
    t0 = time.perf_counter()
    if cfg.method == "finite":
        values, base, n_fwd, extra = _finite(model, x, mapping, cfg, dev, progress, _offset, _total)
        maps = _spread(values.T, tuple(x.shape), cfg.patch)
    else:
        maps, base, n_fwd = _gradient(model, x, mapping, cfg, dev, progress, _offset, _total)
        extra = {}
    return LocalResult(maps.float().cpu(), tuple(mapping), tuple(mapping.values()), base.cpu(), cfg,
                       n_fwd, time.perf_counter() - t0, extra)


def _checked(model, x, blocks, cfg, device, expected_shape):
    """``(x on the device, {label: module}, device)`` after checking the config and the image."""
    if not isinstance(cfg, LocalConfig):
        raise NnsensError(f"cfg must be a LocalConfig, got {type(cfg).__name__}")
    conv_c = _first_conv_channels(model)
    if expected_shape is None and conv_c is not None and isinstance(x, torch.Tensor) and x.ndim == 3:
        expected_shape = (conv_c, *x.shape[1:])
    v.check_images(x, expected_shape, batch=False, finite=True)
    mapping = resolve_blocks(model, blocks)
    dev = resolve_device(device)
    return x.detach().to(dev, torch.float32), mapping, dev


def finite_values(model: nn.Module, x: torch.Tensor, blocks, cfg: LocalConfig, start: int, stop: int,
                  device="auto", progress: Progress | None = None, expected_shape=None):
    """The finite-difference values ``(stop - start, blocks)`` of perturbations ``start`` ..
    ``stop - 1`` of ``x`` (channel-major, tile by tile, as in the maps), with the base norms
    ``(blocks,)``, the forward count and the engine (``extra``): one block of a
    :func:`local_sensitivity` run. With a ``cfg.batch_size`` (see :func:`finite_batch_size`) and
    ``start`` a multiple of it, the values are bit for bit those of the whole run (same
    batches). Exact configs only (``method="finite"``, ``tau=0``)."""
    if isinstance(cfg, LocalConfig) and (cfg.method != "finite" or cfg.tau > 0):
        raise NnsensError(f"blocks of perturbations need exact finite differences (method='finite', "
                          f"tau=0), not method={cfg.method!r}, tau={cfg.tau!r}: the gradient "
                          "estimate has no perturbations to split and approximate inference "
                          "calibrates on all of them; run those in one piece")
    x, mapping, dev = _checked(model, x, blocks, cfg, device, expected_shape)
    vals, base, n_fwd, extra = _finite(model, x, mapping, cfg, dev, progress, 0, None,
                                       (start, stop))
    return vals.cpu(), base.cpu(), n_fwd, extra


def _base_pass(model, x, mapping):
    """Unperturbed block outputs (cloned: later in-place ops cannot change them) + hook count."""
    def keep(_label, out):
        return out.detach().float().reshape(1, -1).clone()

    with _BlockTap(model, mapping, keep) as tap:
        try:
            with torch.inference_mode():
                vals = tap.run(x[None])
        except NnsensError:
            raise
        except RuntimeError as exc:
            raise NnsensError(f"the model does not accept an input of shape {tuple(x.shape)}: "
                              f"{str(exc).splitlines()[0][:300]}") from None
        return vals, tap.calls


def _finite_engine(model, x, mapping, cfg):
    """``(engine, reason)``: the incremental engine when it applies and is not turned off, else
    None and why ``"auto"`` fell back (None when it was turned off)."""
    if cfg.incremental == "auto" and is_script(model):
        return None, ("TorchScript model: the incremental engine needs eager layers, so every "
                      "perturbation ran the scripted model " + (
                          "stage by stage along its forward chain" if any(mapping.values())
                          else "(block = its output)"))
    if cfg.incremental == "auto" and OUTPUT_MODULE in mapping.values():
        return None, "a block is the model output"
    if cfg.incremental == "auto":
        return _incremental.prepare(model, x, mapping, cfg.patch, approx=cfg.tau > 0)
    return None, None


def _finite_batch(engine, model, x, cfg, dev) -> int:
    return cfg.batch_size or _auto_batch(
        engine.bytes_per_item() if engine is not None else _bytes_per_item(model, x), dev)


def n_perturbations(shape, cfg: LocalConfig) -> int:
    """Perturbations of an image of ``shape`` (C, H, W): channels x tiles."""
    c, h, w = shape
    return c * (-(-h // cfg.patch)) * (-(-w // cfg.patch))


def finite_batch_size(model: nn.Module, x: torch.Tensor, blocks, cfg: LocalConfig = LocalConfig(),
                      device="auto") -> int:
    """The batch size (perturbations per pass) a finite-difference run of ``cfg`` on ``x``
    (C, H, W) uses: ``cfg.batch_size``, else the memory-budget choice of the engine that runs
    (which depends on the image's shape and the model, not on its values). A run split into
    blocks of perturbations fixes it once so every block batches as the single run does."""
    if cfg.batch_size is not None:
        return cfg.batch_size
    mapping = resolve_blocks(model, blocks)
    dev = resolve_device(device)
    x = x.detach().to(dev, torch.float32)
    engine, _ = _finite_engine(model, x, mapping, cfg)
    return _finite_batch(engine, model, x, cfg, dev)


def _select_range(select, n: int) -> tuple[int, int]:
    """``select`` = None (every perturbation) or ``(start, stop)`` with 0 <= start <= stop <= n."""
    if select is None:
        return 0, n
    lo, hi = (int(s) for s in select)
    if not 0 <= lo <= hi <= n:
        raise NnsensError(f"perturbations {lo}..{hi} are outside 0..{n} (this image has {n})")
    return lo, hi


def _finite(model, x, mapping, cfg, dev, progress, offset, total_all, select=None):
    """Finite differences: the incremental engine when it applies (and is not turned off), else
    full forward passes. Returns the values ``(P, Q)`` of perturbations ``select`` (``(start,
    stop)``, default all, in :func:`_perturbations` order; the batches are those of the whole run
    cut at ``start``, so a ``start`` on a batch boundary gives the whole run's values bit for
    bit), base norms, forward count and ``extra`` (the engine)."""
    if select is not None and cfg.tau > 0:
        raise NnsensError(f"tau={cfg.tau!r}: approximate inference calibrates on all perturbations "
                          "and cannot run on a subset of them; set tau=0")
    engine, reason = _finite_engine(model, x, mapping, cfg)
    if engine is not None:
        return _finite_incremental(engine, x, cfg, dev, progress, offset, total_all, select)
    values, base, n_fwd, bs = _finite_full(model, x, mapping, cfg, dev, progress, offset,
                                           total_all, select)
    extra = {"engine": "full", "batch_size": bs}
    if cfg.tau > 0:
        extra["approx"] = None
        extra["approx_reason"] = "exact full forward passes: the incremental engine does not apply"
    return values, base, n_fwd, {**extra, "engine_reason": reason} if reason else extra


def _finite_incremental(engine, x, cfg, dev, progress, offset, total_all, select=None):
    shape = tuple(x.shape)
    idx, delta, _ = _perturbations(shape, cfg)
    idx, delta = idx.to(dev), delta.to(dev, x.dtype)
    lo, hi = _select_range(select, idx.shape[0])
    n = hi - lo
    bs = _finite_batch(engine, None, x, cfg, dev)
    total = total_all or (n + 1)
    if progress is not None:
        progress(offset + 1, total)

    extra = {"engine": "incremental", "batch_size": bs}
    if cfg.tau > 0:      # calibrate on one sample, measure the error on another (exact values)
        cal, chk = (s.to(dev) for s in _approx.samples(n, cfg.approx_sample, cfg.seed))
        with torch.inference_mode():
            exact = engine.values(chk, idx[chk], delta[chk], cfg.formula)
            caps = engine.calibrate(cfg.tau, *engine.tile_patches(cal, idx[cal], delta[cal]))
        engine = engine.with_caps(caps)

    def fn(sl: slice):
        sl = slice(lo + sl.start, lo + sl.stop)
        with torch.inference_mode():
            return engine.values(sl, idx[sl], delta[sl], cfg.formula)

    prog = sub_progress(progress, start=offset + 1, total=total)
    out = map_batches(fn, n, bs, prog, out_device=dev)      # (P, Q)
    base = torch.stack([engine.base_norm[lb][0] for lb in engine.labels])
    if cfg.tau > 0:
        extra["approx"] = _approx.error_report(out[chk], exact, engine.labels, tau=cfg.tau,
                                               exact_runs=len(cal) + len(chk))
    return out, base, n + 1, extra


def _finite_full(model, x, mapping, cfg, dev, progress, offset, total_all, select=None):
    shape = tuple(x.shape)
    labels = list(mapping)
    base, n_calls = _base_pass(model, x, mapping)
    base_norm = {lb: torch.linalg.vector_norm(b, dim=1) for lb, b in base.items()}
    idx, delta, _ = _perturbations(shape, cfg)
    idx, delta = idx.to(dev), delta.to(dev, x.dtype)
    lo, hi = _select_range(select, idx.shape[0])
    n = hi - lo
    bs = _finite_batch(None, model, x, cfg, dev)
    flat = x.reshape(1, -1)
    total = total_all or (n + 1)
    if progress is not None:
        progress(offset + 1, total)

    if cfg.formula == "diff_norm":
        def reduce(label, out):
            return torch.linalg.vector_norm(out.reshape(out.shape[0], -1).float() - base[label], dim=1)
    else:
        def reduce(label, out):
            o = out.reshape(out.shape[0], -1).float()
            b = base[label]
            # ||o|| - ||b|| = <o - b, o + b> / (||o|| + ||b||): no cancellation of two big norms
            num = ((o - b) * (o + b)).sum(1)
            return num / (torch.linalg.vector_norm(o, dim=1) + base_norm[label]).clamp_min(1e-30)

    with _BlockTap(model, mapping, reduce) as tap:
        tap.stop_after = n_calls

        def fn(sl: slice):
            sl = slice(lo + sl.start, lo + sl.stop)
            xb = flat.repeat(sl.stop - sl.start, 1)
            xb.scatter_add_(1, idx[sl], delta[sl])
            with torch.inference_mode():
                vals = tap.run(xb.view(-1, *shape))
            return torch.stack([vals[lb] for lb in labels], dim=1)

        prog = sub_progress(progress, start=offset + 1, total=total)
        out = map_batches(fn, n, bs, prog, out_device=dev)      # (P, Q)
    return out, torch.stack([base_norm[lb][0] for lb in labels]), n + 1, bs


def _gradient(model, x, mapping, cfg, dev, progress, offset, total_all):
    shape = tuple(x.shape)
    labels = list(mapping)
    q_n = len(labels)
    base, n_calls = _base_pass(model, x, mapping)
    base_norm = torch.stack([torch.linalg.vector_norm(base[lb]) for lb in labels])
    probes = cfg.n_probes if cfg.formula == "diff_norm" else 1
    n_items = q_n * probes
    total = total_all or (n_items + 1)
    if progress is not None:
        progress(offset + 1, total)
    # each item t = (block q, probe r) is one copy of x; one batched backward gives all gradients
    bs = cfg.batch_size or _auto_batch(3 * _bytes_per_item(model, x), dev)
    sizes = {lb: base[lb].shape[1] for lb in labels}

    def captured(label, out):
        return out.clone()  # survives later in-place ops (e.g. torchvision's inplace ReLU)

    with _BlockTap(model, mapping, captured) as tap:
        tap.stop_after = n_calls

        def fn(sl: slice):
            b = sl.stop - sl.start
            xb = x[None].expand(b, *shape).clone().requires_grad_(True)
            with torch.enable_grad():
                vals = tap.run(xb)
                loss = xb.new_zeros(())
                for k, t in enumerate(range(sl.start, sl.stop)):
                    q, r = divmod(t, probes)
                    o = vals[labels[q]][k].reshape(-1).float()
                    if cfg.formula == "norm_diff":
                        loss = loss + torch.linalg.vector_norm(o)
                    else:
                        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 7919 * q + r)
                        vec = torch.randn(sizes[labels[q]], generator=g).to(dev)
                        loss = loss + (o * vec).sum()
                (grad,) = torch.autograd.grad(loss, xb)
            return grad.reshape(b, -1)

        prog = sub_progress(progress, start=offset + 1, total=total)
        grads = map_batches(fn, n_items, bs, prog, out_device=dev)   # (Q*probes, CHW)
    idx, delta, _ = _perturbations(shape, cfg)
    idx, delta = idx.to(dev), delta.to(dev)
    proj = (grads[:, idx] * delta).sum(-1).reshape(q_n, probes, -1)   # (Q, probes, P)
    if cfg.formula == "norm_diff":
        values = proj[:, 0]
    else:
        values = proj.square().mean(1).sqrt()
    return _spread(values, shape, cfg.patch), base_norm, n_items + 1


def local_sensitivity_many(model: nn.Module, xs: torch.Tensor, blocks, cfg: LocalConfig = LocalConfig(),
                           device="auto", progress: Progress | None = None,
                           expected_shape=None) -> list[LocalResult]:
    """:func:`local_sensitivity` for each image of ``xs`` (K, C, H, W), one progress count."""
    v.check_images(xs, expected_shape, what="xs")
    mapping = resolve_blocks(model, blocks)
    per = count_forwards(tuple(xs.shape[1:]), cfg, 1, len(mapping))
    total = per * len(xs)
    return [local_sensitivity(model, xs[i], mapping, cfg, device, progress, expected_shape,
                              _offset=i * per, _total=total) for i in range(len(xs))]


def compare_formulas(model: nn.Module, xs: torch.Tensor, blocks, cfg: LocalConfig = LocalConfig(),
                     device="auto", progress: Progress | None = None, expected_shape=None,
                     done: Mapping[str, list[LocalResult]] | None = None) -> MeasureComparison:
    """Both formulas on the same images ``xs`` (K, C, H, W), blocks and perturbations (``cfg``
    with each formula in turn): per-block means and whether they decay with depth.

    ``done`` = ``{formula: results}`` already computed with ``cfg`` (e.g. the page's main run):
    only the other formula is run. ``progress`` counts the forward passes of what is run.
    """
    done = dict(done or {})
    mapping = resolve_blocks(model, blocks)
    todo = [f for f in FORMULAS if f not in done]
    per = count_forwards(tuple(xs.shape[1:]), cfg, len(xs), len(mapping))
    total = per * len(todo)
    for k, f in enumerate(todo):
        prog = None if progress is None else sub_progress(progress, start=k * per, total=total)
        done[f] = local_sensitivity_many(model, xs, mapping, replace(cfg, formula=f), device, prog,
                                         expected_shape)
    return MeasureComparison({f: LocalBatchResult(tuple(done[f])) for f in FORMULAS})


def mean_std(results: list[LocalResult]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (population) std of the maps of several images: each ``(blocks, C, H, W)``."""
    return LocalBatchResult(tuple(results)).mean_std()


def sensitivity_map(model: nn.Module, x: torch.Tensor, block_name: str, cfg: LocalConfig = LocalConfig(),
                    device="auto", aggregate: str = "mean", progress: Progress | None = None) -> torch.Tensor:
    """Channel-aggregated sensitivity map ``(N, H, W)`` of one block for a batch ``x`` (N, C, H, W)."""
    v.check_images(x)
    v.one_of("aggregate", aggregate, AGGREGATES)
    res = local_sensitivity_many(model, x, {block_name: block_name}, cfg, device, progress)
    return torch.stack([aggregate_channels(r.maps[0], aggregate, dim=0) for r in res])


def engine_agreement(approx: torch.Tensor | LocalResult, exact: torch.Tensor | LocalResult,
                     labels=None) -> dict[str, dict[str, float]]:
    """Per block: Spearman rank correlation (NaN when either map is constant) and relative L2
    error of the ``approx`` maps (e.g. ``method="gradient"``) vs the ``exact`` ones (finite
    differences)."""
    if isinstance(approx, LocalResult):
        labels = labels or approx.labels
        approx = approx.maps
    if isinstance(exact, LocalResult):
        labels = labels or exact.labels
        exact = exact.maps
    if approx.shape != exact.shape:
        raise NnsensError(f"maps of shape {tuple(approx.shape)} and {tuple(exact.shape)} cannot be "
                          "compared; run both on the same image, blocks and patch size")
    labels = labels or [f"block{i + 1}" for i in range(approx.shape[0])]
    out = {}
    for q, lb in enumerate(labels):
        a = approx[q].reshape(-1).double().numpy()
        e = exact[q].reshape(-1).double().numpy()
        rho = stats.spearman(a, e)
        rel = float(np.linalg.norm(a - e) / max(np.linalg.norm(e), 1e-30))
        out[lb] = {"spearman": rho, "rel_error": rel}
    return out

