"""Split a model at the end of the layers the incremental engine can run, with torch.fx.

Occlusion (:func:`nnsens_core.saliency.occlusion.occlusion`) changes one window of the input, so the layers a
VGG-like model applies first (convs, pools, pointwise layers, e.g. the children of ``features``)
can be computed incrementally (:mod:`nnsens_core._incremental`); the rest of the model (the
*tail*) then runs on their output. :func:`split_head` finds those layers in the traced graph of
the model and builds the tail as a ``torch.fx.GraphModule`` whose only input is their output.

The model is never changed: tracing only reads it, and the tail GraphModule refers to the
model's own sub-modules and parameters (it calls them, so their hooks still run). Nothing is
cached: the split is rebuilt on every call (tracing a VGG takes milliseconds).

Threads: ``torch.fx`` traces by patching ``nn.Module.__call__`` and ``__getattr__`` on the class,
for every thread, while it runs; the dashboard serves one model to many sessions (one thread
each), so a plain ``symbolic_trace`` would hand another session's forward pass fx proxies
instead of tensors. :class:`_Tracer` acts only in the thread that traces (other threads get the
original behaviour), and one lock keeps two traces from interleaving their patches (each trace
restores what it found, so overlapping traces could leave a patch installed).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

from torch import fx, nn

from . import _incremental
from ._hooks import has_active_hooks

_TRACE_LOCK = threading.Lock()


class _Tracer(fx.Tracer):
    """``fx.Tracer`` whose class-wide patches pass other threads through untouched."""

    def __init__(self):
        super().__init__()
        self._owner = threading.get_ident()

    def call_module(self, m, forward, args, kwargs):
        if threading.get_ident() != self._owner:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        if threading.get_ident() != self._owner:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)


@dataclass(frozen=True)
class Split:
    """``model(x) == tail(head(x))`` where ``head`` runs ``layers`` (named ``names``) in order."""
    layers: tuple[nn.Module, ...]
    names: tuple[str, ...]
    tail: fx.GraphModule


def split_head(model: nn.Module) -> Split | str:
    """The longest run of layers the engine supports that the model applies first to its input,
    and the tail; or a string saying why there is none.

    The run is a chain of ``call_module`` nodes of the traced graph: the first takes the model's
    only input and nothing else reads that input, every other takes the previous one's output,
    each output but the last is read only by the next layer, each layer is called only there, and
    the last output is read exactly once (besides shape queries such as ``f.view(f.size(0), -1)``).
    It must contain a convolution (else nothing is saved).
    """
    tracer = _Tracer()
    for name, m in model.named_modules():
        # tracing runs through non-leaf modules: their hooks would see fx proxies, and the tail
        # (a flat graph) would not call them
        if has_active_hooks(m) and not tracer.is_leaf_module(m, name):
            return f"{name or 'the model'} has forward hooks"
    before = _attributes(model)
    try:
        with _TRACE_LOCK:
            graph = tracer.trace(model)
    except Exception as exc:   # tracing runs arbitrary forward code; any failure means "no split"
        first = (str(exc).splitlines() or [""])[0][:120]
        return f"torch.fx cannot trace the model ({type(exc).__name__}: {first})"
    finally:
        changed = _restore(model, before)
    if changed:
        return f"the model's forward sets attributes ({changed}); its tail cannot be traced safely"
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        return f"the model's forward takes {len(inputs)} inputs (expected one image batch)"
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for n in graph.nodes:
        if n.op == "call_module":
            calls[n.target] = calls.get(n.target, 0) + 1

    chain, node, why = [], inputs[0], ""
    while True:
        users = list(node.users)
        if len(users) != 1:
            what = "the model input" if node is inputs[0] else f"the output of {node.target!r}"
            why = f"{what} is used {len(users)} times"
            break
        nxt = users[0]
        if nxt.op != "call_module" or nxt.args != (node,) or nxt.kwargs:
            why = f"{_describe(nxt)} is not a layer applied to {_describe(node)} alone"
            break
        rule = _incremental.layer_rule(modules[nxt.target])
        if isinstance(rule, str):
            why = f"{nxt.target} ({type(modules[nxt.target]).__name__}) {rule}"
            break
        if calls[nxt.target] != 1:
            why = f"{nxt.target} is called {calls[nxt.target]} times"
            break
        chain.append(nxt)
        node = nxt
    if not chain:
        return f"the model does not start with a layer the incremental engine supports ({why})"
    if sum(not _shape_query(u) for u in chain[-1].users) != 1:
        return f"the engine's last layer ends where {why}"
    if not any(isinstance(modules[n.target], nn.Conv2d) for n in chain):
        return f"no convolution before the first layer the engine cannot run ({why})"
    return Split(tuple(modules[n.target] for n in chain), tuple(n.target for n in chain),
                 _tail(model, graph, inputs[0], chain))


def _attributes(model: nn.Module) -> list:
    """Every module's attributes (references), to undo what a traced forward assigns."""
    return [(m, dict(m.__dict__), *(dict(getattr(m, k)) for k in _DICTS)) for m in model.modules()]


_DICTS = ("_parameters", "_buffers", "_modules")


def _restore(model: nn.Module, snapshot: list) -> str:
    """Put back attributes a traced forward changed (e.g. ``self.last = x`` stored an fx proxy);
    returns the first changed name, or ``""``."""
    changed = ""
    for m, attrs, *dicts in snapshot:
        for live, old in ((m.__dict__, attrs), *zip((getattr(m, k) for k in _DICTS), dicts)):
            if live.keys() != old.keys() or any(live[k] is not v for k, v in old.items()):
                changed = changed or next(
                    (k for k in (*live, *old) if k not in old or k not in live or live[k] is not old[k]),
                    "?")
                live.clear()
                live.update(old)
    return changed


def _shape_query(node: fx.Node) -> bool:
    """``t.size(...)``, ``t.dim()`` or ``t.shape``: reads only the shape, which stays the same."""
    if node.op == "call_method":
        return node.target in ("size", "dim")
    return node.op == "call_function" and node.target is getattr and node.args[1:] == ("shape",)


def _describe(node: fx.Node) -> str:
    if node.op == "placeholder":
        return "the model input"
    if node.op in ("call_module", "call_method"):
        return f"{node.op} {node.target!r}"
    return f"{node.op} {getattr(node.target, '__name__', node.target)!r}"


def _tail(model: nn.Module, graph: fx.Graph, inp: fx.Node, chain: list[fx.Node]) -> fx.GraphModule:
    """A GraphModule computing the model's output from the last chain layer's output (its only
    input): every node but the input and the chain (nothing else reads them)."""
    tail = fx.Graph()
    env: dict[fx.Node, fx.Node] = {chain[-1]: tail.placeholder("head_out")}
    skip = {inp, *chain}
    for n in graph.nodes:
        if n not in skip:
            env[n] = tail.node_copy(n, lambda a: env[a])
    return fx.GraphModule(model, tail, class_name="OcclusionTail")
