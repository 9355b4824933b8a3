"""Training robustness (Thibeau-Sutre et al. 2020): the same architecture retrained with several
seeds (runs) and on several cross-validation folds, one group mask per trained network, and how
similar the masks of two runs (inter-run) or two folds (inter-fold) are.

Each (run, fold) is an independent unit of work computed by the plain function :func:`run_unit`
(a :class:`Unit` in, a :class:`UnitResult` out), so the units can go to any executor: pass
``map_fn`` (e.g. ``lambda f, units: ray_map(f, units)``) to :func:`training_robustness`; by default
they run one after the other in this process.
"""
from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import _validate as v
from .._batching import Progress, map_batches
from .._results import Result
from ..device import inference_model, resolve_device
from ..errors import NnsensError
from ..executor import map_units
from ..saliency.meaningful_mask import (
    PAPER_MASK,
    GroupMaskResult,
    MaskConfig,
    group_mask,
)
from ..training import stratified_folds
from ..zoo import module_of
from . import metrics as rm

DESIGNS = ("cross", "full")
MASK_ON = ("all", "val")
KINDS = ("inter_run", "inter_fold")

TrainFn = Callable[[int, np.ndarray, np.ndarray], torch.nn.Module]


@dataclass(frozen=True)
class RetrainSettings:
    """Settings of a training-robustness study.

    ``n_runs`` seeds (``seeds``, default ``0 .. n_runs - 1``) and ``k_folds`` stratified folds
    (split once with ``split_seed``, the same for every run). ``design="cross"``: every run on fold
    0 plus run 0 on every fold (``n_runs + k_folds - 1`` trainings); ``"full"``: every run on every
    fold (``n_runs * k_folds``). Each trained network gets a group mask (``mask``) of the inputs of
    class ``mask_class`` (``mask_on="all"``: all of them; ``"val"``: those of the unit's held-out
    fold), explained for that class. ``top_n``: most-masked regions per mask; ``combine``: how
    prob_CNN combines two masks.
    """
    n_runs: int = 3
    k_folds: int = 3
    design: str = "cross"
    seeds: tuple[int, ...] = ()
    split_seed: int = 0
    mask_class: int = 1
    mask_on: str = "all"
    top_n: int = 5
    combine: str = "max"
    mask: MaskConfig = PAPER_MASK

    def __post_init__(self):
        v.positive("n_runs", self.n_runs, integer=True)
        v.positive("k_folds", self.k_folds, integer=True)
        if self.k_folds < 2:
            raise NnsensError(f"k_folds={self.k_folds} must be >= 2 (cross-validation)")
        v.one_of("design", self.design, DESIGNS)
        seeds = tuple(int(s) for s in self.seeds) or tuple(range(self.n_runs))
        if len(seeds) != self.n_runs or len(set(seeds)) != len(seeds):
            raise NnsensError(f"seeds={list(self.seeds)} must be {self.n_runs} distinct integers "
                              "(one per run), or empty for 0..n_runs-1")
        object.__setattr__(self, "seeds", seeds)
        v.one_of("mask_on", self.mask_on, MASK_ON)
        v.positive("top_n", self.top_n, integer=True)
        v.one_of("combine", self.combine, rm.COMBINES)
        if not isinstance(self.mask, MaskConfig):
            raise NnsensError(f"mask must be a MaskConfig, got {type(self.mask).__name__}")


@dataclass(frozen=True, eq=False)
class Unit:
    """One training: run ``run`` (seed ``seed``) on fold ``fold`` (``train_idx`` / ``val_idx``)."""
    run: int
    fold: int
    seed: int
    train_idx: np.ndarray
    val_idx: np.ndarray


@dataclass(eq=False)
class UnitResult:
    """A trained network, its group mask and its balanced accuracy on its held-out fold."""
    run: int
    fold: int
    seed: int
    model: torch.nn.Module
    mask: GroupMaskResult
    balanced_accuracy: float
    n_train: int
    n_val: int
    seconds: float = 0.0


def plan_units(labels, settings: RetrainSettings) -> list[Unit]:
    """The trainings of a study (see :class:`RetrainSettings` for the designs)."""
    folds = stratified_folds(labels, settings.k_folds, settings.split_seed)
    if settings.design == "full":
        keys = list(itertools.product(range(settings.n_runs), range(settings.k_folds)))
    else:
        keys = [(r, 0) for r in range(settings.n_runs)] + [(0, f) for f in range(1, settings.k_folds)]
    return [Unit(r, f, settings.seeds[r], folds[f][0], folds[f][1]) for r, f in keys]


@torch.no_grad()
def _predict(model, x: torch.Tensor, dev, batch_size: int) -> np.ndarray:
    net = inference_model(model, dev)
    return map_batches(lambda sl: net(x[sl].to(dev)).argmax(-1), len(x), batch_size).numpy()


