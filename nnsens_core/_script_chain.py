"""Block outputs of TorchScript models without forward hooks.

TorchScript modules have no Python forward hooks, but their sub-modules are callable. When a
scripted model's ``forward`` is a plain chain of its children (an ``nn.Sequential``, or a module
whose ``forward`` applies ``features``, then ``avgpool``, then ``classifier``, as VGG scripts),
the output of every stage can be read by running the chain child by child:

* :class:`ScriptChain` decomposes the model into callable stages, in the order of its children,
  descending into scripted ``Sequential`` s (recursively). A stage's name is its module name (as
  in ``named_modules()``); a ``Sequential``'s name stands for the output of its last stage.
  ``Linear`` stages fed a map get it flattened (``torch.flatten(x, 1)``, which torchvision's VGG
  and ResNet call between their pooling and their classifier) when that is what makes the chain
  match the model.
* Before any stage output is used, the chain is run once on the caller's input and its final
  output must equal ``model(x)`` to 1e-5 (:meth:`ScriptChain.verify`); otherwise the model is
  refused with :data:`NOT_A_CHAIN` (only the model output can then be used).
* The model output itself (module name ``""``) is always readable: one call of the model.
"""
from __future__ import annotations

import torch
from torch import nn

from .errors import NnsensError

OUTPUT_LABEL = "output"
"""Label of the block that is the model output itself (module name ``""``)."""
OUTPUT_MODULE = ""

TOLERANCE = 1e-5
NOT_A_CHAIN = (
    "this TorchScript model's forward is not a plain chain of its sub-modules (running its "
    "children one after the other does not reproduce its output to 1e-5), and TorchScript has no "
    "forward hooks, so inner block / layer outputs cannot be read; only the model output can be "
    "used (blocks: 'output', e.g. nnsens local --blocks output; class-logit targets for "
    "activation maximisation), or save the weights as a state_dict for a built-in architecture")


def is_script(model) -> bool:
    """Whether ``model`` is a TorchScript module."""
    return isinstance(model, torch.jit.ScriptModule)


def kind(m: nn.Module) -> str:
    """The class name a module was scripted from (``original_name``), else its own class name."""
    return getattr(m, "original_name", None) or type(m).__name__


def script_blocks(model: nn.Module) -> dict[str, str]:
    """The blocks :func:`~nnsens_core.zoo.image_blocks` would detect on the eager model, from the
    scripted module names and ``original_name`` s: ResNet ``layer1..4``, VGG after each max-pool
    of ``features``; ``{}`` when neither is found."""
    names = dict(model.named_modules())
    if all(f"layer{i}" in names for i in range(1, 5)):
        return {f"layer{i}": f"layer{i}" for i in range(1, 5)}
    features = names.get("features")
    if features is not None and kind(features) == "Sequential":
        pools = [f"features.{n}" for n, m in features.named_children()
                 if kind(m) in ("MaxPool2d", "MaxPool3d")]
        if pools:
            return {f"block{i + 1}": p for i, p in enumerate(pools)}
    return {}


def first_conv_channels(model: nn.Module) -> int | None:
    """Input channels of the first scripted ``Conv2d`` / ``Conv3d`` (None without one)."""
    for m in model.modules():
        if kind(m) in ("Conv2d", "Conv3d"):
            try:
                return int(m.in_channels)
            except (AttributeError, RuntimeError, TypeError):
                return None
    return None


