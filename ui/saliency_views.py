"""Streamlit-free helpers of the Saliency comparison page: picture making, tables and figures.

Kept apart from ``pages/saliency.py`` so they can be tested without a running app.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from nnsens_core.saliency import metrics as mt
from nnsens_core.saliency import registry

METRIC_LABELS = {"iou": "GT IoU", "pointing": "pointing game", "mass": "relevance mass"}
SIM_LABELS = {"top_p_iou": "IoU of top-p% regions", "spearman": "Spearman ρ", "cosine": "cosine"}


def label(method: str) -> str:
    """The registry's display label of ``method`` (the name itself when it is not registered)."""
    return registry.label(method)


def upscale(img: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement of an (H, W[, 3]) uint8 picture (small images stay crisp)."""
    f = max(1, int(factor))
    return np.repeat(np.repeat(img, f, axis=0), f, axis=1)


def on_original(m: np.ndarray, placement=None, roi=None) -> np.ndarray:
    """A map (H, W) at the model's input -> float32 on the original's pixels
    (:func:`nnsens_core.preprocess.map_to_original`: smooth resize, NaN where the model never saw
    the original); NaN also outside ``roi`` (bool, the original's size), so it draws transparent.
    Without a ``placement`` the images are the originals and the map stays as it is."""
    from nnsens_core.preprocess import map_to_original
    out = np.asarray(m, np.float32) if placement is None else map_to_original(m, placement)
    if roi is not None:
        out = np.where(np.asarray(roi, bool), out, np.float32(np.nan))
    return out


def roi_caption(share: float) -> str:
    """The one line that says maps and numbers are restricted to the region of interest."""
    return (f"Maps and numbers inside the region of interest: {100 * share:.0f} % of the image "
            "(chosen on Model & data). Outside it the maps are transparent and no pixel counts in "
            "any agreement or ground-truth number (top-p % regions are taken among the pixels "
            "inside).")


def approx_caption(method: str, report: dict | None) -> str:
    """The one line saying that ``method``'s maps are approximate and by how much (its settings
    and :func:`nnsens_core._approx.describe_error`; the worst over the batches when there were
    several); '' for exact maps (``report`` None or empty)."""
    if not report:
        return ""
    from nnsens_core._approx import describe_error
    how = []
    if report.get("tau"):
        how.append(f"τ = {report['tau']:g}")
    if report.get("drill_top") is not None and report["drill_top"] < 1:
        how.append(f"drill-down on the top {report['drill_top']:.0%} of positions")
    parts = int(report.get("parts", 1))
    return (f"{label(method)}{' (' + ', '.join(how) + ')' if how else ''}: "
            f"{describe_error(report)}"
            + (f", the worst over {parts} batches of images" if parts > 1 else "") + ".")


def outline(rgb: np.ndarray, mask: np.ndarray, colour=(0, 255, 0)) -> np.ndarray:
    """``rgb`` (H, W, 3) uint8 with the boundary pixels of the bool ``mask`` (H, W) painted."""
    out = np.array(rgb, copy=True)
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=2)
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return out
    pad = np.pad(m, 1, constant_values=False)
    interior = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    out[m & ~interior] = colour
    return out


def prob_figure(probs: np.ndarray, class_names: Sequence[str], true: int, pred: int) -> go.Figure:
    """Horizontal bars of the softmax probabilities; the true class is marked."""
    names = [f"{c}{' (true)' if k == true else ''}" for k, c in enumerate(class_names)]
    colours = ["#2ca02c" if k == pred == true else "#d62728" if k == pred else "#9aa5b1"
               for k in range(len(class_names))]
    fig = go.Figure(go.Bar(x=np.asarray(probs, float), y=names, orientation="h", marker_color=colours,
                           text=[f"{p:.3f}" for p in probs], textposition="auto"))
    fig.update_layout(height=60 + 36 * len(names), margin=dict(l=10, r=10, t=10, b=10),
                      xaxis=dict(range=[0, 1], title="probability"), yaxis=dict(autorange="reversed"))
    return fig


def pairwise_table(maps: Mapping[str, np.ndarray], p: float, chance: int = 0,
                   seed: int = 0, within=None) -> pd.DataFrame:
    """One row per pair of methods: mean over images of top-p% IoU, Spearman and cosine; with
    ``chance`` > 0 also each number's chance level (``mean [2.5 %, 97.5 %]`` over ``chance``
    draws of random maps of the same smoothness, :func:`metrics.chance_level`). ``within``: the
    region of interest ((N, H, W) bool) every number is computed inside."""
    ag = mt.pairwise_agreement(maps, p, within=within)
    names = list(maps)
    rand = {m: mt.random_like(maps[m], chance, seed + k, within=within)
            for k, m in enumerate(names)} if chance else {}
    rows = []
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            row = {"method A": label(a), "method B": label(names[j]),
                   f"IoU top-{p:.0%}": ag["top_p_iou"][i, j], "Spearman ρ": ag["spearman"][i, j],
                   "cosine": ag["cosine"][i, j]}
            if chance:
                for k, col in (("top_p_iou", f"IoU top-{p:.0%}"), ("spearman", "Spearman ρ")):
                    ch = mt.chance_level(k, maps[a], maps[names[j]], p=p, random_a=rand[a],
                                         random_b=rand[names[j]], within=within)
                    row[f"{col} chance"] = ch.text()
            rows.append(row)
    return pd.DataFrame(rows)


def agreement_matrix(maps: Mapping[str, np.ndarray], p: float, which: str,
                     within=None) -> go.Figure:
    ag = mt.pairwise_agreement(maps, p, within=within)[which]
    names = [label(m) for m in maps]
    zmin = -1 if which == "spearman" else 0
    fig = go.Figure(go.Heatmap(z=ag, x=names, y=names, zmin=zmin, zmax=1, colorscale="RdBu_r"
                               if which == "spearman" else "Viridis",
                               text=np.round(ag, 2), texttemplate="%{text}"))
    title = SIM_LABELS[which] + (f" (p = {p:.0%})" if which == "top_p_iou" else "")
    fig.update_layout(title=title, height=140 + 40 * len(names), margin=dict(l=10, r=10, t=50, b=10))
    fig.update_yaxes(autorange="reversed")
    return fig


def localization_table(maps: Mapping[str, np.ndarray], mask: np.ndarray, p: float | None,
                       tolerance: float, chance: int = 0, seed: int = 0,
                       within=None) -> pd.DataFrame:
    """GT IoU, pointing game and relevance mass per method for the maps of one or more images;
    with ``chance`` > 0 also each metric's chance level (random maps of the same smoothness
    against the same masks, :func:`metrics.chance_level`) as text columns. ``within``: the region
    of interest every number is computed inside."""
    rows = []
    mask = np.asarray(mask, dtype=bool)
    for m, a in maps.items():
        a = np.asarray(a)
        a = a[None] if a.ndim == 2 else a
        masks = np.broadcast_to(mask, a.shape)
        w = None if within is None else np.broadcast_to(np.asarray(within, bool), a.shape)
        loc = mt.localization(a, masks, p, tolerance, within=w)
        row = {"method": label(m), **{METRIC_LABELS[k]: float(np.nanmean(v)) if np.isfinite(v).any()
                                     else np.nan for k, v in loc.items()}}
        if chance:
            rand = mt.random_like(a, chance, seed, within=w)
            for k in loc:
                row[f"{METRIC_LABELS[k]} chance"] = mt.chance_level(
                    k, a, masks=masks, p=p, tolerance=tolerance, random_a=rand, within=w).text()
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")


CHANCE_NOTE = ("Chance: the same metric between random maps of the same smoothness and values "
               "(Gaussian-smoothed noise whose width matches each map's lag-1 autocorrelation, "
               "given the map's own values by rank): mean [95 % interval] over {n} seeded draws. "
               "A value inside the interval is what unrelated maps would score.")


def summary_display(summary: pd.DataFrame) -> pd.DataFrame:
    """``metrics.summarize`` output as readable ``mean ± std`` strings (n in its own column)."""
    out = pd.DataFrame(index=summary.index)
    for k, nm in METRIC_LABELS.items():
        mean, std = summary[f"{k}_mean"], summary[f"{k}_std"]
        out[nm] = [("n/a" if not np.isfinite(a) else f"{a:.3f} ± {s:.3f}") for a, s in zip(mean, std)]
    out["n"] = summary["iou_n"].astype(int)
    out.index = out.index.set_levels([label(m) for m in out.index.levels[0]], level=0) \
        if isinstance(out.index, pd.MultiIndex) else out.index
    return out


def sanity_figure(res: mt.RandomizationResult) -> go.Figure:
    """One curve per method: mean similarity to the original maps ± std band, per cascade step."""
    from ui import plots
    series = {label(m): (res.mean[m], res.std[m]) for m in res.mean}
    fig = plots.band_lines(range(len(res.steps)), series,
                           title=f"Cascading randomization: {SIM_LABELS.get(res.metric, res.metric)} "
                                 "to the original maps", xaxis="layers randomized (top down)",
                           yaxis=SIM_LABELS.get(res.metric, res.metric))
    fig.update_xaxes(tickmode="array", tickvals=list(range(len(res.steps))), ticktext=list(res.steps),
                     tickangle=-45)
    return fig


def filtered_indices(labels: np.ndarray, preds: np.ndarray, classes: Sequence[int],
                     correctness: str) -> np.ndarray:
    """Dataset indices whose true label is in ``classes`` and whose prediction is ``correct``,
    ``incorrect`` or ``all``."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    keep = np.isin(labels, list(classes))
    if correctness == "correct":
        keep &= labels == preds
    elif correctness == "incorrect":
        keep &= labels != preds
    return np.nonzero(keep)[0]