def run_unit(unit: Unit, x: torch.Tensor, labels, train_fn: TrainFn,
             settings: RetrainSettings = RetrainSettings(), spec=None, device="cpu") -> UnitResult:
    """Train (``train_fn(unit.seed, unit.train_idx, unit.val_idx)``), score on the held-out fold
    (balanced accuracy of the argmax) and compute the group mask of the unit (a plain function of
    its arguments: any executor can run it)."""
    t0 = time.perf_counter()
    y = np.asarray(labels).reshape(-1)
    dev = resolve_device(device)
    model = train_fn(int(unit.seed), unit.train_idx.copy(), unit.val_idx.copy())
    if not isinstance(module_of(model), torch.nn.Module):
        raise NnsensError(f"train_fn returned {type(model).__name__}; it must return the trained "
                          "nn.Module (or a LoadedModel)")
    cfg = settings.mask
    pred = _predict(model, x[torch.as_tensor(unit.val_idx)], dev, cfg.batch_size)
    bacc = rm.balanced_accuracy(y[unit.val_idx], pred)
    idx = np.flatnonzero(y == settings.mask_class)
    if settings.mask_on == "val":
        idx = np.intersect1d(idx, unit.val_idx)
    if len(idx) == 0:
        raise NnsensError(f"no input of class {settings.mask_class} to compute the mask on "
                          f"(mask_on={settings.mask_on!r}); pick mask_class among "
                          f"{sorted(set(y.tolist()))}")
    gm = group_mask(model, x[torch.as_tensor(idx)], settings.mask_class, cfg, spec=spec, device=dev)
    return UnitResult(unit.run, unit.fold, unit.seed, model, gm, bacc, len(unit.train_idx),
                      len(unit.val_idx), time.perf_counter() - t0)


@dataclass
class RetrainResult(Result):
    """A training-robustness study (:func:`training_robustness`).

    ``units``: one :class:`UnitResult` per training (the networks stay here, out of ``to_dict``);
    ``masks``: keep masks ``(U, *spatial)`` in the order of ``units``; ``pairs``: one dict per
    compared pair (``kind`` inter_run / inter_fold, ``a`` and ``b`` unit indices, the metrics);
    ``summary[kind][metric]``: ``(mean, std, n)`` over the pairs of that kind (std with ddof=0;
    NaN values skipped); ``top[u]``: the top-n regions of unit ``u`` (with an atlas);
    ``agreement``: how many masks have each region in their top-n -- ``"runs"`` over the units of
    fold 0, ``"folds"`` over the units of run 0, ``"all"`` over every unit (with an atlas).
    """
    units: list[UnitResult]
    masks: np.ndarray
    pairs: list[dict]
    summary: dict[str, dict[str, tuple[float, float, int]]]
    top: dict[int, object] = field(default_factory=dict)
    agreement: dict[str, object] = field(default_factory=dict)
    config: RetrainSettings = RetrainSettings()
    seconds: float = 0.0

    def units_frame(self):
        import pandas as pd
        return pd.DataFrame([{"run": u.run, "fold": u.fold, "seed": u.seed, "n_train": u.n_train,
                              "n_val": u.n_val, "balanced_accuracy": u.balanced_accuracy,
                              "score_before": float(np.mean(u.mask.score_before)),
                              "score_after": float(np.mean(u.mask.score_after)),
                              "deleted_fraction": float(np.mean(1 - u.mask.mask)),
                              "seconds": u.seconds} for u in self.units])

    def pairs_frame(self):
        import pandas as pd
        return pd.DataFrame(self.pairs)

    def to_frame(self):
        """The paper's table: one row per kind (inter_run, inter_fold), ``<metric>_mean``,
        ``<metric>_std``, ``<metric>_n`` columns."""
        import pandas as pd
        rows = {}
        for kind, by in self.summary.items():
            rows[kind] = {f"{mt}_{s}": val for mt, trip in by.items()
                          for s, val in zip(("mean", "std", "n"), trip)}
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("kind")

    def arrays(self) -> dict[str, np.ndarray]:
        return {"masks": self.masks, "m": np.stack([u.mask.m for u in self.units]),
                "run": np.array([u.run for u in self.units]),
                "fold": np.array([u.fold for u in self.units]),
                "balanced_accuracy": np.array([u.balanced_accuracy for u in self.units])}

    def _payload(self) -> dict:
        return {"units": self.units_frame().to_dict("records"), "pairs": self.pairs,
                "summary": {k: {mt: {"mean": t[0], "std": t[1], "n": t[2]} for mt, t in by.items()}
                            for k, by in self.summary.items()},
                "formula": self.units[0].mask.formula if self.units else None,
                "agreement": {k: df.to_dict("records") for k, df in self.agreement.items()}}


