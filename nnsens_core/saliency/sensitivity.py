"""Local pixel sensitivity of one block as a saliency method (``sensitivity``, class-agnostic):
how strongly the block's output reacts to a small perturbation of each pixel
(:func:`nnsens_core.local_sensitivity.sensitivity_map`), channel-aggregated. Images only."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .._batching import Progress
from ..device import inference_model
from ..errors import NnsensError
from ..local_sensitivity import LocalConfig, sensitivity_map
from ..zoo import image_blocks, last_conv_layer
from .registry import Method, register


@dataclass(frozen=True)
class SensitivityConfig:
    """Local pixel sensitivity of module ``block`` (``None``: the model's last detected block)."""
    block: str | None = None
    local: LocalConfig | None = None  # None = gradient estimate, 16 probes
    aggregate: str = "mean"

    def __post_init__(self):
        if self.block is not None and not isinstance(self.block, str):
            raise NnsensError(f"block={self.block!r} must be a module name (str)")
        if self.local is not None and not isinstance(self.local, LocalConfig):
            raise NnsensError(f"local must be a LocalConfig or None, got {type(self.local).__name__}")


def default_block(model: nn.Module) -> str:
    """The last detected block (VGG: after the last max-pool, ResNet: ``layer4``)."""
    blocks = image_blocks(model)
    if blocks:
        return list(blocks.values())[-1]
    return last_conv_layer(model)


def local_sensitivity_map(model, x, targets, cfg: SensitivityConfig, *, spec=None, device="auto",
                          progress: Progress | None = None) -> torch.Tensor:
    """Sensitivity map (N, H, W) of ``cfg.block``; ``targets`` are not used."""
    net = inference_model(model, device)
    local = cfg.local if cfg.local is not None else LocalConfig(method="gradient", n_probes=16)
    return sensitivity_map(net, x, cfg.block or default_block(net), local, device, cfg.aggregate,
                           progress)


register(Method("sensitivity", "Local sensitivity", local_sensitivity_map, SensitivityConfig,
                class_agnostic=True, aliases=("local",),
                description="how strongly the network's internal features react to a small change of "
                            "each pixel, whatever the class (not an explanation of this class)", volumes=False))
