"""Global (Sobol') sensitivity of tabular networks, SALib style: ``sample -> evaluate -> analyze``.

* :func:`sample` builds exactly SALib 1.6's ``SALib.sample.sobol.sample`` matrix (same scrambled
  Sobol' base sequence for the same seed, same A / AB / BA / B row layout, same scaling), but
  vectorised instead of SALib's per-row Python loops.
* :func:`evaluate` runs the model on those rows in large batches on a device and returns the model
  output and, in the same forward pass (hooks), every neuron of one hidden layer.
* :func:`analyze` reproduces SALib 1.6's ``SALib.analyze.sobol.analyze`` estimators (Y standardised
  per output; S1 Saltelli 2010, ST Jansen, S2 Saltelli 2002; bootstrap CI = ``Z * std(ddof=1)`` of
  the resampled estimates, resample indices ``np.random.default_rng(seed).integers(N, size=(N, R))``
  as SALib draws them for a non-zero seed) in float64 torch for many outputs at once.  Every
  bootstrap mean is a row of ``counts @ per_row_terms / N`` where ``counts`` (R+1, N) holds how often
  each base row is drawn by each resample (row 0: all ones = the point estimate), so all resamples
  and all outputs are one matrix product per chunk of rows.

The model never enters :func:`analyze`.  :func:`run` chains the three steps; :func:`convergence`,
:func:`feature_reduction` and :func:`pca_comparison` build the paper's follow-up studies on them.
"""
from __future__ import annotations

import copy
import math
import os
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from . import config as v
from ._batching import (DEFAULT_MEMORY_BUDGET, Progress, auto_batch_size, batch_slices,
                        check_memory, map_batches)
from ._hooks import add_forward_hook, forward_with_outputs
from .data import TabularData
from .device import resolve_device
from .errors import NnsensError
from .training import TrainConfig, fit
from .zoo import LoadedModel, PaperMLP

OUTPUT = "output"
"""Target name of the model's own output (every other target is a module name)."""

StageProgress = Callable[[str, int, int], None]
"""``progress(stage, done, total)`` with stage one of sampling / evaluation / analysis / ..."""

_EPS = float(np.finfo(float).eps)
_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Softplus,
                nn.PReLU, nn.SELU, nn.CELU, nn.Mish, nn.Hardtanh, nn.ReLU6, nn.Softmax)


# --------------------------------------------------------------------------- problem & config

@dataclass(frozen=True)
class SobolProblem:
    """Input names and uniform bounds ``((lo, hi), ...)`` (SALib's ``problem`` dict)."""
    names: tuple[str, ...]
    bounds: tuple[tuple[float, float], ...]

    def __post_init__(self):
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        try:
            bounds = tuple((float(lo), float(hi)) for lo, hi in self.bounds)
        except (TypeError, ValueError):
            raise NnsensError(f"bounds={self.bounds!r} must be pairs (min, max), one per feature") from None
        object.__setattr__(self, "bounds", bounds)
        if not self.names:
            raise NnsensError("a Sobol problem needs at least one feature")
        if len(self.names) != len(self.bounds):
            raise NnsensError(f"{len(self.names)} feature names but {len(self.bounds)} bounds; "
                              "give one (min, max) pair per feature")
        if len(set(self.names)) != len(self.names):
            raise NnsensError(f"feature names {self.names} repeat; make them unique")
        for name, (lo, hi) in zip(self.names, self.bounds):
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise NnsensError(f"bounds of {name!r} are [{lo}, {hi}]; they must be finite numbers")
            if lo >= hi:
                raise NnsensError(f"bounds of {name!r} are [{lo:g}, {hi:g}]: min must be < max; "
                                  "widen them (a constant feature has no sensitivity: drop it)")

    @property
    def D(self) -> int:
        return len(self.names)

    @classmethod
    def from_data(cls, data: TabularData) -> "SobolProblem":
        """Bounds = per-feature min/max of ``data``; a constant column is refused by name."""
        b = data.bounds()
        for name, (lo, hi) in zip(data.feature_names, b):
            if lo >= hi:
                raise NnsensError(f"feature {name!r} is constant ({lo:g}) in the selected rows, so "
                                  "min/max bounds are empty; drop the column, select more rows, "
                                  "or set its bounds by hand")
        return cls(tuple(data.feature_names), tuple((float(lo), float(hi)) for lo, hi in b))

    def to_salib(self) -> dict:
        return {"num_vars": self.D, "names": list(self.names), "bounds": [list(b) for b in self.bounds]}


@dataclass(frozen=True)
class SobolConfig:
    """One Sobol' run. ``layer``: a hidden module whose neurons are analysed with the output."""
    n: int = 4096
    second_order: bool = True
    seed: int = 0
    num_resamples: int = 100
    conf_level: float = 0.95
    layer: str | None = None

    def __post_init__(self):
        v.power_of_two("n", self.n)
        v.in_range("n", self.n, 2, 2**24)
        if not isinstance(self.second_order, bool):
            raise NnsensError(f"second_order={self.second_order!r} must be True or False")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise NnsensError(f"seed={self.seed!r} must be a whole number >= 0")
        v.positive("num_resamples", self.num_resamples, integer=True)
        v.in_range("num_resamples", self.num_resamples, 2, 100000)
        v.in_range("conf_level", self.conf_level, 0, 1, lo_open=True, hi_open=True)
        if self.layer is not None and (not isinstance(self.layer, str) or not self.layer
                                       or self.layer == OUTPUT):
            raise NnsensError(f"layer={self.layer!r} must be a module name (or None for the output only)")

    @property
    def targets(self) -> tuple[str, ...]:
        return (OUTPUT,) if self.layer is None else (OUTPUT, self.layer)


