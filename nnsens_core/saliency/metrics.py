"""Agreement between saliency maps, localization against ground truth, and the sanity check.

All per-image metrics take maps shaped ``(N, H, W)``, or ``(N, D, H, W)`` for volumes (torch
tensors or numpy arrays, any real dtype; computed in float64 numpy; a single ``(H, W)`` map is one
image, a single volume needs its batch axis) and return a float64 array of shape ``(N,)``, one
value per image (volume). Masks have the maps' shape. "Pixel" below means voxel for volumes. A value is ``NaN`` where the metric is undefined for that image (the docstring says when);
summaries use NaN-aware means and report how many images counted.

Definitions (used everywhere in nnsens, also in the CLI's ``metrics.json``):

* **top-p% region** of a map: the pixels whose value is at or above the map's ``(1 - p)`` quantile
  (numpy's default linear interpolation). Ties at the threshold are all included, so a constant
  map selects every pixel.
* **top-k region**: exactly the ``k`` highest pixels; ties are broken by C-order pixel order
  (row-major; for volumes slice by slice, then row-major; the earlier pixel wins), so the region
  always has ``k`` pixels.
* **IoU** of two boolean regions: ``|A ∩ B| / |A ∪ B|``; NaN when both are empty.
* **Spearman**: Pearson correlation of the pixel ranks (ties get their average rank); NaN when
  either map is constant.
* **cosine**: ``<a, b> / (||a|| ||b||)`` over the flattened maps; NaN when either map is all zero.
* **GT IoU**: IoU between the top-k region of the map with ``k`` = area of the ground-truth mask
  (or the top-p% region when ``p`` is given) and the mask; NaN when the mask is empty.
* **pointing game** (Zhang et al. 2016): 1 when the map's maximum pixel (the first one in
  C order when several pixels share the maximum) lies inside the mask dilated by
  ``tolerance`` pixels (Euclidean distance, over every spatial axis, in pixel / voxel units, to
  the nearest mask pixel ``<= tolerance``; 0 means the mask itself), else 0; NaN when the mask is
  empty (a hit needs a non-empty mask).
* **relevance mass** (Arras et al. 2022): ``sum(map inside mask) / sum(map)`` with the map clipped
  at 0; NaN when the mask is empty or the clipped map sums to 0.

**Region of interest** (``within=``, optional everywhere): a boolean mask with the maps' shape (or
one spatial mask for every image) of the pixels that count, e.g. the ultrasound fan without the
burned-in text and black frame. Every metric is then computed over those pixels only, as if the
others did not exist: the top-p% / top-k regions are taken among the pixels inside, the ranks of
Spearman are ranks among them, a ground-truth mask keeps its part inside, the pointing game's
maximum is the maximum inside, relevance mass divides by the map's total inside. An image with
no pixel inside gets NaN. ``within=None`` (the default) is the whole image, computed exactly as
without the argument.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .. import stats
from .._batching import Progress
from .._hooks import get_module
from .._results import Result
from ..errors import NnsensError

# --------------------------------------------------------------------------- helpers

def _as_maps(maps, name: str = "maps") -> np.ndarray:
    a = maps.detach().cpu().numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps)
    if a.ndim == 2:
        a = a[None]
    if a.ndim not in (3, 4):
        raise NnsensError(f"{name} have shape {a.shape}; expected (N, H, W), (H, W) or, for "
                          "volumes, (N, D, H, W)")
    return a.astype(np.float64, copy=False)


def _as_masks(masks, like: np.ndarray, name: str = "mask") -> np.ndarray:
    m = masks.detach().cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
    if m.ndim == 2 and like.ndim == 3:
        m = m[None]
    if m.shape != like.shape:
        shown = m.shape[1:] if m.ndim == like.ndim else m.shape
        raise NnsensError(f"the {name} has shape {shown} but the maps are {like.shape[1:]} (for "
                          f"{like.shape[0]} image(s)); give one "
                          f"{'x'.join(map(str, like.shape[1:]))} mask per image")
    if m.dtype != bool:
        vals = np.unique(m)
        if not np.all(np.isin(vals, (0, 1))):
            raise NnsensError(f"the {name} must be binary (0/1 or bool); it has values such as "
                              f"{vals[:5].tolist()}")
        m = m.astype(bool)
    return m


def _pair(a, b, what: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_maps(a, f"{what} maps A"), _as_maps(b, f"{what} maps B")
    if a.shape != b.shape:
        raise NnsensError(f"maps A {a.shape} and maps B {b.shape} must have the same shape")
    return a, b


def _as_within(within, like: np.ndarray) -> np.ndarray | None:
    """The region of interest as a bool array of ``like``'s shape (one spatial mask broadcasts to
    every image), or None."""
    if within is None:
        return None
    w = within.detach().cpu().numpy() if isinstance(within, torch.Tensor) else np.asarray(within)
    if w.ndim == like.ndim - 1 and w.shape == like.shape[1:]:
        w = np.broadcast_to(w, like.shape)
    return _as_masks(w, like, "region of interest (within=)")


def _check_p(p: float) -> None:
    if not (isinstance(p, (int, float)) and 0 < p <= 1):
        raise NnsensError(f"p={p!r} must lie in (0, 1], e.g. 0.1 for the top 10% of pixels")


# --------------------------------------------------------------------------- regions

def top_region(maps, p: float, within=None) -> np.ndarray:
    """Boolean, the maps' shape ``(N, H, W)`` or ``(N, D, H, W)``: pixels at or above each map's
    ``(1 - p)`` quantile (top-p%); with ``within``, the quantile of the pixels inside and only
    pixels inside (an image with none inside: an empty region)."""
    _check_p(p)
    a = _as_maps(maps)
    flat = a.reshape(len(a), -1)
    w = _as_within(within, a)
    if w is not None:
        w = w.reshape(len(a), -1)
        out = np.zeros(flat.shape, dtype=bool)
        for i in range(len(a)):
            v = flat[i, w[i]]
            if v.size:
                out[i, w[i]] = v >= np.quantile(v, 1.0 - p)
        return out.reshape(a.shape)
    thr = np.quantile(flat, 1.0 - p, axis=1)
    return (flat >= thr[:, None]).reshape(a.shape)


def topk_region(maps, k, within=None) -> np.ndarray:
    """Boolean, the maps' shape: exactly ``k[i]`` highest pixels of map ``i`` (ties: C order); with
    ``within``, the ``k[i]`` highest among the pixels inside (``k[i]`` at most their number)."""
    a = _as_maps(maps)
    flat = a.reshape(len(a), -1)
    k = np.broadcast_to(np.asarray(k, dtype=np.int64), (len(a),))
    w = _as_within(within, a)
    if w is not None:
        w = w.reshape(len(a), -1)
        inside = w.sum(1)
        if (k < 0).any() or (k > inside).any():
            raise NnsensError(f"k={k.tolist()} must lie in 0..{inside.tolist()} (pixels inside the "
                              "region of interest per map)")
        out = np.zeros_like(flat, dtype=bool)
        for i in range(len(a)):
            idx = np.flatnonzero(w[i])
            out[i, idx[np.argsort(-flat[i, idx], kind="stable")[:k[i]]]] = True
        return out.reshape(a.shape)
    if (k < 0).any() or (k > flat.shape[1]).any():
        raise NnsensError(f"k={k.tolist()} must lie in 0..{flat.shape[1]} (pixels per map)")
    if np.isnan(flat).any():  # NaN sorts last: keep the sort's own order
        order = np.argsort(-flat, axis=1, kind="stable")
        out = np.zeros_like(flat, dtype=bool)
        for i in range(len(a)):
            out[i, order[i, :k[i]]] = True
        return out.reshape(a.shape)
    # The same pixels as a stable sort of -flat, without sorting indices: everything above the
    # k-th highest value, then the first ties with it in C order until k are taken.
    neg = -flat
    kth = np.sort(neg, axis=1)[np.arange(len(a)), np.maximum(k - 1, 0)][:, None]
    above = neg < kth
    tie = neg == kth
    need = k - above.sum(1)
    out = above | (tie & (np.cumsum(tie, axis=1) <= need[:, None]))
    out[k == 0] = False
    return out.reshape(a.shape)


def iou(region_a, region_b) -> np.ndarray:
    """``|A ∩ B| / |A ∪ B|`` per image for boolean ``(N, H, W)`` or ``(N, D, H, W)`` regions; NaN
    when both are empty."""
    ra = np.asarray(region_a, dtype=bool).reshape(len(region_a), -1)
    rb = np.asarray(region_b, dtype=bool).reshape(len(region_b), -1)
    inter = (ra & rb).sum(1).astype(np.float64)
    union = (ra | rb).sum(1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


# --------------------------------------------------------------------------- map vs map

def top_p_iou(a, b, p: float = 0.1, within=None) -> np.ndarray:
    """IoU of the top-p% regions of two maps (see module docstring), per image; with ``within``
    the regions are the top-p% of the pixels inside (NaN for an image with none inside)."""
    a, b = _pair(a, b, "top-p IoU")
    return iou(top_region(a, p, within), top_region(b, p, within))


def spearman(a, b, within=None) -> np.ndarray:
    """Spearman rank correlation over the pixels of each pair of maps (average ranks for ties);
    NaN when either map is constant. With ``within``: over the pixels inside only (NaN with fewer
    than 2 inside)."""
    a, b = _pair(a, b, "Spearman")
    w = _as_within(within, a)
    if w is None:
        return np.asarray(stats.spearman(a.reshape(len(a), -1), b.reshape(len(b), -1), axis=1))
    fa, fb, w = a.reshape(len(a), -1), b.reshape(len(b), -1), w.reshape(len(a), -1)
    out = np.full(len(a), np.nan)
    for i in range(len(a)):
        if w[i].sum() >= 2:
            out[i] = stats.spearman(fa[i, w[i]], fb[i, w[i]])
    return out


def cosine(a, b, within=None) -> np.ndarray:
    """Cosine similarity of the flattened maps; NaN when either map is all zero (with ``within``:
    over the pixels inside, the others counted as 0)."""
    a, b = _pair(a, b, "cosine")
    fa, fb = a.reshape(len(a), -1), b.reshape(len(b), -1)
    w = _as_within(within, a)
    if w is not None:
        w = w.reshape(len(a), -1)
        fa, fb = np.where(w, fa, 0.0), np.where(w, fb, 0.0)
    den = np.linalg.norm(fa, axis=1) * np.linalg.norm(fb, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (fa * fb).sum(1) / np.where(den > 0, den, 1), np.nan)


SIMILARITIES: dict[str, Callable[..., np.ndarray]] = {
    "spearman": spearman,
    "cosine": cosine,
    "top_p_iou": top_p_iou,
}


def pairwise_agreement(maps: Mapping[str, object], p: float = 0.1,
                       within=None) -> dict[str, np.ndarray]:
    """Mean agreement of every pair of methods: ``{"top_p_iou"|"spearman"|"cosine": (M, M)}``.

    Entry ``[i, j]`` is the NaN-mean over images of the metric between method ``i`` and ``j``
    (methods in the order of ``maps``); the diagonal compares a method with itself. ``within``:
    the region of interest (module docstring).
    """
    names = list(maps)
    out = {k: np.full((len(names), len(names)), np.nan) for k in ("top_p_iou", "spearman", "cosine")}
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if j < i:
                for k in out:
                    out[k][i, j] = out[k][j, i]
                continue
            if within is None:
                vals = {"top_p_iou": top_p_iou(maps[a], maps[b], p),
                        "spearman": spearman(maps[a], maps[b]), "cosine": cosine(maps[a], maps[b])}
            else:
                vals = {"top_p_iou": top_p_iou(maps[a], maps[b], p, within),
                        "spearman": spearman(maps[a], maps[b], within),
                        "cosine": cosine(maps[a], maps[b], within)}
            for k, v in vals.items():
                out[k][i, j] = np.nanmean(v) if np.isfinite(v).any() else np.nan
    return out


# --------------------------------------------------------------------------- chance levels

def smoothness(maps, within=None) -> np.ndarray:
    """Estimated smoothing width ``sigma`` (pixels) of each map ``(N,)``: the ``sigma`` of the
    Gaussian-smoothed white noise with the same lag-1 autocorrelation ``rho`` (mean over the
    spatial axes). For such noise the autocorrelation is Gaussian with variance ``2 sigma^2``, so
    ``rho = exp(-1 / (4 sigma^2))`` and ``sigma = sqrt(-1 / (4 ln rho))``, with
    ``rho = 1 - var(finite difference) / (2 var(map))`` (the estimate SPM-style smoothness
    estimation uses). 0 for maps rougher than white noise or constant maps. ``within``: the
    variance of the pixels inside and the differences of neighbours both inside."""
    a = _as_maps(maps)
    w = _as_within(within, a)
    out = np.zeros(len(a))
    for i, m in enumerate(a):
        if w is not None:
            wi = w[i]
            var = m[wi].var() if wi.sum() > 1 else 0.0
            if not var > 0:
                continue
            rhos = []
            for ax in range(m.ndim):
                if m.shape[ax] < 2:
                    continue
                both = np.logical_and(np.delete(wi, 0, axis=ax), np.delete(wi, -1, axis=ax))
                if both.sum() > 1:
                    rhos.append(1 - np.diff(m, axis=ax)[both].var() / (2 * var))
            if not rhos:
                continue
            rho = float(np.clip(np.mean(rhos), 0, 1 - 1e-9))
            out[i] = 0.0 if rho <= 1e-6 else float(np.sqrt(-1.0 / (4 * np.log(rho))))
            continue
        var = m.var()
        if not var > 0:
            continue
        rhos = [1 - np.diff(m, axis=ax).var() / (2 * var) for ax in range(m.ndim) if m.shape[ax] > 1]
        rho = float(np.clip(np.mean(rhos), 0, 1 - 1e-9))
        out[i] = 0.0 if rho <= 1e-6 else float(np.sqrt(-1.0 / (4 * np.log(rho))))
    return out


def random_like(maps, n: int = 50, seed: int = 0, within=None) -> np.ndarray:
    """``n`` random maps per map ``(n, N, *spatial)``: white noise blurred with the map's
    :func:`smoothness`, then given the map's own values by rank (histogram matching), so a random
    map has the same smoothness and the same value distribution and differs only in where its
    values lie. Seeded (``numpy.random.default_rng(seed)``). ``within``: smoothness and values of
    the pixels inside, which are the only ones shuffled (outside, each random map keeps the map's
    own values; metrics with the same ``within`` never read them)."""
    from .._filters import gaussian_blur
    a = _as_maps(maps)
    if not (isinstance(n, int) and n >= 1):
        raise NnsensError(f"n={n!r} must be a whole number >= 1 (random maps per map)")
    rng = np.random.default_rng(seed)
    w = _as_within(within, a)
    sig = smoothness(a) if w is None else smoothness(a, w)
    out = np.empty((n, *a.shape))
    for i, m in enumerate(a):
        noise = torch.as_tensor(rng.standard_normal((n, 1, *m.shape)), dtype=torch.float32)
        field = gaussian_blur(noise, float(sig[i]))[:, 0].numpy().reshape(n, -1)
        if w is None:
            out[:, i] = _by_rank(field, np.sort(m.reshape(-1))).reshape(n, *m.shape)
            continue
        inside = w[i].reshape(-1)
        flat = np.broadcast_to(m.reshape(-1), (n, m.size)).copy()
        flat[:, inside] = _by_rank(field[:, inside], np.sort(m.reshape(-1)[inside]))
        out[:, i] = flat.reshape(n, *m.shape)
    return out


def _by_rank(field: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` (sorted) placed by the rank of each row of ``field`` (n, P): the pixel with the
    r-th smallest field value (ties in C order) gets ``values[r]``."""
    out = np.empty(field.shape)
    np.put_along_axis(out, _stable_order(field), np.broadcast_to(values, field.shape), axis=1)
    return out