def per_class_subset(indices: np.ndarray, labels: np.ndarray, per_class: int) -> np.ndarray:
    """The first ``per_class`` of ``indices`` of every class (dataset order kept)."""
    labels = np.asarray(labels)
    counts: dict[int, int] = {}
    out = []
    for i in indices:
        c = int(labels[i])
        if counts.get(c, 0) < per_class:
            counts[c] = counts.get(c, 0) + 1
            out.append(int(i))
    return np.asarray(out, dtype=np.int64)


# ----------------------------------------------------------------------------- progress, shared maps
UNITS = {"occlusion": "positions", "am": "steps", "mask": "steps", "ig": "passes",
         "smoothgrad": "passes", "gradient": "passes", "gradxinput": "passes",
         "sensitivity": "passes"}
"""What each method's progress counts (``progress(done, total)`` of its core function)."""


def unit(method: str) -> str:
    return UNITS.get(method, "steps")


def progress_text(k: int, n: int, label_: str, done: int, total: int, unit_: str,
                  seconds: float) -> str:
    """``"2/4 · Occlusion 1,200/3,025 positions · ~40 s left"`` (the time left of the current
    method, from its rate so far; none before its first report)."""
    left = ""
    if 0 < done < total:
        left = f" · ~{seconds / done * (total - done):.0f} s left"
    elif done >= total > 0:
        left = " · done"
    return f"{k + 1}/{n} · {label_} {done:,}/{total:,} {unit_}{left}"


