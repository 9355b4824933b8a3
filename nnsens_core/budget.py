"""What a heavy run costs before it starts, and a process-wide budget over concurrent runs.

**Unit**: GFLOP (10^9 floating-point operations) of model work. A model's cost per sample is the
FLOPs of one forward pass, counted once per model by running a single zero input under a
thread-local dispatch mode (``torch.utils.flop_counter``'s formulas; no module hooks), with a floor
of :data:`MIN_FLOP_PER_SAMPLE` for tiny models; a backward pass counts as two forwards, and every
optimizer step adds :data:`STEP_FLOP` (the per-step overhead that dominates tiny MLPs). Each run's
estimate multiplies that by the evaluations it makes (Sobol: N·(2D+2) or N·(D+2) plus the bootstrap
analysis; local sensitivity: :func:`~nnsens_core.local_sensitivity.count_forwards`; AM: steps ×
targets; occlusion: positions × images; masks: steps × images; training: epochs × rows; a saliency
comparison: the sum over its methods). Estimates are upper bounds: the incremental engines of local
sensitivity and occlusion often do less.

:data:`REFERENCE_GFLOPS` converts to seconds: measured once on this project's 2-core CPU (see
docs/security.md). The server budget (:func:`server_budget`, ``NNSENS_BUDGET`` GFLOP; tighter in
public mode) admits a run only while the estimates of the runs in progress plus its own stay under
the limit; the CLI asks for ``--yes`` above it.
"""
from __future__ import annotations

import contextlib
import math
import os
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from . import deployment
from .errors import NnsensError
from .zoo import module_of

BUDGET_ENV = "NNSENS_BUDGET"
DEFAULT_BUDGET = 10000.0  # GFLOP in flight at once (~17 min of the reference CPU)
PUBLIC_BUDGET = 2000.0    # public mode (~3 min)
REFERENCE_GFLOPS = 10.0   # measured: demo VGG-16 / ResNet-18 batched passes on the 2-core CPU
MIN_FLOP_PER_SAMPLE = 500.0
MIN_BATCH = 8             # a step on fewer images costs as much as one on 8 (per-op overhead)
STEP_FLOP = 2e7           # ~2 ms of optimizer / launch overhead per training step
EPOCH_FLOP = 1e8          # ~10 ms per epoch of the one-tanh-unit training (all retrains together)
BACKWARD = 3.0            # forward + backward = 3 forwards
VOLUME_CONV_COST = 3.0    # a 3-D convolution FLOP costs ~3 of a 2-D one on the CPU (measured: warm
                          # forward+backward passes of the 3-D demo CNN and the demo VGG, alternated in
                          # one run on the 2-core CPU: 12.6 vs 37.0 GFLOP/s), so Conv3d FLOPs count 3 times
SOBOL_ANALYSIS_FLOP = 100.0  # per (sample, resample, index term, output) of the bootstrap


@dataclass(frozen=True)
class Estimate:
    """The cost of one run: ``gflop`` and what to ``reduce`` when it is too much."""
    what: str
    gflop: float
    reduce: str

    @property
    def seconds(self) -> float:
        return self.gflop / REFERENCE_GFLOPS

    def text(self) -> str:
        s = self.seconds
        t = f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min"
        return f"≈ {self.gflop:,.1f} GFLOP (~{t} on the reference CPU)"

    def __add__(self, other: Estimate) -> Estimate:
        return Estimate(self.what, self.gflop + other.gflop,
                        self.reduce if other.reduce in self.reduce else f"{self.reduce} or {other.reduce}")

    def times(self, k: float, what: str | None = None) -> Estimate:
        return Estimate(what or self.what, self.gflop * k, self.reduce)


# --------------------------------------------------------------------------- model cost