def _stable_order(x: np.ndarray) -> np.ndarray:
    """``np.argsort(x, axis=1, kind="stable")`` for finite float32 rows, by one (SIMD) sort of
    64-bit keys: the value's bits mapped to an order-preserving uint32 (``-0.0`` as ``0.0``) above
    the pixel index, so equal values keep their index order. ~3x faster than the stable argsort."""
    if x.dtype != np.float32 or x.shape[1] >= 2**32 or not np.isfinite(x).all():
        return np.argsort(x, axis=1, kind="stable")
    bits = (x + np.float32(0.0)).view(np.uint32)  # + 0.0 turns -0.0 into 0.0
    bits = np.where(bits >> 31 == 1, ~bits, bits | np.uint32(0x80000000)).astype(np.uint64)
    keys = (bits << np.uint64(32)) | np.arange(x.shape[1], dtype=np.uint64)
    keys.sort(axis=1)
    return (keys & np.uint64(0xFFFFFFFF)).astype(np.intp)


@dataclass(frozen=True)
class Chance:
    """The value a metric takes between random maps of the same smoothness: the ``mean`` and the
    central 95 % interval (``low``, ``high``) over ``n`` draws (each draw: the metric's mean over
    the images)."""
    mean: float
    low: float
    high: float
    n: int

    def text(self) -> str:
        if not np.isfinite(self.mean):
            return "n/a"
        return f"{self.mean:.2f} [{self.low:.2f}, {self.high:.2f}]"

    def beaten_by(self, value: float) -> bool:
        """True when ``value`` lies above the interval."""
        return bool(np.isfinite(value) and value > self.high)


