"""Results of local sensitivity (:mod:`nnsens_core.local_sensitivity`): one image
(:class:`LocalResult`) and several images run with one config (:class:`LocalBatchResult`, the
document the CLI writes and the dashboard offers)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from ._blocks import aggregate_channels, order_of_magnitude, pool_tiles
from ._results import Result
from .errors import NnsensError

if TYPE_CHECKING:  # pragma: no cover
    from .local_sensitivity import LocalConfig


@dataclass
class LocalResult(Result):
    """Sensitivity maps ``(blocks, C, H, W)`` (CPU float32) of one image and what produced them.

    For finite differences ``extra`` holds ``engine`` (``"incremental"`` or ``"full"``), the
    ``batch_size`` used and, when ``incremental="auto"`` fell back to full passes, ``engine_reason``;
    with ``config.tau`` > 0, ``approx``: the error measured against exact values on a sample of
    perturbations (:func:`nnsens_core._approx.error_report`; None when the engine did not apply).
    """
    maps: torch.Tensor
    labels: tuple[str, ...]
    modules: tuple[str, ...]
    base_norms: torch.Tensor  # (blocks,) ||B_q(x)||
    config: LocalConfig
    n_forward: int
    seconds: float
    extra: dict = field(default_factory=dict)

    def tiles(self, k: int, how: str = "mean") -> torch.Tensor:
        """The maps pooled into k x k tiles: ``(blocks, C, ceil(H/k), ceil(W/k))``."""
        return pool_tiles(self.maps, k, how)

    def channel_map(self, aggregate: str = "mean") -> torch.Tensor:
        """One map per block, ``(blocks, H, W)``, aggregated over channels."""
        return aggregate_channels(self.maps, aggregate, dim=1)

    def summary(self) -> dict:
        """Per block: max/mean/min, the order of magnitude and the most sensitive pixel."""
        out = {}
        for q, label in enumerate(self.labels):
            m = self.maps[q]
            flat = int(torch.argmax(m.abs()).item())
            c, rem = divmod(flat, m.shape[1] * m.shape[2])
            i, j = divmod(rem, m.shape[2])
            out[label] = {"module": self.modules[q], "max": float(m.max()), "min": float(m.min()),
                          "mean": float(m.mean()), "order_of_magnitude": order_of_magnitude(m),
                          "argmax_abs": {"channel": c, "row": i, "col": j},
                          "base_norm": float(self.base_norms[q])}
        return out

    def _payload(self) -> dict:
        return {"maps_shape": list(self.maps.shape), "forward_passes": self.n_forward,
                **self.extra, "blocks": self.summary()}

    def to_frame(self):
        import pandas as pd
        return pd.DataFrame.from_dict(self.summary(), orient="index").rename_axis("block")

    def arrays(self) -> dict[str, np.ndarray]:
        return {"maps": self.maps.numpy(), "base_norms": self.base_norms.numpy(),
                "blocks": np.array(self.labels), "modules": np.array(self.modules)}


@dataclass(frozen=True, eq=False)
class LocalBatchResult(Result):
    """Local sensitivity of several images with one config: the per-image results, their mean and
    std maps, and optionally (``exact``) the finite differences a gradient estimate is checked
    against (:func:`~nnsens_core.local_sensitivity.engine_agreement` of the mean maps)."""
    results: tuple[LocalResult, ...]
    exact: tuple[LocalResult, ...] | None = None

    def __post_init__(self):
        if not self.results:
            raise NnsensError("no results to summarise; run at least one image")
        object.__setattr__(self, "results", tuple(self.results))
        if self.exact is not None:
            object.__setattr__(self, "exact", tuple(self.exact))

    @property
    def config(self) -> LocalConfig:
        return self.results[0].config

    @property
    def seconds(self) -> float:
        return float(sum(r.seconds for r in self.results))

    @property
    def labels(self) -> tuple[str, ...]:
        return self.results[0].labels

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and (population) std over the images of the maps, each ``(blocks, C, H, W)``."""
        stack = torch.stack([r.maps for r in self.results])
        return stack.mean(0), stack.std(0, unbiased=False)

    def agreement(self) -> dict | None:
        """Spearman rho and relative error of the mean maps vs the finite differences (or None)."""
        if self.exact is None:
            return None
        from .local_sensitivity import engine_agreement
        ex_mean = torch.stack([r.maps for r in self.exact]).mean(0)
        return engine_agreement(self.mean_std()[0], ex_mean, list(self.labels))

    def to_frame(self):
        """One row per block: statistics of the mean map, std over images and ``||B(x)||`` of image 0."""
        import pandas as pd
        mean, std = self.mean_std()
        r0 = self.results[0]
        rows = [{"block": lb, "module": r0.modules[q], "max": float(mean[q].max()),
                 "mean": float(mean[q].mean()), "min": float(mean[q].min()),
                 "std_over_images": float(std[q].mean()), "order_of_magnitude": order_of_magnitude(mean[q]),
                 "base_norm_image0": float(r0.base_norms[q])} for q, lb in enumerate(self.labels)]
        return pd.DataFrame(rows).set_index("block")

    def _payload(self) -> dict:
        mean, _ = self.mean_std()
        r0 = self.results[0]
        per_image = [r.summary() for r in self.results]
        table = self.to_frame()
        doc = {"n_images": len(self.results), "maps_shape": list(mean.shape),
               "forward_passes": sum(r.n_forward for r in self.results),
               "engine": r0.extra.get("engine"), "engine_reason": r0.extra.get("engine_reason"),
               "blocks": {lb: {**table.loc[lb].to_dict(), "per_image": [s[lb] for s in per_image]}
                          for lb in self.labels}}
        reports = [r.extra.get("approx") for r in self.results if r.extra.get("approx")]
        if reports:   # approximate inference: the worst measured error over the images
            from ._approx import combine
            doc["approx"] = {**combine(reports), "per_image": reports}
        if self.exact is not None:
            doc["agreement_with_finite_differences"] = self.agreement()
            doc["finite_differences"] = {"forward_passes": sum(r.n_forward for r in self.exact),
                                         "seconds": sum(r.seconds for r in self.exact)}
        return doc

    def arrays(self) -> dict[str, np.ndarray]:
        mean, std = self.mean_std()
        r0 = self.results[0]
        out = {"maps": mean.numpy(), "maps_std": std.numpy(),
               "maps_all": torch.stack([r.maps for r in self.results]).numpy(),
               "blocks": np.array(self.labels), "modules": np.array(r0.modules),
               "base_norms": torch.stack([r.base_norms for r in self.results]).numpy()}
        if self.exact is not None:
            out["maps_finite"] = torch.stack([r.maps for r in self.exact]).numpy()
        return out


