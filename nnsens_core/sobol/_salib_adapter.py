"""What :func:`nnsens_core.sobol.estimators.sample` copies from SALib (pinned: SALib==1.6.0), in one
place, so that its samples stay equal to ``SALib.sample.sobol.sample`` (``tests/test_adapters.py``
compares them on the installed versions):

* the base sequence: SALib draws ``scipy.stats.qmc.Sobol(d=2D, scramble=True, seed=seed).random(N)``.
  ``seed=`` is SciPy's legacy keyword (SPEC 7): an int there seeds a different stream than the
  same int given as ``rng=``, so :func:`sobol_base` passes ``seed=`` exactly as SALib does;
* the scaling to bounds: SALib's private ``SALib.util._scale_samples`` computes, in place,
  ``u * (hi - lo) + lo`` (``np.multiply`` then ``np.add``); :func:`scale_to_bounds` does the same
  float64 operations without importing the private function.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

PINNED = "SALib==1.6.0"
"""The version whose sampling this module reproduces (requirements.txt)."""


def sobol_base(n: int, dim: int, seed: int | None) -> np.ndarray:
    """SALib's scrambled Sobol' base: ``(n, dim)`` float64 points in [0, 1)."""
    from scipy.stats import qmc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SciPy may warn about the legacy ``seed=`` spelling
        return qmc.Sobol(d=dim, scramble=True, seed=seed).random(n)


def scale_to_bounds(u: np.ndarray, bounds: Sequence[tuple[float, float]]) -> np.ndarray:
    """Scale ``u`` (points in [0, 1], the last axis one entry per bound) in place to ``bounds``,
    with SALib's arithmetic (elementwise, so any leading shape gives the same floats); returns ``u``."""
    b = np.asarray(bounds, dtype=np.float64)
    lo, hi = b[:, 0], b[:, 1]
    np.multiply(u, hi - lo, out=u)
    np.add(u, lo, out=u)
    return u
