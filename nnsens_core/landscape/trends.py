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
    ORDERS,
    READING_FORMULAS,
    READING_LABELS,
    READINGS,
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
    """Per-feature trend of one history: ``label`` (d,) the shape of the curve (one of
    :data:`~nnsens_core.landscape.TRENDS`), ``direction`` (d,) its net direction (``"increasing"``,
    ``"decreasing"``, ``"flat"``, ``"undetermined"``; the agreement uses this), ``rho`` (d,),
    ``slope`` (d,), ``n_epochs`` the number of falling-loss epochs used."""
    label: np.ndarray
    rho: np.ndarray
    slope: np.ndarray
    n_epochs: int
    direction: np.ndarray | None = None


_FLAT_REL = 1e-5  # a curve whose range is below this share of its largest |value| is flat


def curve_shape(h, turn_share: float = 0.1) -> str:
    """Shape label of a 1-D curve: ``"increasing"``, ``"decreasing"``, ``"rises then falls"``,
    ``"falls then rises"``, ``"fluctuates"`` (two or more changes of direction) or ``"flat"``.

    Zig-zag segmentation: a change of direction counts only once the curve has moved back by more
    than ``turn_share`` of its range (max - min) from its running extreme, so small wiggles do not
    break a monotone curve.  ``"flat"``: the range is 0 or below 1e-5 of the largest |value|.
    """
    h = np.asarray(h, np.float64)
    rng = float(h.max() - h.min()) if len(h) else 0.0
    if len(h) < 2 or rng == 0 or rng <= _FLAT_REL * float(np.abs(h).max()):
        return "flat"
    theta = turn_share * rng
    legs: list[int] = []  # directions of the legs, +1 up, -1 down
    hi = lo = 0
    ext = 0
    for i in range(1, len(h)):
        if not legs:
            hi = i if h[i] > h[hi] else hi
            lo = i if h[i] < h[lo] else lo
            if h[hi] - h[lo] > theta:
                legs.append(1 if hi > lo else -1)
                ext = max(hi, lo)
        elif legs[-1] > 0:
            if h[i] > h[ext]:
                ext = i
            elif h[ext] - h[i] > theta:
                legs.append(-1)
                ext = i
        else:
            if h[i] < h[ext]:
                ext = i
            elif h[i] - h[ext] > theta:
                legs.append(1)
                ext = i
    if not legs:  # turn_share ~ 1: the whole range is one leg
        legs = [1 if int(np.argmax(h)) > int(np.argmin(h)) else -1]
    if len(legs) == 1:
        return "increasing" if legs[0] > 0 else "decreasing"
    if len(legs) == 2:
        return "rises then falls" if legs[0] > 0 else "falls then rises"
    return "fluctuates"


