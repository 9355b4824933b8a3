"""How far to trust a model's maps: accuracy at chance on the data it explains, and a failed
sanity check (its maps barely change when its weights are randomized).

* :func:`accuracy_verdict` -- the accuracy and the range of accuracies a model guessing at chance
  (probability ``1/K`` per image, ``K`` classes) reaches with 95 % probability on ``n`` images: the
  2.5 % and 97.5 % quantiles of ``Binomial(n, 1/K) / n``. The model is *at chance* when its
  accuracy does not exceed the upper quantile.
* :func:`sanity_verdict` -- from a cascading-randomization result
  (:func:`~nnsens_core.saliency.compare.sanity_check`): the methods whose mean similarity to the
  original maps stays at or above ``threshold`` once every listed layer is randomized fail.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import NnsensError

SANITY_THRESHOLD = 0.5
"""Similarity to the original maps (after randomizing every layer) at or above which a method
fails the sanity check."""


@dataclass(frozen=True)
class AccuracyVerdict:
    """``accuracy`` on ``n`` images of ``k`` classes; ``low`` / ``high``: the central 95 % range of
    accuracies at chance (``1/k``); ``at_chance``: ``accuracy <= high``."""
    accuracy: float
    n: int
    k: int
    low: float
    high: float

    @property
    def at_chance(self) -> bool:
        return self.n > 0 and self.accuracy <= self.high

    def text(self) -> str:
        return (f"accuracy {self.accuracy:.1%} on {self.n} images; chance (1/{self.k}) gives "
                f"{self.low:.1%}–{self.high:.1%} (95 %)")


def accuracy_verdict(labels, preds, k: int) -> AccuracyVerdict:
    """Accuracy of ``preds`` against ``labels`` and the 95 % range of a chance-level guesser."""
    from scipy.stats import binom
    labels, preds = np.asarray(labels).reshape(-1), np.asarray(preds).reshape(-1)
    if labels.shape != preds.shape:
        raise NnsensError(f"{len(labels)} labels but {len(preds)} predictions; give one each")
    if not (isinstance(k, (int, np.integer)) and k >= 2):
        raise NnsensError(f"k={k!r} must be the number of classes (>= 2)")
    n = len(labels)
    if n == 0:
        return AccuracyVerdict(float("nan"), 0, int(k), float("nan"), float("nan"))
    lo, hi = binom.ppf([0.025, 0.975], n, 1.0 / k) / n
    return AccuracyVerdict(float((labels == preds).mean()), n, int(k), float(lo), float(hi))


@dataclass(frozen=True)
class SanityVerdict:
    """Per method, the mean similarity to the original maps after the last randomization step;
    ``failed``: the methods at or above ``threshold``."""
    final: dict
    threshold: float
    metric: str

    @property
    def failed(self) -> tuple[str, ...]:
        return tuple(m for m, v in self.final.items() if np.isfinite(v) and v >= self.threshold)


def sanity_verdict(result, threshold: float = SANITY_THRESHOLD) -> SanityVerdict:
    """The verdict of a :class:`~nnsens_core.saliency.metrics.RandomizationResult`."""
    final = {m: float(np.asarray(v)[-1]) for m, v in result.mean.items()}
    return SanityVerdict(final, float(threshold), result.metric)
