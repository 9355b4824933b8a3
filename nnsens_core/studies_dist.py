"""Dataset-level studies as units for an :mod:`~nnsens_core.executor`, and the codecs that write
each unit's result to a :class:`~nnsens_core.executor.ResultStore` (resume).

* ``compare``: :func:`evaluate_distributed` splits the images into chunks (each a whole number of
  ``batch_size`` batches, so every image is explained in the same batch as in one
  :func:`~nnsens_core.saliency.compare.evaluate_dataset` call), runs :func:`compare_chunk` per
  chunk and merges the chunks with :func:`merge_evaluations` into the Evaluation of the single
  call;
* robustness ``retrain``: one unit per (run, fold) through ``training_robustness(map_fn=...)``,
  stored by :class:`RetrainCodec`;
* robustness ``grid``: one unit per lambda cell through ``lambda_grid(map_fn=...)``, stored by
  :class:`MaskCodec`;
* Sobol ``convergence``: one unit per N through ``sobol.convergence(map_fn=...)``, stored by
  :class:`ConvergenceCodec`.

Every unit function is a plain module-level function of (unit, shared): nothing big is captured
in a closure, the model and the data travel once in ``shared``.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import NnsensError
from .executor import Executor, InProcess, ResultStore

__all__ = ["CompareChunk", "ConvergenceCodec", "EvaluationCodec", "MaskCodec", "RetrainCodec", "compare_chunk",
           "compare_units", "convergence_map", "evaluate_distributed", "merge_evaluations", "study_id"]


def study_id(*parts) -> str:
    """A fingerprint of everything that determines a study's units (model, data, settings)."""
    from .fingerprint import fingerprint
    return fingerprint([p if not dataclasses.is_dataclass(p) else repr(p) for p in parts])


def _tag_map(map_fn: Callable, key: Callable, store: ResultStore | None, progress=None):
    """``map_fn(fn, units)`` of an executor with the unit keys, the store and the progress."""
    if not isinstance(map_fn, Executor):
        return map_fn
    return functools.partial(map_fn.map, key=key, store=store, progress=progress)


# --------------------------------------------------------------------------- compare

@dataclass(frozen=True, eq=False)
class CompareChunk:
    """Images ``indices`` (into the data set) of chunk number ``number``."""
    number: int
    indices: np.ndarray

    @property
    def key(self) -> str:
        return f"chunk{self.number:05d}"


@dataclass(frozen=True, eq=False)
class _Images:
    """What a compare unit needs of an ImageData (the arrays travel once, zero-copy in Ray)."""
    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    class_names: tuple[str, ...]
    name: str

    def __len__(self) -> int:
        return len(self.images)


def compare_units(indices: np.ndarray, chunk_size: int, batch_size: int) -> list[CompareChunk]:
    """Chunks of ``indices`` of ``chunk_size`` images (rounded up to a multiple of
    ``batch_size``)."""
    if not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise NnsensError(f"chunk_size={chunk_size!r} must be a whole number >= 1")
    size = -(-chunk_size // batch_size) * batch_size
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    return [CompareChunk(k, idx[s:s + size]) for k, s in enumerate(range(0, len(idx), size))]


def compare_chunk(chunk: CompareChunk, shared: dict):
    """The Evaluation of one chunk (a plain function: any executor can run it)."""
    import torch

    from .saliency.compare import evaluate_dataset
    torch.manual_seed(shared["seed"])
    return evaluate_dataset(shared["model"], shared["spec"], shared["data"], shared["methods"],
                            shared["cfgs"], indices=chunk.indices, target=shared["target"],
                            p=shared["p"], tolerance=shared["tolerance"],
                            batch_size=shared["batch_size"], device=shared["device"],
                            roi=shared.get("roi"), chance=False)


def merge_evaluations(parts: Sequence, seconds: float | None = None, chance: dict | None = None,
                      roi_share: float | None = None):
    """One Evaluation from the Evaluations of consecutive chunks (records ordered as one call's:
    method by method, images in order; approximation errors combined as one call combines its
    batches', :func:`~nnsens_core.saliency.compare.combine_errors`). The chance levels and the
    ROI share belong to the whole set of images: ``chance`` / ``roi_share`` (see
    :func:`evaluate_distributed`, which computes them from the merged maps)."""
    import pandas as pd
    import torch

    from .saliency.compare import Evaluation, combine_errors
    if not parts:
        raise NnsensError("no chunk to merge")
    methods = parts[0].config.methods
    records = pd.concat([p.records[p.records["method"] == m] for m in methods for p in parts],
                        ignore_index=True)
    maps = {m: torch.cat([p.maps[m] for p in parts]) for m in methods}
    return Evaluation(records, maps, np.concatenate([p.indices for p in parts]),
                      torch.cat([p.probs for p in parts]), parts[0].config,
                      sum(p.seconds for p in parts) if seconds is None else seconds,
                      chance=dict(chance or {}), roi_share=roi_share,
                      approx=combine_errors([p.approx for p in parts]))


class EvaluationCodec:
    """A compare chunk on disk: maps, probabilities and indices as arrays, the records and the
    approximation errors as JSON."""

    def __init__(self, config):
        self.config = config

    def encode(self, ev) -> tuple[dict[str, np.ndarray], dict]:
        arrays = {"indices": ev.indices, "probs": ev.probs.numpy(),
                  **{f"map_{m}": t.numpy() for m, t in ev.maps.items()}}
        rows = [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in r.items()}
                for r in ev.records.to_dict("records")]
        return arrays, {"records": rows, "methods": list(ev.maps), "seconds": ev.seconds,
                        "approx": ev.approx}

    def decode(self, arrays, meta):
        import pandas as pd
        import torch

        from .saliency.compare import Evaluation
        if "approx" not in meta:    # written before chunks kept their approximation errors:
            return None             # recomputed, so an approximate map never loses its error
        maps = {m: torch.from_numpy(arrays[f"map_{m}"]) for m in meta["methods"]}
        return Evaluation(pd.DataFrame(meta["records"]), maps, arrays["indices"],
                          torch.from_numpy(arrays["probs"]), self.config, float(meta["seconds"]),
                          approx=meta["approx"])