class ScriptChain:
    """The model's children as a chain of callable stages (see the module docstring)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.stages: list[tuple[str, nn.Module]] = []
        self.ends: dict[str, int] = {}          # module name -> index of the stage it outputs
        self.flatten = False
        self.verified_shape: tuple | None = None
        self.stage_numel = 0                    # elements of all stage outputs, per item
        if kind(model) == "Sequential":
            self._expand("", model)
        else:
            for name, child in model.named_children():
                self._expand(name, child)
        self.ends.pop(OUTPUT_MODULE, None)

    def _expand(self, name: str, m: nn.Module) -> None:
        children = list(m.named_children())
        if kind(m) == "Sequential" and children:
            for sub, child in children:
                self._expand(f"{name}.{sub}" if name else sub, child)
            if self.stages:
                self.ends[name] = len(self.stages) - 1
        else:
            self.stages.append((name, m))
            self.ends[name] = len(self.stages) - 1

    @property
    def names(self) -> list[str]:
        """Module names whose output the chain gives, in forward order."""
        return sorted(self.ends, key=lambda n: (self.ends[n], -n.count(".")))

    def _step(self, i: int, a: torch.Tensor, flatten: bool) -> torch.Tensor:
        m = self.stages[i][1]
        if flatten and a.ndim > 2 and kind(m) == "Linear":
            a = torch.flatten(a, 1)
        return m(a)

    def run(self, x: torch.Tensor, visit=None, last: int | None = None, flatten: bool | None = None):
        """Run stages ``0..last`` (all by default) on ``x``; ``visit(i, out)`` after each stage.
        Returns the last output."""
        flatten = self.flatten if flatten is None else flatten
        a = x
        stop = len(self.stages) - 1 if last is None else last
        for i in range(stop + 1):
            a = self._step(i, a, flatten)
            if not isinstance(a, torch.Tensor):
                raise NnsensError(f"stage {self.stages[i][0]!r} of the TorchScript model returns "
                                  f"{type(a).__name__}, not a tensor")
            if visit is not None:
                visit(i, a)
        return a

    def verify(self, x: torch.Tensor) -> None:
        """Check once (per input shape) that the chain reproduces ``model(x)`` to 1e-5, with or
        without flattening before ``Linear`` stages; raise :data:`NOT_A_CHAIN` otherwise."""
        shape = tuple(x.shape[1:])
        if self.verified_shape == shape:
            return
        if not self.stages:
            raise NnsensError(NOT_A_CHAIN)
        x = x.detach()
        with torch.no_grad():
            y = self.model(x)
            if not isinstance(y, torch.Tensor):
                raise NnsensError(NOT_A_CHAIN)
            for flatten in (False, True):
                numel = [0]

                def count(_i, out, numel=numel):
                    numel[0] += out[0].numel() if out.ndim else 1
                try:
                    yc = self.run(x, count, flatten=flatten)
                except (RuntimeError, NnsensError, TypeError, ValueError, IndexError):
                    continue
                if yc.shape == y.shape and torch.allclose(yc.float(), y.float(), rtol=TOLERANCE,
                                                          atol=TOLERANCE):
                    self.flatten, self.verified_shape, self.stage_numel = flatten, shape, numel[0]
                    return
        raise NnsensError(NOT_A_CHAIN)


def stage_shapes(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Output shape (without batch) of every readable module of a TorchScript model (the names
    of :attr:`ScriptChain.names`, forward order) for the batch ``example``; raises
    :data:`NOT_A_CHAIN` when the chain does not reproduce the model there."""
    chain = ScriptChain(model)
    chain.verify(example)
    shapes: dict[int, tuple[int, ...]] = {}
    with torch.no_grad():
        chain.run(example.detach(), lambda i, out: shapes.__setitem__(i, tuple(out.shape[1:])))
    return {n: shapes[chain.ends[n]] for n in chain.names}


def block_choices(model: nn.Module) -> list[str]:
    """Module names a block picker offers for a TorchScript model: the stages of its forward
    chain (and the ``Sequential`` s grouping them), then ``"output"`` (the model output)."""
    return [*ScriptChain(model).names, OUTPUT_LABEL]


class ScriptReader:
    """Reads the outputs of the modules ``mapping`` (``{label: module name}``; ``""`` = the model
    output) of a TorchScript model on a batch, without hooks."""

    def __init__(self, model: nn.Module, mapping: dict[str, str]):
        self.model, self.mapping = model, dict(mapping)
        self.chain = None
        inner = [n for n in self.mapping.values() if n != OUTPUT_MODULE]
        if inner:
            self.chain = ScriptChain(model)
            unknown = [n for n in inner if n not in self.chain.ends]
            if unknown:
                shown = ", ".join(self.chain.names[:25]) + (" ..." if len(self.chain.ends) > 25 else "")
                raise NnsensError(
                    f"{'module' if len(unknown) == 1 else 'modules'} {', '.join(map(repr, unknown))} "
                    "cannot be read from this TorchScript model (it has no forward hooks): only the "
                    "outputs of the stages of its forward chain can, i.e. one of: "
                    f"{shown or '(none)'}, or 'output' (the model output)")
            at: dict[int, list[str]] = {}
            last = len(self.chain.stages) - 1
            for lb, n in self.mapping.items():
                at.setdefault(last if n == OUTPUT_MODULE else self.chain.ends[n], []).append(lb)
            self.at, self.last = at, max(at)

    def run(self, x: torch.Tensor, reduce) -> dict[str, object]:
        """``{label: reduce(label, output)}`` for one batch ``x``."""
        values: dict[str, object] = {}
        if self.chain is None:
            out = self.model(x)
            if isinstance(out, (tuple, list)):
                out = out[0]
            for lb in self.mapping:
                values[lb] = reduce(lb, out)
            return values
        self.chain.verify(x)

        def visit(i, out):
            for lb in self.at.get(i, ()):
                values[lb] = reduce(lb, out)
        self.chain.run(x, visit, last=self.last)
        return values
