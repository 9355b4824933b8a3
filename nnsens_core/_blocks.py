"""Blocks of image models: naming and probing them, tapping their outputs in one forward pass
(stopping after the last), channel aggregation and tile pooling of maps."""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch
from torch import nn

from . import _validate as v
from ._batching import auto_batch_size
from ._hooks import add_forward_hook, as_mapping, get_module, probe_outputs
from ._script_chain import (OUTPUT_LABEL, OUTPUT_MODULE, ScriptChain, ScriptReader,
                            first_conv_channels, is_script, script_blocks)
from .errors import NnsensError
from .zoo import CONV_TYPES, image_blocks

AGGREGATES = ("mean", "sum", "max", "l2")
MAX_AUTO_BATCH = 1024
CPU_BATCH_BYTES = 128 * 2**20
"""On CPU, bigger batches are slower per image once the activations leave the caches and every
layer's output is a fresh page-faulted allocation (demo VGG-16, one thread: batch 64 ~1.6 ms per
perturbation, batch 512 ~2.7 ms), so the automatic batch keeps ``batch * bytes_per_item`` under
this."""

# --------------------------------------------------------------------------- helpers

def order_of_magnitude(t: torch.Tensor | np.ndarray) -> int:
    """``floor(log10(max |t|))`` (0 for an all-zero map): the paper prints maps as value x 10^n."""
    m = float(np.abs(np.asarray(t)).max()) if np.asarray(t).size else 0.0
    return int(math.floor(math.log10(m))) if m > 0 and math.isfinite(m) else 0


def pool_tiles(maps: torch.Tensor, k: int, how: str = "mean") -> torch.Tensor:
    """Pool the last two dims into k x k tiles (edge tiles use the pixels they have)."""
    v.positive("k", k, integer=True)
    v.one_of("how", how, ("mean", "max", "sum"))
    if k == 1:
        return maps.clone()
    lead, (h, w) = maps.shape[:-2], maps.shape[-2:]
    x = maps.reshape(-1, 1, h, w).float()
    if how == "max":
        y = nn.functional.max_pool2d(x, k, k, ceil_mode=True)
    else:
        s = nn.functional.avg_pool2d(x, k, k, ceil_mode=True, divisor_override=1)
        if how == "sum":
            y = s
        else:
            cnt = nn.functional.avg_pool2d(torch.ones(1, 1, h, w), k, k, ceil_mode=True,
                                           divisor_override=1)
            y = s / cnt
    return y.reshape(*lead, *y.shape[-2:])


def aggregate_channels(maps: torch.Tensor, how: str = "mean", dim: int = -3) -> torch.Tensor:
    """Collapse the channel dim: ``mean``, ``sum``, ``max`` (of |.|) or ``l2``."""
    v.one_of("aggregate", how, AGGREGATES)
    if how == "mean":
        return maps.mean(dim)
    if how == "sum":
        return maps.sum(dim)
    if how == "max":
        return maps.abs().amax(dim)
    return torch.linalg.vector_norm(maps, dim=dim)


def detect_blocks(model: nn.Module) -> dict[str, str]:
    """The detected VGG/ResNet blocks of an eager (:func:`~nnsens_core.zoo.image_blocks`) or
    TorchScript (:func:`~nnsens_core._script_chain.script_blocks`) model; ``{}`` when none."""
    return script_blocks(model) if is_script(model) else image_blocks(model)


def resolve_blocks(model: nn.Module, blocks: Mapping[str, str] | list[str] | None) -> dict[str, str]:
    """``{label: module name}``; ``None``/empty means the detected VGG/ResNet blocks.

    Module name ``""`` (or ``"output"`` where no module has that name) is the model output itself.
    For a TorchScript model without detected blocks, ``None`` means the model output alone; its
    blocks must be stages of its forward chain (:mod:`~nnsens_core._script_chain`), which is
    checked on the first input."""
    scripted = is_script(model)
    mapping = as_mapping(blocks) if blocks else detect_blocks(model)
    if not mapping and scripted:
        mapping = {OUTPUT_LABEL: OUTPUT_MODULE}
    if not mapping:
        raise NnsensError("no blocks given and none detected (the model is neither VGG-like nor "
                          "ResNet-like); pass blocks={label: module name}, e.g. from "
                          "zoo.conv_layers(model), or 'output' for the model output")
    names = dict(model.named_modules())
    mapping = {lb: (OUTPUT_MODULE if n == OUTPUT_LABEL and n not in names else n)
               for lb, n in mapping.items()}
    for name in mapping.values():
        get_module(model, name)
    if scripted:
        ScriptReader(model, mapping)       # names that are not stages of the chain: clear error
    return mapping