def rows_per_sample(D: int, second_order: bool) -> int:
    """Model evaluations per base sample: ``2D+2`` with second order, else ``D+2``."""
    return 2 * D + 2 if second_order else D + 2


# --------------------------------------------------------------------------- sampling

def sample(problem: SobolProblem, n: int, second_order: bool = True, seed: int | None = 0,
           progress: Progress | None = None) -> np.ndarray:
    """SALib 1.6's ``sample.sobol.sample(problem, n, calc_second_order=..., seed=seed)``, vectorised.

    Returns ``(n * (2D+2), D)`` (or ``n * (D+2)``) float64 rows: for each base sample A, then
    AB_1..AB_D (column j from B), then (second order) BA_1..BA_D (column j from A), then B.
    The first ``m * step`` rows for ``m < n`` equal ``sample(problem, m, ...)``.
    """
    from scipy.stats import qmc
    from SALib.util import _scale_samples
    v.power_of_two("n", n)
    D = problem.D
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's ``seed=`` spelling, kept to match SALib exactly
        qrng = qmc.Sobol(d=2 * D, scramble=True, seed=seed)
        base = qrng.random(n)
    A, B = base[:, :D], base[:, D:]
    step = rows_per_sample(D, second_order)
    out = np.empty((n, step, D))
    out[:, 0] = A
    cols = np.arange(D)
    out[:, 1:D + 1] = A[:, None, :]
    out[:, 1 + cols, cols] = B
    if second_order:
        out[:, D + 1:2 * D + 1] = B[:, None, :]
        out[:, D + 1 + cols, cols] = A
    out[:, step - 1] = B
    out = out.reshape(n * step, D)
    _scale_samples(out, [list(b) for b in problem.bounds])  # SALib's own in-place scaling
    if progress is not None:
        progress(1, 1)
    return out


# --------------------------------------------------------------------------- evaluation

def _module(model) -> nn.Module:
    return model.module if isinstance(model, LoadedModel) else model


def input_width(model) -> int | None:
    """Input width of a tabular model: its spec, else its first Linear layer (None if unknown)."""
    if isinstance(model, LoadedModel) and model.spec.input_shape:
        return int(model.spec.input_shape[0])
    for m in _module(model).modules():
        if isinstance(m, nn.Linear):
            return int(m.in_features)
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            return None
    return None


def check_width(model, D: int) -> None:
    """Refuse a model whose input width differs from the number of features."""
    width = input_width(model)
    if width is not None and width != D:
        raise NnsensError(f"the model takes {width} inputs but the data has {D} features; pick the "
                          "matching dataset/model (or retrain the model on these features)")


def _device_of(module: nn.Module) -> torch.device | None:
    p = next(iter(module.parameters()), None)
    return p.device if p is not None else None


def _eval_module(model, dev: torch.device) -> nn.Module:
    """The model in eval mode on ``dev`` without mutating a shared model (copy when needed)."""
    module = _module(model)
    if module.training or (_device_of(module) not in (None, dev)):
        module = copy.deepcopy(module).to(dev).eval()
    return module


def _param_dtype(module: nn.Module) -> torch.dtype:
    p = next(iter(module.parameters()), None)
    return p.dtype if p is not None and p.dtype.is_floating_point else torch.float32


def hidden_layers(model, n_inputs: int | None = None) -> dict[str, int]:
    """Named modules with 2-D outputs ``(batch, neurons)``, in forward order, as ``{name: neurons}``.

    For :class:`~nnsens_core.zoo.PaperMLP`: ``fc1, bn1, act1 (10), fc2, bn2, out (1)``.
    """
    module = _module(model)
    d = n_inputs or input_width(model)
    if d is None:
        raise NnsensError("the model's input width is unknown; give n_inputs")
    order: list[str] = []
    widths: dict[str, int] = {}
    handles = []
    try:
        for name, sub in module.named_modules():
            if not name:
                continue

            def hook(_m, _i, out, _name=name):
                if isinstance(out, (tuple, list)):
                    out = out[0]
                if isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[0] == 2:
                    order.append(_name)
                    widths[_name] = int(out.shape[1])
            handles.append(add_forward_hook(sub, hook))
        eval_mod = module if not module.training else copy.deepcopy(module).eval()
        dev = _device_of(module) or torch.device("cpu")
        with torch.no_grad():
            eval_mod(torch.zeros(2, d, device=dev, dtype=_param_dtype(module)))
    except NnsensError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure means the model does not fit the width
        raise NnsensError(f"the model does not accept {d} inputs: {str(exc)[:200]}") from None
    finally:
        for h in handles:
            h.remove()
    return {n: widths[n] for n in dict.fromkeys(order)}


def default_layer(model, n_inputs: int | None = None) -> str | None:
    """The first post-activation layer with more than one neuron (``act1`` for the paper MLP)."""
    layers = hidden_layers(model, n_inputs)
    mods = dict(_module(model).named_modules())
    for name, width in layers.items():
        if isinstance(mods[name], _ACTIVATIONS) and width > 1:
            return name
    wide = [n for n, w in layers.items() if w > 1]
    return wide[0] if wide else (next(iter(layers)) if layers else None)


def target_labels(target: str, width: int) -> list[str]:
    """Labels of a target's columns: ``output`` / ``output[c]``, ``layer[i]``."""
    if width == 1:
        return [target]
    return [f"{target}[{i}]" for i in range(width)]


