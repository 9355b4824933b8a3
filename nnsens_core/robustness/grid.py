"""Hyperparameter robustness of the group mask (Thibeau-Sutre et al. 2020, Table 1): one group mask
per cell of a lambda1 x lambda2 grid, and how similar the masks are across lambda1 (for each fixed
lambda2) and across lambda2 (for each fixed lambda1)."""
from __future__ import annotations

import dataclasses
import functools
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .._batching import Progress
from .._results import Result
from ..device import inference_model, resolve_device
from ..errors import NnsensError
from ..executor import map_units
from ..saliency._common import check_model_input
from ..saliency.meaningful_mask import PAPER_MASK, MaskConfig, group_mask
from . import metrics as rm

METRICS = ("prob_cnn", "roi_cosine", "pixel_cosine", "spearman", "top_p_iou")
ACROSS = ("lambda1", "lambda2")


def check_lambdas(name: str, values) -> tuple[float, ...]:
    """A non-empty list of distinct finite lambdas >= 0, as a tuple of floats."""
    try:
        vals = tuple(float(x) for x in values)
    except (TypeError, ValueError):
        raise NnsensError(f"{name}={values!r} must be a list of numbers, e.g. [0.001, 0.01]") from None
    if not vals:
        raise NnsensError(f"{name} is empty; give at least one value, e.g. [0.001, 0.01]")
    bad = [x for x in vals if not (np.isfinite(x) and x >= 0)]
    if bad:
        raise NnsensError(f"{name} holds {bad}; every lambda must be a finite number >= 0")
    if len(set(vals)) != len(vals):
        raise NnsensError(f"{name}={list(vals)} lists a value twice; give distinct values")
    return vals


@dataclass(frozen=True)
class GridSettings:
    """The settings of a lambda grid: the values, the metrics, the top-p of ``top_p_iou``, how
    prob_CNN combines two masks and the mask config (its lambdas replaced per cell)."""
    lambda1s: tuple[float, ...]
    lambda2s: tuple[float, ...]
    metrics: tuple[str, ...] = ("prob_cnn", "pixel_cosine", "spearman", "top_p_iou")
    p: float = 0.1
    combine: str = "max"
    mask: MaskConfig = PAPER_MASK

    def __post_init__(self):
        object.__setattr__(self, "lambda1s", check_lambdas("lambda1s", self.lambda1s))
        object.__setattr__(self, "lambda2s", check_lambdas("lambda2s", self.lambda2s))
        ms = tuple(self.metrics)
        if not ms:
            raise NnsensError(f"metrics is empty; use some of {METRICS}")
        for m in ms:
            if m not in METRICS:
                raise NnsensError(f"metric {m!r} is unknown; use some of {METRICS}")
        object.__setattr__(self, "metrics", ms)
        if not (isinstance(self.p, (int, float)) and 0 < self.p <= 1):
            raise NnsensError(f"p={self.p!r} must lie in (0, 1]")
        if self.combine not in rm.COMBINES:
            raise NnsensError(f"combine={self.combine!r} is unknown; use one of {rm.COMBINES}")
        if not isinstance(self.mask, MaskConfig):
            raise NnsensError(f"mask must be a MaskConfig, got {type(self.mask).__name__}")