def _metric_fn(metric, p: float | None, tolerance: float, within=None):
    if callable(metric):
        if within is not None:
            raise NnsensError("within= applies to the named metrics; a metric function "
                              "(maps_a, maps_b) -> (N,) restricts the pixels itself")
        return metric, False
    if within is None:
        table = {"spearman": (spearman, False), "cosine": (cosine, False),
                 "top_p_iou": ((lambda a, b: top_p_iou(a, b, p if p is not None else 0.1)), False),
                 "iou": ((lambda a, m: gt_iou(a, m, p)), True),
                 "pointing": ((lambda a, m: pointing_game(a, m, tolerance)), True),
                 "mass": (relevance_mass, True)}
    else:
        w = within
        table = {"spearman": ((lambda a, b: spearman(a, b, w)), False),
                 "cosine": ((lambda a, b: cosine(a, b, w)), False),
                 "top_p_iou": ((lambda a, b: top_p_iou(a, b, p if p is not None else 0.1, w)),
                               False),
                 "iou": ((lambda a, m: gt_iou(a, m, p, w)), True),
                 "pointing": ((lambda a, m: pointing_game(a, m, tolerance, w)), True),
                 "mass": ((lambda a, m: relevance_mass(a, m, w)), True)}
    if metric not in table:
        raise NnsensError(f"metric={metric!r} is unknown; use one of {', '.join(table)} or a "
                          "function (maps_a, maps_b) -> (N,)")
    return table[metric]