class _FlopCount(TorchDispatchMode):
    """Counts FLOPs of the ops ``torch.utils.flop_counter`` knows (conv, matmul, ...), in this thread."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch >= 2.6 wraps a mode's __torch_dispatch__ in torch._dynamo.disable unless this says
        # False; its first call then imports torch._dynamo (~3 s). Nothing here is ever compiled.
        return False

    def __init__(self):
        super().__init__()
        from torch.utils.flop_counter import flop_registry
        self.registry, self.total = flop_registry, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = self.registry.get(func._overloadpacket)
        if count is not None:
            flop = int(count(*args, **kwargs, out_val=out))
            volume = func._overloadpacket is torch.ops.aten.convolution and args[0].ndim == 5
            self.total += flop * VOLUME_CONV_COST if volume else flop
        return out


_FLOPS: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()
_FLOPS_LOCK = threading.Lock()


def _input_shape(model, input_shape) -> tuple[int, ...]:
    if input_shape is None:
        input_shape = getattr(getattr(model, "spec", None), "input_shape", None)
    if input_shape is None:  # a tabular network: the width of its first Linear layer
        first = next((m for m in module_of(model).modules() if isinstance(m, nn.Linear)), None)
        input_shape = None if first is None else (first.in_features,)
    if input_shape is None:
        raise NnsensError("the model's input shape is unknown; pass input_shape")
    return tuple(int(s) for s in input_shape)


_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Softmax,
                nn.Dropout, nn.Identity, nn.Flatten, nn.BatchNorm1d, nn.LayerNorm)


def _chain_flop(module: nn.Module, shape: tuple[int, ...]) -> float | None:
    """FLOPs of a plain chain of Linear and elementwise layers (the paper MLP, or an
    ``nn.Sequential`` of them) on a 1-D input, counted by hand as the counter does (2·in·out per
    Linear, nothing for the rest); None for anything else. Spares importing the counter (and the
    Triton it pulls in) for tabular models."""
    from .zoo import PaperMLP
    if len(shape) != 1 or type(module) not in (PaperMLP, nn.Sequential):
        return None  # a subclass may run its layers otherwise
    leaves = list(module.children())  # in forward order for both
    if not leaves or any(list(m.children()) or not isinstance(m, (nn.Linear, *_ELEMENTWISE))
                         for m in leaves):
        return None
    width, flop = shape[0], 0
    for m in leaves:
        if isinstance(m, nn.Linear):
            if m.in_features != width:
                return None
            flop += 2 * m.in_features * m.out_features
            width = m.out_features
    return float(flop)


def forward_flop(model, input_shape: Sequence[int] | None = None) -> float:
    """FLOPs of one sample's forward pass (at least :data:`MIN_FLOP_PER_SAMPLE`); counted once per
    model and shape, falling back to 2 × parameters when the model cannot be traced."""
    module, shape = module_of(model), _input_shape(model, input_shape)
    with _FLOPS_LOCK:
        known = _FLOPS.get(module, {}).get(shape)
    if known is not None:
        return known
    params = sum(p.numel() for p in module.parameters())
    flop = _chain_flop(module, shape)
    if flop is not None:
        flop = max(flop or 2.0 * params, MIN_FLOP_PER_SAMPLE)
        with _FLOPS_LOCK:
            _FLOPS.setdefault(module, {})[shape] = flop
        return flop
    try:
        dev = next((p.device for p in module.parameters()), torch.device("cpu"))
        counter = _FlopCount()
        with torch.no_grad(), counter:
            module(torch.zeros((1, *shape), device=dev))
        flop = float(counter.total) or 2.0 * params
    except Exception:  # noqa: BLE001 - an estimate must never fail the page; load_model checked shapes
        flop = 2.0 * params
    flop = max(flop, MIN_FLOP_PER_SAMPLE)
    with _FLOPS_LOCK:
        _FLOPS.setdefault(module, {})[shape] = flop
    return flop


def _g(flop: float) -> float:
    return flop / 1e9


def _max_channels(model) -> int:
    return max((m.out_channels for m in module_of(model).modules() if isinstance(m, nn.Conv2d)), default=1)


# --------------------------------------------------------------------------- estimates per run

def sobol(model, D: int, cfg) -> Estimate:
    """Sobol' indices: N·(2D+2) (S2) or N·(D+2) evaluations and the bootstrap analysis."""
    from .sobol import hidden_layers, rows_per_sample
    evals = cfg.n * rows_per_sample(D, cfg.second_order)
    outputs = 1 + (hidden_layers(model, D).get(cfg.layer, 0) if cfg.layer else 0)
    terms = D + (D * (D - 1) // 2 if cfg.second_order else 0)
    analysis = cfg.n * (cfg.num_resamples + 1) * terms * outputs * SOBOL_ANALYSIS_FLOP
    return Estimate(f"Sobol with N={cfg.n:,}", _g(evals * forward_flop(model, (D,)) + analysis),
                    "reduce N, the bootstrap resamples, or turn off second order / the hidden layer")


def convergence(model, D: int, ns: Sequence[int], num_resamples: int) -> Estimate:
    """Convergence study: one sample at max(ns) (first order), analysed at every n."""
    n = max(ns)
    evals = n * (D + 2)
    analysis = sum(ns) * (num_resamples + 1) * D * SOBOL_ANALYSIS_FLOP
    return Estimate(f"the convergence study up to N={n:,}",
                    _g(evals * forward_flop(model, (D,)) + analysis),
                    "lower the top of the N range or the bootstrap resamples")


def training(model, rows: int, cfg, runs: int = 1, input_shape=None) -> Estimate:
    """Mini-batch training (``cfg``: a TrainConfig): runs × epochs × (rows × fwd+bwd + steps)."""
    steps = math.ceil(rows / cfg.batch_size)
    per_epoch = rows * BACKWARD * forward_flop(model, input_shape) + steps * STEP_FLOP
    return Estimate(f"training {runs} model(s) for {cfg.epochs} epochs", _g(runs * cfg.epochs * per_epoch),
                    "reduce the epochs, the seeds or the rows")


def feature_reduction(model, rows: int, cfg) -> Estimate:
    """Retraining on all / top-k / bottom-k features for every seed."""
    return training(model, rows, cfg.train, 3 * len(cfg.seeds)).times(1, "the feature-reduction retraining")


def local(model, shape: Sequence[int], cfg, n_images: int = 1, n_blocks: int = 1) -> Estimate:
    """Local sensitivity: :func:`~nnsens_core.local_sensitivity.count_forwards` passes (gradient
    estimates: forward + backward)."""
    from .local_sensitivity import count_forwards
    passes = count_forwards(tuple(shape), cfg, n_images, n_blocks)
    factor = 1.0 if cfg.method == "finite" else BACKWARD
    return Estimate(f"local sensitivity ({passes:,} passes)",
                    _g(passes * factor * forward_flop(model, shape)),
                    "increase the patch size, use the gradient estimate, or use fewer images / probes")


def am(model, n_targets: int, cfg, input_shape=None) -> Estimate:
    """Activation maximization: steps × targets forward + backward passes."""
    return Estimate(f"activation maximization ({cfg.steps} steps × {n_targets} image(s))",
                    _g(cfg.steps * max(n_targets, MIN_BATCH) * BACKWARD * forward_flop(model, input_shape)),
                    "reduce the steps or the targets")


def occlusion(model, shape: Sequence[int], cfg, n_images: int = 1) -> Estimate:
    """Occlusion: positions × images forward passes; ``shape`` is (C, H, W) or, for volumes,
    (C, D, H, W) (a cube slides along every spatial axis)."""
    from .saliency.occlusion import occlusion_positions
    positions = len(occlusion_positions(shape, cfg, spatial=max(2, len(shape) - 1))) + 1
    return Estimate(f"occlusion ({positions} positions × {n_images} image(s))",
                    _g(positions * n_images * forward_flop(model, shape)),
                    "increase the occlusion stride / window or use fewer images")


def masks(model, cfg, n_images: int = 1, input_shape=None) -> Estimate:
    """Meaningful-perturbation masks: steps × images forward + backward passes."""
    return Estimate(f"perturbation masks ({cfg.steps} steps × {n_images} image(s))",
                    _g(cfg.steps * max(n_images, MIN_BATCH) * BACKWARD * forward_flop(model, input_shape)),
                    "reduce the mask steps or the images")


def saliency_method(model, shape: Sequence[int], name: str, cfg, n_images: int = 1) -> Estimate:
    """One registered saliency method on ``n_images`` images (by its config type)."""
    from .activation_max import AMConfig
    from .saliency import gradients
    from .saliency.cam import CamConfig
    from .saliency.meaningful_mask import MaskConfig
    from .saliency.occlusion import OcclusionConfig
    from .saliency.sensitivity import SensitivityConfig
    f = forward_flop(model, shape)
    if isinstance(cfg, OcclusionConfig):
        return occlusion(model, shape, cfg, n_images)
    if isinstance(cfg, MaskConfig):
        return masks(model, cfg, n_images, shape)
    if isinstance(cfg, AMConfig):
        return am(model, n_images, cfg, shape)
    if isinstance(cfg, SensitivityConfig):
        from .local_sensitivity import LocalConfig
        return local(model, shape, cfg.local or LocalConfig(method="gradient", n_probes=16), n_images)
    if isinstance(cfg, gradients.GradientConfig) and name in gradients.METHODS:
        k = gradients.evaluations(name, cfg)
        return Estimate(f"{name} ({k} passes per image)", _g(n_images * k * BACKWARD * f),
                        "reduce the SmoothGrad samples / IG steps")
    if isinstance(cfg, CamConfig) and cfg.method == "scorecam":
        return Estimate("ScoreCAM", _g(n_images * (_max_channels(model) + 1) * f),
                        "use another CAM method")
    return Estimate(name, _g(n_images * BACKWARD * f), "use fewer methods or images")


def compare(model, shape: Sequence[int], methods: Sequence[str], cfgs: Mapping[str, object],
            n_images: int = 1, rounds: int = 1) -> Estimate:
    """A saliency comparison: the sum over ``methods`` (``cfgs[m]`` each), × ``rounds`` (sanity
    check: randomized layers + 1)."""
    total = Estimate(f"{len(methods)} saliency method(s) on {n_images} image(s)", 0.0,
                     "use fewer methods or images")
    for m in methods:
        total = total + saliency_method(model, shape, m, cfgs[m], n_images)
    return total.times(rounds)


def landscape(rows: int, D: int, cfg) -> Estimate:
    """One-tanh-unit training with 1st-3rd input derivatives of the loss at every recorded epoch."""
    recorded = math.ceil(cfg.epochs / cfg.record_every) + 1
    per_run = cfg.epochs * rows * D * 10 + recorded * rows * D * D * 20
    return Estimate(f"the loss-landscape training ({cfg.retrains} × {cfg.epochs} epochs)",
                    _g(cfg.epochs * EPOCH_FLOP + cfg.retrains * per_run), "reduce the epochs, the retrains or the rows, or "
                    "record less often")


def surface(model, rows: int, grid: int, input_shape=None) -> Estimate:
    """Loss surface: grid² evaluations of the loss on ``rows`` rows."""
    return Estimate(f"the loss surface ({grid}×{grid})",
                    _g(grid * grid * (rows * forward_flop(model, input_shape) + STEP_FLOP)),
                    "use a smaller grid or fewer rows")


# --------------------------------------------------------------------------- the budget

def default_limit() -> float:
    """``NNSENS_BUDGET`` (GFLOP), else :data:`PUBLIC_BUDGET` in public mode, else :data:`DEFAULT_BUDGET`."""
    raw = os.environ.get(BUDGET_ENV, "").strip()
    if not raw:
        return PUBLIC_BUDGET if deployment.public_mode() else DEFAULT_BUDGET
    try:
        value = float(raw)
    except ValueError:
        raise NnsensError(f"{BUDGET_ENV}={raw!r} is not a number; give GFLOP, e.g. {BUDGET_ENV}=500") from None
    if not value > 0:
        raise NnsensError(f"{BUDGET_ENV}={raw!r} must be > 0 (GFLOP)")
    return value


class Budget:
    """Admits runs while the estimates of those in progress plus the new one stay under ``limit``
    (GFLOP). Thread-safe; :meth:`admit` releases in ``finally``."""

    def __init__(self, limit: float):
        if not limit > 0:
            raise NnsensError(f"budget limit={limit!r} must be > 0 (GFLOP)")
        self.limit = float(limit)
        self._lock = threading.Lock()
        self._running: dict[int, Estimate] = {}
        self._next = 0

    @property
    def in_use(self) -> float:
        with self._lock:
            return sum(e.gflop for e in self._running.values())

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._running)

    def refusal(self, est: Estimate) -> str | None:
        """Why ``est`` would be refused on its own (over the whole limit), else None."""
        if est.gflop > self.limit:
            return (f"{est.what} would cost {est.text()}, over this server's budget of "
                    f"{self.limit:,.0f} GFLOP; {est.reduce}")
        return None

    @contextlib.contextmanager
    def admit(self, est: Estimate):
        """Reserve ``est`` for the duration of the ``with`` block, or raise :class:`NnsensError`."""
        why = self.refusal(est)
        if why:
            raise NnsensError(why)
        with self._lock:
            used = sum(e.gflop for e in self._running.values())
            if used + est.gflop > self.limit:
                raise NnsensError(
                    f"the server is busy: runs in progress use {used:,.0f} of its {self.limit:,.0f} "
                    f"GFLOP budget and {est.what} needs {est.gflop:,.1f}; try again when they "
                    f"finish, or {est.reduce}")
            token, self._next = self._next, self._next + 1
            self._running[token] = est
        try:
            yield est
        finally:
            with self._lock:
                del self._running[token]