def _first_conv(model: nn.Module) -> nn.Module | None:
    """The first ``Conv2d`` or ``Conv3d`` of ``model`` (None without one)."""
    for m in model.modules():
        if isinstance(m, CONV_TYPES):
            return m
    return None


def _first_conv_channels(model: nn.Module) -> int | None:
    if is_script(model):
        return first_conv_channels(model)
    conv = _first_conv(model)
    return None if conv is None else conv.in_channels


class _Stop(Exception):
    """Raised by the last hook so a pass stops right after the last block."""


def _out_tensor(out):
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise NnsensError(f"a block returned {type(out).__name__}; pick a module that returns a tensor")
    return out


class _BlockTap:
    """Forward hooks on the block modules for the duration of a ``with`` block (TorchScript
    models, which have no hooks: a :class:`~nnsens_core._script_chain.ScriptReader` instead).

    ``reduce(label, out)`` is applied to each block output as soon as it is produced (so no block
    output is kept); after ``stop_after`` hook calls the pass is stopped with :class:`_Stop`.
    """

    def __init__(self, model: nn.Module, mapping: dict[str, str], reduce):
        self.model, self.mapping, self.reduce = model, mapping, reduce
        self.values: dict[str, object] = {}
        self.calls = 0
        self.stop_after: int | None = None
        self.handles: list = []
        self.reader: ScriptReader | None = None

    def __enter__(self):
        if self.mapping and is_script(self.model):
            self.reader = ScriptReader(self.model, self.mapping)   # no hooks: run its chain
            return self
        try:
            for label, name in self.mapping.items():
                module = get_module(self.model, name)
                self.handles.append(add_forward_hook(module, self._hook(label)))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _hook(self, label):
        def hook(_m, _inp, out):
            self.values[label] = self.reduce(label, _out_tensor(out))
            self.calls += 1
            if self.stop_after is not None and self.calls >= self.stop_after:
                raise _Stop
        return hook

    def run(self, x: torch.Tensor):
        self.values, self.calls = {}, 0
        if self.reader is not None:
            self.values = self.reader.run(x, lambda lb, out: self.reduce(lb, _out_tensor(out)))
            self.calls = len(self.values)
            return self.values
        try:
            self.model(x)
        except _Stop:
            pass
        missing = [lb for lb in self.mapping if lb not in self.values]
        if missing:
            raise NnsensError(f"block(s) {missing} (modules {[self.mapping[m] for m in missing]}) "
                              "produced no output in the forward pass; pick modules the forward "
                              "pass calls")
        return self.values

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []
        return False


def _bytes_per_item(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of all leaf-module outputs (every call counted) for one input ``x`` plus twice the
    input, at ``x``'s element size: an upper bound of one batch item. TorchScript models: the
    outputs of the stages of their forward chain, or (not a chain) a guess of 64 inputs."""
    if is_script(model):
        chain = ScriptChain(model)
        try:
            chain.verify(x[None])
            elems = chain.stage_numel
        except NnsensError:
            elems = 64 * x.numel()
        return (2 * x.numel() + elems) * x.element_size()
    leaves = [n for n, m in model.named_modules() if next(m.children(), None) is None]
    shapes = probe_outputs(model, x[None], leaves, all_calls=True)
    elems = sum(math.prod(s) for calls in shapes.values() for s in calls if s)
    return (2 * x.numel() + elems) * x.element_size()


def _auto_batch(bytes_per_item: int, dev: torch.device) -> int:
    """Perturbations per pass: what fits the memory budget, at most MAX_AUTO_BATCH, and on CPU
    at most what keeps the batch's activations under CPU_BATCH_BYTES (but at least 8)."""
    bs = min(MAX_AUTO_BATCH, auto_batch_size(bytes_per_item))
    if dev.type == "cpu":
        bs = min(bs, max(8, CPU_BATCH_BYTES // max(1, int(bytes_per_item))))
    return max(1, bs)