def _summary(vals: Iterable[float]) -> tuple[float, float, int]:
    a = np.asarray([x for x in vals if x is not None and np.isfinite(x)], dtype=np.float64)
    return (float(a.mean()), float(a.std()), len(a)) if len(a) else (float("nan"), float("nan"), 0)


def training_robustness(x: torch.Tensor, labels, train_fn: TrainFn,
                        settings: RetrainSettings = RetrainSettings(), *, atlas=None,
                        names: Mapping[int, str] | None = None, spec=None, device="auto",
                        progress: Progress | None = None,
                        map_fn: Callable[[Callable, Sequence[Unit]], Iterable[UnitResult]] | None = None
                        ) -> RetrainResult:
    """Retrain, mask and compare (see :class:`RetrainSettings`, :class:`RetrainResult`).

    ``x`` (N, C, ...) in model-input space and ``labels`` (N,) are the whole data set;
    ``train_fn(seed, train_idx, val_idx)`` returns a network trained on ``x[train_idx]`` (e.g. a
    closure over ``training.train_cnn``); ``val_idx`` is the held-out fold (for early stopping or
    nothing). Pairs: inter-run = same fold, different runs; inter-fold = same run, different folds.
    Metrics per pair: ``prob_cnn`` (:func:`.metrics.prob_cnn` with both networks, on every input
    of ``mask_class``), ``pixel_cosine`` and, with an ``atlas``, ``roi_cosine``.
    ``progress(done, total, stage)``: ``"training"`` counts the units, then ``"similarities"`` the
    pairs. ``map_fn(fn, units)`` runs the units elsewhere (default: in this process, in order).
    """
    t0 = time.perf_counter()
    if not callable(train_fn):
        raise NnsensError("train_fn must be a callable train_fn(seed, train_idx, val_idx) -> model")
    v.check_images(x, volumes=True)
    y = np.asarray(labels).reshape(-1)
    if len(y) != len(x):
        raise NnsensError(f"{len(y)} labels for {len(x)} inputs; give one label per input")
    if settings.mask_class not in set(y.tolist()):
        raise NnsensError(f"mask_class={settings.mask_class} is not among the labels "
                          f"{sorted(set(y.tolist()))}")
    if atlas is not None:
        atlas = rm.check_atlas(atlas, tuple(x.shape[2:]))
    units = plan_units(y, settings)
    dev = resolve_device(device)
    work = functools.partial(run_unit, x=x, labels=y, train_fn=train_fn, settings=settings,
                             spec=spec, device=dev)
    results = map_units(work, units, map_fn, progress, "training")
    masks = np.stack([r.mask.mask for r in results])

    idx = np.flatnonzero(y == settings.mask_class)
    x_eval = x[torch.as_tensor(idx)]
    cfg = settings.mask
    todo = []
    for a, b in itertools.combinations(range(len(results)), 2):
        ra, rb = results[a], results[b]
        if ra.fold == rb.fold and ra.run != rb.run:
            todo.append(("inter_run", a, b))
        elif ra.run == rb.run and ra.fold != rb.fold:
            todo.append(("inter_fold", a, b))
    pairs = []
    for k, (kind, a, b) in enumerate(todo):
        row = {"kind": kind, "a": a, "b": b, "run_a": results[a].run, "fold_a": results[a].fold,
               "run_b": results[b].run, "fold_b": results[b].fold,
               "prob_cnn": rm.prob_cnn(results[a].model, x_eval, settings.mask_class, masks[a],
                                       masks[b], model_b=results[b].model, combine=settings.combine,
                                       reference=cfg.reference, constant=cfg.constant,
                                       blur_sigma=cfg.blur_sigma, spec=spec, device=dev,
                                       batch_size=cfg.batch_size),
               "pixel_cosine": rm.pixel_cosine(masks[a], masks[b])}
        if atlas is not None:
            row["roi_cosine"] = rm.roi_cosine(masks[a], masks[b], atlas)
        pairs.append(row)
        if progress is not None:
            progress(k + 1, len(todo), stage="similarities")
    metric_names = ["prob_cnn", "pixel_cosine"] + (["roi_cosine"] if atlas is not None else [])
    summary = {kind: {mt: _summary(p[mt] for p in pairs if p["kind"] == kind) for mt in metric_names}
               for kind in KINDS}
    top, agreement = {}, {}
    if atlas is not None:
        top = {u: rm.top_regions(masks[u], atlas, settings.top_n, names) for u in range(len(results))}
        groups = {"runs": [u for u, r in enumerate(results) if r.fold == 0],
                  "folds": [u for u, r in enumerate(results) if r.run == 0],
                  "all": list(range(len(results)))}
        agreement = {g: rm.region_agreement([masks[u] for u in us], atlas, settings.top_n, names)
                     for g, us in groups.items()}
    return RetrainResult(results, masks, pairs, summary, top, agreement, settings,
                         time.perf_counter() - t0)
