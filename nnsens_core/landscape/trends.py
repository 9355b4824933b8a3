"""Statistics of the derivative histories (Spearman, trends, agreement) and the experiment's
result (:func:`run_landscape`)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .. import stats
from .._batching import Progress
from .._results import Result
from ..data import TabularData
from .tanh_unit import (
    TRENDS,
    LandscapeConfig,
    TrainHistory,
    train_tanh_units,
    validate_xy,
)

# --------------------------------------------------------------------------- statistics

def spearman_columns(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman correlation of every column of ``X`` (n, d) with ``y`` (n,) (ties: mean ranks).

    A constant column gives NaN."""
    X = np.asarray(X, np.float64)
    y = np.asarray(y, np.float64).reshape(-1)
    return np.asarray(stats.spearman(X, y[:, None], axis=0))


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


def trend_agreement(labels: np.ndarray, spearman: np.ndarray) -> np.ndarray:
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
class LandscapeResult(Result):
    """Everything the page and the CLI show.  Run ``k`` of the arrays uses seed ``cfg.seed + k``."""
    feature_names: tuple[str, ...]
    target_name: str
    config: LandscapeConfig
    history: TrainHistory
    spearman: np.ndarray  # (d,) feature vs target
    trends: list  # K Trend objects (2nd derivative)
    agree: np.ndarray  # (K, d) object: True / False / None
    scaling: dict = field(default_factory=dict)
    seconds: float = 0.0

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

    def to_frame(self):
        """One row per feature: Spearman, trend shares, majority trend and agreement."""
        import pandas as pd
        return pd.DataFrame(self.consistency()).set_index("feature")

    def histories(self) -> dict:
        """Per-run loss and mean-derivative histories (``epochs``, ``loss``, ``mean_d1..3``)."""
        h = self.history
        return {"epochs": h.epochs, "loss": h.loss, **{f"mean_d{k}": h.mean[k] for k in sorted(h.mean)}}

    def arrays(self) -> dict:
        return {k: np.asarray(v) for k, v in self.histories().items()}

    def _payload(self) -> dict:
        """Per feature the trend (run 0 and majority), Spearman and agreement."""
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
            "target": self.target_name, "scaling": self.scaling, "seeds": list(h.seeds),
            "final_loss_per_run": [float(x) for x in h.loss[:, -1]],
            "initial_loss_per_run": [float(x) for x in h.loss[:, 0]],
            "agreement_rate_run0": self.agreement_rate(0),
            "agreement_rate_all_runs": self.agreement_rate(),
            "features": feats,
        }


def _f(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


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
    t0 = time.perf_counter()
    X, y, names = validate_xy(X, y, feature_names)
    Xs, ys, info = prepare_xy(X, y, cfg)
    hist = train_tanh_units(Xs, ys, cfg, device, progress, deriv_batch_size)
    rho_fy = spearman_columns(X, y)
    trends = [classify_trend(hist.mean[2][k], hist.loss[k], hist.epochs, cfg.flat_tol,
                             cfg.min_falling_epochs, cfg.descent_share) for k in range(cfg.retrains)]
    agree = np.stack([trend_agreement(t.label, rho_fy) for t in trends])
    return LandscapeResult(names, target_name, cfg, hist, rho_fy, trends, agree, info,
                           time.perf_counter() - t0)


def run_landscape_tabular(data: TabularData, cfg: LandscapeConfig = LandscapeConfig(),
                          rows: str | None = None, device="auto",
                          progress: Progress | None = None) -> LandscapeResult:
    """:func:`run_landscape` on a :class:`~nnsens_core.data.TabularData` (optionally a row range)."""
    d = data.rows(rows) if rows else data
    return run_landscape(d.X, d.y, cfg, feature_names=d.feature_names, target_name=d.target_name,
                         device=device, progress=progress)