_SERVER: Budget | None = None
_SERVER_LOCK = threading.Lock()


def server_budget() -> Budget:
    """The process-wide budget (limit read from the environment on first use)."""
    global _SERVER
    with _SERVER_LOCK:
        if _SERVER is None:
            _SERVER = Budget(default_limit())
        return _SERVER


def reset_server_budget(limit: float | None = None) -> Budget:
    """Replace the process-wide budget (``limit=None``: read the environment again); for tests and
    administrators. Runs in progress keep their reservation in the old one."""
    global _SERVER
    with _SERVER_LOCK:
        _SERVER = Budget(default_limit() if limit is None else limit)
        return _SERVER


def confirm(est: Estimate, yes: bool, out=None, ask=None) -> None:
    """The CLI's check: print the estimate; above the budget limit run only with ``--yes`` (or an
    interactive 'y'); otherwise raise :class:`NnsensError` naming ``--yes``."""
    import sys
    out = out or sys.stdout
    limit = default_limit()
    print(f"estimate: {est.what} {est.text()}", file=out)
    if est.gflop <= limit or yes:
        return
    if ask is None and sys.stdin is not None and sys.stdin.isatty():
        ask = input
    if ask is not None and ask(f"over the {limit:,.0f} GFLOP budget ({BUDGET_ENV}); run it? [y/N] ") \
            .strip().lower() in ("y", "yes"):
        return
    raise NnsensError(f"{est.what} would cost {est.text()}, over the {limit:,.0f} GFLOP budget "
                      f"({BUDGET_ENV}); pass --yes to run it anyway, or {est.reduce}")
