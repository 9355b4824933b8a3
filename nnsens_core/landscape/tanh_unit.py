"""The one-tanh-unit experiment: configuration, validation, input derivatives of the loss
(torch.func) and training of K runs at once."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.func import jvp, vmap

from .. import _validate as v
from .._batching import Progress, auto_batch_size, map_batches, sub_progress
from ..device import resolve_device
from ..errors import NnsensError

TRENDS = ("increasing", "decreasing", "rises then falls", "falls then rises", "fluctuates", "flat",
          "undetermined")  # shape labels of a derivative curve (see trends.classify_trend)
DIRECTIONS = ("increasing", "decreasing", "flat", "undetermined")  # net direction (agreement)
READINGS = ("input_diagonal", "weight_diagonal", "hessian_row_sums", "hessian_first_column")
READING_LABELS = {"input_diagonal": "input-diagonal", "weight_diagonal": "weight-diagonal",
                  "hessian_row_sums": "Hessian row sums", "hessian_first_column": "first Hessian column"}
# What is differentiated w.r.t. what, per reading and order (L_i = (tanh(w.x_i + b) - y_i)^2,
# g_k = d^k L_i / dz^k at z = w.x_i + b; every value is averaged over the rows i).
READING_FORMULAS = {
    "input_diagonal": {1: "dL/dx_j = w_j g1", 2: "d²L/dx_j² = w_j² g2", 3: "d³L/dx_j³ = w_j³ g3"},
    "weight_diagonal": {1: "dL/dw_j = x_j g1", 2: "d²L/dw_j² = x_j² g2", 3: "d³L/dw_j³ = x_j³ g3"},
    "hessian_row_sums": {1: "dL/dw_j = x_j g1", 2: "Σ_l d²L/dw_j dw_l = x_j (Σ_l x_l) g2",
                         3: "Σ_l,m d³L/dw_j dw_l dw_m = x_j (Σ_l x_l)² g3"},
    "hessian_first_column": {1: "dL/dw_j = x_j g1", 2: "d²L/dw_j dw_1 = x_j x_1 g2",
                             3: "d³L/dw_j dw_1² = x_j x_1² g3"},
}
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
    ``reading`` (one of :data:`READINGS`, see :func:`reading_derivatives`) is the reading whose
    histories, per-sample quantiles and trends are shown first; the mean histories and agreement of
    every reading are always computed.  ``turn_share``: a change of direction counts in the shape
    label of a curve when it exceeds this share of the curve's range (see ``classify_trend``).
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
    reading: str = "input_diagonal"
    turn_share: float = 0.1

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
        v.one_of("reading", self.reading, READINGS)
        v.in_range("turn_share", self.turn_share, 0.0, 1.0, lo_open=True, hi_open=True)
        if self.min_falling_epochs < 3:
            raise NnsensError(f"min_falling_epochs={self.min_falling_epochs} must be >= 3 "
                              "(a rank correlation needs at least three points)")

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(self.seed + k for k in range(self.retrains))

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


def z_derivatives(X: torch.Tensor, W: torch.Tensor, b: torch.Tensor,
                  y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``g_k = d^k L_i / dz^k`` (k = 1, 2, 3) at ``z = w.x_i + b`` for ``P`` parameter sets.

    ``X`` (n, d), ``W`` (P, d), ``b`` (P,), ``y`` (n,) -> three (P, n); nested ``torch.func.jvp``
    (:func:`diagonal_derivatives` on the one-column input ``z``)."""
    P, n = len(W), len(X)
    Z = (W @ X.T + b[:, None]).reshape(-1, 1)
    g = diagonal_derivatives(_residual_loss, Z, y[None].expand(P, n).reshape(-1))
    return tuple(t.reshape(P, n) for t in g)


