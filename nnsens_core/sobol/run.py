"""Evaluate a model on Sobol samples (output and hidden neurons in one pass) and chain
sample -> evaluate -> analyze (:func:`run`)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .._batching import Progress, auto_batch_size, check_memory, map_batches, sub_progress
from .._hooks import forward_with_outputs, probe_outputs
from .._results import Result
from ..device import inference_model, resolve_device
from ..errors import NnsensError
from ..zoo import LoadedModel, module_of
from .estimators import (
    SobolIndices,
    analysis_bytes,
    analyze,
    default_memory_limit,
    sample,
)
from .problem import (
    _ACTIVATIONS,
    OUTPUT,
    SobolConfig,
    SobolProblem,
    rows_per_sample,
)

# --------------------------------------------------------------------------- evaluation

def input_width(model) -> int | None:
    """Input width of a tabular model: its spec, else its first Linear layer (None if unknown)."""
    if isinstance(model, LoadedModel) and model.spec.input_shape:
        return int(model.spec.input_shape[0])
    for m in module_of(model).modules():
        if isinstance(m, nn.Linear):
            return int(m.in_features)
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            return None
    return None


def check_width(model, D: int) -> None:
    """Refuse a model whose input width differs from the number of features."""
    width = input_width(model)
    if width is not None and width != D:
        raise NnsensError(f"the model takes {width} inputs but the data has {D} features; pick the "
                          "matching dataset/model (or retrain the model on these features)")


def _device_of(module: nn.Module) -> torch.device | None:
    p = next(iter(module.parameters()), None)
    return p.device if p is not None else None


def _param_dtype(module: nn.Module) -> torch.dtype:
    p = next(iter(module.parameters()), None)
    return p.dtype if p is not None and p.dtype.is_floating_point else torch.float32


def hidden_layers(model, n_inputs: int | None = None) -> dict[str, int]:
    """Named modules with 2-D outputs ``(batch, neurons)``, in forward order, as ``{name: neurons}``.

    For :class:`~nnsens_core.zoo.PaperMLP`: ``fc1, bn1, act1 (10), fc2, bn2, out (1)``.
    """
    module = module_of(model)
    d = n_inputs or input_width(model)
    if d is None:
        raise NnsensError("the model's input width is unknown; give n_inputs")
    dev = _device_of(module) or torch.device("cpu")
    try:
        shapes = probe_outputs(module, torch.zeros(2, d, device=dev, dtype=_param_dtype(module)))
    except NnsensError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure means the model does not fit the width
        raise NnsensError(f"the model does not accept {d} inputs: {str(exc)[:200]}") from None
    return {n: int(s[1]) for n, s in shapes.items() if len(s) == 2 and s[0] == 2}


def default_layer(model, n_inputs: int | None = None) -> str | None:
    """The first post-activation layer with more than one neuron (``act1`` for the paper MLP)."""
    layers = hidden_layers(model, n_inputs)
    mods = dict(module_of(model).named_modules())
    for name, width in layers.items():
        if isinstance(mods[name], _ACTIVATIONS) and width > 1:
            return name
    wide = [n for n, w in layers.items() if w > 1]
    return wide[0] if wide else (next(iter(layers)) if layers else None)


def target_labels(target: str, width: int) -> list[str]:
    """Labels of a target's columns: ``output`` / ``output[c]``, ``layer[i]``."""
    if width == 1:
        return [target]
    return [f"{target}[{i}]" for i in range(width)]


@torch.no_grad()
def evaluate(model, X: np.ndarray | torch.Tensor, targets: Sequence[str] = (OUTPUT,),
             device="auto", batch_size: int | None = None,
             progress: Progress | None = None) -> dict[str, np.ndarray]:
    """Run the model on every row of ``X``; returns ``{target: (n, neurons) float64}``.

    ``targets``: :data:`OUTPUT` and/or module names; all are captured in ONE forward pass per batch
    (forward hooks, removed afterwards).  The model is not modified.
    """
    dev = resolve_device(device)
    targets = list(dict.fromkeys(targets))
    if not targets:
        raise NnsensError("targets is empty; give 'output' and/or a hidden layer name")
    X = torch.as_tensor(np.asarray(X) if not isinstance(X, torch.Tensor) else X)
    if X.ndim != 2:
        raise NnsensError(f"X has shape {tuple(X.shape)}; it must be (rows, features)")
    check_width(model, X.shape[1])
    module = inference_model(model, dev)
    dtype = _param_dtype(module)
    layers = [t for t in targets if t != OUTPUT]
    if batch_size is None:
        batch_size = auto_batch_size(X.shape[1] * 64 + 4096)
    if batch_size < 1:
        raise NnsensError(f"batch_size={batch_size} must be >= 1")

    def one(sl: slice):
        xb = X[sl].to(device=dev, dtype=dtype)
        y, outs = forward_with_outputs(module, xb, layers)
        res = []
        for t in targets:
            o = y if t == OUTPUT else outs.get(t)
            if o is None:
                raise NnsensError(f"layer {t!r} did not run in the forward pass; pick another layer")
            if o.ndim > 2 or o.ndim == 0:
                raise NnsensError(f"{t!r} outputs shape {tuple(o.shape)}; pick a layer with 2-D "
                                  "outputs (rows, neurons)")
            res.append(o.reshape(len(xb), -1).to(torch.float64))
        return tuple(res)

    try:
        parts = map_batches(one, len(X), batch_size, progress)
    except NnsensError:
        raise
    except RuntimeError as exc:
        raise NnsensError(f"the model failed on inputs of shape (batch, {X.shape[1]}): "
                          f"{str(exc)[:200]}") from None
    if parts is None:
        raise NnsensError("X has no rows")
    return {t: p.numpy() for t, p in zip(targets, parts)}