def decays_with_depth(values) -> bool:
    """True when every block's value is below the previous block's (strictly decreasing)."""
    vals = [float(x) for x in values]
    return len(vals) > 1 and all(b < a for a, b in zip(vals, vals[1:]))


@dataclass(frozen=True, eq=False)
class MeasureComparison(Result):
    """The same images, blocks and perturbations under both formulas (``{formula: batch}``):
    per block the mean of ``s`` over images, channels and pixels, and whether it decays with depth.

    On the demo VGG the choice decides the answer: the norm of the difference shrinks block by
    block while the paper's difference of norms does not."""
    batches: dict

    def __post_init__(self):
        if len(self.batches) < 2:
            raise NnsensError("a comparison needs results for both formulas")
        labels = {b.labels for b in self.batches.values()}
        if len(labels) != 1:
            raise NnsensError("the results to compare have different blocks; run both formulas on "
                              "the same blocks")

    @property
    def config(self):
        return next(iter(self.batches.values())).config

    @property
    def seconds(self) -> float:
        return float(sum(b.seconds for b in self.batches.values()))

    @property
    def labels(self) -> tuple[str, ...]:
        return next(iter(self.batches.values())).labels

    def block_means(self, absolute: bool = False) -> dict[str, list[float]]:
        """``{formula: [mean s (or mean |s|) of each block]}`` over images, channels and pixels."""
        out = {}
        for f, b in self.batches.items():
            stack = torch.stack([r.maps for r in b.results])          # (K, Q, C, H, W)
            stack = stack.abs() if absolute else stack
            out[f] = [float(stack[:, q].double().mean()) for q in range(stack.shape[1])]
        return out

    def decays(self) -> dict[str, bool]:
        """``{formula: mean s decays with depth}`` (:func:`decays_with_depth`)."""
        return {f: decays_with_depth(m) for f, m in self.block_means().items()}

    def to_frame(self):
        """One row per block: mean s and mean |s| under each formula."""
        import pandas as pd
        signed, absolute = self.block_means(), self.block_means(absolute=True)
        cols = {}
        for f in self.batches:
            cols[f"mean s ({f})"] = signed[f]
            cols[f"mean |s| ({f})"] = absolute[f]
        return pd.DataFrame(cols, index=pd.Index(self.labels, name="block"))

    def _payload(self) -> dict:
        return {"blocks": list(self.labels), "mean": self.block_means(),
                "mean_abs": self.block_means(absolute=True), "decays_with_depth": self.decays(),
                "configs": {f: b.config for f, b in self.batches.items()}}

    def arrays(self) -> dict[str, np.ndarray]:
        signed = self.block_means()
        return {"blocks": np.array(self.labels),
                **{f"mean_{f}": np.array(m) for f, m in signed.items()}}