@dataclass
class LambdaGridResult(Result):
    """Group masks over a lambda1 x lambda2 grid and their pairwise similarities.

    ``masks``: keep masks ``(n1, n2, *spatial)`` (cell ``[i, j]`` = ``lambda1s[i]``,
    ``lambda2s[j]``); ``m``: the low-resolution masks ``(n1, n2, *grid)``; ``score_before`` (N,)
    and ``score_after`` ``(n1, n2, N)``: the explained class's score of each input unperturbed and
    perturbed by each cell's mask; ``tables[metric]["lambda1"]``: ``(n2, n1, n1)``, for each fixed
    ``lambda2s[j]`` the table across lambda1 (entry ``[j, i, k]`` compares cells ``[i, j]`` and
    ``[k, j]``); ``tables[metric]["lambda2"]``: ``(n1, n2, n2)``, for each fixed lambda1 the table
    across lambda2. Tables are symmetric; their diagonal compares a mask with itself (1 for the
    similarities -- NaN where a mask deletes nothing -- and the mask's own residual probability
    for prob_CNN).
    """
    lambda1s: tuple[float, ...]
    lambda2s: tuple[float, ...]
    masks: np.ndarray
    m: np.ndarray
    score_before: np.ndarray
    score_after: np.ndarray
    tables: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    config: GridSettings | None = None
    seconds: float = 0.0

    def _values(self, across: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if across not in ACROSS:
            raise NnsensError(f"across={across!r} must be one of {ACROSS}")
        return (self.lambda1s, self.lambda2s) if across == "lambda1" else (self.lambda2s, self.lambda1s)

    def table(self, metric: str, across: str = "lambda1", fixed: float | None = None):
        """One square table (DataFrame, rows and columns the varying lambda) of ``metric`` across
        ``across`` for the other lambda fixed at ``fixed`` (default: its first value)."""
        import pandas as pd
        if metric not in self.tables:
            raise NnsensError(f"metric {metric!r} was not computed; use one of {list(self.tables)}")
        varying, other = self._values(across)
        fixed = other[0] if fixed is None else float(fixed)
        if fixed not in other:
            raise NnsensError(f"fixed={fixed!r} is not a value of the other lambda; use one of "
                              f"{list(other)}")
        t = self.tables[metric][across][other.index(fixed)]
        idx = pd.Index(varying, name=across)
        return pd.DataFrame(t, index=idx, columns=idx.rename(f"{across} "))

    def to_frame(self):
        """Long table: ``metric``, ``across``, ``fixed`` (the other lambda), ``a``, ``b`` (the two
        varying values), ``value``; one row per ordered pair (the tables' every entry)."""
        import pandas as pd
        rows = []
        for metric, by in self.tables.items():
            for across in ACROSS:
                varying, other = self._values(across)
                t = by[across]
                for f, a, b in itertools.product(range(len(other)), range(len(varying)),
                                                 range(len(varying))):
                    rows.append({"metric": metric, "across": across, "fixed": other[f],
                                 "a": varying[a], "b": varying[b], "value": float(t[f, a, b])})
        return pd.DataFrame(rows, columns=["metric", "across", "fixed", "a", "b", "value"])

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"masks": self.masks, "m": self.m, "score_before": self.score_before,
               "score_after": self.score_after, "lambda1s": np.asarray(self.lambda1s),
               "lambda2s": np.asarray(self.lambda2s)}
        for metric, by in self.tables.items():
            for across, t in by.items():
                out[f"{metric}_across_{across}"] = t
        return out

    def _payload(self) -> dict:
        return {"lambda1s": list(self.lambda1s), "lambda2s": list(self.lambda2s),
                "tables": self.tables, "mean_score_before": float(np.mean(self.score_before)),
                "mean_score_after": self.score_after.mean(-1),
                "deleted_fraction": (1 - self.masks).reshape(*self.masks.shape[:2], -1).mean(-1)}


@dataclass(frozen=True)
class GridCell:
    """Cell ``[i, j]`` of the grid: ``lambda1``, ``lambda2``."""
    i: int
    j: int
    lambda1: float
    lambda2: float


def grid_cell(cell: GridCell, model, x: torch.Tensor, classes, cfg: MaskConfig, spec=None,
              device="cpu"):
    """The group mask of one cell (a plain function of its arguments: any executor can run it)."""
    c = dataclasses.replace(cfg, lambda1=cell.lambda1, lambda2=cell.lambda2)
    return group_mask(model, x, classes, c, spec=spec, device=device)