# --------------------------------------------------------------------------- full run

@dataclass
class SobolResult(Result):
    """A Sobol' run: indices of the model output and of the chosen layer's neurons."""
    problem: SobolProblem
    config: SobolConfig
    targets: tuple[str, ...]  # one label per analysed output column
    groups: tuple[str, ...]   # the target (OUTPUT or layer name) of each column
    indices: SobolIndices
    timings: dict = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return self.problem.names

    def group(self, target: str = OUTPUT) -> SobolIndices:
        idx = [i for i, g in enumerate(self.groups) if g == target]
        if not idx:
            raise NnsensError(f"target {target!r} was not analysed; it has {sorted(set(self.groups))}")
        return self.indices.select(idx)

    def output(self, column: int = 0) -> SobolIndices:
        """Indices of one column of the model output (the first by default)."""
        idx = [i for i, g in enumerate(self.groups) if g == OUTPUT]
        return self.indices.select([idx[column]])

    def layer_summary(self):
        """Per feature, the mean and std of S1 / ST over the analysed layer's neurons (neurons that
        are constant on the whole input box are left out): a DataFrame indexed by feature."""
        import pandas as pd
        if self.config.layer is None:
            raise NnsensError("no hidden layer was analysed; set SobolConfig(layer=...)")
        layer = self.group(self.config.layer)
        live = ~np.asarray(layer.constant, bool)
        cols = {}
        for key, arr in (("S1", layer.S1), ("ST", layer.ST)):
            a = np.asarray(arr)[live] if live.any() else np.full((1, len(self.names)), np.nan)
            cols[f"{key}_mean"] = a.mean(0)
            cols[f"{key}_std"] = a.std(0, ddof=1) if len(a) > 1 else np.zeros(a.shape[1])
        df = pd.DataFrame(cols, index=pd.Index(self.names, name="feature"))
        df.attrs["neurons"] = int(live.sum())
        return df

    @property
    def seconds(self) -> float:
        """Wall time of sampling + evaluation + analysis (``timings`` has each stage)."""
        return float(sum(self.timings.values()))

    def _payload(self) -> dict:
        """The model output's indices at top level, every analysed column under ``targets``."""
        out, I = self.output(), self.indices

        def first(a):
            return None if a is None else a[0]
        doc = {"names": list(self.names), "S1": out.S1[0], "S1_conf": out.S1_conf[0],
               "ST": out.ST[0], "ST_conf": out.ST_conf[0], "S2": first(out.S2),
               "S2_conf": first(out.S2_conf), "N": I.N, "bounds": self.problem.bounds,
               "timings_s": dict(self.timings), "targets": {}}
        for i, label in enumerate(self.targets):
            doc["targets"][label] = {
                "group": self.groups[i], "constant": bool(I.constant[i]),
                "S1": I.S1[i], "S1_conf": I.S1_conf[i], "ST": I.ST[i], "ST_conf": I.ST_conf[i],
                "S2": None if I.S2 is None else I.S2[i],
                "S2_conf": None if I.S2_conf is None else I.S2_conf[i]}
        return doc

    def to_frame(self):
        """Every analysed column x feature in long form (``to_frames()["all targets"]``)."""
        return self.to_frames()["all targets"]

    def to_frames(self) -> dict:
        """pandas tables: ``indices`` (output S1/ST), ``second_order`` (pairs), and for a layer
        ``<layer> S1`` / ``<layer> ST`` (neuron x feature) plus ``all targets`` (long form)."""
        import pandas as pd
        names = list(self.names)
        out = self.output()
        frames = {"indices": pd.DataFrame({"S1": out.S1[0], "S1_conf": out.S1_conf[0],
                                           "ST": out.ST[0], "ST_conf": out.ST_conf[0]},
                                          index=pd.Index(names, name="feature"))}
        if out.S2 is not None:
            j, k = np.triu_indices(len(names), 1)
            frames["second_order"] = pd.DataFrame(
                {"S2": out.S2[0][j, k], "S2_conf": out.S2_conf[0][j, k]},
                index=pd.MultiIndex.from_arrays([[names[a] for a in j], [names[b] for b in k]],
                                                names=["feature_i", "feature_j"]))
        if self.config.layer is not None:
            layer = self.group(self.config.layer)
            labels = [t for t, g in zip(self.targets, self.groups) if g == self.config.layer]
            for key, arr in (("S1", layer.S1), ("ST", layer.ST)):
                frames[f"{self.config.layer} {key}"] = pd.DataFrame(
                    arr, index=pd.Index(labels, name="neuron"), columns=names)
        rows = []
        I = self.indices
        for i, label in enumerate(self.targets):
            for d, name in enumerate(names):
                rows.append({"target": label, "feature": name, "S1": I.S1[i, d],
                             "S1_conf": I.S1_conf[i, d], "ST": I.ST[i, d], "ST_conf": I.ST_conf[i, d]})
        frames["all targets"] = pd.DataFrame(rows).set_index(["target", "feature"])
        return frames