def chance_level(metric, map_a, map_b=None, *, masks=None, n: int = 50, seed: int = 0,
                 p: float | None = None, tolerance: float = 0.0, random_a=None,
                 random_b=None, within=None) -> Chance:
    """Chance level of ``metric`` for these maps: the metric between random maps of the same
    smoothness and values (:func:`random_like`; ``n`` draws, seeded).

    Map against map (``"spearman"``, ``"cosine"``, ``"top_p_iou"`` with ``p``, or a function
    ``(a, b) -> (N,)``): independent random versions of ``map_a`` and ``map_b``. Map against the
    ground truth (``"iou"`` with ``p``, ``"pointing"`` with ``tolerance``, ``"mass"``): random
    versions of ``map_a`` against the real ``masks``. Each draw gives the NaN-mean over images;
    returns their mean and 2.5 / 97.5 percentiles. ``random_a`` / ``random_b``: random maps
    already drawn with :func:`random_like` (e.g. once per method for a whole table; with
    ``within``, drawn with the same ``within``). ``within``: the region of interest (module
    docstring): random maps shuffle the values inside it and the metric counts only its pixels."""
    a = _as_maps(map_a)
    w = _as_within(within, a)
    fn, vs_gt = _metric_fn(metric, p, tolerance, w)
    rnd = (lambda x, s_: random_like(x, n, s_)) if w is None else \
        (lambda x, s_: random_like(x, n, s_, w))
    if vs_gt:
        if masks is None:
            raise NnsensError(f"metric {metric!r} compares maps with ground-truth masks; pass masks=")
        m = _as_masks(masks, a)
        ra = rnd(a, seed) if random_a is None else np.asarray(random_a)
        vals = [fn(ra[k], m) for k in range(len(ra))]
    else:
        b = a if map_b is None else _as_maps(map_b)
        _pair(a, b, "chance-level")
        ra = rnd(a, seed) if random_a is None else np.asarray(random_a)
        rb = rnd(b, seed + 1) if random_b is None else np.asarray(random_b)
        vals = [fn(ra[k], rb[k]) for k in range(min(len(ra), len(rb)))]
    means = np.array([np.nanmean(v) if np.isfinite(v).any() else np.nan for v in vals])
    means = means[np.isfinite(means)]
    if not len(means):
        return Chance(np.nan, np.nan, np.nan, len(vals))
    lo, hi = np.percentile(means, [2.5, 97.5])
    return Chance(float(means.mean()), float(lo), float(hi), len(vals))


