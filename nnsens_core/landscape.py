"""Loss-landscape sensitivity (Faroz 2024, "Sensitivity Analysis on Loss Landscape").

The method trains the simplest network, ``inputs -> one tanh unit`` with an MSE loss, and records
during training, for every input feature ``x_j``, the first, second and third derivatives of the
per-sample loss ``L_i(x) = (tanh(w.x + b) - y_i)^2`` with respect to ``x_j`` (the diagonal
``d^k L / dx_j^k``), averaged over the data.  The paper's claim is that the *trend* of the second
derivative while the loss falls has the sign of the Spearman correlation between the feature and
the target.  This module measures that claim, it does not assume it.

Definitions (used by the page, the CLI and the tests):

* **History**: entry ``e`` is recorded with the parameters after ``e`` epochs; entry 0 is the
  Xavier-normal initialisation (bias 0), so a run of ``E`` epochs has ``E + 1`` entries
  (or fewer with ``record_every > 1``; the last epoch is always recorded).
* **Epochs where the loss falls**: recorded entries ``e >= 1`` whose full-data loss is below the
  previous recorded entry's.  With ``descent_share = s < 1`` only those up to the first entry where
  the loss has made ``s`` of its total drop (``loss[0] - min(loss)``) count: the main descent,
  without the long plateau where the loss still creeps down.
* **Trend** of feature ``j``: ``rho_j`` = Spearman correlation between the epoch index and the mean
  second derivative ``mean_i d^2 L_i / dx_j^2`` over the epochs where the loss falls.
  ``"increasing"`` if ``rho_j > flat_tol``, ``"decreasing"`` if ``rho_j < -flat_tol``, else ``"flat"``;
  ``"undetermined"`` with fewer than ``min_falling_epochs`` such epochs.  The slope of a least-squares
  line over the same epochs is reported alongside.
* **Agreement**: the trend agrees with the data when ``"increasing"`` meets a positive and
  ``"decreasing"`` a negative Spearman correlation between the feature and the target.  ``"flat"``,
  ``"undetermined"`` or a zero Spearman correlation count as *not determined* (``None``) and are left
  out of the agreement rate.

Retrains (``retrains = K``) are trained together: the ``K`` weight vectors are stacked into one
``(K, d)`` tensor and optimised with one optimizer on the sum of the ``K`` losses.  SGD and Adam act
element-wise, so this is exactly ``K`` independent runs (tests check run ``k`` equals a lone run of
its seed ``seed + k``).  All derivatives use ``torch.func`` (nested ``jvp`` along the basis vectors,
``vmap`` over basis vectors, samples and runs) - no per-sample Python loop.  For the tanh unit the
loss depends on ``x`` only through ``z = w.x + b``, so the nested ``jvp`` runs in ``z`` and the chain
rule ``d^k L/dx_j^k = w_j^k d^k L/dz^k`` gives every feature (O(n d) instead of O(n d^2); a test
checks it equals the nested ``jvp`` directly in the inputs).

For any loaded model there are NeuralSens-style summaries of ``dy/dx`` (:func:`input_gradient_summary`)
and a 2-D loss surface along two filter-normalised random directions (:func:`loss_surface`,
Li et al. 2018).  :func:`digits_landscape` is the image variant on scikit-learn's 8x8 digits.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jvp, vmap

from . import config as v
from ._batching import Progress, auto_batch_size, map_batches
from .data import TabularData
from .device import resolve_device
from .errors import NnsensError

TRENDS = ("increasing", "decreasing", "flat", "undetermined")
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
ORDERS = (1, 2, 3)
FINAL_ROWS = 5000  # per-sample values kept for the distribution plots (memory of cached results)


# --------------------------------------------------------------------------- configuration

@dataclass(frozen=True)
class LandscapeConfig:
    """Training and trend settings of the one-tanh-unit experiment.

    ``standardize``: z-score the inputs with their mean/std (the default; ``False`` keeps raw
    features).  ``target_scaling``: ``"none"`` keeps ``y``; ``"minmax"`` maps it linearly onto
    ``[-1, 1]``, the range of tanh (Spearman correlations do not change).  ``batch_size=None`` trains
    full-batch.  ``retrains`` is the number ``K`` of runs, with seeds ``seed, seed+1, ...``.
    """
    epochs: int = 200
    lr: float = 0.05
    optimizer: str = "sgd"
    weight_decay: float = 0.0
    momentum: float = 0.0
    batch_size: int | None = None
    retrains: int = 5
    seed: int = 0
    standardize: bool = True
    target_scaling: str = "none"
    record_every: int = 1
    flat_tol: float = 0.05
    min_falling_epochs: int = 3
    descent_share: float = 1.0

    def __post_init__(self):
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise NnsensError(f"epochs={self.epochs!r} must be a whole number >= 1; train for at least "
                              "one epoch (e.g. epochs=200)")
        v.positive("lr", self.lr)
        v.one_of("optimizer", self.optimizer, ("sgd", "adam"))
        v.non_negative("weight_decay", self.weight_decay)
        v.non_negative("momentum", self.momentum)
        if self.batch_size is not None:
            v.positive("batch_size", self.batch_size, integer=True)
        if isinstance(self.retrains, bool) or not isinstance(self.retrains, int) or self.retrains < 1:
            raise NnsensError(f"retrains={self.retrains!r} must be a whole number >= 1 (1 = a single "
                              "run, e.g. retrains=5)")
        if self.retrains > 64:
            raise NnsensError(f"retrains={self.retrains} is too many; use at most 64")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise NnsensError(f"seed={self.seed!r} must be a whole number >= 0")
        v.one_of("target_scaling", self.target_scaling, ("none", "minmax"))
        v.positive("record_every", self.record_every, integer=True)
        v.in_range("flat_tol", self.flat_tol, 0.0, 1.0, hi_open=True)
        v.positive("min_falling_epochs", self.min_falling_epochs, integer=True)
        v.in_range("descent_share", self.descent_share, 0.0, 1.0, lo_open=True)
        if self.min_falling_epochs < 3:
            raise NnsensError(f"min_falling_epochs={self.min_falling_epochs} must be >= 3 "
                              "(a rank correlation needs at least three points)")

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(self.seed + k for k in range(self.retrains))


@dataclass(frozen=True)
class SurfaceConfig:
    """2-D loss surface ``loss(theta + a*d1 + b*d2)`` for ``a, b`` on a ``grid x grid`` lattice in
    ``[-span, span]``.  ``loss``: ``"auto"`` picks BCE for one probability output and 0/1 targets,
    cross-entropy for several outputs, else MSE.  ``ignore_biasbn`` zeroes the directions of 1-D
    parameters (biases, BatchNorm), as Li et al. do by default."""
    grid: int = 21
    span: float = 1.0
    loss: str = "auto"
    seed: int = 0
    ignore_biasbn: bool = True

    def __post_init__(self):
        v.positive("grid", self.grid, integer=True)
        if self.grid < 3 or self.grid > 201:
            raise NnsensError(f"grid={self.grid} must lie in [3, 201]")
        v.positive("span", self.span)
        v.one_of("loss", self.loss, ("auto", "mse", "bce", "cross_entropy"))
        if not isinstance(self.seed, int) or self.seed < 0:
            raise NnsensError(f"seed={self.seed!r} must be a whole number >= 0")


# --------------------------------------------------------------------------- validation

def validate_xy(X, y, feature_names=None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Finite 2-D float features, a numeric finite target, no constant feature (named in the error)."""
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2:
        raise NnsensError(f"X has shape {X.shape}; it must be 2-D (rows, features)")
    names = tuple(str(n) for n in feature_names) if feature_names is not None else tuple(
        f"x{j}" for j in range(X.shape[1]))
    if len(names) != X.shape[1]:
        raise NnsensError(f"{len(names)} feature names for {X.shape[1]} columns; they must match")
    if y.ndim != 1 or len(y) != len(X):
        raise NnsensError(f"the target has shape {y.shape}; it must be 1-D with one value per row "
                          f"({len(X)})")
    if y.dtype.kind not in "biuf":
        sample = next((str(t) for t in y.ravel()[:50]
                       if not _is_number(t)), str(y.ravel()[0]) if y.size else "")
        raise NnsensError(f"the target is not numeric (e.g. {sample!r}); encode it as numbers "
                          "(e.g. 0/1) before running the landscape analysis")
    if X.dtype.kind not in "biuf":
        raise NnsensError("the features are not numeric; encode them as numbers or drop them")
    X = X.astype(np.float64)
    y = y.astype(np.float64)
    if len(X) < 3:
        raise NnsensError(f"{len(X)} rows are too few; give at least 3 rows")
    if X.shape[1] < 1:
        raise NnsensError("the data has no feature column")
    if not np.isfinite(y).all():
        bad = int((~np.isfinite(y)).sum())
        raise NnsensError(f"the target has {bad} missing or infinite values (NaN/inf); fill or "
                          "drop those rows")
    if not np.isfinite(X).all():
        j = int(np.where(~np.isfinite(X).all(axis=0))[0][0])
        raise NnsensError(f"feature {names[j]!r} has missing or infinite values; fill or drop them")
    const = np.ptp(X, axis=0) == 0
    if const.any():
        j = int(np.where(const)[0][0])
        raise NnsensError(f"feature {names[j]!r} is constant (every row is {X[0, j]:g}); it carries "
                          "no information and cannot be standardised - drop it")
    if np.ptp(y) == 0:
        raise NnsensError(f"the target is constant (every row is {y[0]:g}); a correlation with it "
                          "is undefined - choose another target column")
    return X, y, names