@torch.no_grad()
def evaluate(model, X: np.ndarray | torch.Tensor, targets: Sequence[str] = (OUTPUT,),
             device="auto", batch_size: int | None = None,
             progress: Progress | None = None) -> dict[str, np.ndarray]:
    """Run the model on every row of ``X``; returns ``{target: (n, neurons) float64}``.

    ``targets``: :data:`OUTPUT` and/or module names; all are captured in ONE forward pass per batch
    (forward hooks, removed afterwards).  The model is not modified.
    """
    dev = resolve_device(device)
    targets = list(dict.fromkeys(targets))
    if not targets:
        raise NnsensError("targets is empty; give 'output' and/or a hidden layer name")
    X = torch.as_tensor(np.asarray(X) if not isinstance(X, torch.Tensor) else X)
    if X.ndim != 2:
        raise NnsensError(f"X has shape {tuple(X.shape)}; it must be (rows, features)")
    check_width(model, X.shape[1])
    module = _eval_module(model, dev)
    dtype = _param_dtype(module)
    layers = [t for t in targets if t != OUTPUT]
    if batch_size is None:
        batch_size = auto_batch_size(X.shape[1] * 64 + 4096)
    if batch_size < 1:
        raise NnsensError(f"batch_size={batch_size} must be >= 1")

    def one(sl: slice):
        xb = X[sl].to(device=dev, dtype=dtype)
        y, outs = forward_with_outputs(module, xb, layers)
        res = []
        for t in targets:
            o = y if t == OUTPUT else outs.get(t)
            if o is None:
                raise NnsensError(f"layer {t!r} did not run in the forward pass; pick another layer")
            if o.ndim > 2 or o.ndim == 0:
                raise NnsensError(f"{t!r} outputs shape {tuple(o.shape)}; pick a layer with 2-D "
                                  "outputs (rows, neurons)")
            res.append(o.reshape(len(xb), -1).to(torch.float64))
        return tuple(res)

    try:
        parts = map_batches(one, len(X), batch_size, progress)
    except NnsensError:
        raise
    except RuntimeError as exc:
        raise NnsensError(f"the model failed on inputs of shape (batch, {X.shape[1]}): "
                          f"{str(exc)[:200]}") from None
    if parts is None:
        raise NnsensError("X has no rows")
    return {t: p.numpy() for t, p in zip(targets, parts)}


# --------------------------------------------------------------------------- analysis

@dataclass
class SobolIndices:
    """Indices for M outputs and D inputs (SALib's keys, with a leading output axis).

    ``S2``/``S2_conf`` are (M, D, D) with the upper triangle filled and NaN elsewhere (as SALib),
    or None without second order.  ``constant[m]``: output m never varied (its indices are 0).
    """
    S1: np.ndarray
    S1_conf: np.ndarray
    ST: np.ndarray
    ST_conf: np.ndarray
    S2: np.ndarray | None
    S2_conf: np.ndarray | None
    N: int
    constant: np.ndarray

    def select(self, idx) -> "SobolIndices":
        idx = np.atleast_1d(np.asarray(idx))
        return SobolIndices(self.S1[idx], self.S1_conf[idx], self.ST[idx], self.ST_conf[idx],
                            None if self.S2 is None else self.S2[idx],
                            None if self.S2_conf is None else self.S2_conf[idx],
                            self.N, self.constant[idx])


def z_value(conf_level: float) -> float:
    """Two-sided normal quantile, SALib's ``norm.ppf(0.5 + conf_level / 2)``."""
    return statistics.NormalDist().inv_cdf(0.5 + conf_level / 2)


def bootstrap_indices(N: int, num_resamples: int, seed: int | None) -> np.ndarray:
    """Resample indices (N, R) drawn as SALib does for a non-zero seed."""
    rng = np.random.default_rng(seed)
    return rng.integers(N, size=(N, num_resamples))