def classify_trend(history: np.ndarray, loss: np.ndarray, epochs: np.ndarray | None = None,
                   flat_tol: float = 0.05, min_falling_epochs: int = 3,
                   descent_share: float = 1.0, turn_share: float = 0.1) -> Trend:
    """Trend of each column of ``history`` (T, d) over the epochs where ``loss`` (T,) falls
    (see :func:`falling_mask` for ``descent_share``): the shape label (:func:`curve_shape`) and the
    net direction from the rank correlation ``rho`` of the values with the epoch (``"increasing"``
    if ``rho > flat_tol``, ``"decreasing"`` if ``rho < -flat_tol``, else ``"flat"``)."""
    history = np.asarray(history, np.float64)
    T, d = history.shape
    epochs = np.arange(T, dtype=np.float64) if epochs is None else np.asarray(epochs, np.float64)
    m = falling_mask(loss, descent_share)
    n = int(m.sum())
    if n < min_falling_epochs:
        nan = np.full(d, np.nan)
        und = np.full(d, "undetermined", dtype=object)
        return Trend(und, nan, nan.copy(), n, und.copy())
    e, h = epochs[m], history[m]
    rho = spearman_columns(h, e)
    ec = e - e.mean()
    slope = (ec[:, None] * (h - h.mean(0))).sum(0) / (ec ** 2).sum()
    direction = np.where(np.isnan(rho), "flat",
                         np.where(rho > flat_tol, "increasing",
                                  np.where(rho < -flat_tol, "decreasing", "flat"))).astype(object)
    label = np.array([curve_shape(h[:, j], turn_share) for j in range(d)], dtype=object)
    return Trend(label, rho, slope, n, direction)


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
    trends: list  # K Trend objects (2nd derivative of config.reading)
    agree: np.ndarray  # (K, d) object: True / False / None
    scaling: dict = field(default_factory=dict)
    seconds: float = 0.0
    reading_trends: dict = field(default_factory=dict)  # {reading: {order: [K Trend]}}
    reading_agree: dict = field(default_factory=dict)  # {reading: {order: (K, d) object}}

    @property
    def n_runs(self) -> int:
        return len(self.trends)

    def labels(self) -> np.ndarray:
        """(K, d) trend (shape) labels."""
        return np.stack([t.label for t in self.trends])

    def directions(self) -> np.ndarray:
        """(K, d) net directions of the trends (what the agreement uses)."""
        return np.stack([t.direction for t in self.trends])

    def agreement(self, reading: str, order: int) -> dict:
        """Agreement of one (reading, order) with the Spearman sign.

        ``rate``: share of determined (run, feature) pairs that agree, over all runs; ``rate_run0``;
        ``agree_run0`` / ``determined_run0``: counts in run 0; ``features_agreeing`` /
        ``features_disagreeing``: features whose determined runs mostly agree / mostly disagree
        (ties and never-determined features in neither); ``features``: d."""
        a = self.reading_agree[reading][order]
        det = [x for x in a.ravel() if x is not None]
        det0 = [x for x in a[0] if x is not None]
        agree_f = disagree_f = 0
        for j in range(a.shape[1]):
            col = [x for x in a[:, j] if x is not None]
            if col:
                share = float(np.mean(col))
                agree_f += share > 0.5
                disagree_f += share < 0.5
        return {"reading": reading, "order": order, "formula": READING_FORMULAS[reading][order],
                "rate": float(np.mean(det)) if det else None,
                "rate_run0": float(np.mean(det0)) if det0 else None,
                "agree_run0": int(sum(det0)), "determined_run0": len(det0),
                "features_agreeing": int(agree_f), "features_disagreeing": int(disagree_f),
                "features": int(a.shape[1]), "runs": self.n_runs}

    def agreement_table(self):
        """One row per (reading, order): agreement with the Spearman sign (:meth:`agreement`)."""
        import pandas as pd
        rows = [self.agreement(r, k) for r in READINGS for k in ORDERS if r in self.reading_agree]
        return pd.DataFrame(rows)

    def agreement_matrix(self, key: str = "rate") -> np.ndarray:
        """(len(READINGS), len(ORDERS)) of ``agreement(r, k)[key]`` (NaN where undetermined)."""
        out = np.full((len(READINGS), len(ORDERS)), np.nan)
        for i, r in enumerate(READINGS):
            for c, k in enumerate(ORDERS):
                if r in self.reading_agree:
                    val = self.agreement(r, k)[key]
                    out[i, c] = np.nan if val is None else val
        return out

    def verdict(self) -> str:
        """The result in words: per reading, how many features' 2nd-derivative trend agrees with the
        Spearman sign, and which readings / orders support the paper's claim."""
        if not self.reading_agree:
            return ""
        d = len(self.feature_names)
        parts = []
        for r in READINGS:
            a = self.agreement(r, 2)
            rate = "n/a" if a["rate"] is None else f"{a['rate']:.0%}"
            parts.append(f"under the {READING_LABELS[r]} reading for {a['features_agreeing']} of {d} "
                         f"features ({rate} of the determined run-feature pairs)")
        text = ("The 2nd derivative's trend agrees with the sign of the Spearman correlation, in most "
                f"of the {self.n_runs} run(s), " + "; ".join(parts) + ".")
        support = [(r, k, self.agreement(r, k)["rate"]) for r in READINGS for k in ORDERS]
        good = [f"{READING_LABELS[r]} {_ordinal(k)}" for r, k, x in support if x is not None and x >= 0.75]
        best = max(((x, r, k) for r, k, x in support if x is not None), default=None)
        if best is not None:
            text += (f" Best: the {_ordinal(best[2])} derivative under the {READING_LABELS[best[1]]} "
                     f"reading ({best[0]:.0%}); chance is 50%.")
        text += (" At least 75% agreement: " + ", ".join(good) + "." if good else
                 " No reading and order reaches 75% agreement: the claim is not supported here.")
        return text

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
        rt = self.reading_trends
        feats = []
        for j, name in enumerate(self.feature_names):
            feats.append({
                "feature": name, "spearman": _f(self.spearman[j]),
                "trend": str(t0.label[j]), "direction": str(t0.direction[j]),
                "trend_rho": _f(t0.rho[j]), "trend_slope": _f(t0.slope[j]),
                "agrees": self.agree[0, j],
                "majority_trend": cons[j]["majority_trend"], "consistency": cons[j]["consistency"],
                "share_agreeing": cons[j]["share_agreeing"],
                "trend_per_run": [str(t.label[j]) for t in self.trends],
                "trend_rho_per_run": [_f(t.rho[j]) for t in self.trends],
                "readings": {r: {str(k): {"trend": str(rt[r][k][0].label[j]),
                                          "direction": str(rt[r][k][0].direction[j]),
                                          "agrees": self.reading_agree[r][k][0, j]}
                                 for k in ORDERS} for r in rt},
            })
        h = self.history
        r = self.config.reading
        return {
            "method": "one tanh unit, MSE loss, Xavier-normal init; trend = Spearman(epoch, mean "
                      f"2nd derivative) over epochs where the loss falls; reading {r}: "
                      f"{READING_FORMULAS[r][2]}",
            "reading": r,
            "agreement_by_reading": [self.agreement(q, k) for q in READINGS for k in ORDERS
                                     if q in self.reading_agree],
            "verdict": self.verdict(),
            "target": self.target_name, "scaling": self.scaling, "seeds": list(h.seeds),
            "final_loss_per_run": [float(x) for x in h.loss[:, -1]],
            "initial_loss_per_run": [float(x) for x in h.loss[:, 0]],
            "agreement_rate_run0": self.agreement_rate(0),
            "agreement_rate_all_runs": self.agreement_rate(),
            "features": feats,
        }


