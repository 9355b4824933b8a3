"""Private stratified k-fold split of the robustness studies (to be replaced by
``nnsens_core.training.stratified_folds`` once it exists; same contract)."""
from __future__ import annotations

import numpy as np

from ..errors import NnsensError


def stratified_folds(labels, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` pairs ``(train_idx, val_idx)`` (sorted int64 index arrays): every input is in exactly
    one ``val_idx``; each class is shuffled (``seed``) and dealt round-robin over the folds, so
    every fold holds ``floor`` or ``ceil`` of ``n_c / k`` inputs of each class ``c``.

    Raises :class:`NnsensError` for ``k < 2``, fewer than two classes, or a class with fewer than
    ``k`` inputs (a fold would miss it)."""
    y = np.asarray(labels).reshape(-1)
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 2:
        raise NnsensError(f"k={k!r} must be a whole number >= 2 folds")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise NnsensError(f"the labels hold one class only ({classes.tolist()}); stratified folds "
                          "need at least two classes")
    if counts.min() < k:
        c = classes[counts.argmin()]
        raise NnsensError(f"class {c!r} has {counts.min()} input(s), fewer than k={k} folds; "
                          f"use k <= {counts.min()}")
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(y), dtype=np.int64)
    offset = 0
    for c in classes:
        idx = rng.permutation(np.flatnonzero(y == c))
        fold_of[idx] = (np.arange(len(idx)) + offset) % k
        offset += len(idx)  # start the next class where this one stopped: balanced fold sizes
    every = np.arange(len(y))
    return [(every[fold_of != f], every[fold_of == f]) for f in range(k)]
