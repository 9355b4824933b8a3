"""Exact incremental inference for local sensitivity and occlusion (Krypton-style).

Idea from Nakandala et al., "Incremental and Approximate Inference for Faster Occlusion-based Deep
CNN Explanations" (SIGMOD 2019): perturbing one k x k tile of the input changes only a box of each
early layer's activation, so each layer need only compute the output box the perturbation can
reach, reading the unperturbed (base) activation around it for context. Results equal those of a
full forward pass up to float rounding (no approximation). The rounding differs, though: a patch
convolution on a small window rounds differently from the full-map convolution that produced the
base activations, so where a block changes very little relative to its activations (deep blocks of
an untrained VGG-16) the two engines can differ by ~1e-4 relative; both are float32 noise around
the float64 value (on the trained demo VGG they are equally close to it).

Two users: finite-difference local sensitivity (:func:`prepare`: k x k tiles of one channel
shifted by a delta, block norms read on the way) and occlusion (:func:`prepare_windows`: a window
of all channels replaced by a reference image, the last layer's full output returned for the rest
of the model, see :mod:`nnsens_core._split`). Both share the planning (:func:`_plan`): a
perturbation is a box of fixed size with a start per box row / column.

Scope (local sensitivity): every block is a child of ONE ``nn.Sequential`` S that receives the
model input unchanged (checked at run time), and every layer of S up to the last block is a Conv2d (zero padding), a
MaxPool2d / AvgPool2d, or a pointwise layer (BatchNorm2d in eval, activations, eval dropout,
Identity). :func:`prepare` returns ``(engine, None)`` or ``(None, reason)``; the caller then uses
the full forward.

How a batch of perturbations runs through S:

* every perturbation carries a *patch*: its activation inside a box of one fixed size per layer
  (the largest box any perturbation reaches, clamped to the map; its start is clamped so the box
  stays inside the map). A box may hold more than the reached region; those values are exact too.
* a sliding-window layer (conv, pool) gathers for each perturbation the input window its output
  box reads, from the base input padded once (zeros, or -inf for max-pool), pastes the incoming
  patch over it and applies the layer with padding 0;
* a pointwise layer applies to the patch;
* a block layer compares its patch with the base output on the same box (outside the box the
  perturbed output equals the base output).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ._hooks import add_forward_hook, has_active_hooks
from ._incremental_layers import _AvgPool, _layer, _Map, _paste

CHOICES = ("auto", "off")
"""``incremental=`` of LocalConfig and OcclusionConfig: use the engine where it applies, or never."""


# --------------------------------------------------------------------------- the engine

@dataclass
class _Step:
    """One layer of S in the plan: its rule, output box (fixed size; start per tile row / col)
    and the base activations it reads."""
    rule: object
    box: tuple[int, int]
    start_r: torch.Tensor            # (nh,) output box start row per tile row
    start_c: torch.Tensor            # (nw,) ... column per tile column
    base_in: _Map | None = None      # windows: the input padded with the rule's pad value
    window: tuple[int, int] = (0, 0)  # windows: input size read by the output box
    inside: bool = False             # windows: the incoming patch always lies in the window
    labels: tuple[str, ...] = ()     # blocks that read this layer's output
    base_out: _Map | None = None     # blocks: the output
    centre_r: torch.Tensor | None = None   # windows: the perturbation's centre row per tile row
    centre_c: torch.Tensor | None = None   # ... column per tile column (float, output coords)
    measure_of: int | None = None    # approx=True: the window layer whose group ends here


class IncrementalEngine:
    """Values of batches of box perturbations of one image, computed layer by layer, box by box.

    A perturbation replaces the input on a box of fixed size ``in_box`` whose start is
    ``in_start[0][ti]``, ``in_start[1][tj]`` (one start per box row ``ti`` / column ``tj``): local
    sensitivity perturbs k x k tiles (:meth:`values`), occlusion replaces a window by a reference
    image (:meth:`outputs`).
    """

    def __init__(self, x, steps, in_box, in_start, labels=(), base_norm=None, replan=None, caps=None):
        self.x, self.steps, self.shape, self.x_tensor = _Map(x), steps, tuple(x.shape), x
        self.in_box, self.in_start = in_box, in_start   # (kh, kw), ((nh,), (nw,))
        self.labels = list(labels)
        self.base_norm = base_norm or {}    # label -> (1,) ||B(x)||
        self._replan = replan               # caps -> steps (engines built with approx=True)
        self.caps = caps                    # layer index -> (cap_r, cap_c); None = exact

    # ------------------------------------------------------------------ approximate inference
    def calibrate(self, tau: float, ti: torch.Tensor, tj: torch.Tensor, patch: torch.Tensor) -> dict:
        """Projective-field caps for threshold ``tau`` from exact runs of a sample of
        perturbations (``ti``, ``tj``, input boxes ``patch``; this engine must be exact and built
        with ``approx=True``).

        After each sliding-window layer (and the pointwise layers that follow it, e.g. ReLU),
        a position *counts* for a perturbation when the largest change over its channels exceeds
        ``tau`` times the largest change anywhere in that layer for that perturbation. A layer's
        cap (per dim) is the smallest box, centred on the perturbation's projective-field centre,
        that holds every counted position of every sampled perturbation. Returns
        ``{layer index: (cap_r, cap_c)}``.
        """
        if self._replan is None or self.caps is not None:
            raise ValueError("calibrate needs an exact engine built with approx=True")
        need: dict[int, list[int]] = {}

        def visit(st, patch, rows, cols):
            if st.measure_of is None:
                return
            w = self.steps[st.measure_of]
            base = st.base_out.boxes(rows, cols, st.box)
            d = (patch.float() - base.float()).abs().amax(1)                  # (N, h, w)
            peak = d.flatten(1).amax(1)
            hit = (d > tau * peak[:, None, None]) & (peak > 0)[:, None, None]
            got = need.setdefault(st.measure_of, [1, 1])
            for dim, (start, centre, n_out) in enumerate(
                    ((rows, w.centre_r[ti], st.base_out.height), (cols, w.centre_c[tj], st.base_out.width))):
                line = hit.any(2 - dim)                                      # (N, size)
                has = line.any(1)
                if not bool(has.any()):
                    continue
                pos = torch.arange(line.shape[1], device=line.device)
                lo = torch.where(line, pos, line.shape[1]).amin(1) + start
                hi = torch.where(line, pos, -1).amax(1) + start
                got[dim] = max(got[dim], _needed_cap(lo[has], hi[has], centre[has], n_out))

        with torch.inference_mode():
            self.propagate(ti, tj, patch, visit, every=True)
        return {i: tuple(c) for i, c in need.items()}

    def with_caps(self, caps: dict) -> "IncrementalEngine":
        """The approximate engine: each sliding-window layer computes at most a ``caps[i]`` box
        around the perturbation's projective-field centre (the rest: unperturbed activations)."""
        if self._replan is None:
            raise ValueError("with_caps needs an engine built with approx=True")
        return IncrementalEngine(self.x_tensor, self._replan(caps), self.in_box, self.in_start,
                                 self.labels, self.base_norm, None, dict(caps))

    def bytes_per_item(self) -> int:
        """Activation bytes of one perturbation in a batch (gathered windows and patches)."""
        total = self.shape[0] * self.in_box[0] * self.in_box[1]
        c = self.shape[0]
        for st in self.steps:
            if st.rule.window:
                total += 2 * c * st.window[0] * st.window[1]
            c = st.base_out.channels if st.base_out else getattr(st.rule.m, "out_channels", c)
            total += 2 * c * st.box[0] * st.box[1] * (1 + len(st.labels))
        return 4 * total

    def input_boxes(self, ti: torch.Tensor, tj: torch.Tensor, image: "_Map | None" = None):
        """The input box of each perturbation, all channels, cut from ``image`` (default the
        unperturbed input): ``(N, C, kh, kw)``, fresh."""
        src = self.x if image is None else image
        return src.boxes(self.in_start[0][ti], self.in_start[1][tj], self.in_box)

    def propagate(self, ti: torch.Tensor, tj: torch.Tensor, patch: torch.Tensor, visit=None,
                  every: bool = False):
        """Run the perturbed input boxes ``patch`` (N, C, kh, kw) of perturbations ``(ti, tj)``
        through the layers; ``visit(step, patch, rows, cols)`` sees the output box of every
        layer that blocks read (``every``: of every layer). Returns the last layer's output
        boxes and their starts."""
        r0, c0 = self.in_start[0][ti], self.in_start[1][tj]
        for st in self.steps:
            if st.rule.window:
                rows, cols = st.start_r[ti], st.start_c[tj]
                ax = st.rule.axes
                wr, wc = rows * ax[0].stride, cols * ax[1].stride      # window start, padded coords
                win = st.base_in.boxes(wr, wc, st.window)
                win = _paste(win, patch, r0 + ax[0].pad - wr, c0 + ax[1].pad - wc, st.inside)
                patch = st.rule.apply(win, rows, cols, st.box)
                r0, c0 = rows, cols
            else:
                patch = st.rule.apply(patch)
            if visit is not None and (st.labels or every):
                visit(st, patch, r0, c0)
        return patch, r0, c0

    def tile_patches(self, p: torch.Tensor, idx: torch.Tensor, delta: torch.Tensor):
        """``(ti, tj, patch)`` of local-sensitivity perturbations ``p`` (flat ``idx`` / ``delta``
        as made by ``perturbation._perturbations``, already indexed by ``p``): the input patch is
        all channels of the tile's box, plus delta on the perturbed pixels."""
        c, h, w = self.shape
        nh, nw = len(self.in_start[0]), len(self.in_start[1])
        t = p % (nh * nw)
        ti, tj = t // nw, t % nw
        kw = self.in_box[1]
        r0, c0 = self.in_start[0][ti], self.in_start[1][tj]
        patch = self.input_boxes(ti, tj)
        pix = idx % (h * w)
        local = ((pix // w - r0[:, None]) * kw + (pix % w - c0[:, None])) * c + idx // (h * w)
        patch.permute(0, 2, 3, 1).view(len(p), -1).scatter_add_(1, local, delta)
        return ti, tj, patch

    def values(self, p, idx: torch.Tensor, delta: torch.Tensor, formula: str) -> torch.Tensor:
        """``(N, Q)`` block values of perturbations ``p`` (a slice or an index tensor; flat
        ``idx`` / ``delta`` as made by ``perturbation._perturbations``, already indexed)."""
        if isinstance(p, slice):
            p = torch.arange(p.start, p.stop, device=idx.device)
        ti, tj, patch = self.tile_patches(p, idx, delta)
        out = {}

        def visit(st, patch, rows, cols):
            v = self._reduce(st, patch, rows, cols, formula)
            for lb in st.labels:
                out[lb] = v

        self.propagate(ti, tj, patch, visit)
        return torch.stack([out[lb] for lb in self.labels], dim=1)

    def outputs(self, ti: torch.Tensor, tj: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
        """The last layer's full output ``(N, C, H, W)`` for input boxes ``patch``: its
        unperturbed output with each perturbation's output box pasted in (contiguous, as a
        layer's output is: the rest of a model may ``view`` it)."""
        last = self.steps[-1]
        patch, rows, cols = self.propagate(ti, tj, patch)
        zero = torch.zeros_like(rows)
        full = last.base_out.boxes(zero, zero, (last.base_out.height, last.base_out.width))
        return _paste(full, patch, rows, cols, True).contiguous()

    def _reduce(self, st: _Step, patch, rows, cols, formula):
        n = len(patch)
        o = patch.permute(0, 2, 3, 1).reshape(n, -1).float()
        b = st.base_out.boxes(rows, cols, st.box).permute(0, 2, 3, 1).reshape(n, -1).float()
        if formula == "diff_norm":
            return torch.linalg.vector_norm(o - b, dim=1)
        # ||B(x')||^2 = ||B(x)||^2 - ||b||^2 + ||o||^2 = ||B(x)||^2 + num, without cancellation
        n0 = self.base_norm[st.labels[0]]
        num = ((o - b) * (o + b)).sum(1)
        return num / ((n0.square() + num).clamp_min(0).sqrt() + n0).clamp_min(1e-30)


def _sequential_of(model: nn.Module, mapping: dict[str, str]):
    """(S's name, S, child indices of the blocks) or a reason."""
    parents = {name.rpartition(".")[0] for name in mapping.values()}
    if len(parents) != 1:
        return "the blocks are not children of one nn.Sequential"
    parent = parents.pop()
    s = dict(model.named_modules()).get(parent)
    if not isinstance(s, nn.Sequential) or type(s).forward is not nn.Sequential.forward:
        return f"the blocks' parent {parent or 'model'!r} is not an nn.Sequential"
    keys = list(s._modules)
    return parent, s, [keys.index(name.rpartition(".")[2]) for name in mapping.values()]


def layer_rule(m: nn.Module):
    """The box rule of layer ``m`` of S, or a string saying why the engine cannot run it."""
    rule = _layer(m)
    if not isinstance(rule, str) and has_active_hooks(m):
        return "has forward hooks"
    return rule


def prepare(model: nn.Module, x: torch.Tensor, mapping: dict[str, str], k: int, approx: bool = False):
    """``(engine, None)`` when the incremental engine applies to these blocks, else ``(None, reason)``.

    Runs the base pass (one forward of ``x``) and checks there that S receives ``x`` unchanged and
    that each of its layers up to the last block runs once. With ``approx`` the (exact) engine
    keeps what :meth:`IncrementalEngine.calibrate` and :meth:`~IncrementalEngine.with_caps` need.
    """
    found = _sequential_of(model, mapping)
    if isinstance(found, str):
        return None, found
    s_name, seq, block_idx = found
    last = max(block_idx)
    layers = list(seq)[:last + 1]
    rules = []
    for i, m in enumerate(layers):
        rule = layer_rule(m)
        if isinstance(rule, str):
            return None, f"{(s_name + '.' if s_name else '')}{i} ({type(m).__name__}) {rule}"
        rules.append(rule)

    acts = _base_pass(model, seq, layers, x)
    if isinstance(acts, str):
        return None, acts
    box, start, reached = _tiles(tuple(x.shape[1:]), k, x.device)
    labels_at: dict[int, list[str]] = {}
    for lb, i in zip(mapping, block_idx):
        labels_at.setdefault(i, []).append(lb)
    base_norm = {lb: torch.linalg.vector_norm(acts[i].float().reshape(1, -1), dim=1)
                 for lb, i in zip(mapping, block_idx)}
    if not approx:
        steps = _plan(rules, x, acts, box, start, reached, labels_at)
        return IncrementalEngine(x, steps, box, start, list(mapping), base_norm), None

    def replan(caps):
        return _plan(rules, x, list(acts), box, start, reached, labels_at, caps=caps)

    steps = _plan(rules, x, list(acts), box, start, reached, labels_at, measure=True)
    return IncrementalEngine(x, steps, box, start, list(mapping), base_norm, replan), None


def prepare_windows(layers, x: torch.Tensor, tops, lefts, window: int,
                    approx: bool = False) -> IncrementalEngine:
    """Engine for replacing a ``window`` x ``window`` box of ``x`` (C, H, W), all channels, at
    rows ``tops`` x columns ``lefts`` (each box inside the image), through ``layers`` run in
    order (each with a rule, see :func:`layer_rule`); :meth:`IncrementalEngine.outputs` gives the
    last layer's output. Runs the layers once on ``x`` for the base activations."""
    rules = [_layer(m) for m in layers]
    bad = [(i, r) for i, r in enumerate(rules) if isinstance(r, str)]
    if bad:
        raise ValueError(f"layer {bad[0][0]} {bad[0][1]}")
    acts, a = [], x[None].clone()
    with torch.inference_mode():
        for m in layers:
            a = m(a)
            acts.append(a.detach().clone())      # later in-place layers cannot change it
    dev = x.device
    starts = tuple(torch.as_tensor(list(t), dtype=torch.long, device=dev) for t in (tops, lefts))
    reached = [(t, t + (window - 1)) for t in starts]
    box = (window, window)
    if not approx:
        steps = _plan(rules, x, acts, box, starts, reached, {}, keep_last=True)
        return IncrementalEngine(x, steps, box, starts)

    def replan(caps):
        return _plan(rules, x, list(acts), box, starts, reached, {}, keep_last=True, caps=caps)

    steps = _plan(rules, x, list(acts), box, starts, reached, {}, keep_last=True, measure=True)
    return IncrementalEngine(x, steps, box, starts, replan=replan)


def _tiles(hw, k: int, dev):
    """k x k tiles of an (H, W) map: the box (k clamped to the map), its start per tile row /
    column (clamped so the box stays inside) and the region each tile covers per dim (lo, hi)."""
    box = tuple(min(k, n) for n in hw)
    tiles = [torch.arange(-(-n // k), device=dev) * k for n in hw]
    start = tuple(t.clamp(max=n - b) for t, n, b in zip(tiles, hw, box))
    reached = [(t, (t + k).clamp(max=n) - 1) for t, n in zip(tiles, hw)]
    return box, start, reached


def _plan(rules, x, acts, in_box, in_start, reached, labels_at, keep_last=False, caps=None,
          measure=False) -> list[_Step]:
    """The steps of the layers ``rules`` (base outputs ``acts``, each (1, C, H, W); released as
    they are used) for perturbations of input ``x`` on boxes of size ``in_box`` starting at
    ``in_start`` (per dim, per box row / column) that reach ``reached`` (per dim (lo, hi)).
    Layers in ``labels_at`` (index -> labels) and, with ``keep_last``, the last layer keep their
    base output. ``caps`` (layer index -> (rows, cols)): approximate plan, each such
    sliding-window layer computes at most that box around the perturbation's centre.
    ``measure``: the last layer of each window layer's group (the window layer and the pointwise
    layers after it) keeps its base output and is marked for :meth:`IncrementalEngine.calibrate`.
    """
    steps = []
    inp, prev = x, None
    centre = [(lo + hi).double() / 2 for lo, hi in reached]
    group_end = {}
    if measure:
        last_window = None
        for i, rule in enumerate(rules):
            if rule.window:
                last_window = i
            if last_window is not None and (i + 1 == len(rules) or rules[i + 1].window):
                group_end[i] = last_window
    for i, rule in enumerate(rules):
        out, acts[i] = acts[i][0], None
        if rule.window:
            cap = None if caps is None else caps.get(i)
            step, reached, centre = _window_step(rule, inp, out, reached, prev, in_box, in_start,
                                                 centre, cap)
        elif prev is None:
            step = _Step(rule, in_box, *in_start)
        else:
            step = _Step(rule, prev.box, prev.start_r, prev.start_c)
        if i in labels_at:
            step.labels = tuple(labels_at[i])
        if i in group_end:
            step.measure_of = group_end[i]
        if i in labels_at or (keep_last and i == len(rules) - 1) or i in group_end:
            step.base_out = _Map(out)
        steps.append(step)
        inp, prev = out, step
    return steps


def _cap_start(centre: torch.Tensor, cap: int) -> torch.Tensor:
    """First position of a ``cap``-long run centred on ``centre`` (float; rounded half up)."""
    return torch.floor(centre - (cap - 1) / 2 + 0.5).long()


def _needed_cap(lo, hi, centre, n_out: int) -> int:
    """The smallest cap whose centred run (:func:`_cap_start`) holds ``[lo, hi]`` for every
    sample (the map size when none does)."""
    for cap in range(1, n_out + 1):
        a = _cap_start(centre, cap)
        if bool(((a <= lo) & (a + cap - 1 >= hi)).all()):
            return cap
    return n_out


def _window_step(rule, inp, out, reached, prev, in_box, in_start, centre, cap=None):
    """Plan a sliding-window layer from its base input (C, H, W) and output: the output box (the
    largest any perturbation reaches; its start clamped per box row / column), the base input
    padded far enough for every window, and whether the incoming patch always lies inside the
    window. ``cap`` (rows, cols) truncates what each perturbation reaches to a run of at most
    that length around its centre (approximate inference). Returns the step, the region each
    box reaches in the output, per dim ``(lo, hi)``, and the centres per dim."""
    box_in = prev.box if prev else in_box
    starts_in = (prev.start_r, prev.start_c) if prev else in_start
    box, starts, pads, new_reached, inside, centres = [], [], [], [], True, []
    for d in range(2):
        ax, n_out = rule.axes[d], out.shape[1 + d]
        olo, ohi = ax.reach(*reached[d], n_out)
        c_out = (centre[d] + ax.pad - (ax.span - 1) / 2) / ax.stride
        if cap is not None and cap[d] < n_out:
            a = _cap_start(c_out, cap[d])
            lo_t = torch.minimum(torch.maximum(olo, a), ohi)
            olo, ohi = lo_t, torch.maximum(torch.minimum(ohi, a + cap[d] - 1), lo_t)
        size = max(1, int((ohi - olo + 1).max()))
        start = olo.clamp(max=n_out - size)
        end = int(start.max()) * ax.stride + ax.window(size)        # in padded coordinates
        pads.append((ax.pad, max(0, end - ax.pad - inp.shape[1 + d])))
        off = starts_in[d] + ax.pad - start * ax.stride             # incoming patch in the window
        inside &= bool((off >= 0).all() and (off + box_in[d] <= ax.window(size)).all())
        box.append(size)
        starts.append(start)
        new_reached.append((olo, ohi))
        centres.append(c_out)
    if isinstance(rule, _AvgPool):
        rule.bind(tuple(inp.shape[1:]), tuple(out.shape[1:]), inp.device)
    padded = F.pad(inp, (*pads[1], *pads[0]), value=rule.pad_value)
    window = (rule.axes[0].window(box[0]), rule.axes[1].window(box[1]))
    step = _Step(rule, tuple(box), starts[0], starts[1], _Map(padded), window, inside,
                 centre_r=centres[0], centre_c=centres[1])
    return step, new_reached, centres


def _base_pass(model: nn.Module, seq: nn.Sequential, layers, x: torch.Tensor):
    """Outputs (cloned) of ``layers`` of S for input ``x``, or a reason when S does not receive
    ``x`` unchanged or a layer does not run exactly once."""
    seen = {"input": [], "calls": [0] * len(layers)}
    outs: list = [None] * len(layers)
    handles = []

    def pre(_m, args):
        a = args[0] if args else None
        seen["input"].append(a.detach().clone() if isinstance(a, torch.Tensor) else None)

    def make(i):
        def hook(_m, _inp, out):
            seen["calls"][i] += 1
            outs[i] = out.detach().clone() if isinstance(out, torch.Tensor) else None
        return hook

    try:
        handles.append(add_forward_hook(seq, pre, pre=True))
        for i, m in enumerate(layers):
            handles.append(add_forward_hook(m, make(i)))
        with torch.inference_mode():
            model(x[None].clone())
    except RuntimeError as exc:
        return f"the base pass failed ({str(exc).splitlines()[0][:120]})"
    finally:
        for hd in handles:
            hd.remove()
    if len(seen["input"]) != 1 or any(n != 1 for n in seen["calls"]):
        return "the Sequential or one of its layers does not run exactly once per forward"
    got = seen["input"][0]
    if got is None or got.shape != x[None].shape or not torch.equal(got, x[None]):
        return "the Sequential does not receive the model input unchanged"
    if any(o is None or o.ndim != 4 or o.shape[0] != 1 for o in outs):
        return "a layer of the Sequential does not return a (1, C, H, W) tensor"
    return outs