# --------------------------------------------------------------------------- map vs ground truth

def gt_iou(maps, masks, p: float | None = None, within=None) -> np.ndarray:
    """IoU of the map's top-k region (k = mask area) or top-p% region (``p`` given) with the mask;
    NaN for an empty mask. With ``within``: the mask's part inside, the region among the pixels
    inside (k = the area of the mask's part inside)."""
    a = _as_maps(maps)
    m = _as_masks(masks, a)
    w = _as_within(within, a)
    if w is not None:
        m = m & w
    area = m.reshape(len(m), -1).sum(1)
    if w is None:
        region = topk_region(a, area) if p is None else top_region(a, p)
    else:
        region = topk_region(a, area, w) if p is None else top_region(a, p, w)
    out = iou(region, m)
    out[area == 0] = np.nan
    return out


def pointing_game(maps, masks, tolerance: float = 0.0, within=None) -> np.ndarray:
    """1.0 when the map's maximum lies within ``tolerance`` pixels (voxels: Euclidean distance over
    depth, rows and columns) of the mask, else 0.0; NaN for an empty mask (see module docstring
    for ties). With ``within``: the maximum among the pixels inside, the mask's part inside."""
    if not tolerance >= 0:
        raise NnsensError(f"tolerance={tolerance!r} must be >= 0 pixels")
    a = _as_maps(maps)
    m = _as_masks(masks, a)
    n = len(a)
    w = _as_within(within, a)
    if w is not None:
        m = m & w
        flat = np.where(w.reshape(n, -1), a.reshape(n, -1), -np.inf)
        peak = np.unravel_index(flat.argmax(1), a.shape[1:])
    else:
        peak = np.unravel_index(a.reshape(n, -1).argmax(1), a.shape[1:])   # one index array per axis
    out = np.full(n, np.nan)
    for i in range(n):
        where = np.nonzero(m[i])
        if len(where[0]) == 0:
            continue
        d2 = sum((w.astype(np.int64) - int(q[i])) ** 2 for w, q in zip(where, peak))
        out[i] = float(d2.min() <= tolerance ** 2)
    return out


