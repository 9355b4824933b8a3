"""Cached computations of the Robustness page (group masks, lambda grids, retraining studies).

Each function is an ``st.cache_data`` entry keyed by the context key (content fingerprints of the
data and model), the selected inputs and the frozen settings; the model and data travel as
``_model`` / ``_data`` (not hashed). Progress bars live inside: a cache hit replays them finished.
Every run reserves its estimated cost in the server budget (:func:`ui.widgets.within_budget`).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import streamlit as st
import torch

from nnsens_core import budget as B
from nnsens_core import robustness as R
from nnsens_core import zoo
from nnsens_core._batching import sub_progress
from nnsens_core.saliency.meaningful_mask import MaskConfig, group_mask
from nnsens_core.training import CNNTrainConfig, train_cnn

from .cache import CACHE_TTL
from .widgets import Progress, within_budget


def model_input(spec, data, idx) -> torch.Tensor:
    """The inputs ``data.images[idx]`` in the model's input space (``spec.normalize``)."""
    x = torch.as_tensor(np.asarray(data.images)[np.asarray(idx, dtype=int)], dtype=torch.float32)
    return spec.normalize(x)


# ----------------------------------------------------------------------------- cost estimates

def mask_cost(model, cfg: MaskConfig, n: int) -> B.Estimate:
    return B.masks(model.module, cfg, n, model.spec.input_shape)


def grid_cost(model, cfg: MaskConfig, n: int, n1: int, n2: int) -> B.Estimate:
    cells = n1 * n2
    pairs = cells * (n1 + n2) // 2 + cells
    masks = mask_cost(model, cfg, n).times(cells, f"the λ grid ({n1}×{n2} group masks of {n} inputs)")
    flop = pairs * 2 * max(n, B.MIN_BATCH) * B.forward_flop(model.module, model.spec.input_shape)
    passes = B.Estimate("the similarity passes", flop / 1e9, masks.reduce)
    return masks + passes


def retrain_cost(model, settings: R.RetrainSettings, train: CNNTrainConfig, n: int,
                 n_mask: int) -> B.Estimate:
    units = len(R.plan_units(np.r_[np.zeros(settings.k_folds, int), np.ones(settings.k_folds, int)],
                             settings))
    rows = int(round(n * (settings.k_folds - 1) / settings.k_folds))
    t = B.training(model.module, rows, train, units, model.spec.input_shape)
    m = mask_cost(model, settings.mask, n_mask).times(units)
    return B.Estimate(f"{units} trainings of {train.epochs} epoch(s) and {units} group masks",
                      t.gflop + m.gflop, "reduce the runs, folds, epochs, inputs or mask steps")


# ----------------------------------------------------------------------------- cached runs

@st.cache_data(show_spinner=False, max_entries=32, ttl=CACHE_TTL)
def run_group_mask(_model, _data, key: str, idx: tuple, cls: int, cfg: MaskConfig, device: str):
    """One group mask of inputs ``idx`` explained for class ``cls``."""
    bar = Progress(f"Group mask of {len(idx)} input(s): Adam steps", cfg.steps)
    try:
        with within_budget(mask_cost(_model, cfg, len(idx))):
            return group_mask(_model.module, model_input(_model.spec, _data, idx), cls, cfg,
                              spec=_model.spec, device=device, progress=bar)
    finally:
        bar.done()


@st.cache_data(show_spinner=False, max_entries=8, ttl=CACHE_TTL)
def run_grid(_model, _data, key: str, idx: tuple, cls: int, lambda1s: tuple, lambda2s: tuple,
             cfg: MaskConfig, metrics: tuple, p: float, device: str):
    """A λ1 × λ2 grid of group masks and their similarity tables."""
    atlas = None if _data.atlas is None else _data.atlas.labels
    bar = Progress(f"λ grid: {len(lambda1s) * len(lambda2s)} group masks of {len(idx)} input(s)")
    try:
        with within_budget(grid_cost(_model, cfg, len(idx), len(lambda1s), len(lambda2s))):
            return R.lambda_grid(_model.module, model_input(_model.spec, _data, idx), cls,
                                 list(lambda1s), list(lambda2s), cfg, atlas=atlas,
                                 metrics=list(metrics), p=p, spec=_model.spec, device=device,
                                 progress=bar)
    finally:
        bar.done()