def _is_number(t) -> bool:
    try:
        float(t)
        return True
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------- derivatives

def diagonal_derivatives(F, X: torch.Tensor, *args):
    """``(dF_i/dX_ij, d^2F_i/dX_ij^2, d^3F_i/dX_ij^3)``, each (n, d), of a row-wise function.

    ``F(X, *args)`` maps ``X`` (n, d) to (n,) with row ``i`` depending on ``X[i]`` only (a per-sample
    loss or an eval-mode model), so a directional derivative along the matrix whose column ``j`` is
    all ones gives every row's derivative in ``x_j`` at once.  Nested forward-mode ``jvp`` gives the
    first three derivatives; ``vmap`` runs the ``d`` directions together (and composes with ``vmap``
    over parameter sets).
    """
    eye = torch.eye(X.shape[-1], dtype=X.dtype, device=X.device)

    def along(e):
        vec = e.expand_as(X)

        def g(z):
            return F(z, *args)

        def f1(z):
            out, d1 = jvp(g, (z,), (vec,))
            return d1, out

        def f2(z):
            d1, d2, _ = jvp(f1, (z,), (vec,), has_aux=True)
            return d2, d1

        d2, d3, d1 = jvp(f2, (X,), (vec,), has_aux=True)
        return d1, d2, d3

    return vmap(along, out_dims=-1)(eye)