def analysis_bytes(N: int, D: int, M: int, second_order: bool, num_resamples: int) -> int:
    """Memory :func:`analyze` needs beyond its chunked work space (counts, Y, results)."""
    step = rows_per_sample(D, second_order)
    K = _n_terms(D, second_order)
    return int(8 * ((num_resamples + 1) * N * 2 + N * step * M * 2 + (num_resamples + 1) * K * M * 2)
               + DEFAULT_MEMORY_BUDGET // 4)


def _n_terms(D: int, second_order: bool) -> int:
    return 4 + 2 * D + ((D * (D - 1)) // 2 + 1 if second_order else 0)


def default_memory_limit() -> float:
    """Half the physical memory (capped at 16 GiB): what one run may take."""
    try:
        phys = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        phys = 8 * 2**30
    return float(min(16 * 2**30, phys / 2))


def _analysis_device(device) -> torch.device:
    dev = resolve_device(device)
    return dev if dev.type == "cuda" else torch.device("cpu")  # float64: not on mps


def analyze(problem: SobolProblem | int, Y, *, second_order: bool = True, num_resamples: int = 100,
            conf_level: float = 0.95, seed: int | None = None, device="cpu",
            progress: Progress | None = None, chunk_bytes: int = 64 * 2**20,
            memory_limit: float | None = None) -> SobolIndices:
    """SALib 1.6 ``analyze.sobol.analyze`` for every column of ``Y`` (n_rows,) or (n_rows, M).

    Same estimators and output standardisation as SALib; bootstrap indices are drawn like SALib's
    with ``seed`` (``None``: fresh entropy), so for the same non-zero seed the CIs equal SALib's.
    ``seed=0`` is reproducible here (``default_rng(0)``), whereas SALib treats 0 like None and draws
    from NumPy's global state: point estimates still agree exactly, CIs only statistically.
    """
    D = problem.D if isinstance(problem, SobolProblem) else int(problem)
    v.positive("num_resamples", num_resamples, integer=True)
    if num_resamples < 2:
        raise NnsensError(f"num_resamples={num_resamples} must be >= 2 for a bootstrap CI")
    v.in_range("conf_level", conf_level, 0, 1, lo_open=True, hi_open=True)
    dev = _analysis_device(device)
    Yt = torch.as_tensor(np.asarray(Y) if not isinstance(Y, torch.Tensor) else Y)
    if Yt.ndim == 1:
        Yt = Yt[:, None]
    if Yt.ndim != 2:
        raise NnsensError(f"Y has shape {tuple(Yt.shape)}; give (rows,) or (rows, outputs)")
    n_rows, M = Yt.shape
    step = rows_per_sample(D, second_order)
    if n_rows == 0 or n_rows % step:
        raise NnsensError(f"Y has {n_rows} rows, not a multiple of {step} (= {'2D+2' if second_order else 'D+2'}"
                          f" for D={D}); confirm second_order matches the option used in sample()")
    N = n_rows // step
    if N < 2:
        raise NnsensError(f"only N={N} base sample; use N >= 2")
    if memory_limit is not None:
        check_memory(analysis_bytes(N, D, M, second_order, num_resamples), memory_limit,
                     "the Sobol analysis")
    Yt = Yt.to(device=dev, dtype=torch.float64)
    if not torch.isfinite(Yt).all():
        raise NnsensError("Y holds NaN or infinite values; the model output is not finite on the samples")
    # SALib: Y = (Y - Y.mean()) / Y.std()  (population std), per output here.
    mean = Yt.mean(0)
    std = Yt.std(0, correction=0)
    constant = std <= 0
    Yt = (Yt - mean) / torch.where(constant, torch.ones_like(std), std)
    Yr = Yt.reshape(N, step, M)
    A, B = Yr[:, 0], Yr[:, step - 1]
    AB = Yr[:, 1:D + 1]
    BA = Yr[:, D + 1:2 * D + 1] if second_order else None

    R = num_resamples
    r = bootstrap_indices(N, R, seed)  # (N, R): resample b draws rows r[:, b]
    r += np.arange(R, dtype=r.dtype) * N
    counts = torch.empty(R + 1, N, dtype=torch.float64)
    counts[0] = 1.0  # row 0: the plain sample = point estimate
    counts[1:] = torch.from_numpy(np.bincount(r.ravel(), minlength=R * N).reshape(R, N))
    del r
    counts = counts.to(dev)
    used = counts[1:].sum(0) > 0

    pairs = torch.triu_indices(D, D, 1, device=dev) if second_order else None
    K = _n_terms(D, second_order)
    # G[:, k, m]: mean over each resample of per-row term k of output m
    G = torch.zeros(R + 1, K, M, dtype=torch.float64, device=dev)
    rows_per_chunk = max(1, int(chunk_bytes // (8 * max(1, K * M) * 2)))
    slices = list(batch_slices(N, rows_per_chunk))
    for i, sl in enumerate(slices):
        a, b, ab = A[sl], B[sl], AB[sl]  # (n, M), (n, M), (n, D, M)
        terms = [a[:, None], b[:, None], (a * a)[:, None], (b * b)[:, None],
                 b[:, None] * (ab - a[:, None]), (a[:, None] - ab) ** 2]
        if second_order:
            ba = BA[sl]
            terms += [ba[:, pairs[0]] * ab[:, pairs[1]], (a * b)[:, None]]
        F = torch.cat(terms, dim=1)  # (n, K, M)
        G += (counts[:, sl] @ F.reshape(F.shape[0], K * M)).reshape(R + 1, K, M)
        if progress is not None:
            progress(i + 1, len(slices))
    G /= N

    mA, mB, mA2, mB2 = G[:, 0], G[:, 1], G[:, 2], G[:, 3]  # (R+1, M)
    var = (mA2 + mB2) / 2 - ((mA + mB) / 2) ** 2  # np.var(np.r_[A, B]) per resample
    ok = var > _EPS
    safe = torch.where(ok, var, torch.ones_like(var))[:, None, :]
    zero = torch.zeros((), dtype=torch.float64, device=dev)
    S1 = torch.where(ok[:, None, :], G[:, 4:4 + D] / safe, zero)  # (R+1, D, M)
    ST = torch.where(ok[:, None, :], 0.5 * G[:, 4 + D:4 + 2 * D] / safe, zero)
    # SALib returns zeros when np.ptp(np.r_[A, B]) <= eps (here over the rows the resamples drew).
    ab_all = torch.cat([A, B], 0)
    ptp_point = ab_all.amax(0) - ab_all.amin(0)
    ab_used = torch.cat([A[used], B[used]], 0)
    ptp_used = ab_used.amax(0) - ab_used.amin(0)
    flat = torch.stack([ptp_point <= _EPS] + [ptp_used <= _EPS] * R)  # (R+1, M)
    S1 = torch.where(flat[:, None, :], zero, S1)
    ST = torch.where(flat[:, None, :], zero, ST)
    Z = z_value(conf_level)

    def conf(x):  # (R+1, ..., M) -> Z * std over the R resamples
        return Z * x[1:].std(0, correction=1)

    out = {"S1": S1[0], "S1_conf": conf(S1), "ST": ST[0], "ST_conf": conf(ST)}
    out["S1_conf"] = torch.where((ptp_used <= _EPS)[None, :], zero, out["S1_conf"])
    out["ST_conf"] = torch.where((ptp_used <= _EPS)[None, :], zero, out["ST_conf"])
    S2 = S2c = None
    if second_order:
        P = pairs.shape[1]
        o = 4 + 2 * D
        Vjk = torch.where(ok[:, None, :], (G[:, o:o + P] - G[:, o + P:o + P + 1]) / safe, zero)
        S2p = Vjk - S1[:, pairs[0]] - S1[:, pairs[1]]
        S2p = torch.where(flat[:, None, :], zero, S2p)  # (R+1, P, M)
        S2 = np.full((M, D, D), np.nan)
        S2c = np.full((M, D, D), np.nan)
        j, k = pairs.cpu().numpy()
        S2[:, j, k] = S2p[0].T.cpu().numpy()
        S2c[:, j, k] = conf(S2p).T.cpu().numpy()
    res = {key: val.T.cpu().numpy() for key, val in out.items()}  # (M, D)
    return SobolIndices(res["S1"], res["S1_conf"], res["ST"], res["ST_conf"], S2, S2c, N,
                        constant.cpu().numpy())


# --------------------------------------------------------------------------- full run

@dataclass
class SobolResult:
    """A Sobol' run: indices of the model output and of the chosen layer's neurons."""
    problem: SobolProblem
    config: SobolConfig
    targets: tuple[str, ...]  # one label per analysed output column
    groups: tuple[str, ...]   # the target (OUTPUT or layer name) of each column
    indices: SobolIndices
    timings: dict = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return self.problem.names

    def group(self, target: str = OUTPUT) -> SobolIndices:
        idx = [i for i, g in enumerate(self.groups) if g == target]
        if not idx:
            raise NnsensError(f"target {target!r} was not analysed; it has {sorted(set(self.groups))}")
        return self.indices.select(idx)

    def output(self, column: int = 0) -> SobolIndices:
        """Indices of one column of the model output (the first by default)."""
        idx = [i for i, g in enumerate(self.groups) if g == OUTPUT]
        return self.indices.select([idx[column]])

    def to_json(self) -> dict:
        """The CLI's document: the model output's indices at top level, every target under ``targets``."""
        def clean(a):
            if a is None:
                return None
            a = np.asarray(a, dtype=float)
            return np.where(np.isnan(a), None, a).tolist() if np.isnan(a).any() else a.tolist()
        out = self.output()
        doc = {"names": list(self.names), "S1": clean(out.S1[0]), "S1_conf": clean(out.S1_conf[0]),
               "ST": clean(out.ST[0]), "ST_conf": clean(out.ST_conf[0]),
               "S2": clean(None if out.S2 is None else out.S2[0]),
               "S2_conf": clean(None if out.S2_conf is None else out.S2_conf[0]),
               "N": self.indices.N, "bounds": [list(b) for b in self.problem.bounds],
               "config": asdict(self.config), "timings_s": dict(self.timings), "targets": {}}
        I = self.indices
        for i, label in enumerate(self.targets):
            doc["targets"][label] = {
                "group": self.groups[i], "constant": bool(I.constant[i]),
                "S1": clean(I.S1[i]), "S1_conf": clean(I.S1_conf[i]),
                "ST": clean(I.ST[i]), "ST_conf": clean(I.ST_conf[i]),
                "S2": clean(None if I.S2 is None else I.S2[i]),
                "S2_conf": clean(None if I.S2_conf is None else I.S2_conf[i])}
        return doc

    def to_frames(self) -> dict:
        """pandas tables: ``indices`` (output S1/ST), ``second_order`` (pairs), and for a layer
        ``<layer> S1`` / ``<layer> ST`` (neuron x feature) plus ``all targets`` (long form)."""
        import pandas as pd
        names = list(self.names)
        out = self.output()
        frames = {"indices": pd.DataFrame({"S1": out.S1[0], "S1_conf": out.S1_conf[0],
                                           "ST": out.ST[0], "ST_conf": out.ST_conf[0]},
                                          index=pd.Index(names, name="feature"))}
        if out.S2 is not None:
            j, k = np.triu_indices(len(names), 1)
            frames["second_order"] = pd.DataFrame(
                {"S2": out.S2[0][j, k], "S2_conf": out.S2_conf[0][j, k]},
                index=pd.MultiIndex.from_arrays([[names[a] for a in j], [names[b] for b in k]],
                                                names=["feature_i", "feature_j"]))
        if self.config.layer is not None:
            layer = self.group(self.config.layer)
            labels = [t for t, g in zip(self.targets, self.groups) if g == self.config.layer]
            for key, arr in (("S1", layer.S1), ("ST", layer.ST)):
                frames[f"{self.config.layer} {key}"] = pd.DataFrame(
                    arr, index=pd.Index(labels, name="neuron"), columns=names)
        rows = []
        I = self.indices
        for i, label in enumerate(self.targets):
            for d, name in enumerate(names):
                rows.append({"target": label, "feature": name, "S1": I.S1[i, d],
                             "S1_conf": I.S1_conf[i, d], "ST": I.ST[i, d], "ST_conf": I.ST_conf[i, d]})
        frames["all targets"] = pd.DataFrame(rows).set_index(["target", "feature"])
        return frames


def _stage(progress: StageProgress | None, stage: str) -> Progress | None:
    if progress is None:
        return None
    return lambda done, total: progress(stage, done, total)


def estimate_bytes(problem: SobolProblem, cfg: SobolConfig, n_outputs: int) -> int:
    """Memory of a full run: the sample matrix, the outputs and the analysis."""
    rows = cfg.n * rows_per_sample(problem.D, cfg.second_order)
    return int(rows * problem.D * 8 * 2 + rows * n_outputs * 8 * 3
               + analysis_bytes(cfg.n, problem.D, n_outputs, cfg.second_order, cfg.num_resamples))


def _n_outputs(model, problem: SobolProblem, targets: Sequence[str]) -> dict[str, int]:
    layers = hidden_layers(model, problem.D)
    module = _module(model)
    dev = _device_of(module) or torch.device("cpu")
    with torch.no_grad():
        eval_mod = module if not module.training else copy.deepcopy(module).eval()
        y = eval_mod(torch.zeros(2, problem.D, device=dev, dtype=_param_dtype(module)))
    widths = {OUTPUT: int(y.reshape(2, -1).shape[1])}
    for t in targets:
        if t == OUTPUT:
            continue
        if t not in layers:
            allowed = ", ".join(layers) or "none"
            raise NnsensError(f"layer {t!r} has no 2-D (rows, neurons) output in this model; "
                              f"choose one of: {allowed}")
        widths[t] = layers[t]
    return widths


def run(model, problem: SobolProblem, cfg: SobolConfig = SobolConfig(), device="auto",
        batch_size: int | None = None, progress: StageProgress | None = None,
        memory_limit: float | None = None) -> SobolResult:
    """sample -> evaluate (output + ``cfg.layer`` in one pass per batch) -> analyze.

    Refuses up front (with the estimate) a run whose memory exceeds ``memory_limit``
    (default: half the physical memory, at most 16 GiB).
    """
    check_width(model, problem.D)
    widths = _n_outputs(model, problem, cfg.targets)
    M = sum(widths.values())
    limit = default_memory_limit() if memory_limit is None else memory_limit
    check_memory(estimate_bytes(problem, cfg, M), limit,
                 f"Sobol with N={cfg.n}, D={problem.D}, {M} outputs")
    t = {}
    t0 = time.perf_counter()
    X = sample(problem, cfg.n, cfg.second_order, cfg.seed, _stage(progress, "sampling"))
    t["sampling"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    Ys = evaluate(model, X, cfg.targets, device, batch_size, _stage(progress, "evaluation"))
    del X
    t["evaluation"] = time.perf_counter() - t0
    labels, groups = [], []
    for tgt in cfg.targets:
        labels += target_labels(tgt, Ys[tgt].shape[1])
        groups += [tgt] * Ys[tgt].shape[1]
    Y = np.concatenate([Ys[tg] for tg in cfg.targets], axis=1)
    t0 = time.perf_counter()
    ind = analyze(problem, Y, second_order=cfg.second_order, num_resamples=cfg.num_resamples,
                  conf_level=cfg.conf_level, seed=cfg.seed, device=device,
                  progress=_stage(progress, "analysis"))
    t["analysis"] = time.perf_counter() - t0
    return SobolResult(problem, cfg, tuple(labels), tuple(groups), ind, t)


# --------------------------------------------------------------------------- convergence

@dataclass
class ConvergenceResult:
    """S1/ST (and CIs) of the model output for each N in ``ns``: arrays (len(ns), D)."""
    names: tuple[str, ...]
    ns: tuple[int, ...]
    S1: np.ndarray
    S1_conf: np.ndarray
    ST: np.ndarray
    ST_conf: np.ndarray

    def to_frame(self):
        import pandas as pd
        rows = []
        for i, n in enumerate(self.ns):
            for d, name in enumerate(self.names):
                rows.append({"N": n, "feature": name, "S1": self.S1[i, d], "S1_conf": self.S1_conf[i, d],
                             "ST": self.ST[i, d], "ST_conf": self.ST_conf[i, d]})
        return pd.DataFrame(rows)

    def to_json(self) -> dict:
        return {"names": list(self.names), "N": list(self.ns), "S1": self.S1.tolist(),
                "S1_conf": self.S1_conf.tolist(), "ST": self.ST.tolist(), "ST_conf": self.ST_conf.tolist()}


def powers_of_two(lo: int, hi: int) -> tuple[int, ...]:
    v.power_of_two("n_min", lo)
    v.power_of_two("n_max", hi)
    if lo > hi:
        raise NnsensError(f"n_min={lo} is above n_max={hi}; swap them")
    return tuple(2**k for k in range(lo.bit_length() - 1, hi.bit_length()))


def convergence(model, problem: SobolProblem, ns: Sequence[int], cfg: SobolConfig = SobolConfig(),
                device="auto", batch_size: int | None = None,
                progress: StageProgress | None = None, output_column: int = 0,
                memory_limit: float | None = None) -> ConvergenceResult:
    """S1/ST of the output vs N: one sample at max(ns) (its first n blocks ARE the sample for n),
    evaluated once, then analysed on each prefix.  ``cfg.n``/``cfg.layer`` are ignored."""
    ns = tuple(sorted(set(int(n) for n in ns)))
    if not ns:
        raise NnsensError("ns is empty; give powers of two such as (128, 256, 512)")
    for n in ns:
        v.power_of_two("n", n)
        if n < 4:
            raise NnsensError(f"n={n} is too small for a bootstrap; use n >= 4")
    check_width(model, problem.D)
    big = SobolConfig(n=ns[-1], second_order=False, seed=cfg.seed, num_resamples=cfg.num_resamples,
                      conf_level=cfg.conf_level)
    limit = default_memory_limit() if memory_limit is None else memory_limit
    check_memory(estimate_bytes(problem, big, 1), limit, f"the convergence study up to N={ns[-1]}")
    X = sample(problem, ns[-1], False, cfg.seed, _stage(progress, "sampling"))
    Y = evaluate(model, X, (OUTPUT,), device, batch_size, _stage(progress, "evaluation"))[OUTPUT]
    Y = Y[:, output_column]
    step = rows_per_sample(problem.D, False)
    res = {k: [] for k in ("S1", "S1_conf", "ST", "ST_conf")}
    for i, n in enumerate(ns):
        ind = analyze(problem, Y[:n * step], second_order=False, num_resamples=cfg.num_resamples,
                      conf_level=cfg.conf_level, seed=cfg.seed, device=device)
        for k in res:
            res[k].append(getattr(ind, k)[0])
        if progress is not None:
            progress("analysis", i + 1, len(ns))
    return ConvergenceResult(problem.names, ns, *(np.stack(res[k]) for k in ("S1", "S1_conf", "ST", "ST_conf")))


# --------------------------------------------------------------------------- feature reduction

@dataclass(frozen=True)
class FeatureReductionConfig:
    """Retrain on the top-k and bottom-k features (by ST) over ``seeds``; paper training defaults."""
    k: int = 4
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    train: TrainConfig = TrainConfig(epochs=100)

    def __post_init__(self):
        v.positive("k", self.k, integer=True)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise NnsensError(f"seeds={self.seeds!r} must be distinct whole numbers (at least one)")
        if not isinstance(self.train, TrainConfig):
            raise NnsensError("train must be a TrainConfig")


@dataclass
class FeatureReductionResult:
    """Test accuracy per subset (``all``, ``top-k``, ``bottom-k``) and seed."""
    subsets: dict[str, tuple[str, ...]]  # subset -> feature names
    accuracy: dict[str, list[float]]     # subset -> one accuracy per seed
    seeds: tuple[int, ...]
    original_accuracy: float | None

    def to_frame(self):
        import pandas as pd
        rows = [{"subset": s, "features": ", ".join(f), "n_features": len(f),
                 "acc_mean": float(np.mean(self.accuracy[s])),
                 "acc_std": float(np.std(self.accuracy[s], ddof=1)) if len(self.accuracy[s]) > 1 else 0.0,
                 **{f"seed {sd}": a for sd, a in zip(self.seeds, self.accuracy[s])}}
                for s, f in self.subsets.items()]
        return pd.DataFrame(rows).set_index("subset")

    def to_json(self) -> dict:
        return {"subsets": {k: list(f) for k, f in self.subsets.items()}, "accuracy": self.accuracy,
                "seeds": list(self.seeds), "original_accuracy": self.original_accuracy}


class _Task:
    """How a tabular model is trained/scored: probability, logit or multi-class output."""

    def __init__(self, module: nn.Module, X: np.ndarray, dev: torch.device):
        with torch.no_grad():
            x = torch.as_tensor(X[: min(len(X), 256)], dtype=_param_dtype(module), device=dev)
            y = module(x).reshape(len(x), -1)
        self.classes = int(y.shape[1])
        self.prob = self.classes == 1 and bool(((y >= 0) & (y <= 1)).all())

    def loss(self):
        if self.classes > 1:
            return nn.CrossEntropyLoss()
        return nn.BCELoss() if self.prob else nn.BCEWithLogitsLoss()

    def targets(self, y: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(y, dtype=torch.long if self.classes > 1 else torch.float32)

    @torch.no_grad()
    def accuracy(self, module, X, y, dev) -> float:
        out = module(torch.as_tensor(X, dtype=_param_dtype(module), device=dev)).reshape(len(X), -1).cpu()
        if self.classes > 1:
            pred = out.argmax(1).numpy()
            return float((pred == np.asarray(y).astype(int)).mean())
        thr = 0.5 if self.prob else 0.0
        return float(((out[:, 0].numpy() >= thr) == (np.asarray(y) >= 0.5)).mean())


def _fresh_model(template: nn.Module, n_inputs: int, seed: int) -> tuple[nn.Module, bool]:
    """A re-initialised copy of the architecture; ``(model, takes_only_kept_columns)``.

    The paper MLP is rebuilt with ``n_inputs`` inputs; any other model keeps its width and is fed
    the dropped columns fixed at their training mean."""
    torch.manual_seed(seed)
    if isinstance(template, PaperMLP):
        bn = isinstance(template.bn1, nn.BatchNorm1d)
        return PaperMLP(n_inputs, template.fc1.out_features, bn), True
    try:
        model = copy.deepcopy(template)
    except Exception as exc:  # noqa: BLE001
        raise NnsensError(f"the model cannot be copied for retraining ({exc}); feature reduction "
                          "needs a rebuildable architecture such as paper-mlp") from None
    if isinstance(model, torch.jit.ScriptModule):
        raise NnsensError("a TorchScript model cannot be re-initialised for retraining; load the "
                          "weights as a state_dict with an architecture (e.g. paper-mlp)")
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return model, False


def feature_reduction(model, train: TabularData, test: TabularData, ranking: Sequence[float],
                      cfg: FeatureReductionConfig = FeatureReductionConfig(), device="auto",
                      progress: Progress | None = None) -> FeatureReductionResult:
    """Retrain the model's architecture (fresh weights, never the shared model) on all features,
    the ``k`` with the highest ``ranking`` (e.g. ST) and the ``k`` lowest; test accuracy per seed."""
    dev = resolve_device(device)
    D = train.n_features
    ranking = np.asarray(ranking, dtype=float).reshape(-1)
    if len(ranking) != D:
        raise NnsensError(f"ranking has {len(ranking)} values for {D} features; give one per feature")
    if cfg.k >= D:
        raise NnsensError(f"k={cfg.k} must be < the {D} features (top-k of all features is the full model)")
    if test.n_features != D:
        raise NnsensError(f"train data has {D} features but test data has {test.n_features}")
    check_width(model, D)
    template = _module(model)
    order = np.argsort(-ranking, kind="stable")
    subsets = {f"all {D}": np.arange(D), f"top-{cfg.k}": np.sort(order[:cfg.k]),
               f"bottom-{cfg.k}": np.sort(order[-cfg.k:])}
    shared = _eval_module(model, dev)
    task = _Task(shared, train.X, dev)
    original = task.accuracy(shared, test.X, test.y, dev)
    means = train.X.mean(axis=0)
    acc: dict[str, list[float]] = {s: [] for s in subsets}
    total, done = len(subsets) * len(cfg.seeds), 0
    for seed in cfg.seeds:
        for name, cols in subsets.items():
            net, narrow = _fresh_model(template, len(cols), seed)
            if narrow:
                Xtr, Xte = train.X[:, cols], test.X[:, cols]
            else:
                drop = np.setdiff1d(np.arange(D), cols)
                Xtr, Xte = train.X.copy(), test.X.copy()
                Xtr[:, drop] = means[drop]
                Xte[:, drop] = means[drop]
            tc = TrainConfig(**{**asdict(cfg.train), "seed": seed})
            fit(net, torch.as_tensor(Xtr, dtype=torch.float32), task.targets(train.y), task.loss(),
                tc, dev)
            acc[name].append(task.accuracy(net.eval(), Xte, test.y, dev))
            done += 1
            if progress is not None:
                progress(done, total)
    names = np.asarray(train.feature_names)
    return FeatureReductionResult({s: tuple(names[c]) for s, c in subsets.items()}, acc,
                                  tuple(cfg.seeds), original)


# --------------------------------------------------------------------------- PCA comparison

@dataclass
class PCAComparison:
    """PCA of the data vs the Sobol ranking.

    ``loadings`` (c, D) of the ``c`` leading components reaching ``share`` of the variance
    (sign: largest |loading| positive); ``importance[d] = sum_c evr_c * loading_cd**2 / sum_c evr_c``.
    """
    names: tuple[str, ...]
    explained: np.ndarray      # explained-variance ratio of every component
    loadings: np.ndarray       # (c, D)
    importance: np.ndarray     # (D,)
    sobol: np.ndarray          # (D,) the Sobol measure ranked against
    spearman: float

    @property
    def n_components(self) -> int:
        return len(self.loadings)

    def to_frame(self):
        import pandas as pd
        df = pd.DataFrame({"sobol": self.sobol, "sobol_rank": _ranks(self.sobol),
                           "pca_importance": self.importance, "pca_rank": _ranks(self.importance)},
                          index=pd.Index(self.names, name="feature"))
        return df.sort_values("sobol_rank")

    def loadings_frame(self):
        import pandas as pd
        return pd.DataFrame(self.loadings, columns=list(self.names),
                            index=[f"PC{i + 1} ({self.explained[i]:.1%})" for i in range(self.n_components)])

    def to_json(self) -> dict:
        return {"names": list(self.names), "explained": self.explained.tolist(),
                "loadings": self.loadings.tolist(), "importance": self.importance.tolist(),
                "sobol": self.sobol.tolist(), "spearman": self.spearman}


def _ranks(x: np.ndarray) -> np.ndarray:
    """1 = largest value."""
    order = np.argsort(-np.asarray(x, dtype=float), kind="stable")
    r = np.empty(len(order), dtype=int)
    r[order] = np.arange(1, len(order) + 1)
    return r


def pca_comparison(X: np.ndarray, names: Sequence[str], sobol: Sequence[float], share: float = 0.8,
                   standardize: bool = True) -> PCAComparison:
    """Leading principal components reaching ``share`` of the variance, ranked against ``sobol``."""
    v.in_range("share", share, 0, 1, lo_open=True)
    X = torch.as_tensor(np.asarray(X, dtype=np.float64))
    if X.ndim != 2 or X.shape[0] < 2:
        raise NnsensError(f"X has shape {tuple(X.shape)}; PCA needs (rows >= 2, features)")
    sobol = np.asarray(sobol, dtype=float).reshape(-1)
    if len(sobol) != X.shape[1] or len(names) != X.shape[1]:
        raise NnsensError(f"{len(names)} names and {len(sobol)} Sobol values for {X.shape[1]} features")
    Xc = X - X.mean(0)
    if standardize:
        sd = Xc.std(0, correction=1)
        if (sd <= 0).any():
            bad = [names[i] for i in torch.nonzero(sd <= 0).flatten().tolist()]
            raise NnsensError(f"features {bad} are constant; drop them before PCA")
        Xc = Xc / sd
    _, s, Vt = torch.linalg.svd(Xc, full_matrices=False)
    var = s**2
    evr = (var / var.sum()).numpy()
    c = int(np.searchsorted(np.cumsum(evr), share - 1e-12) + 1)
    c = min(c, len(evr))
    L = Vt[:c].numpy().copy()
    for i in range(c):
        if L[i, np.argmax(np.abs(L[i]))] < 0:
            L[i] = -L[i]
    w = evr[:c]
    imp = (w[:, None] * L**2).sum(0) / w.sum()
    rs, rp = _ranks(sobol), _ranks(imp)
    n = len(rs)
    rho = 1.0 if n < 2 else float(1 - 6 * np.sum((rs - rp) ** 2) / (n * (n**2 - 1)))
    return PCAComparison(tuple(names), evr, L, imp, sobol, rho)


__all__ = ["OUTPUT", "SobolProblem", "SobolConfig", "SobolIndices", "SobolResult", "sample",
           "evaluate", "analyze", "run", "hidden_layers", "default_layer", "convergence",
           "ConvergenceResult", "powers_of_two", "FeatureReductionConfig", "FeatureReductionResult",
           "feature_reduction", "PCAComparison", "pca_comparison", "rows_per_sample",
           "estimate_bytes", "check_width"]