def relevance_mass(maps, masks, within=None) -> np.ndarray:
    """Share of the (non-negative part of the) map inside the mask; NaN for an empty mask or a map
    that sums to 0. With ``within``: the map's total inside the region of interest, the mask's
    part inside."""
    a = np.clip(_as_maps(maps), 0, None)
    m = _as_masks(masks, a)
    w = _as_within(within, a)
    if w is not None:
        a = np.where(w, a, 0.0)
        m = m & w
    total = a.reshape(len(a), -1).sum(1)
    inside = (a * m).reshape(len(a), -1).sum(1)
    empty = m.reshape(len(m), -1).sum(1) == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, inside / np.where(total > 0, total, 1), np.nan)
    out[empty] = np.nan
    return out


def localization(maps, masks, p: float | None = None, tolerance: float = 0.0,
                 within=None) -> dict[str, np.ndarray]:
    """``{"iou", "pointing", "mass"}`` per image (see :func:`gt_iou`, :func:`pointing_game`,
    :func:`relevance_mass`); ``within``: the region of interest."""
    if within is None:
        return {"iou": gt_iou(maps, masks, p), "pointing": pointing_game(maps, masks, tolerance),
                "mass": relevance_mass(maps, masks)}
    return {"iou": gt_iou(maps, masks, p, within),
            "pointing": pointing_game(maps, masks, tolerance, within),
            "mass": relevance_mass(maps, masks, within)}