def evaluate_distributed(model, spec, data, methods, cfgs=None, indices=None,
                         target: str = "label", p: float | None = None, tolerance: float = 0.0,
                         batch_size: int = 32, device="auto", *, chunk_size: int | None = None,
                         executor: Executor | None = None, store: str | None = None,
                         seed: int = 0, progress=None, roi=None):
    """:func:`~nnsens_core.saliency.compare.evaluate_dataset` in chunks of ``chunk_size`` images
    (default ``batch_size``) on ``executor`` (default in-process); the same Evaluation as the
    single call (maps bit for bit where the methods are deterministic). ``store``: a directory
    where each finished chunk is written; a rerun with the same directory computes only the
    missing chunks. ``progress(done, total, stage="units")`` counts chunks. ``roi``: a region of
    interest per image (as in ``evaluate_dataset``). The chance levels are computed from the
    merged maps, as the single call computes them, one unit per method on the same executor
    (``progress`` stage ``"chance levels"``)."""
    from .saliency.compare import (
        EvaluationSettings,
        evaluation_indices,
        roi_share,
        roi_within,
    )
    from .saliency.registry import config_for, parse_methods
    t0 = time.perf_counter()
    idx = evaluation_indices(data, indices, target, batch_size)
    within = roi_within(data, roi, idx)
    methods = tuple(parse_methods(methods))
    if spec is None:
        spec = getattr(model, "spec", None)
    from .zoo import module_of
    net = module_of(model)
    slim = _Images(np.asarray(data.images), np.asarray(data.labels), np.asarray(data.masks),
                   tuple(data.class_names), str(data.name))
    shared = {"model": net, "spec": spec, "data": slim, "methods": methods, "cfgs": cfgs,
              "target": target, "p": p, "tolerance": tolerance, "batch_size": batch_size,
              "device": device if isinstance(device, str) else str(device), "seed": seed,
              "roi": None if roi is None else np.asarray(roi, bool)}
    units = compare_units(idx, chunk_size or batch_size, batch_size)
    settings = EvaluationSettings(methods, target, p, tolerance,
                                  {m: config_for(m, cfgs, tuple(slim.images.shape[2:]), model)
                                   for m in methods})
    st = None
    if store is not None:
        st = ResultStore(store, EvaluationCodec(settings),
                         study_id("compare", net, slim.images, slim.labels, slim.masks, spec,
                                  settings, idx, batch_size, len(units), seed,
                                  None if roi is None else np.asarray(roi, bool)))
    ex = executor or InProcess()
    parts = ex.map(compare_chunk, units, shared=shared, store=st, progress=progress)
    ev = merge_evaluations(parts, roi_share=roi_share(within))
    # The chance levels need every image's map, so they come after the chunks, as units of their
    # own: one per method (each draws its random maps with seed 0, as the single call does).
    names = list(ev.maps)
    chance_shared = {"maps": ev.maps, "masks": np.asarray(slim.masks[idx], dtype=bool), "p": p,
                     "tolerance": tolerance, "within": within}
    stage = None if progress is None else \
        (lambda done, total, stage="": progress(done, total, stage=CHANCE_STAGE))
    counts = ex.loaded, ex.computed  # what the executor reports: the chunks (loaded, computed)
    levels = ex.map(chance_unit, names, shared=chance_shared, key=str, progress=stage)
    ex.loaded, ex.computed = counts
    ev.chance = dict(zip(names, levels))
    ev.seconds = time.perf_counter() - t0
    return ev


CHANCE_STAGE = "chance levels"
"""The ``progress`` stage of :func:`evaluate_distributed`'s chance-level units (a second 0-100 %)."""


def chance_unit(method: str, shared: dict) -> dict:
    """The chance levels of one method's maps (:func:`~nnsens_core.saliency.compare.chance_levels`)."""
    from .saliency.compare import chance_levels
    return chance_levels({method: shared["maps"][method]}, shared["masks"], shared["p"],
                         shared["tolerance"], shared["within"])[method]


