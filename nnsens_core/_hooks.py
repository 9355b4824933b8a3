"""Forward hooks, registered and removed inside one call (try/finally)."""
from __future__ import annotations

import contextlib
from typing import Iterator, Mapping

import torch
from torch import nn

from .errors import NnsensError


def get_module(model: nn.Module, name: str) -> nn.Module:
    """The sub-module called ``name`` (as in ``model.named_modules()``), or a clear error."""
    modules = dict(model.named_modules())
    if name not in modules:
        names = [n for n in modules if n]
        shown = ", ".join(names[:25]) + (" ..." if len(names) > 25 else "")
        raise NnsensError(f"layer {name!r} does not exist in the model; choose one of: {shown}")
    return modules[name]


@contextlib.contextmanager
def capture_outputs(model: nn.Module, names: list[str] | tuple[str, ...],
                    detach: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of the named modules during forward passes inside the ``with`` block.

    The dict yielded is filled on every forward pass (last pass wins). Hooks are always removed.
    """
    store: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for name in names:
            module = get_module(model, name)

            def hook(_m, _inp, out, _name=name):
                if isinstance(out, (tuple, list)):
                    out = out[0]
                store[_name] = out.detach() if detach else out
            handles.append(module.register_forward_hook(hook))
        yield store
    finally:
        for h in handles:
            h.remove()


def forward_with_outputs(model: nn.Module, x: torch.Tensor,
                         names: list[str] | tuple[str, ...]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward pass returning ``(model(x), {name: output})``."""
    with capture_outputs(model, names) as store:
        y = model(x)
        return y, dict(store)


def hook_count(model: nn.Module) -> int:
    """Number of forward hooks currently registered anywhere in ``model`` (tests use it)."""
    return sum(len(m._forward_hooks) for m in model.modules())


def as_mapping(names: Mapping[str, str] | list[str]) -> dict[str, str]:
    """Display label -> module name for a list of module names or an existing mapping."""
    return dict(names) if isinstance(names, Mapping) else {n: n for n in names}