def _ordinal(k: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}[k]


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
    r_trends: dict = {r: {} for r in READINGS}
    r_agree: dict = {r: {} for r in READINGS}
    for r in READINGS:
        for k in ORDERS:
            ts = [classify_trend(hist.readings[r][k][run], hist.loss[run], hist.epochs, cfg.flat_tol,
                                 cfg.min_falling_epochs, cfg.descent_share, cfg.turn_share)
                  for run in range(cfg.retrains)]
            r_trends[r][k] = ts
            r_agree[r][k] = np.stack([trend_agreement(t.direction, rho_fy) for t in ts])
    trends, agree = r_trends[cfg.reading][2], r_agree[cfg.reading][2]
    return LandscapeResult(names, target_name, cfg, hist, rho_fy, trends, agree, info,
                           time.perf_counter() - t0, r_trends, r_agree)


def run_landscape_tabular(data: TabularData, cfg: LandscapeConfig = LandscapeConfig(),
                          rows: str | None = None, device="auto",
                          progress: Progress | None = None) -> LandscapeResult:
    """:func:`run_landscape` on a :class:`~nnsens_core.data.TabularData` (optionally a row range)."""
    d = data.rows(rows) if rows else data
    return run_landscape(d.X, d.y, cfg, feature_names=d.feature_names, target_name=d.target_name,
                         device=device, progress=progress)


