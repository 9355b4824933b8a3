"""Ranks and Spearman rank correlation: the one implementation every nnsens module uses
(saliency metrics, landscape trends, the Sobol/PCA comparison, local-sensitivity agreement).

* :func:`rank` gives average ranks for ties (1 = smallest), equal to
  ``scipy.stats.rankdata(a, method="average", axis=axis)``.
* :func:`spearman` is the Pearson correlation of those ranks, equal to
  ``scipy.stats.spearmanr`` for every 1-D slice along ``axis``; it is NaN when either side is
  constant along the axis (no ranking to correlate). Ties are handled correctly, unlike the textbook
  ``1 - 6 sum d^2 / (n (n^2 - 1))``, which holds only for distinct values.
"""
from __future__ import annotations

import numpy as np


def _as_array(a) -> np.ndarray:
    if hasattr(a, "detach"):  # torch tensor, without importing torch here
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def rank(a, axis: int = -1) -> np.ndarray:
    """Average ranks (1 = smallest; tied values share the mean of their ranks) along ``axis``,
    float64, same shape as ``a`` (numpy array or torch tensor)."""
    a = _as_array(a)
    if a.ndim == 0:
        raise ValueError("rank needs an array with at least one dimension, got a scalar")
    x = np.moveaxis(a, axis, -1)
    n = x.shape[-1]
    order = np.argsort(x, axis=-1, kind="stable")
    s = np.take_along_axis(x, order, axis=-1)
    # tie groups in sorted order: a group starts where the value changes and ends before the next
    start = np.ones(s.shape, dtype=bool)
    start[..., 1:] = s[..., 1:] != s[..., :-1]
    end = np.ones(s.shape, dtype=bool)
    end[..., :-1] = start[..., 1:]
    pos = np.broadcast_to(np.arange(n), s.shape)
    first = np.maximum.accumulate(np.where(start, pos, 0), axis=-1)
    last = np.flip(np.minimum.accumulate(np.flip(np.where(end, pos, n), -1), axis=-1), -1)
    ranks_sorted = (first + last) / 2.0 + 1.0
    ranks_sorted[np.isnan(s).any(-1)] = np.nan  # like scipy: a slice holding NaN has NaN ranks
    out = np.empty_like(ranks_sorted)
    np.put_along_axis(out, order, ranks_sorted, axis=-1)
    return np.moveaxis(out, -1, axis)


def spearman(a, b, axis: int = -1) -> np.ndarray | float:
    """Spearman rank correlation of ``a`` and ``b`` along ``axis`` (ties: average ranks).

    ``a`` and ``b`` are ranked along ``axis`` separately and must then broadcast against each
    other, e.g. ``spearman(X, y[:, None], axis=0)`` correlates every column of ``X`` (n, d) with
    ``y`` (n,). Returns the correlations with ``axis`` removed (a float for 1-D inputs); NaN where
    either side is constant along ``axis``."""
    ra, rb = rank(a, axis), rank(b, axis)
    if ra.shape[axis] != rb.shape[axis]:
        raise ValueError(f"a has {ra.shape[axis]} values along axis {axis} but b has "
                         f"{rb.shape[axis]}; they must have the same length")
    ra = ra - ra.mean(axis, keepdims=True)
    rb = rb - rb.mean(axis, keepdims=True)
    num = (ra * rb).sum(axis)
    va, vb = (ra * ra).sum(axis), (rb * rb).sum(axis)
    va, vb = np.broadcast_arrays(va, vb)
    ok = (va > 0) & (vb > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(ok, num / np.sqrt(np.where(ok, va * vb, 1.0)), np.nan)
    r = np.clip(r, -1.0, 1.0)
    return float(r) if r.ndim == 0 else r
