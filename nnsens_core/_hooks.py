"""Forward hooks, registered and removed inside one call (try/finally).

Models are shared: the dashboard caches one model object for every session, and each session runs
in its own thread. Every hook nnsens_core registers goes through :func:`add_forward_hook`, which
makes it act only on forward passes of the thread that registered it, so one session's hooks never
record (or stop) another session's forward pass through the same module.
"""
from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Callable, Iterator, Mapping

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


def add_forward_hook(module: nn.Module, fn, *, pre: bool = False):
    """Register ``fn`` as a forward hook (``pre=True``: forward pre-hook) of ``module`` that runs
    only in the calling thread; returns the handle (remove it in ``finally``)."""
    owner = threading.get_ident()

    def hook(*args):
        if threading.get_ident() != owner:
            return None          # another thread's pass: leave its input / output alone
        return fn(*args)

    hook.nnsens_thread = owner
    return module.register_forward_pre_hook(hook) if pre else module.register_forward_hook(hook)


def has_active_hooks(module: nn.Module) -> bool:
    """Whether ``module`` has a forward (pre-)hook that can act in the calling thread (hooks that
    another thread registered through :func:`add_forward_hook` cannot)."""
    me = threading.get_ident()
    hooks = (*module._forward_hooks.values(), *module._forward_pre_hooks.values())
    return any(getattr(h, "nnsens_thread", me) == me for h in hooks)


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
            handles.append(add_forward_hook(module, hook))
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


def probe_outputs(model, example_input: torch.Tensor, names: list[str] | tuple[str, ...] | None = None,
                  *, all_calls: bool = False) -> dict[str, tuple]:
    """Output shapes of the named sub-modules (``None``: every named sub-module) in one forward
    pass of ``example_input``, in execution order.

    A module called several times reports its last call (and sits at its last call's place); with
    ``all_calls=True`` each value is instead the list of the shapes of every call, in order. A
    module that returns a tuple or list reports its first element; a non-tensor output gives
    ``()``; modules the pass does not call are missing. Shapes include the batch dimension.

    The pass runs without gradients on :func:`~nnsens_core.device.inference_model` of ``model``
    on the input's device (the caller's model is never switched to eval mode or moved); the hooks
    are removed whatever happens, and errors of the forward pass propagate."""
    from .device import inference_model

    net = inference_model(model, example_input.device)
    if names is None:
        names = [n for n, _ in net.named_modules() if n]
    shapes: dict[str, object] = {}
    handles = []
    try:
        for name in names:
            def hook(_m, _inp, out, _name=name):
                if isinstance(out, (tuple, list)) and out:
                    out = out[0]
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else ()
                if all_calls:
                    shapes.setdefault(_name, []).append(shape)
                else:
                    shapes.pop(_name, None)
                    shapes[_name] = shape
            handles.append(add_forward_hook(get_module(net, name), hook))
        with torch.no_grad():
            net(example_input)
    finally:
        for h in handles:
            h.remove()
    return shapes


_SHAPES: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()
_SHAPES_LOCK = threading.Lock()


def _structure(module: nn.Module) -> tuple:
    """What output shapes depend on besides the input: the sub-modules (name, type) and the
    parameter shapes. Cheap (no forward pass); a layer swapped for another changes it."""
    return (tuple((n, type(m).__name__) for n, m in module.named_modules()),
            tuple(tuple(p.shape) for p in module.parameters()))


def cached_shape_probe(module: nn.Module, key: tuple, compute: Callable[[], object]):
    """``compute()`` (a shape probe: one forward pass of a dummy or example input) once per
    ``module`` object, ``key`` (input shape, device, names, ...) and module structure; later calls
    return the stored answer without a forward pass. A 224-px VGG-16 forward costs ~0.3 s on a
    2-core CPU, and one saliency run used to probe the same shapes up to four times. Failures are
    not stored (they raise each time). The store holds modules weakly."""
    full = (tuple(key), _structure(module))
    with _SHAPES_LOCK:
        per = _SHAPES.get(module)
        if per is not None and full in per:
            return per[full]
    value = compute()
    with _SHAPES_LOCK:
        per = _SHAPES.setdefault(module, {})
        if len(per) > 64:  # many shapes of one module: keep the store small
            per.clear()
        per[full] = value
    return value
