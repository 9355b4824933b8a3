"""How far to trust a model's maps: accuracy at chance on the data it explains, and a failed
sanity check (its maps barely change when its weights are randomized).

* :func:`accuracy_verdict` -- accuracy and balanced accuracy with the ranges a model guessing at
  chance (probability ``1/K`` per image, ``K`` classes) reaches with 95 % probability: plain
  accuracy within the 2.5 % / 97.5 % quantiles of ``Binomial(n, 1/K) / n``, balanced accuracy below
  a one-sided bound. The model is *at chance* when its balanced accuracy does not exceed that bound.
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
    """``accuracy`` and ``balanced_accuracy`` (mean recall over the classes present) on ``n``
    images of ``k`` classes; ``low`` / ``high``: the central 95 % range of plain accuracy at chance
    (``Binomial(n, 1/k) / n``); ``upper``: the one-sided 95 % bound of balanced accuracy at chance
    (``1/k + 1.645 sd``, sd of a mean of per-class recalls ``Binomial(n_c, 1/k) / n_c``).
    ``at_chance``: ``balanced_accuracy <= upper`` (balanced, so always answering the majority
    class of an unbalanced set is at chance too)."""
    accuracy: float
    balanced_accuracy: float
    n: int
    k: int
    low: float
    high: float
    upper: float

    @property
    def chance(self) -> float:
        return 1.0 / self.k

    @property
    def at_chance(self) -> bool:
        return bool(self.n > 0 and self.balanced_accuracy <= self.upper)

    def text(self) -> str:
        return (f"accuracy {self.accuracy:.1%}, balanced accuracy {self.balanced_accuracy:.1%} on "
                f"{self.n} labelled images; chance {self.chance:.1%} (accuracy at chance "
                f"{self.low:.1%}–{self.high:.1%}, balanced accuracy below {self.upper:.1%}, 95 %)"
                + (": the model performs AT CHANCE on these images" if self.at_chance else ""))


def accuracy_verdict(labels, preds, k: int) -> AccuracyVerdict:
    """Accuracy and balanced accuracy of ``preds`` against ``labels`` and the ranges of a
    chance-level guesser (see :class:`AccuracyVerdict`)."""
    import math

    from scipy.stats import binom
    labels = np.asarray(labels, np.int64).reshape(-1)
    preds = np.asarray(preds, np.int64).reshape(-1)
    if labels.shape != preds.shape:
        raise NnsensError(f"{len(labels)} labels but {len(preds)} predictions; give one each")
    if not (isinstance(k, (int, np.integer)) and k >= 2):
        raise NnsensError(f"k={k!r} must be the number of classes (>= 2)")
    n = len(labels)
    if n == 0:
        nan = float("nan")
        return AccuracyVerdict(nan, nan, 0, int(k), nan, nan, nan)
    lo, hi = binom.ppf([0.025, 0.975], n, 1.0 / k) / n
    present = [c for c in range(int(k)) if (labels == c).any()]
    recalls = [float((preds[labels == c] == c).mean()) for c in present]
    c0 = 1.0 / k
    var = sum(c0 * (1 - c0) / int((labels == c).sum()) for c in present) / len(present) ** 2
    return AccuracyVerdict(float((labels == preds).mean()), float(np.mean(recalls)), n, int(k),
                           float(lo), float(hi), c0 + 1.645 * math.sqrt(var))


@dataclass(frozen=True)
class SanityVerdict:
    """The sanity check (cascading randomization, Adebayo et al. 2018) in one verdict per method.

    ``final[m]``: mean similarity (``metric``) between method ``m``'s maps of the trained model and
    of the model with every layer re-initialised; the method passes when it is below
    ``threshold`` (its maps depend on what the model learned). ``overall``: "pass" (every method
    passes), "fail" (none) or "mixed"."""
    metric: str
    final: dict
    threshold: float = SANITY_THRESHOLD
    steps: tuple = ()
    images: int = 0

    def __post_init__(self):
        if not self.final:
            raise NnsensError("a sanity summary needs at least one method's result")
        if not 0 < self.threshold <= 1:
            raise NnsensError(f"threshold={self.threshold!r} must lie in (0, 1]")

    @property
    def failed(self) -> tuple[str, ...]:
        """The methods whose maps stay similar once every layer is re-initialised."""
        return tuple(m for m in self.final if not self.passed(m))

    def passed(self, method: str) -> bool:
        return bool(self.final[method] < self.threshold)  # NaN (not measurable) does not pass

    @property
    def overall(self) -> str:
        ok = [self.passed(m) for m in self.final]
        return "pass" if all(ok) else "fail" if not any(ok) else "mixed"

    def text(self) -> str:
        per = ", ".join(f"{m}: {'pass' if self.passed(m) else 'FAIL'} ({v:.2f})"
                        for m, v in self.final.items())
        return (f"sanity check {self.overall.upper()}: {self.metric} similarity to the trained "
                f"model's maps after re-initialising every layer (pass below {self.threshold:g}): "
                f"{per}")

    @classmethod
    def from_result(cls, res, threshold: float = SANITY_THRESHOLD) -> "SanityVerdict":
        """From a :class:`~nnsens_core.saliency.metrics.RandomizationResult` (its last step)."""
        final = {m: float(v[-1]) for m, v in res.mean.items()}
        return cls(res.metric, final, threshold, tuple(res.steps), 0)


def sanity_verdict(result, threshold: float = SANITY_THRESHOLD) -> SanityVerdict:
    """The verdict of a :class:`~nnsens_core.saliency.metrics.RandomizationResult`."""
    return SanityVerdict.from_result(result, threshold)