def tanh_unit_loss(X: torch.Tensor, w: torch.Tensor, b: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample loss of the one-tanh-unit network, ``(tanh(X @ w + b) - y)^2`` (n,)."""
    return (torch.tanh(X @ w + b) - y) ** 2


def _residual_loss(Z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(tanh(z) - y)^2`` of a one-column ``Z`` (n, 1) -> (n,)."""
    return (torch.tanh(Z[:, 0]) - y) ** 2


def tanh_unit_input_derivatives(X: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                                y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Same result as ``diagonal_derivatives(tanh_unit_loss, X, w, b, y)`` in O(n d) instead of
    O(n d^2): the loss depends on ``x`` only through ``z = w.x + b``, so
    ``d^k L / dx_j^k = w_j^k d^k L / dz^k``; the ``d^k L / dz^k`` come from the same nested
    ``torch.func.jvp`` (:func:`diagonal_derivatives` on the one-column input ``z``)."""
    z = (X @ w + b)[:, None]
    g1, g2, g3 = diagonal_derivatives(_residual_loss, z, y)  # (n, 1) each
    return g1 * w, g2 * w ** 2, g3 * w ** 3


_PER_RUN = vmap(tanh_unit_input_derivatives, in_dims=(None, 0, 0, None))


def loss_input_derivatives(W: torch.Tensor, b: torch.Tensor, X: torch.Tensor, y: torch.Tensor,
                           batch_size: int | None = None) -> tuple[torch.Tensor, ...]:
    """Derivatives of ``L_i`` w.r.t. each input for ``K`` stacked units.

    ``W`` (K, d), ``b`` (K,), ``X`` (n, d), ``y`` (n,) -> three tensors (K, n, d) on ``X``'s device.
    Batched over samples with :func:`~nnsens_core._batching.map_batches` (results do not depend on
    ``batch_size``).
    """
    K, d = W.shape
    n = len(X)
    if batch_size is None:
        batch_size = auto_batch_size(K * d * 60 * X.element_size())
    W, b = W.detach(), b.detach()

    def one(sl):
        d1, d2, d3 = _PER_RUN(X[sl], W, b, y[sl])  # (K, nb, d)
        return tuple(t.transpose(0, 1) for t in (d1, d2, d3))  # (nb, K, d) to concatenate on dim 0

    out = map_batches(one, n, batch_size, out_device=None)
    return tuple(t.transpose(0, 1) for t in out)


# --------------------------------------------------------------------------- training

@dataclass(frozen=True, eq=False)
class TrainHistory:
    """Histories of ``K`` stacked one-tanh-unit runs (numpy, float64).

    ``epochs`` (T,) recorded epoch numbers; ``loss`` (K, T); ``weights`` (K, T, d); ``bias`` (K, T);
    ``mean[k]`` (K, T, d) mean over samples of the ``k``-th derivative (keys 1, 2, 3);
    ``quantiles[k]`` (K, T, len(QUANTILES), d) per-sample distribution;
    ``final[k]`` (K, m, d) per-sample values at the last epoch, for the rows ``final_rows`` (m,):
    every row, or :data:`FINAL_ROWS` evenly spaced rows of larger data (means and quantiles always
    use every row).
    """
    epochs: np.ndarray
    loss: np.ndarray
    weights: np.ndarray
    bias: np.ndarray
    mean: dict
    quantiles: dict
    final: dict
    seeds: tuple[int, ...]
    final_rows: np.ndarray | None = None


def xavier_normal(d: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    """Xavier-normal weights of ``Linear(d, 1)``: ``N(0, 2 / (d + 1))``, from a generator seeded ``seed``."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(d, generator=gen, dtype=torch.float64).mul_(np.sqrt(2.0 / (d + 1))).to(dtype)


def train_tanh_units(X, y, cfg: LandscapeConfig = LandscapeConfig(), device="auto",
                     progress: Progress | None = None, deriv_batch_size: int | None = None,
                     ) -> TrainHistory:
    """Train ``cfg.retrains`` one-tanh-unit networks on prepared arrays (already scaled) together,
    then compute the input derivatives of every recorded epoch of every run.

    ``progress(done, total)`` counts the training epochs, then the (run, epoch) parameter sets whose
    derivatives are done.
    """
    dev = resolve_device(device)
    Xt = torch.as_tensor(np.asarray(X, np.float32), device=dev)
    yt = torch.as_tensor(np.asarray(y, np.float32), device=dev)
    n, d = Xt.shape
    K = cfg.retrains
    W = torch.stack([xavier_normal(d, s) for s in cfg.seeds]).to(dev).requires_grad_(True)
    b = torch.zeros(K, device=dev, requires_grad=True)
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam([W, b], lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD([W, b], lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum)
    gens = [torch.Generator().manual_seed(10_000_019 + s) for s in cfg.seeds]
    epochs, Ws, bs_, losses = [], [], [], []

    def record(epoch: int):
        with torch.no_grad():
            Wd, bd = W.detach().clone(), b.detach().clone()
            losses.append(((torch.tanh(Xt @ Wd.T + bd) - yt[:, None]) ** 2).mean(0))  # (K,)
        epochs.append(epoch)
        Ws.append(Wd)
        bs_.append(bd)

    n_rec = len(range(0, cfg.epochs + 1, cfg.record_every)) + (cfg.epochs % cfg.record_every != 0)
    chunk = deriv_batch_size or _deriv_chunk(n, d, K * n_rec)
    total = cfg.epochs + K * n_rec  # epochs, then parameter sets whose derivatives are done
    record(0)
    bs = n if cfg.batch_size is None else min(cfg.batch_size, n)
    for epoch in range(1, cfg.epochs + 1):
        if bs == n:
            batches = [None]
        else:
            perms = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(dev)  # (K, n)
            batches = [perms[:, s:s + bs] for s in range(0, n, bs)]
        for idx in batches:
            opt.zero_grad(set_to_none=True)
            if idx is None:
                z = Xt @ W.T + b  # (n, K)
                loss = ((torch.tanh(z) - yt[:, None]) ** 2).mean(0).sum()
            else:
                xb, yb = Xt[idx], yt[idx]  # (K, B, d), (K, B)
                z = torch.einsum("kbd,kd->kb", xb, W) + b[:, None]
                loss = ((torch.tanh(z) - yb) ** 2).mean(1).sum()
            loss.backward()
            opt.step()
        if epoch % cfg.record_every == 0 or epoch == cfg.epochs:
            record(epoch)
        if progress is not None:
            progress(epoch, total)
    T = len(epochs)
    W_all = torch.stack(Ws, 1)  # (K, T, d)
    b_all = torch.stack(bs_, 1)  # (K, T)
    sub = None if progress is None else (lambda done, _t: progress(cfg.epochs + done, total))
    mean, quant = derivative_histories(W_all.reshape(K * T, d), b_all.reshape(K * T), Xt, yt,
                                       chunk, sub)
    rows = np.arange(n) if n <= FINAL_ROWS else np.unique(np.linspace(0, n - 1, FINAL_ROWS).round()
                                                             .astype(np.int64))
    ri = torch.as_tensor(rows, device=dev)
    final = {k: t.cpu().double().numpy() for k, t in zip(
        ORDERS, loss_input_derivatives(W_all[:, -1], b_all[:, -1], Xt[ri], yt[ri]))}
    to_np = lambda t: t.cpu().double().numpy()  # noqa: E731
    return TrainHistory(
        epochs=np.asarray(epochs), loss=to_np(torch.stack(losses, 1)), weights=to_np(W_all),
        bias=to_np(b_all), mean={k: to_np(mean[k].reshape(K, T, d)) for k in ORDERS},
        quantiles={k: to_np(quant[k].reshape(K, T, len(QUANTILES), d)) for k in ORDERS},
        final=final, seeds=cfg.seeds, final_rows=rows)


def _deriv_chunk(n: int, d: int, sets: int) -> int:
    """Parameter sets per derivative batch: memory budget, and torch.quantile's 16M-element limit."""
    per_set = n * d * 4 * 60
    return max(1, min(sets, auto_batch_size(per_set), (2 ** 24 - 1) // max(1, n * d)))


def derivative_histories(W: torch.Tensor, b: torch.Tensor, X: torch.Tensor, y: torch.Tensor,
                         batch_size: int | None = None, progress: Progress | None = None):
    """Mean and quantiles over samples of the three input derivatives for ``P`` parameter sets.

    ``W`` (P, d), ``b`` (P,) (e.g. every recorded epoch of every run, flattened) ->
    ``({1: (P, d), 2: ..., 3: ...}, {1: (P, len(QUANTILES), d), ...})``.  Batched over parameter
    sets with :func:`~nnsens_core._batching.map_batches` (results do not depend on ``batch_size``).
    """
    P, d = W.shape
    batch_size = batch_size or _deriv_chunk(len(X), d, P)
    q = torch.tensor(QUANTILES, device=X.device, dtype=X.dtype)
    W, b = W.detach().to(X.device, X.dtype), b.detach().to(X.device, X.dtype)

    def one(sl):
        ders = _PER_RUN(X, W[sl], b[sl], y)  # three (p, n, d)
        outs = []
        for t in ders:
            outs.append(t.mean(1))
            outs.append(torch.quantile(t, q, dim=1).permute(1, 0, 2))
        return tuple(outs)

    out = map_batches(one, P, batch_size, progress, out_device=None)
    return ({k: out[2 * i] for i, k in enumerate(ORDERS)},
            {k: out[2 * i + 1] for i, k in enumerate(ORDERS)})


# --------------------------------------------------------------------------- statistics

def _rank(a: np.ndarray, axis: int = 0) -> np.ndarray:
    from scipy.stats import rankdata
    return rankdata(a, axis=axis)


def spearman_columns(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman correlation of every column of ``X`` (n, d) with ``y`` (n,) (ties: mean ranks).

    A constant column gives NaN."""
    rx = _rank(np.asarray(X, np.float64), 0)
    ry = _rank(np.asarray(y, np.float64), 0)
    rx = rx - rx.mean(0)
    ry = ry - ry.mean()
    den = np.sqrt((rx ** 2).sum(0) * (ry ** 2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry[:, None]).sum(0) / np.where(den > 0, den, 1), np.nan)


def falling_mask(loss: np.ndarray, descent_share: float = 1.0) -> np.ndarray:
    """Boolean (T,): recorded entries ``e >= 1`` whose loss is below entry ``e - 1``; with
    ``descent_share < 1`` only up to the first entry where ``loss[0] - loss[e]`` reaches that share
    of ``loss[0] - min(loss)``."""
    loss = np.asarray(loss, np.float64)
    out = np.zeros(len(loss), bool)
    out[1:] = loss[1:] < loss[:-1]
    if descent_share < 1.0 and len(loss) > 1:
        drop = loss[0] - loss.min()
        if drop > 0:
            stop = int(np.argmax(loss[0] - loss >= descent_share * drop))
            out[stop + 1:] = False
    return out


@dataclass(frozen=True, eq=False)
class Trend:
    """Per-feature trend of one history: ``label`` (d,) str, ``rho`` (d,), ``slope`` (d,),
    ``n_epochs`` the number of falling-loss epochs used."""
    label: np.ndarray
    rho: np.ndarray
    slope: np.ndarray
    n_epochs: int


def classify_trend(history: np.ndarray, loss: np.ndarray, epochs: np.ndarray | None = None,
                   flat_tol: float = 0.05, min_falling_epochs: int = 3,
                   descent_share: float = 1.0) -> Trend:
    """Trend of each column of ``history`` (T, d) over the epochs where ``loss`` (T,) falls
    (see :func:`falling_mask` for ``descent_share``)."""
    history = np.asarray(history, np.float64)
    T, d = history.shape
    epochs = np.arange(T, dtype=np.float64) if epochs is None else np.asarray(epochs, np.float64)
    m = falling_mask(loss, descent_share)
    n = int(m.sum())
    if n < min_falling_epochs:
        nan = np.full(d, np.nan)
        return Trend(np.full(d, "undetermined", dtype=object), nan, nan.copy(), n)
    e, h = epochs[m], history[m]
    rho = spearman_columns(h, e)
    ec = e - e.mean()
    slope = (ec[:, None] * (h - h.mean(0))).sum(0) / (ec ** 2).sum()
    label = np.where(np.isnan(rho), "flat",
                     np.where(rho > flat_tol, "increasing",
                              np.where(rho < -flat_tol, "decreasing", "flat"))).astype(object)
    return Trend(label, rho, slope, n)


def agreement(labels: np.ndarray, spearman: np.ndarray) -> np.ndarray:
    """Object array (d,): True/False where the trend and the Spearman sign are both determined, else None."""
    out = np.empty(len(labels), dtype=object)
    for j, (lab, s) in enumerate(zip(labels, spearman)):
        if lab not in ("increasing", "decreasing") or not np.isfinite(s) or s == 0:
            out[j] = None
        else:
            out[j] = bool((lab == "increasing") == (s > 0))
    return out


# --------------------------------------------------------------------------- the experiment

@dataclass(frozen=True, eq=False)
class LandscapeResult:
    """Everything the page and the CLI show.  Run ``k`` of the arrays uses seed ``cfg.seed + k``."""
    feature_names: tuple[str, ...]
    target_name: str
    config: LandscapeConfig
    history: TrainHistory
    spearman: np.ndarray  # (d,) feature vs target
    trends: list  # K Trend objects (2nd derivative)
    agree: np.ndarray  # (K, d) object: True / False / None
    scaling: dict = field(default_factory=dict)

    @property
    def n_runs(self) -> int:
        return len(self.trends)

    def labels(self) -> np.ndarray:
        """(K, d) trend labels."""
        return np.stack([t.label for t in self.trends])

    def consistency(self) -> list[dict]:
        """Per feature: shares of runs per trend, majority trend and its share, and the share of
        determined runs that agree with the Spearman sign."""
        labels = self.labels()
        K = self.n_runs
        rows = []
        for j, name in enumerate(self.feature_names):
            col = labels[:, j]
            shares = {t: float((col == t).mean()) for t in TRENDS}
            majority = max(TRENDS, key=lambda t: (shares[t], -TRENDS.index(t)))
            det = [a for a in self.agree[:, j] if a is not None]
            rows.append({"feature": name, "spearman": float(self.spearman[j]),
                         **{f"share_{t}": shares[t] for t in TRENDS},
                         "majority_trend": majority, "consistency": shares[majority],
                         "runs_determined": len(det), "runs": K,
                         "share_agreeing": float(np.mean(det)) if det else None})
        return rows

    def agreement_rate(self, run: int | None = None) -> float | None:
        """Share of determined (feature, run) pairs whose trend agrees with the Spearman sign."""
        a = self.agree if run is None else self.agree[run:run + 1]
        det = [x for x in a.ravel() if x is not None]
        return float(np.mean(det)) if det else None

    def summary(self) -> dict:
        """JSON-ready: per feature the trend (run 0 and majority), Spearman and agreement."""
        t0 = self.trends[0]
        cons = self.consistency()
        feats = []
        for j, name in enumerate(self.feature_names):
            feats.append({
                "feature": name, "spearman": _f(self.spearman[j]),
                "trend": str(t0.label[j]), "trend_rho": _f(t0.rho[j]), "trend_slope": _f(t0.slope[j]),
                "agrees": self.agree[0, j],
                "majority_trend": cons[j]["majority_trend"], "consistency": cons[j]["consistency"],
                "share_agreeing": cons[j]["share_agreeing"],
                "trend_per_run": [str(t.label[j]) for t in self.trends],
                "trend_rho_per_run": [_f(t.rho[j]) for t in self.trends],
            })
        h = self.history
        return {
            "method": "one tanh unit, MSE loss, Xavier-normal init; trend = Spearman(epoch, mean "
                      "d2L/dx_j2) over epochs where the loss falls",
            "target": self.target_name, "config": _config_dict(self.config),
            "scaling": self.scaling, "seeds": list(h.seeds),
            "final_loss_per_run": [float(x) for x in h.loss[:, -1]],
            "initial_loss_per_run": [float(x) for x in h.loss[:, 0]],
            "agreement_rate_run0": self.agreement_rate(0),
            "agreement_rate_all_runs": self.agreement_rate(),
            "features": feats,
        }


def _f(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def _config_dict(cfg) -> dict:
    import dataclasses
    return dataclasses.asdict(cfg)


def prepare_xy(X: np.ndarray, y: np.ndarray, cfg: LandscapeConfig) -> tuple[np.ndarray, np.ndarray, dict]:
    """Apply the config's input standardisation and target scaling; returns the statistics used."""
    info: dict = {"standardize": cfg.standardize, "target_scaling": cfg.target_scaling}
    if cfg.standardize:
        mu, sd = X.mean(0), X.std(0)
        X = (X - mu) / sd
        info["mean"], info["std"] = mu.tolist(), sd.tolist()
    if cfg.target_scaling == "minmax":
        lo, hi = float(y.min()), float(y.max())
        y = 2 * (y - lo) / (hi - lo) - 1
        info["target_min"], info["target_max"] = lo, hi
    return X, y, info


def run_landscape(X, y, cfg: LandscapeConfig = LandscapeConfig(), *, feature_names=None,
                  target_name: str = "target", device="auto", progress: Progress | None = None,
                  deriv_batch_size: int | None = None) -> LandscapeResult:
    """The whole experiment on arrays: validate, scale, train ``K`` runs, trends, agreement."""
    X, y, names = validate_xy(X, y, feature_names)
    Xs, ys, info = prepare_xy(X, y, cfg)
    hist = train_tanh_units(Xs, ys, cfg, device, progress, deriv_batch_size)
    rho_fy = spearman_columns(X, y)
    trends = [classify_trend(hist.mean[2][k], hist.loss[k], hist.epochs, cfg.flat_tol,
                             cfg.min_falling_epochs, cfg.descent_share) for k in range(cfg.retrains)]
    agree = np.stack([agreement(t.label, rho_fy) for t in trends])
    return LandscapeResult(names, target_name, cfg, hist, rho_fy, trends, agree, info)


def run_landscape_tabular(data: TabularData, cfg: LandscapeConfig = LandscapeConfig(),
                          rows: str | None = None, device="auto",
                          progress: Progress | None = None) -> LandscapeResult:
    """:func:`run_landscape` on a :class:`~nnsens_core.data.TabularData` (optionally a row range)."""
    d = data.rows(rows) if rows else data
    return run_landscape(d.X, d.y, cfg, feature_names=d.feature_names, target_name=d.target_name,
                         device=device, progress=progress)


# --------------------------------------------------------------------------- image variant

@dataclass(frozen=True, eq=False)
class DigitsLandscape:
    """The experiment on scikit-learn's 8x8 digits, target ``label == digit`` (1) vs rest (0).

    Constant pixels (always 0 in this data) are left out of training; their maps hold NaN / False.
    ``increasing_mask`` (8, 8): pixels whose trend is ``"increasing"`` in run 0;
    ``increasing_share`` (8, 8): share of runs with ``"increasing"``; ``spearman_map``,
    ``rho_map`` (8, 8) (run 0); ``images`` (n, 8, 8) in [0, 1]; ``labels`` (n,).
    """
    digit: int
    result: LandscapeResult
    pixel_index: np.ndarray
    increasing_mask: np.ndarray
    increasing_share: np.ndarray
    spearman_map: np.ndarray
    rho_map: np.ndarray
    agree_map: np.ndarray
    images: np.ndarray
    labels: np.ndarray


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits (no download): images (1797, 8, 8) in [0, 1] and labels."""
    from sklearn.datasets import load_digits
    b = load_digits()
    return np.asarray(b.images, np.float64) / 16.0, np.asarray(b.target, np.int64)


def digits_landscape(digit: int = 0, cfg: LandscapeConfig = LandscapeConfig(), n: int | None = None,
                     device="auto", progress: Progress | None = None) -> DigitsLandscape:
    """The image variant: one tanh unit on the 64 pixels, target ``label == digit``."""
    if not isinstance(digit, (int, np.integer)) or not 0 <= int(digit) <= 9:
        raise NnsensError(f"digit={digit!r} must be a whole number in 0..9")
    images, labels = load_digits_arrays()
    if n is not None:
        v.positive("n", n, integer=True)
        if n < 20:
            raise NnsensError(f"n={n} is too few digit images; use at least 20")
        images, labels = images[:n], labels[:n]
    X = images.reshape(len(images), -1)
    y = (labels == int(digit)).astype(np.float64)
    if y.min() == y.max():
        raise NnsensError(f"the first {len(y)} images hold no example of both digit {digit} and "
                          "other digits; use more images")
    keep = np.where(np.ptp(X, axis=0) > 0)[0]
    names = tuple(f"px({p // 8},{p % 8})" for p in keep)
    res = run_landscape(X[:, keep], y, cfg, feature_names=names, target_name=f"digit=={digit}",
                        device=device, progress=progress)

    def to_map(vals, fill):
        out = np.full(64, fill, dtype=np.asarray(vals).dtype)
        out[keep] = vals
        return out.reshape(8, 8)

    labels_k = res.labels()
    inc_share = (labels_k == "increasing").mean(0).astype(np.float64)
    agree0 = np.array([np.nan if a is None else float(a) for a in res.agree[0]])
    return DigitsLandscape(
        digit=int(digit), result=res, pixel_index=keep,
        increasing_mask=to_map((labels_k[0] == "increasing"), False).astype(bool),
        increasing_share=to_map(inc_share, np.nan),
        spearman_map=to_map(res.spearman, np.nan), rho_map=to_map(res.trends[0].rho, np.nan),
        agree_map=to_map(agree0, np.nan), images=images, labels=labels)


# --------------------------------------------------------------------------- any loaded model

def _eval_copy(model: nn.Module, dev: torch.device) -> nn.Module:
    """A deep copy in eval mode on ``dev`` (the shared model is never touched)."""
    return copy.deepcopy(model).to(dev).eval()


def _select_output(out: torch.Tensor, output: int) -> torch.Tensor:
    if out.ndim == 1:
        if output != 0:
            raise NnsensError(f"output={output} does not exist; the model has one output (use 0)")
        return out
    flat = out.reshape(out.shape[0], -1)
    if not 0 <= output < flat.shape[1]:
        raise NnsensError(f"output={output} does not exist; the model has {flat.shape[1]} outputs "
                          f"(use 0..{flat.shape[1] - 1})")
    return flat[:, output]


def input_gradients(model: nn.Module, X, output: int = 0, device="auto",
                    batch_size: int = 1024, progress: Progress | None = None) -> np.ndarray:
    """Per-sample ``d y_output / d x`` (n, d) of an eval-mode model, with ``torch.func.vjp``.

    In eval mode each row's output depends on that row only, so one VJP with a vector of ones gives
    every row's gradient at once.
    """
    dev = resolve_device(device)
    m = _eval_copy(model, dev)
    Xt = torch.as_tensor(np.asarray(X, np.float32))
    if Xt.ndim != 2:
        raise NnsensError(f"X has shape {tuple(Xt.shape)}; it must be 2-D (rows, features)")
    v.positive("batch_size", batch_size, integer=True)

    def one(sl):
        xb = Xt[sl].to(dev)
        f = lambda x: _select_output(m(x), output)  # noqa: E731
        try:
            out, vjp_fn = torch.func.vjp(f, xb)
            return vjp_fn(torch.ones_like(out))[0]
        except RuntimeError:  # TorchScript modules: plain autograd, still one pass per batch
            xb = xb.clone().requires_grad_(True)
            with torch.enable_grad():
                return torch.autograd.grad(f(xb).sum(), xb)[0]

    return map_batches(one, len(Xt), batch_size, progress).double().numpy()


def input_gradient_summary(model: nn.Module, X, feature_names=None, output: int = 0, device="auto",
                           batch_size: int = 1024) -> dict:
    """NeuralSens-style sensitivities of one output: per feature ``mean``, ``std`` and ``rms``
    (root mean square, NeuralSens' ``meanSensSQ``) of ``dy/dx_j`` over the rows of ``X``."""
    g = input_gradients(model, X, output, device, batch_size)
    names = tuple(feature_names) if feature_names is not None else tuple(
        f"x{j}" for j in range(g.shape[1]))
    if len(names) != g.shape[1]:
        raise NnsensError(f"{len(names)} feature names for {g.shape[1]} inputs; they must match")
    return {"feature_names": names, "mean": g.mean(0), "std": g.std(0, ddof=1) if len(g) > 1 else
            np.zeros(g.shape[1]), "rms": np.sqrt((g ** 2).mean(0)), "gradients": g}


def filter_normalized_direction(params: dict[str, torch.Tensor], generator: torch.Generator,
                                ignore_biasbn: bool = True) -> dict[str, torch.Tensor]:
    """A Gaussian random direction rescaled filter by filter to the norms of the weights (Li et al.
    2018): for each parameter with >= 2 dims, each slice along dim 0 (a Linear row / a conv filter)
    gets the norm of the matching weight slice.  1-D parameters (biases, BatchNorm) get a zero
    direction when ``ignore_biasbn``, else a copy of the weights."""
    out = {}
    for name, p in params.items():
        d = torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p)
        if p.dim() <= 1:
            d = torch.zeros_like(p) if ignore_biasbn else p.detach().clone()
        else:
            dn = d.reshape(d.shape[0], -1).norm(dim=1)
            pn = p.detach().reshape(p.shape[0], -1).norm(dim=1)
            d = d * (pn / (dn + 1e-10)).view(-1, *([1] * (p.dim() - 1)))
        out[name] = d
    return out


def _loss_fn(kind: str):
    if kind == "bce":
        return lambda out, y: nn.functional.binary_cross_entropy(
            out.reshape(-1).clamp(1e-7, 1 - 1e-7), y.reshape(-1).float())
    if kind == "cross_entropy":
        return lambda out, y: nn.functional.cross_entropy(out.reshape(out.shape[0], -1), y.long())
    return lambda out, y: ((out.reshape(-1) - y.reshape(-1).float()) ** 2).mean()


def choose_loss(out: torch.Tensor, y: np.ndarray, loss: str = "auto") -> str:
    """The loss ``"auto"`` stands for, given the model's outputs on the data and the target."""
    flat = out.reshape(out.shape[0], -1)
    if loss == "auto":
        if flat.shape[1] > 1:
            loss = "cross_entropy"
        elif (flat.min() >= 0 and flat.max() <= 1 and np.isin(y, (0, 1)).all()):
            loss = "bce"
        else:
            loss = "mse"
    if loss == "cross_entropy":
        if flat.shape[1] < 2:
            raise NnsensError("loss='cross_entropy' needs a model with several outputs; use 'mse' or 'bce'")
        if not (np.equal(np.mod(y, 1), 0).all() and y.min() >= 0 and y.max() < flat.shape[1]):
            raise NnsensError(f"loss='cross_entropy' needs class labels 0..{flat.shape[1] - 1} as target")
    elif flat.shape[1] != 1:
        raise NnsensError(f"loss={loss!r} needs a model with one output; this one has {flat.shape[1]}")
    if loss == "bce" and not np.isin(y, (0, 1)).all():
        raise NnsensError("loss='bce' needs a 0/1 target; use 'mse'")
    return loss


@dataclass(frozen=True, eq=False)
class LossSurface:
    """``loss[i, j]`` at ``theta + alphas[i] * d1 + betas[j] * d2``; ``center`` the loss at theta."""
    alphas: np.ndarray
    betas: np.ndarray
    loss: np.ndarray
    center: float
    loss_kind: str


def loss_surface(model: nn.Module, X, y, cfg: SurfaceConfig = SurfaceConfig(), device="auto",
                 batch_size: int | None = None, progress: Progress | None = None) -> LossSurface:
    """Loss on a 2-D grid around the trained weights, along two filter-normalised random directions.

    The grid points are evaluated in batches: ``vmap`` of ``functional_call`` over stacked parameter
    sets (one forward per batch).  The model is deep-copied in eval mode (BatchNorm uses its running
    statistics); the caller's model is never modified.
    """
    dev = resolve_device(device)
    m = _eval_copy(model, dev)
    Xt = torch.as_tensor(np.asarray(X, np.float32), device=dev)
    y = np.asarray(y, np.float64)
    if Xt.ndim < 2 or len(y) != len(Xt):
        raise NnsensError(f"X has shape {tuple(Xt.shape)} and y {y.shape}; give one target per row")
    if not np.isfinite(y).all():
        raise NnsensError("the target has NaN/inf values; fill or drop those rows")
    yt = torch.as_tensor(y, device=dev)
    params = {k: p.detach() for k, p in m.named_parameters()}
    if not params:
        raise NnsensError("the model has no parameters; a loss surface needs trainable weights")
    buffers = {k: b.detach() for k, b in m.named_buffers()}
    with torch.no_grad():
        out0 = m(Xt)
    kind = choose_loss(out0, y, cfg.loss)
    lf = _loss_fn(kind)
    gen = torch.Generator().manual_seed(cfg.seed)
    d1 = filter_normalized_direction(params, gen, cfg.ignore_biasbn)
    d2 = filter_normalized_direction(params, gen, cfg.ignore_biasbn)
    axis = torch.linspace(-cfg.span, cfg.span, cfg.grid, dtype=torch.float64)
    A, B = torch.meshgrid(axis, axis, indexing="ij")
    coords = torch.stack([A.reshape(-1), B.reshape(-1)], 1).to(dev)
    G = len(coords)
    if batch_size is None:
        per_point = out0.numel() * 4 * 8 + sum(p.numel() for p in params.values()) * 4 * 3
        batch_size = auto_batch_size(per_point, hi=G)

    def at(a, b_):
        return {k: params[k] + a.to(params[k].dtype) * d1[k] + b_.to(params[k].dtype) * d2[k]
                for k in params}

    def loss_at(p):
        return lf(functional_call(m, (p, buffers), (Xt,)), yt)

    def one(sl):
        c = coords[sl]
        try:
            return vmap(lambda ab: loss_at(at(ab[0], ab[1])))(c)
        except RuntimeError:  # modules functorch cannot batch (e.g. TorchScript): one grid point at a time
            return torch.stack([_loss_by_copy(m, at(ab[0], ab[1]), Xt, yt, lf) for ab in c])

    with torch.no_grad():
        vals = map_batches(one, G, batch_size, progress)
        center = float(lf(out0, yt))
    return LossSurface(axis.numpy(), axis.numpy(), vals.double().numpy().reshape(cfg.grid, cfg.grid),
                       center, kind)


def _loss_by_copy(m: nn.Module, p: dict, X, y, lf) -> torch.Tensor:
    saved = {k: t.detach().clone() for k, t in m.named_parameters()}
    try:
        for k, t in m.named_parameters():
            t.data.copy_(p[k])
        return lf(m(X), y)
    finally:
        for k, t in m.named_parameters():
            t.data.copy_(saved[k])
