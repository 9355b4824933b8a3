"""Dataset view without ground-truth masks: predictions, accuracy, balanced accuracy, confusion
matrix, per-class mean maps and the misclassified images.

Every function evaluates the model in batches through the one batching loop, so the batch size
never changes a result.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from .. import _approx
from .. import _validate as v
from .._batching import Progress, sub_progress
from .._results import Result
from ..device import inference_model, resolve_device
from ..errors import NnsensError
from . import registry
from .compare import predict_proba
from ._common import normalize_maps


def _inputs(data, spec) -> torch.Tensor:
    x01 = torch.as_tensor(np.asarray(data.images), dtype=torch.float32)
    return spec.normalize(x01) if spec is not None else x01


@dataclass
class Confusion(Result):
    """``matrix[i, j]``: images of true class ``i`` predicted ``j``; ``labels`` / ``preds`` per
    image; ``accuracy``; ``balanced_accuracy`` (mean recall over the classes that have images)."""
    matrix: np.ndarray
    labels: np.ndarray
    preds: np.ndarray
    probs: np.ndarray
    class_names: tuple[str, ...]
    config: dict
    seconds: float = 0.0

    @property
    def accuracy(self) -> float:
        return float((self.labels == self.preds).mean()) if len(self.labels) else float("nan")

    @property
    def balanced_accuracy(self) -> float:
        rows = self.matrix.sum(1)
        has = rows > 0
        return float((np.diag(self.matrix)[has] / rows[has]).mean()) if has.any() else float("nan")

    @property
    def wrong(self) -> np.ndarray:
        """Indices of the misclassified images."""
        return np.flatnonzero(self.labels != self.preds)

    def to_frame(self):
        import pandas as pd
        names = list(self.class_names)
        return pd.DataFrame(self.matrix, index=pd.Index(names, name="true"),
                            columns=pd.Index(names, name="predicted"))

    def arrays(self) -> dict:
        return {"matrix": self.matrix, "labels": self.labels, "preds": self.preds}

    def _payload(self) -> dict:
        return {"accuracy": self.accuracy, "balanced_accuracy": self.balanced_accuracy,
                "matrix": self.matrix, "class_names": list(self.class_names)}


def confusion(model, data, *, spec=None, batch_size: int = 64, device="auto") -> Confusion:
    """Predictions of ``model`` on every image of ``data`` (an ImageData: images in [0, 1] at the
    model's input size, labels, class names) and the confusion matrix."""
    t0 = time.perf_counter()
    v.positive("batch_size", batch_size, integer=True)
    if spec is None:
        spec = getattr(model, "spec", None)
    k = len(data.class_names)
    probs = predict_proba(model, _inputs(data, spec), device, batch_size).numpy()
    if probs.shape[1] != k:
        raise NnsensError(f"the model has {probs.shape[1]} outputs but the data have {k} classes; "
                          "pick a model trained on these classes")
    labels = np.asarray(data.labels, dtype=np.int64)
    preds = probs.argmax(1)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (labels, preds), 1)
    return Confusion(matrix, labels, preds, probs, tuple(data.class_names),
                     {"batch_size": batch_size}, time.perf_counter() - t0)


def class_mean_maps(model, data, method: str, cfg=None, *, spec=None, preds=None,
                    batch_size: int = 16, device="auto",
                    progress: Progress | None = None,
                    details: dict | None = None) -> dict[int, tuple[np.ndarray, int]]:
    """Per class ``c``: ``(mean map (H, W), count)`` of ``method`` (explaining ``c``, maps scaled to
    [0, 1] per image as everywhere) over the images of class ``c`` the model classifies
    correctly, at model resolution; classes without such an image are left out. ``preds``: the
    model's predictions when already known (else computed). ``details``: a dict that gets
    ``approx``, the measured error of approximate maps over every batch
    (:func:`nnsens_core._approx.combine`), when the method reports one."""
    v.positive("batch_size", batch_size, integer=True)
    if spec is None:
        spec = getattr(model, "spec", None)
    m = registry.get(method)
    dev = resolve_device(device)
    net = inference_model(model, dev)
    x = _inputs(data, spec)
    labels = np.asarray(data.labels, dtype=np.int64)
    if preds is None:
        preds = predict_proba(net, x, dev, max(batch_size, 64)).argmax(1).numpy()
    ok = np.flatnonzero(labels == np.asarray(preds))
    cfg = registry.config_for(m.name, {m.name: cfg} if cfg is not None else None, tuple(x.shape[2:]),
                              model)
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    n_batches = -(-len(ok) // batch_size)
    reports = []
    for b in range(n_batches):
        idx = ok[b * batch_size:(b + 1) * batch_size]
        sub = sub_progress(progress, m.name, b * 1000, n_batches * 1000, span=1000)
        got: dict | None = {} if details is not None else None
        maps = normalize_maps(m(net, x[idx], labels[idx].tolist(), cfg, spec=spec, device=dev,
                                progress=sub, details=got),
                              clip_negative=m.signed).numpy().astype(np.float64)
        reports.append((got or {}).get("approx"))
        for c in np.unique(labels[idx]):
            sel = labels[idx] == c
            sums[int(c)] = sums.get(int(c), 0) + maps[sel].sum(0)
            counts[int(c)] = counts.get(int(c), 0) + int(sel.sum())
    combined = _approx.combine(reports)
    if details is not None and combined:
        details["approx"] = combined
    return {c: (sums[c] / counts[c], counts[c]) for c in sorted(sums)}