class MethodsProgress:
    """One bar for several methods run one after another, moving within each method.

    ``update(fraction, text)`` draws the bar (e.g. the ``st.progress`` element of a
    ``ui.widgets.Progress``); ``labels`` / ``units`` name each method and what its progress counts;
    ``on_done()`` runs at :meth:`done`. :meth:`method` gives method ``k``'s
    ``progress(done, total, stage="")`` callback; :meth:`finished` marks it done."""

    def __init__(self, update, labels, units, on_done=None, clock=None):
        import time
        self.update, self.labels, self.units = update, list(labels), list(units)
        self.on_done, self.clock = on_done, clock or time.perf_counter
        if self.labels:
            self.update(0.0, progress_text(0, len(self.labels), self.labels[0], 0, 0, self.units[0], 0.0))

    def method(self, k: int):
        start = self.clock()
        n = len(self.labels)

        def progress(done: int, total: int, stage: str = "") -> None:
            frac = (k + min(1.0, done / max(total, 1))) / max(n, 1)
            self.update(min(1.0, frac), progress_text(k, n, self.labels[k], int(done), int(total),
                                                      self.units[k], self.clock() - start))
        return progress

    def finished(self, k: int) -> None:
        n = len(self.labels)
        self.update(min(1.0, (k + 1) / max(n, 1)), f"{k + 1}/{n} · {self.labels[k]} done")

    def done(self) -> None:
        if self.on_done is not None:
            self.on_done()


class SharedMaps:
    """A process-wide, thread-safe LRU cache of computed maps (numpy arrays) bounded by bytes:
    the saliency page's maps shared across sessions (keys hold the model's content id, never an
    upload's name)."""

    def __init__(self, max_bytes: int = 256 * 2**20):
        import threading
        from collections import OrderedDict
        self.max_bytes, self._lock = int(max_bytes), threading.Lock()
        self._items: OrderedDict = OrderedDict()
        self._info: dict = {}
        self._bytes = 0

    def get(self, key):
        with self._lock:
            got = self._items.get(key)
            if got is not None:
                self._items.move_to_end(key)
            return got

    def info(self, key) -> dict | None:
        """What the method reported with the map of ``key`` (e.g. ``{"approx": ...}``), if any."""
        with self._lock:
            return self._info.get(key)

    def put(self, key, value: np.ndarray, info: dict | None = None) -> None:
        """Keep ``value`` (and ``info``, the method's small report, dropped with it)."""
        value = np.asarray(value)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[key] = value
            self._info.pop(key, None)
            if info:
                self._info[key] = dict(info)
            self._bytes += value.nbytes
            while self._bytes > self.max_bytes and len(self._items) > 1:
                gone, dropped = self._items.popitem(last=False)
                self._info.pop(gone, None)
                self._bytes -= dropped.nbytes

    def __len__(self) -> int:
        return len(self._items)


_SHARED = SharedMaps()


def shared_maps() -> SharedMaps:
    """The process-wide :class:`SharedMaps` of the saliency page."""
    return _SHARED


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str]) -> go.Figure:
    """The confusion matrix as a heatmap: true classes down, predicted across, counts in cells
    (colour: share of the true class's images)."""
    m = np.asarray(matrix, dtype=float)
    share = m / np.maximum(m.sum(1, keepdims=True), 1)
    names = list(class_names)
    fig = go.Figure(go.Heatmap(z=share, x=names, y=names, zmin=0, zmax=1, colorscale="Blues",
                               text=m.astype(int), texttemplate="%{text}",
                               colorbar=dict(title="share of row")))
    fig.update_layout(height=160 + 40 * len(names), margin=dict(l=10, r=10, t=40, b=10),
                      title="Confusion matrix", xaxis_title="predicted", yaxis_title="true")
    fig.update_yaxes(autorange="reversed")
    return fig