# --------------------------------------------------------------------------- dataset summary

def summarize(records, metrics: Sequence[str] = ("iou", "pointing", "mass"),
              by: Sequence[str] = ("method", "class")):
    """Mean ± std (NaN-aware, ddof=0) and count of valid values per group, plus an ``all`` row per
    method (over every class).

    ``records`` is a long table (pandas DataFrame) with one row per (image, method) and columns
    ``by`` + ``metrics``. Returns a DataFrame indexed by ``by`` with columns ``<metric>_mean``,
    ``<metric>_std``, ``<metric>_n``.
    """
    import pandas as pd
    df = pd.DataFrame(records)
    missing = [c for c in (*by, *metrics) if c not in df.columns]
    if missing:
        raise NnsensError(f"records lack the columns {missing}; they have {list(df.columns)}")
    by = list(by)

    def agg(g):
        row = {}
        for mt in metrics:
            v = g[mt].to_numpy(dtype=np.float64)
            v = v[np.isfinite(v)]
            row[f"{mt}_mean"] = float(v.mean()) if len(v) else np.nan
            row[f"{mt}_std"] = float(v.std()) if len(v) else np.nan
            row[f"{mt}_n"] = int(len(v))
        return pd.Series(row)

    parts = [df.groupby(by, sort=False)[list(metrics)].apply(agg)]
    if len(by) > 1:
        all_rows = df.groupby(by[0], sort=False)[list(metrics)].apply(agg)
        all_rows.index = pd.MultiIndex.from_tuples([(k, "all", *([""] * (len(by) - 2)))
                                                    for k in all_rows.index], names=by)
        parts.append(all_rows)
    out = pd.concat(parts)
    order = list(dict.fromkeys(df[by[0]]))
    return out.sort_index(level=0, key=lambda s: s.map({k: i for i, k in enumerate(order)}),
                          sort_remaining=False)


# --------------------------------------------------------------------------- sanity check

def randomizable_layers(model: nn.Module) -> list[str]:
    """Names of the Conv2d / Conv3d / Linear modules in forward-definition order (cascade goes in
    reverse)."""
    return [n for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear))]


@dataclass(frozen=True)
class RandomizationSettings:
    """Settings of a cascading randomization: similarity metric, seed, layers (top first)."""
    metric: str = "spearman"
    seed: int = 0
    layers: tuple[str, ...] = ()
    roi_share: float | None = None  # share of the pixels compared (None: every pixel)