@st.cache_data(show_spinner=False, max_entries=4, ttl=CACHE_TTL)
def run_retrain(_model, _data, key: str, idx: tuple, settings: R.RetrainSettings,
                train: CNNTrainConfig, device: str):
    """Retrain the selected model's architecture ``n_runs`` × ``k_folds`` times on the inputs
    ``idx`` (folds over them), one group mask per network, and compare (the paper's study)."""
    spec = _model.spec
    data = _data.subset(np.asarray(idx, dtype=int)) if hasattr(_data, "subset") else _data
    x = model_input(spec, data, np.arange(len(data)))
    units = R.plan_units(data.labels, settings)
    outer = Progress(f"{len(units)} trainings, each followed by its group mask", len(units))
    inner = Progress("Current training (batches)")
    done = {"n": 0}

    def train_fn(seed: int, train_idx: np.ndarray, val_idx: np.ndarray):
        torch.manual_seed(int(seed))
        net = zoo.build(spec.arch, **dict(spec.arch_kwargs))
        cfg = dataclasses.replace(train, seed=int(seed))
        net, _ = train_cnn(net, data, cfg, train_idx=train_idx, val_idx=val_idx, spec=spec,
                           device=device, progress=sub_progress(inner, "training"))
        outer(done["n"], len(units), f"run {done['n'] + 1}: trained, computing its mask")
        done["n"] += 1
        return net

    try:
        with within_budget(retrain_cost(_model, settings, train, len(data),
                                        int((data.labels == settings.mask_class).sum()))):
            return R.training_robustness(x, data.labels, train_fn, settings,
                                         atlas=None if data.atlas is None else data.atlas.labels,
                                         names=None if data.atlas is None else data.atlas.region_names,
                                         spec=spec, device=device, progress=outer)
    finally:
        outer.done()
        inner.done()


# ----------------------------------------------------------------------------- background study

def retrain_study_id(key: str, idx: tuple, settings: R.RetrainSettings, train: CNNTrainConfig,
                     device: str) -> str:
    """The content fingerprint of a runs & folds study (its store's directory name)."""
    from nnsens_core.studies_dist import study_id
    return study_id("page-retrain", key, tuple(int(i) for i in idx), settings, train, device)


def retrain_study(model, data, key: str, idx: tuple, settings: R.RetrainSettings,
                  train: CNNTrainConfig, device: str):
    """The runs & folds study of :func:`run_retrain` for a background thread (no Streamlit call):
    ``(study_id, units, run)``; ``run(store_dir)`` computes it through the executor, each trained
    network written to the store as it finishes (a rerun of the same study loads them). The id is
    the fingerprint of the context key (data and model content), the inputs and the settings."""
    from nnsens_core.executor import InProcess
    from nnsens_core.studies_dist import retrain_map

    spec = model.spec
    sub = data.subset(np.asarray(idx, dtype=int)) if hasattr(data, "subset") else data
    units = R.plan_units(sub.labels, settings)
    sid = retrain_study_id(key, idx, settings, train, device)

    def build():
        return zoo.build(spec.arch, **dict(spec.arch_kwargs))

    def train_fn(seed: int, train_idx: np.ndarray, val_idx: np.ndarray):
        torch.manual_seed(int(seed))
        net, _ = train_cnn(build(), sub, dataclasses.replace(train, seed=int(seed)),
                           train_idx=train_idx, val_idx=val_idx, spec=spec, device=device)
        return net

    def run(store_dir):
        x = model_input(spec, sub, np.arange(len(sub)))
        with within_budget(retrain_cost(model, settings, train, len(sub),
                                        int((sub.labels == settings.mask_class).sum()))):
            return R.training_robustness(
                x, sub.labels, train_fn, settings,
                atlas=None if sub.atlas is None else sub.atlas.labels,
                names=None if sub.atlas is None else sub.atlas.region_names, spec=spec,
                device=device, map_fn=retrain_map(InProcess(), str(store_dir), build=build,
                                                  settings=settings, study=sid))
    return sid, len(units), run