def _factor(reading: str, k: int, X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """The factor ``F`` with ``D_k[p, i, j] = g_k[p, i] F[p or 1, i or 1, j]`` (see
    :func:`reading_derivatives`)."""
    if reading == "input_diagonal":
        return (W ** k)[:, None, :]  # (P, 1, d)
    if reading == "weight_diagonal":
        c = X
    elif reading == "hessian_row_sums":
        c = X.sum(1, keepdim=True)
    elif reading == "hessian_first_column":
        c = X[:, :1]
    else:
        raise NnsensError(f"reading={reading!r} is not allowed; use one of {READINGS}")
    return (X * c ** (k - 1))[None]  # (1, n, d)


def readings_per_sample(X: torch.Tensor, W: torch.Tensor, b: torch.Tensor, y: torch.Tensor,
                        reading: str = "input_diagonal") -> tuple[torch.Tensor, ...]:
    """Per-sample 1st, 2nd, 3rd derivatives of one reading for ``P`` parameter sets: three (P, n, d).

    See :func:`reading_derivatives` for the definitions."""
    g = z_derivatives(X, W, b, y)
    return tuple(g[k - 1][:, :, None] * _factor(reading, k, X, W) for k in ORDERS)


def reading_derivatives(X: torch.Tensor, w: torch.Tensor, b: torch.Tensor, y: torch.Tensor,
                        reading: str = "input_diagonal") -> tuple[torch.Tensor, ...]:
    """The paper's "1st / 2nd / 3rd derivative" under one ``reading``: three (n, d) per-sample values.

    The network is one tanh unit with weights ``w`` (d,), bias ``b`` and per-sample loss
    ``L_i = (tanh(z_i) - y_i)^2``, ``z_i = w.x_i + b``.  Write ``g_k = d^k L_i / dz^k``.  The paper
    says "first, second and third derivatives of the loss" and writes them with respect to the
    weights (``dL/dw``) but plots one curve per *input feature*; which derivative that is is not
    stated unambiguously, so four readings are offered.  For feature ``j`` and order ``k``:

    ``"input_diagonal"`` (nnsens's original reading): the diagonal derivative in the input,
        ``d^k L_i / dx_ij^k = w_j^k g_k``.  Even orders do not depend on the sign of ``w_j``.
    ``"weight_diagonal"``: the diagonal derivative in the weight of feature ``j``,
        ``d^k L_i / dw_j^k = x_ij^k g_k`` (the diagonal of the weight Hessian for ``k = 2``).
    ``"hessian_row_sums"``: row ``j`` of the weight derivative tensor summed over the other indices,
        ``sum_l d^2 L_i / dw_j dw_l = x_ij s_i g_2`` with ``s_i = sum_l x_il``, and for ``k = 3``
        ``sum_{l,m} d^3 L_i / dw_j dw_l dw_m = x_ij s_i^2 g_3`` (the ``(k-1)``-th derivative of
        ``dL_i/dw_j`` along the all-ones direction); ``k = 1`` is the gradient ``x_ij g_1``.
    ``"hessian_first_column"``: the paper's eq. 4 writes the Hessian of the loss in the weights,
        ``H_jl = d^2 L / dw_j dw_l``; this reading takes its first column (``l = 1``, the weight of
        the first feature; the bias is not part of ``w``): ``d^2 L_i / dw_j dw_1 = x_ij x_i1 g_2``;
        for ``k = 3`` ``d^3 L_i / dw_j dw_1^2 = x_ij x_i1^2 g_3``; ``k = 1`` is the gradient.
        For ``j = 1`` it equals the weight diagonal.

    Inputs ``x`` are the values the network sees (standardised when the config says so).  Every
    order comes from nested ``torch.func.jvp`` in ``z`` and the chain rule (``z`` is linear in
    ``x`` and ``w``); the tests check each reading against plain autograd and finite differences.
    """
    return tuple(t[0] for t in readings_per_sample(X, w[None], b.reshape(1), y, reading))


def reading_means(X: torch.Tensor, W: torch.Tensor, b: torch.Tensor, y: torch.Tensor) -> dict:
    """Mean over the rows of every reading and order: ``{reading: {k: (P, d)}}`` (matrix products on
    ``g_k``, no (P, n, d) tensor)."""
    g = z_derivatives(X, W, b, y)
    n = len(X)
    s, x1 = X.sum(1), X[:, 0]
    out: dict = {r: {} for r in READINGS}
    for k in ORDERS:
        gk = g[k - 1]
        out["input_diagonal"][k] = gk.mean(1)[:, None] * W ** k
        out["weight_diagonal"][k] = gk @ X ** k / n
        out["hessian_row_sums"][k] = (gk * s ** (k - 1)) @ X / n
        out["hessian_first_column"][k] = (gk * x1 ** (k - 1)) @ X / n
    return out


def loss_input_derivatives(W: torch.Tensor, b: torch.Tensor, X: torch.Tensor, y: torch.Tensor,
                           batch_size: int | None = None,
                           reading: str = "input_diagonal") -> tuple[torch.Tensor, ...]:
    """Per-sample derivatives of ``L_i`` under ``reading`` (default: w.r.t. each input) for ``K``
    stacked units.

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
        ders = readings_per_sample(X[sl], W, b, y[sl], reading)  # (K, nb, d)
        return tuple(t.transpose(0, 1) for t in ders)  # (nb, K, d) to concatenate on dim 0

    out = map_batches(one, n, batch_size, out_device=None)
    return tuple(t.transpose(0, 1) for t in out)


# --------------------------------------------------------------------------- training

@dataclass(frozen=True, eq=False)
class TrainHistory:
    """Histories of ``K`` stacked one-tanh-unit runs (numpy, float64).

    ``epochs`` (T,) recorded epoch numbers; ``loss`` (K, T); ``weights`` (K, T, d); ``bias`` (K, T);
    ``mean[k]`` (K, T, d) mean over samples of the ``k``-th derivative (keys 1, 2, 3) under
    ``reading``; ``readings[r][k]`` (K, T, d) the same mean for every reading ``r`` of :data:`READINGS`;
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
    reading: str = "input_diagonal"
    readings: dict | None = None  # {reading: {k: (K, T, d)}} mean histories of every reading


def xavier_normal(d: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    """Xavier-normal weights of ``Linear(d, 1)``: ``N(0, 2 / (d + 1))``, from a generator seeded ``seed``."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(d, generator=gen, dtype=torch.float64).mul_(np.sqrt(2.0 / (d + 1))).to(dtype)


def train_tanh_units(X, y, cfg: LandscapeConfig = LandscapeConfig(), device="auto",
                     progress: Progress | None = None, deriv_batch_size: int | None = None,
                     ) -> TrainHistory:
    """Train ``cfg.retrains`` one-tanh-unit networks on prepared arrays (already scaled) together,
    then compute the input derivatives of every recorded epoch of every run.

    ``progress(done, total, stage)`` counts the training epochs (stage ``"training"``), then the
    (run, epoch) parameter sets whose derivatives are done (``"derivatives"``), out of one total.
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
            progress(epoch, total, stage="training")
    T = len(epochs)
    W_all = torch.stack(Ws, 1)  # (K, T, d)
    b_all = torch.stack(bs_, 1)  # (K, T)
    sub = sub_progress(progress, "derivatives", cfg.epochs, total)
    mean, quant, all_means = reading_histories(W_all.reshape(K * T, d), b_all.reshape(K * T), Xt,
                                               yt, chunk, sub, cfg.reading)
    rows = np.arange(n) if n <= FINAL_ROWS else np.unique(np.linspace(0, n - 1, FINAL_ROWS).round()
                                                             .astype(np.int64))
    ri = torch.as_tensor(rows, device=dev)
    final = {k: t.cpu().double().numpy() for k, t in zip(
        ORDERS, loss_input_derivatives(W_all[:, -1], b_all[:, -1], Xt[ri], yt[ri],
                                       reading=cfg.reading))}
    to_np = lambda t: t.cpu().double().numpy()  # noqa: E731
    return TrainHistory(
        epochs=np.asarray(epochs), loss=to_np(torch.stack(losses, 1)), weights=to_np(W_all),
        bias=to_np(b_all), mean={k: to_np(mean[k].reshape(K, T, d)) for k in ORDERS},
        quantiles={k: to_np(quant[k].reshape(K, T, len(QUANTILES), d)) for k in ORDERS},
        final=final, seeds=cfg.seeds, final_rows=rows, reading=cfg.reading,
        readings={r: {k: to_np(all_means[r][k].reshape(K, T, d)) for k in ORDERS} for r in READINGS})


def _deriv_chunk(n: int, d: int, sets: int) -> int:
    """Parameter sets per derivative batch: memory budget, and torch.quantile's 16M-element limit."""
    per_set = n * d * 4 * 60
    return max(1, min(sets, auto_batch_size(per_set), (2 ** 24 - 1) // max(1, n * d)))


def derivative_histories(W: torch.Tensor, b: torch.Tensor, X: torch.Tensor, y: torch.Tensor,
                         batch_size: int | None = None, progress: Progress | None = None,
                         reading: str = "input_diagonal"):
    """Mean and quantiles over samples of the three derivatives of ``reading`` for ``P`` parameter
    sets.

    ``W`` (P, d), ``b`` (P,) (e.g. every recorded epoch of every run, flattened) ->
    ``({1: (P, d), 2: ..., 3: ...}, {1: (P, len(QUANTILES), d), ...})``.  Batched over parameter
    sets with :func:`~nnsens_core._batching.map_batches` (results do not depend on ``batch_size``).
    """
    mean, quant, _ = reading_histories(W, b, X, y, batch_size, progress, reading)
    return mean, quant


def reading_histories(W: torch.Tensor, b: torch.Tensor, X: torch.Tensor, y: torch.Tensor,
                      batch_size: int | None = None, progress: Progress | None = None,
                      reading: str = "input_diagonal"):
    """:func:`derivative_histories` of ``reading`` plus the means of every reading,
    ``{reading: {k: (P, d)}}`` (:func:`reading_means`), in one pass."""
    P, d = W.shape
    batch_size = batch_size or _deriv_chunk(len(X), d, P)
    q = torch.tensor(QUANTILES, device=X.device, dtype=X.dtype)
    W, b = W.detach().to(X.device, X.dtype), b.detach().to(X.device, X.dtype)

    def one(sl):
        ders = readings_per_sample(X, W[sl], b[sl], y, reading)  # three (p, n, d)
        outs = []
        for t in ders:
            outs.append(t.mean(1))
            outs.append(torch.quantile(t, q, dim=1).permute(1, 0, 2))
        means = reading_means(X, W[sl], b[sl], y)
        outs.extend(means[r][k] for r in READINGS for k in ORDERS)
        return tuple(outs)

    out = map_batches(one, P, batch_size, progress, out_device=None)
    rest = iter(out[2 * len(ORDERS):])
    all_means = {r: {k: next(rest) for k in ORDERS} for r in READINGS}
    return ({k: out[2 * i] for i, k in enumerate(ORDERS)},
            {k: out[2 * i + 1] for i, k in enumerate(ORDERS)}, all_means)


# --------------------------------------------------------------------------- the paper's preset

def paper_preset() -> tuple[LandscapeConfig, list[dict]]:
    """The configuration closest to the paper and, per setting, where its value comes from.

    Returns ``(config, rows)``; each row is ``{"setting", "value", "source"}`` with ``source``
    ``"paper"`` (stated in the paper) or ``"nnsens default (not stated in the paper)"``.  The paper
    states the network (inputs -> one tanh unit), the MSE loss, Xavier (Glorot) initialisation,
    retraining, and that the derivatives are taken of the loss with respect to the weights
    (``dL/dw``); it plots one curve per feature, so the preset uses the weight-diagonal reading
    ``d^k L / dw_j^k`` (see :func:`reading_derivatives`).  Learning rate, optimizer, epochs and input
    scaling are not stated; they keep nnsens's defaults and are marked so.
    """
    d = LandscapeConfig()
    cfg = LandscapeConfig(reading="weight_diagonal")
    paper, ours = "paper", "nnsens default (not stated in the paper)"
    rows = [
        {"setting": "network", "value": "inputs -> one tanh unit", "source": paper},
        {"setting": "loss", "value": "MSE (tanh(w.x + b) - y)^2", "source": paper},
        {"setting": "initialisation", "value": "Xavier (Glorot) normal, bias 0", "source": paper},
        {"setting": "reading", "value": f"weight_diagonal: {READING_FORMULAS['weight_diagonal'][2]}",
         "source": paper + " (derivatives of the loss with respect to the weights)"},
        {"setting": "derivative orders", "value": "1, 2, 3", "source": paper},
        {"setting": "retrains", "value": d.retrains, "source": paper + " (retraining; K is ours)"},
        {"setting": "optimizer", "value": d.optimizer, "source": ours},
        {"setting": "lr", "value": d.lr, "source": ours},
        {"setting": "epochs", "value": d.epochs, "source": ours},
        {"setting": "standardize", "value": d.standardize, "source": ours},
        {"setting": "target_scaling", "value": d.target_scaling, "source": ours},
    ]
    return cfg, rows