@dataclass
class RandomizationResult(Result):
    """Cascading randomization (Adebayo et al. 2018).

    ``steps[0]`` is ``"original"``; ``steps[k]`` names the k-th layer randomized, cumulatively
    from the output towards the input. ``mean[method][k]``/``std[method][k]`` summarise the
    similarity (``metric``) over images between the maps at step ``k`` and the original maps.
    """
    steps: list[str]
    metric: str
    mean: dict[str, np.ndarray] = field(default_factory=dict)
    std: dict[str, np.ndarray] = field(default_factory=dict)
    config: RandomizationSettings = RandomizationSettings()
    seconds: float = 0.0

    def to_frame(self):
        import pandas as pd
        cols = {}
        for m in self.mean:
            cols[f"{m}_mean"] = self.mean[m]
            cols[f"{m}_std"] = self.std[m]
        return pd.DataFrame(cols, index=pd.Index(self.steps, name="randomized up to"))

    def _payload(self) -> dict:
        return {"steps": list(self.steps), "metric": self.metric, "mean": self.mean, "std": self.std}


def _reinit(module: nn.Module) -> None:
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()
    else:  # pragma: no cover - Conv2d / Linear always have it
        for prm in module.parameters(recurse=False):
            nn.init.normal_(prm, std=0.02)


def cascading_randomization(model: nn.Module, explain_fn: Callable[[nn.Module], Mapping[str, object]],
                            layers: Sequence[str] | None = None, metric: str = "spearman",
                            seed: int = 0, progress: Progress | None = None,
                            within=None) -> RandomizationResult:
    """Randomize the model's layers one by one, from the top down, cumulatively, and measure how
    similar each method's maps stay to the maps of the trained model.

    ``explain_fn(module)`` returns ``{method: (N, H, W) maps}`` (volumes: ``(N, D, H, W)``) for
    fixed inputs and classes. The model is deep-copied first (the caller's model is never
    changed); each layer in ``layers`` (default: every Conv2d/Conv3d/Linear, last first) is
    re-initialised with its ``reset_parameters()`` under ``torch.manual_seed(seed + step)``. ``metric`` is one of :data:`SIMILARITIES`; an image
    whose randomized map is constant (similarity undefined) counts as similarity 0, because such a
    map keeps none of the original ranking. A method that passes the sanity check shows a curve that
    falls towards 0 as more layers are randomized. ``within``: a region of interest, one boolean
    mask per input (``(N, H, W)``); the similarity then counts only the pixels inside (e.g. the
    ultrasound fan, not the black frame that every map leaves dark).
    """
    if metric not in SIMILARITIES:
        raise NnsensError(f"metric={metric!r} is unknown; use one of {sorted(SIMILARITIES)}")
    t0 = time.perf_counter()
    work = copy.deepcopy(model)
    if layers is None:
        layers = randomizable_layers(work)[::-1]
    layers = list(layers)
    for name in layers:
        if not any(True for _ in get_module(work, name).parameters()):
            raise NnsensError(f"layer {name!r} has no parameters to randomize; pick Conv2d/Conv3d/"
                              "Linear layers or blocks that contain them")
    sim = SIMILARITIES[metric]
    original = {k: _as_maps(v) for k, v in explain_fn(work).items()}
    if within is not None:
        within = _as_within(within, next(iter(original.values())))
    vals: dict[str, list[np.ndarray]] = {k: [np.ones(len(v))] for k, v in original.items()}
    if progress is not None:
        progress(1, len(layers) + 1)
    for step, name in enumerate(layers, start=1):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + step)
            for mod in get_module(work, name).modules():
                if any(True for _ in mod.parameters(recurse=False)):
                    _reinit(mod)
        maps = explain_fn(work)
        for k, orig in original.items():
            s = sim(orig, maps[k], within=within)
            vals[k].append(np.nan_to_num(s, nan=0.0))
        if progress is not None:
            progress(step + 1, len(layers) + 1)
    res = RandomizationResult(["original", *layers], metric,
                              config=RandomizationSettings(
                                  metric, int(seed), tuple(layers),
                                  None if within is None else float(within.mean())))
    for k, v in vals.items():
        arr = np.stack(v)  # (steps, N)
        res.mean[k], res.std[k] = arr.mean(1), arr.std(1)
    res.seconds = time.perf_counter() - t0
    return res
