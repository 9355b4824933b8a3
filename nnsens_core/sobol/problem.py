"""The Sobol problem (names and bounds) and the run configuration."""
from __future__ import annotations

import math
from dataclasses import dataclass
import numpy as np
from torch import nn

from .. import _validate as v
from ..data import TabularData
from ..errors import NnsensError

OUTPUT = "output"
"""Target name of the model's own output (every other target is a module name)."""

_EPS = float(np.finfo(float).eps)
_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Softplus,
                nn.PReLU, nn.SELU, nn.CELU, nn.Mish, nn.Hardtanh, nn.ReLU6, nn.Softmax)


# --------------------------------------------------------------------------- problem & config

@dataclass(frozen=True)
class SobolProblem:
    """Input names and uniform bounds ``((lo, hi), ...)`` (SALib's ``problem`` dict)."""
    names: tuple[str, ...]
    bounds: tuple[tuple[float, float], ...]

    def __post_init__(self):
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        try:
            bounds = tuple((float(lo), float(hi)) for lo, hi in self.bounds)
        except (TypeError, ValueError):
            raise NnsensError(f"bounds={self.bounds!r} must be pairs (min, max), one per feature") from None
        object.__setattr__(self, "bounds", bounds)
        if not self.names:
            raise NnsensError("a Sobol problem needs at least one feature")
        if len(self.names) != len(self.bounds):
            raise NnsensError(f"{len(self.names)} feature names but {len(self.bounds)} bounds; "
                              "give one (min, max) pair per feature")
        if len(set(self.names)) != len(self.names):
            raise NnsensError(f"feature names {self.names} repeat; make them unique")
        for name, (lo, hi) in zip(self.names, self.bounds):
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise NnsensError(f"bounds of {name!r} are [{lo}, {hi}]; they must be finite numbers")
            if lo >= hi:
                raise NnsensError(f"bounds of {name!r} are [{lo:g}, {hi:g}]: min must be < max; "
                                  "widen them (a constant feature has no sensitivity: drop it)")

    @property
    def D(self) -> int:
        return len(self.names)

    @classmethod
    def from_data(cls, data: TabularData) -> "SobolProblem":
        """Bounds = per-feature min/max of ``data``; a constant column is refused by name."""
        b = data.bounds()
        for name, (lo, hi) in zip(data.feature_names, b):
            if lo >= hi:
                raise NnsensError(f"feature {name!r} is constant ({lo:g}) in the selected rows, so "
                                  "min/max bounds are empty; drop the column, select more rows, "
                                  "or set its bounds by hand")
        return cls(tuple(data.feature_names), tuple((float(lo), float(hi)) for lo, hi in b))

    def to_salib(self) -> dict:
        return {"num_vars": self.D, "names": list(self.names), "bounds": [list(b) for b in self.bounds]}


@dataclass(frozen=True)
class SobolConfig:
    """One Sobol' run. ``layer``: a hidden module whose neurons are analysed with the output."""
    n: int = 4096
    second_order: bool = True
    seed: int = 0
    num_resamples: int = 100
    conf_level: float = 0.95
    layer: str | None = None

    def __post_init__(self):
        v.power_of_two("n", self.n)
        v.in_range("n", self.n, 2, 2**24)
        if not isinstance(self.second_order, bool):
            raise NnsensError(f"second_order={self.second_order!r} must be True or False")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise NnsensError(f"seed={self.seed!r} must be a whole number >= 0")
        v.positive("num_resamples", self.num_resamples, integer=True)
        v.in_range("num_resamples", self.num_resamples, 2, 100000)
        v.in_range("conf_level", self.conf_level, 0, 1, lo_open=True, hi_open=True)
        if self.layer is not None and (not isinstance(self.layer, str) or not self.layer
                                       or self.layer == OUTPUT):
            raise NnsensError(f"layer={self.layer!r} must be a module name (or None for the output only)")

    @property
    def targets(self) -> tuple[str, ...]:
        return (OUTPUT,) if self.layer is None else (OUTPUT, self.layer)


def rows_per_sample(D: int, second_order: bool) -> int:
    """Model evaluations per base sample: ``2D+2`` with second order, else ``D+2``."""
    return 2 * D + 2 if second_order else D + 2