def lambda_grid(model, x: torch.Tensor, classes, lambda1s: Sequence[float],
                lambda2s: Sequence[float], cfg: MaskConfig = PAPER_MASK, *, atlas=None,
                metrics: Sequence[str] | None = None, p: float = 0.1, combine: str = "max",
                spec=None, device="auto", progress: Progress | None = None,
                map_fn: Callable[[Callable, Sequence[GridCell]], Iterable] | None = None
                ) -> LambdaGridResult:
    """One group mask (:func:`~nnsens_core.saliency.meaningful_mask.group_mask`, ``cfg`` with
    ``lambda1``/``lambda2`` replaced) per grid cell over the set ``x`` explained for ``classes``
    (e.g. every AD patient with its true class), then the pairwise similarity tables of
    ``metrics`` (default: every metric, ``roi_cosine`` only with an ``atlas``) across lambda1 and
    across lambda2 (see :class:`LambdaGridResult`; metrics in :mod:`.metrics`, prob_CNN evaluated
    on ``x``/``classes`` with ``cfg``'s reference).

    ``progress(done, total, stage)``: ``stage="masks"`` counts the masks (``n1 * n2``), then
    ``stage="similarities"`` the distinct mask pairs. ``map_fn(fn, cells)`` computes the masks
    elsewhere (one :class:`GridCell` per unit, e.g. an :mod:`~nnsens_core.executor`; default: in
    this process, in order).
    """
    t0 = time.perf_counter()
    if metrics is None:
        metrics = tuple(mt for mt in METRICS if mt != "roi_cosine" or atlas is not None)
    settings = GridSettings(tuple(lambda1s) if lambda1s is not None else (),
                            tuple(lambda2s) if lambda2s is not None else (),
                            tuple(metrics), p, combine, cfg)
    if "roi_cosine" in settings.metrics and atlas is None:
        raise NnsensError("metric 'roi_cosine' needs an atlas (integer region labels of the input "
                          "size); pass atlas=... or drop the metric")
    l1, l2 = settings.lambda1s, settings.lambda2s
    if spec is None:
        spec = getattr(model, "spec", None)
    dev = resolve_device(device)
    net = inference_model(model, dev)
    x, _ = check_model_input(net, x, spec, dev)
    spatial = tuple(x.shape[2:])
    if atlas is not None:
        atlas = rm.check_atlas(atlas, spatial)
    cells = list(itertools.product(range(len(l1)), range(len(l2))))
    units = [GridCell(i, j, l1[i], l2[j]) for i, j in cells]
    work = functools.partial(grid_cell, model=net, x=x, classes=classes, cfg=cfg, spec=spec,
                             device=dev)
    results = {(u.i, u.j): r for u, r in zip(units, map_units(work, units, map_fn, progress,
                                                                 "masks"))}
    first = results[0, 0]
    masks = np.stack([np.stack([results[i, j].mask for j in range(len(l2))]) for i in range(len(l1))])
    m = np.stack([np.stack([results[i, j].m for j in range(len(l2))]) for i in range(len(l1))])
    after = np.stack([np.stack([results[i, j].score_after for j in range(len(l2))])
                      for i in range(len(l1))])

    pairs = sorted({tuple(sorted((a, b))) for a in cells for b in cells
                    if a == b or a[0] == b[0] or a[1] == b[1]})
    values: dict[tuple, dict[str, float]] = {}
    for k, (a, b) in enumerate(pairs):
        ma, mb = masks[a], masks[b]
        vals: dict[str, float] = {}
        for metric in settings.metrics:
            if metric == "prob_cnn":
                vals[metric] = rm.prob_cnn(net, x, first.classes, ma, mb, combine=combine,
                                           reference=cfg.reference, constant=cfg.constant,
                                           blur_sigma=cfg.blur_sigma, spec=spec, device=dev,
                                           batch_size=cfg.batch_size)
            elif metric == "roi_cosine":
                vals[metric] = rm.roi_cosine(ma, mb, atlas)
            elif metric == "pixel_cosine":
                vals[metric] = rm.pixel_cosine(ma, mb)
            elif metric == "spearman":
                vals[metric] = rm.pixel_spearman(ma, mb)
            else:
                vals[metric] = rm.top_p_iou(ma, mb, p)
        values[a, b] = vals
        if progress is not None:
            progress(k + 1, len(pairs), stage="similarities")

    def val(a, b, metric):
        return values[tuple(sorted((a, b)))][metric]

    tables = {}
    for metric in settings.metrics:
        t1 = np.array([[[val((i, j), (k, j), metric) for k in range(len(l1))]
                        for i in range(len(l1))] for j in range(len(l2))])
        t2 = np.array([[[val((i, j), (i, k), metric) for k in range(len(l2))]
                        for j in range(len(l2))] for i in range(len(l1))])
        tables[metric] = {"lambda1": t1, "lambda2": t2}
    return LambdaGridResult(l1, l2, masks, m, first.score_before, after, tables, settings,
                            time.perf_counter() - t0)
