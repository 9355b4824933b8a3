"""The activation-maximization difference map as a saliency method (``am``, images only), and
the typed hand-over of an AM run from the Activation maximization page to the saliency comparison.

The map is ``|x_AM - x|`` averaged over channels, where ``x_AM`` is activation maximization of the
explained class started from the image itself (:func:`nnsens_core.activation_max.difference_map`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from .._batching import Progress
from ..activation_max import AMConfig, AMResult, difference_map
from ..device import inference_model
from ..errors import NnsensError
from ._common import normalize_maps, scaled_steps
from .registry import Method, register


def am_difference(model, x, targets, cfg: AMConfig, *, spec=None, device="auto",
                  progress: Progress | None = None) -> torch.Tensor:
    """``|x_AM - x|`` (N, H, W), channel mean, AM of ``targets[i]`` started from ``x[i]``."""
    spec = spec if spec is not None else getattr(model, "spec", None)
    if spec is None:
        raise NnsensError("the AM difference map needs the model's ModelSpec (its input range and "
                          "normalisation); pass a LoadedModel or spec=")
    net = inference_model(model, device)
    return difference_map(net, spec, x, torch.as_tensor(targets, dtype=torch.long).reshape(-1), cfg,
                          device, progress=progress)


def _sized(cfg: AMConfig, spatial, gflop: float | None = None) -> AMConfig:
    """The default on images of ``spatial`` size (on a model costing ``gflop`` a pass): fewer steps
    above 64x64 (:func:`scaled_steps`)."""
    return dataclasses.replace(cfg, steps=scaled_steps(cfg.steps, spatial, gflop))


register(Method("am", "AM difference", am_difference, AMConfig, signed=True,
                description="where the image would have to change to look even more like this class "
                            "(activation maximization started from the image, |x_AM − x|); "
                            "brighter = changed more", volumes=False, sized=_sized))


@dataclass(frozen=True, eq=False)
class AMHandover:
    """An activation-maximization run started from one image, handed to the saliency comparison.

    ``map``: ``|x_AM - x_0|`` averaged over channels, float32 ``(n, H, W)``, one row per target;
    ``classes``: the class each row was pushed toward (``None`` for a layer target); ``config``:
    the run's :class:`AMConfig`; ``data_key``: the data & model the start image came from;
    ``index``: the start image's dataset index (``None`` for an upload); ``key``: a string
    identifying the start image (data key + index, or the upload's name and hash).
    """
    map: np.ndarray
    classes: tuple
    config: AMConfig
    data_key: str
    index: int | None
    key: str

    @classmethod
    def from_result(cls, res: AMResult, data_key: str, index: int | None, key: str) -> "AMHandover":
        return cls(res.difference("mean").numpy().astype(np.float32),
                   tuple(t.index if t.layer is None else None for t in res.targets), res.config,
                   data_key, None if index is None else int(index), key)

    def map_for(self, data_key: str, index: int, cls: int) -> np.ndarray | None:
        """The row pushed toward class ``cls`` scaled to [0, 1] like every compared map (positive
        part, per-image min-max), when this run started from dataset image ``index`` of
        ``data_key``; else ``None``."""
        if self.data_key != data_key or self.index is None or self.index != index \
                or cls not in self.classes:
            return None
        row = self.classes.index(cls)
        return normalize_maps(torch.as_tensor(self.map[row:row + 1]), clip_negative=True)[0].numpy()

    def summary(self) -> str:
        return f"{self.config.steps} steps, rule {self.config.rule}"
