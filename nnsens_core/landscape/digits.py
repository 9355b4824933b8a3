"""The image variant on scikit-learn's 8x8 digits: per-pixel trends as maps."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _validate as v
from .._batching import Progress
from .._results import Result
from ..errors import NnsensError
from .tanh_unit import LandscapeConfig
from .trends import LandscapeResult, run_landscape

# --------------------------------------------------------------------------- image variant

@dataclass(frozen=True, eq=False)
class DigitsLandscape(Result):
    """The experiment on scikit-learn's 8x8 digits, target ``label == digit`` (1) vs rest (0).

    Constant pixels (always 0 in this data) are left out of training; their maps hold NaN / False.
    ``increasing_mask`` (8, 8): pixels whose trend's net direction is ``"increasing"`` in run 0;
    ``increasing_share`` (8, 8): share of runs with ``"increasing"``; ``spearman_map``,
    ``rho_map`` (8, 8) (run 0); ``images`` (n, 8, 8) in [0, 1]; ``labels`` (n,).
    """
    digit: int
    result: LandscapeResult
    pixel_index: np.ndarray
    increasing_mask: np.ndarray
    increasing_share: np.ndarray
    spearman_map: np.ndarray
    rho_map: np.ndarray
    agree_map: np.ndarray
    images: np.ndarray
    labels: np.ndarray

    @property
    def config(self) -> LandscapeConfig:
        return self.result.config

    @property
    def seconds(self) -> float:
        return self.result.seconds

    def _payload(self) -> dict:
        return {"digit": self.digit, "n_images": len(self.images), **self.result._payload()}

    def to_frame(self):
        """One row per trained pixel (``result.to_frame()``)."""
        return self.result.to_frame()

    def arrays(self) -> dict:
        return {"increasing_mask": self.increasing_mask, "increasing_share": self.increasing_share,
                "spearman_map": self.spearman_map, "rho_map": self.rho_map,
                "agree_map": self.agree_map, "pixel_index": self.pixel_index}


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits (no download): images (1797, 8, 8) in [0, 1] and labels."""
    from sklearn.datasets import load_digits
    b = load_digits()
    return np.asarray(b.images, np.float64) / 16.0, np.asarray(b.target, np.int64)


def digits_landscape(digit: int = 0, cfg: LandscapeConfig = LandscapeConfig(), n: int | None = None,
                     device="auto", progress: Progress | None = None) -> DigitsLandscape:
    """The image variant: one tanh unit on the 64 pixels, target ``label == digit``."""
    if not isinstance(digit, (int, np.integer)) or not 0 <= int(digit) <= 9:
        raise NnsensError(f"digit={digit!r} must be a whole number in 0..9")
    images, labels = load_digits_arrays()
    if n is not None:
        v.positive("n", n, integer=True)
        if n < 20:
            raise NnsensError(f"n={n} is too few digit images; use at least 20")
        images, labels = images[:n], labels[:n]
    X = images.reshape(len(images), -1)
    y = (labels == int(digit)).astype(np.float64)
    if y.min() == y.max():
        raise NnsensError(f"the first {len(y)} images hold no example of both digit {digit} and "
                          "other digits; use more images")
    keep = np.where(np.ptp(X, axis=0) > 0)[0]
    names = tuple(f"px({p // 8},{p % 8})" for p in keep)
    res = run_landscape(X[:, keep], y, cfg, feature_names=names, target_name=f"digit=={digit}",
                        device=device, progress=progress)

    def to_map(vals, fill):
        out = np.full(64, fill, dtype=np.asarray(vals).dtype)
        out[keep] = vals
        return out.reshape(8, 8)

    labels_k = res.directions()  # net direction of the 2nd-derivative trend
    inc_share = (labels_k == "increasing").mean(0).astype(np.float64)
    agree0 = np.array([np.nan if a is None else float(a) for a in res.agree[0]])
    return DigitsLandscape(
        digit=int(digit), result=res, pixel_index=keep,
        increasing_mask=to_map((labels_k[0] == "increasing"), False).astype(bool),
        increasing_share=to_map(inc_share, np.nan),
        spearman_map=to_map(res.spearman, np.nan), rho_map=to_map(res.trends[0].rho, np.nan),
        agree_map=to_map(agree0, np.nan), images=images, labels=labels)