def estimate_bytes(problem: SobolProblem, cfg: SobolConfig, n_outputs: int) -> int:
    """Memory of a full run: the sample matrix, the outputs and the analysis."""
    rows = cfg.n * rows_per_sample(problem.D, cfg.second_order)
    return int(rows * problem.D * 8 * 2 + rows * n_outputs * 8 * 3
               + analysis_bytes(cfg.n, problem.D, n_outputs, cfg.second_order, cfg.num_resamples))


def _n_outputs(model, problem: SobolProblem, targets: Sequence[str]) -> dict[str, int]:
    layers = hidden_layers(model, problem.D)
    module = module_of(model)
    dev = _device_of(module) or torch.device("cpu")
    out = probe_outputs(module, torch.zeros(2, problem.D, device=dev, dtype=_param_dtype(module)), [""])[""]
    widths = {OUTPUT: math.prod(out[1:])}
    for t in targets:
        if t == OUTPUT:
            continue
        if t not in layers:
            allowed = ", ".join(layers) or "none"
            raise NnsensError(f"layer {t!r} has no 2-D (rows, neurons) output in this model; "
                              f"choose one of: {allowed}")
        widths[t] = layers[t]
    return widths


def run(model, problem: SobolProblem, cfg: SobolConfig = SobolConfig(), device="auto",
        batch_size: int | None = None, progress: Progress | None = None,
        memory_limit: float | None = None) -> SobolResult:
    """sample -> evaluate (output + ``cfg.layer`` in one pass per batch) -> analyze.

    Refuses up front (with the estimate) a run whose memory exceeds ``memory_limit``
    (default: half the physical memory, at most 16 GiB).
    """
    check_width(model, problem.D)
    widths = _n_outputs(model, problem, cfg.targets)
    M = sum(widths.values())
    limit = default_memory_limit() if memory_limit is None else memory_limit
    check_memory(estimate_bytes(problem, cfg, M), limit,
                 f"Sobol with N={cfg.n}, D={problem.D}, {M} outputs")
    t = {}
    t0 = time.perf_counter()
    X = sample(problem, cfg.n, cfg.second_order, cfg.seed, sub_progress(progress, "sampling"))
    t["sampling"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    Ys = evaluate(model, X, cfg.targets, device, batch_size, sub_progress(progress, "evaluation"))
    del X
    t["evaluation"] = time.perf_counter() - t0
    labels, groups = [], []
    for tgt in cfg.targets:
        labels += target_labels(tgt, Ys[tgt].shape[1])
        groups += [tgt] * Ys[tgt].shape[1]
    Y = np.concatenate([Ys[tg] for tg in cfg.targets], axis=1)
    t0 = time.perf_counter()
    ind = analyze(problem, Y, second_order=cfg.second_order, num_resamples=cfg.num_resamples,
                  conf_level=cfg.conf_level, seed=cfg.seed, device=device,
                  progress=sub_progress(progress, "analysis"))
    t["analysis"] = time.perf_counter() - t0
    return SobolResult(problem, cfg, tuple(labels), tuple(groups), ind, t)