# --------------------------------------------------------------------------- group masks

def _mask_arrays(gm, prefix: str = "") -> dict[str, np.ndarray]:
    return {f"{prefix}{k}": np.asarray(getattr(gm, k))
            for k in ("m", "mask", "score_before", "score_after", "history", "classes")}


def _mask_from(arrays, meta: dict, cfg, prefix: str = ""):
    from .saliency.meaningful_mask import GroupMaskResult
    return GroupMaskResult(**{k: arrays[f"{prefix}{k}"] for k in
                              ("m", "mask", "score_before", "score_after", "history", "classes")},
                           objective=float(meta["objective"]), config=cfg,
                           seconds=float(meta["mask_seconds"]))


class MaskCodec:
    """A group mask (one lambda cell) on disk; ``cfg``: the grid's base MaskConfig (the cell's
    lambdas come back from the file)."""

    def __init__(self, cfg):
        self.cfg = cfg

    def encode(self, gm):
        return _mask_arrays(gm), {"objective": gm.objective, "mask_seconds": gm.seconds,
                                  "lambda1": gm.config.lambda1, "lambda2": gm.config.lambda2}

    def decode(self, arrays, meta):
        cfg = dataclasses.replace(self.cfg, lambda1=meta["lambda1"], lambda2=meta["lambda2"])
        return _mask_from(arrays, meta, cfg)


class RetrainCodec:
    """A retrain unit on disk: the trained network's state_dict, its group mask and its scores;
    ``build()`` makes an untrained network of the architecture to load the weights into."""

    def __init__(self, build: Callable, cfg):
        self.build = build
        self.cfg = cfg

    def encode(self, r):
        from .zoo import module_of
        state = {f"state.{k}": t.detach().cpu().numpy()
                 for k, t in module_of(r.model).state_dict().items()}
        meta = {"run": r.run, "fold": r.fold, "seed": r.seed, "objective": r.mask.objective,
                "mask_seconds": r.mask.seconds, "balanced_accuracy": r.balanced_accuracy,
                "n_train": r.n_train, "n_val": r.n_val, "seconds": r.seconds}
        return {**state, **_mask_arrays(r.mask, "mask.")}, meta

    def decode(self, arrays, meta):
        import torch

        from .robustness.retrain import UnitResult
        model = self.build()
        model.load_state_dict({k[len("state."):]: torch.from_numpy(a.copy())
                               for k, a in arrays.items() if k.startswith("state.")})
        model.eval()
        return UnitResult(int(meta["run"]), int(meta["fold"]), int(meta["seed"]), model,
                          _mask_from(arrays, meta, self.cfg, "mask."),
                          float(meta["balanced_accuracy"]), int(meta["n_train"]),
                          int(meta["n_val"]), float(meta["seconds"]))


def retrain_key(unit) -> str:
    return f"run{unit.run}_fold{unit.fold}"


def grid_key(cell) -> str:
    return f"cell{cell.i}_{cell.j}"


def retrain_map(executor: Executor, store: str | None = None, *, build: Callable | None = None,
                settings=None, study: str = "", progress=None):
    """The ``map_fn`` of ``training_robustness`` running on ``executor`` (a store needs
    ``build`` and ``settings``)."""
    st = None
    if store is not None:
        if build is None or settings is None:
            raise NnsensError("a retrain store needs build (the architecture) and settings")
        st = ResultStore(store, RetrainCodec(build, settings.mask), study)
    return _tag_map(executor, retrain_key, st, progress)


def grid_map(executor: Executor, store: str | None = None, *, cfg=None, study: str = "",
             progress=None):
    """The ``map_fn`` of ``lambda_grid`` running on ``executor`` (a store needs ``cfg``)."""
    st = None
    if store is not None:
        if cfg is None:
            raise NnsensError("a grid store needs the base MaskConfig (cfg)")
        st = ResultStore(store, MaskCodec(cfg), study)
    return _tag_map(executor, grid_key, st, progress)


# --------------------------------------------------------------------------- Sobol convergence

_CONVERGENCE_KEYS = ("S1", "S1_conf", "ST", "ST_conf")


class ConvergenceCodec:
    """One N of a convergence study on disk: its S1, S1_conf, ST, ST_conf (float64, exact)."""

    def encode(self, parts):
        return dict(zip(_CONVERGENCE_KEYS, (np.asarray(a, np.float64) for a in parts))), {}

    def decode(self, arrays, meta):
        return tuple(arrays[k] for k in _CONVERGENCE_KEYS)


def convergence_key(n) -> str:
    return f"n{int(n)}"


def convergence_map(executor: Executor, store: str | None = None, *, study: str = "",
                    progress=None):
    """The ``map_fn`` of :func:`~nnsens_core.sobol.convergence` running on ``executor``, one unit
    per N (``store``: each N's indices written as it finishes; a rerun loads them)."""
    st = ResultStore(store, ConvergenceCodec(), study) if store is not None else None
    return _tag_map(executor, convergence_key, st, progress)
