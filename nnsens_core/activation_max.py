"""Activation maximization (paper §3): images that maximise a class logit or a neuron/channel.

All targets are optimised together in one batch (image ``n`` is pushed toward ``targets[n]``);
every step is ONE forward and ONE backward pass (gradient with respect to the input only), plus a
cheap regulariser on the image tensor:

* ``rule="tv"``:   ``x <- x + lr * da/dx - tv_weight * dTV/dx``  (smoothed isotropic total variation)
* ``rule="blur"``: ``x <- blur_sigma(x) + lr * da/dx``             (Gaussian blur operator)
* ``rule="none"``: ``x <- x + lr * da/dx``

optionally with random jitter (the image is rolled by up to ``jitter`` pixels before the forward
pass and the gradient rolled back), and always clamped to the model's valid input range
(``spec.input_range``: the image of [0, 1] under the model's normalisation). With
``normalize_grad=True`` (default) each image's gradient is divided by its mean absolute value, so
``lr`` is a step in model-input units whatever the scale of the activation.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from . import _validate as v
from ._blocks import AGGREGATES, _BlockTap, _first_conv_channels, aggregate_channels
from ._filters import gaussian_blur
from ._hooks import get_module
from ._results import Result
from ._script_chain import OUTPUT_MODULE, is_script
from .device import resolve_device
from .errors import NnsensError
from .zoo import ModelSpec

RULES = ("tv", "blur", "none")

Preview = Callable[[int, torch.Tensor, torch.Tensor], None]
"""``preview(step, images (N, C, H, W) in model-input space, activations (N,))``."""


@dataclass(frozen=True)
class AMTarget:
    """What to maximise: a class logit (``layer=None``), or channel ``index`` of module ``layer``
    (its mean over positions, or the neuron at ``position=(row, col)``; for a 2-D output, unit
    ``index``)."""
    index: int
    layer: str | None = None
    position: tuple[int, int] | None = None

    def __post_init__(self):
        if not isinstance(self.index, int) or isinstance(self.index, bool) or self.index < 0:
            raise NnsensError(f"target index={self.index!r} must be a whole number >= 0")
        if self.position is not None and (len(self.position) != 2 or min(self.position) < 0):
            raise NnsensError(f"position={self.position!r} must be (row, col) with both >= 0")

    def label(self, class_names: Sequence[str] = ()) -> str:
        if self.layer is None:
            return class_names[self.index] if self.index < len(class_names) else f"class {self.index}"
        pos = "" if self.position is None else f" @{tuple(self.position)}"
        return f"{self.layer}[{self.index}]{pos}"


@dataclass(frozen=True)
class AMConfig:
    """Steps and update rule. ``lr`` is epsilon1, ``tv_weight`` epsilon2, ``blur_sigma`` in pixels.

    ``init_std``: noise start = ``0.5 + init_std * N(0, 1)`` in [0, 1] image space (seeded).
    ``preview_every``: steps between ``preview`` callbacks (0 = never).
    ``grey``: keep the image grey (for grey modalities such as ultrasound): on a model with several
    input channels the start and every step are projected onto grey images (the channel mean in
    [0, 1] image space, repeated to every channel, then normalised), i.e. one grey channel is
    optimised; a 1-channel model is grey already.
    """
    steps: int = 200
    rule: str = "tv"
    lr: float = 0.05
    tv_weight: float = 0.02
    blur_sigma: float = 0.5
    blur_every: int = 1
    jitter: int = 0
    normalize_grad: bool = True
    init_std: float = 0.1
    seed: int = 0
    preview_every: int = 10
    grey: bool = False

    def __post_init__(self):
        if not isinstance(self.grey, bool):
            raise NnsensError(f"grey={self.grey!r} must be True or False")
        v.positive("steps", self.steps, integer=True)
        v.one_of("rule", self.rule, RULES)
        v.positive("lr", self.lr)
        v.non_negative("tv_weight", self.tv_weight)
        v.positive("blur_sigma", self.blur_sigma)
        v.positive("blur_every", self.blur_every, integer=True)
        if not isinstance(self.jitter, int) or self.jitter < 0:
            raise NnsensError(f"jitter={self.jitter!r} must be a whole number >= 0")
        v.non_negative("init_std", self.init_std)
        if not isinstance(self.preview_every, int) or self.preview_every < 0:
            raise NnsensError(f"preview_every={self.preview_every!r} must be a whole number >= 0")


PRESETS: dict[str, dict] = {
    # the paper (eqs. 1-5): x <- x + e1 * da/dx - e2 * dTV/dx with e1 = e2 = 0.1 and the raw gradient
    "paper": {"rule": "tv", "lr": 0.1, "tv_weight": 0.1, "normalize_grad": False, "jitter": 0},
    # nnsens' default: the gradient divided by its mean |value|, smaller steps
    "nnsens": {"rule": "tv", "lr": 0.05, "tv_weight": 0.02, "normalize_grad": True, "jitter": 0},
}
"""Named update rules (``AMConfig`` fields); steps, start and seed are left to the caller."""


def preset(name: str, **overrides) -> AMConfig:
    """The :class:`AMConfig` of preset ``name`` (:data:`PRESETS`) with ``overrides`` on top."""
    v.one_of("preset", name, tuple(PRESETS))
    return AMConfig(**{**PRESETS[name], **overrides})


def update_rule_text(cfg: AMConfig) -> str:
    """The update rule a config applies, with its numbers, and whether the gradient is normalised."""
    g = ("∂a/∂x / mean|∂a/∂x| (normalised gradient)" if cfg.normalize_grad else
         "∂a/∂x (raw gradient)")
    if cfg.rule == "tv":
        rule = (f"x ← x + {cfg.lr:g}·g − {cfg.tv_weight:g}·∂TV/∂x, TV(x) = Σ √(Δh² + Δv² + β²), "
                f"β = {TV_BETA:g}")
    elif cfg.rule == "blur":
        every = "" if cfg.blur_every == 1 else f" (blur every {cfg.blur_every} steps)"
        rule = f"x ← blur_σ={cfg.blur_sigma:g}(x) + {cfg.lr:g}·g{every}"
    else:
        rule = f"x ← x + {cfg.lr:g}·g"
    jit = f"; jitter ±{cfg.jitter} px" if cfg.jitter else ""
    return f"{rule} with g = {g}{jit}; clamped to the valid input range"


@dataclass
class AMResult(Result):
    """Optimised images and their activations (all CPU tensors, images in model-input space)."""
    images: torch.Tensor        # (N, C, H, W)
    start: torch.Tensor         # (N, C, H, W)
    activations: torch.Tensor   # (N,) final value of each target on its image
    start_activations: torch.Tensor  # (N,)
    history: torch.Tensor       # (steps, N) activation before each update
    targets: tuple[AMTarget, ...]
    labels: tuple[str, ...]
    config: AMConfig
    seconds: float

    def images01(self, spec: ModelSpec) -> torch.Tensor:
        """Images in [0, 1] for display."""
        return spec.denormalize(self.images).clamp(0, 1)

    def difference(self, aggregate: str = "mean") -> torch.Tensor:
        """Channel-aggregated ``|x_AM - x_0|``: ``(N, H, W)``."""
        return aggregate_channels((self.images - self.start).abs(), aggregate, dim=1)

    def file_names(self, start_image: bool = False) -> list[str]:
        """Names of the PNG files of the images (``start.png`` first for an image start)."""
        safe = ["".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in lb) for lb in self.labels]
        return ["start.png"] * start_image + [f"am_{n:02d}_{s}.png" for n, s in enumerate(safe)]

    def _payload(self) -> dict:
        return {"targets": list(self.labels), "target_specs": self.targets,
                "start_activations": self.start_activations,
                "final_activations": self.activations, "steps": len(self.history)}

    def to_frame(self):
        import pandas as pd
        a0, a1 = self.start_activations.numpy(), self.activations.numpy()
        return pd.DataFrame({"target": list(self.labels), "start activation": a0,
                             "final activation": a1, "gain": a1 - a0}).set_index("target")

    def arrays(self) -> dict:
        return {"images": self.images.numpy(), "start": self.start.numpy(),
                "activations": self.activations.numpy(), "history": self.history.numpy(),
                "difference": self.difference().numpy(), "targets": np.array(self.labels)}


# --------------------------------------------------------------------------- regularisers

TV_BETA = 1e-2
"""Smoothing of the total variation (keeps its gradient finite where the image is flat)."""


def tv_grad(x: torch.Tensor, beta: float = TV_BETA) -> torch.Tensor:
    """Gradient of the smoothed isotropic total variation ``sum sqrt(dh^2 + dv^2 + beta^2)``."""
    dh = torch.zeros_like(x)
    dv = torch.zeros_like(x)
    dh[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    dv[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    mag = torch.sqrt(dh * dh + dv * dv + beta * beta)
    ph, pv = dh / mag, dv / mag
    g = -(ph + pv)
    g[..., :, 1:] += ph[..., :, :-1]
    g[..., 1:, :] += pv[..., :-1, :]
    return g


def total_variation(x: torch.Tensor, beta: float = TV_BETA) -> torch.Tensor:
    """The smoothed TV of each image ``(N,)`` (the function :func:`tv_grad` differentiates)."""
    dh = torch.zeros_like(x)
    dv = torch.zeros_like(x)
    dh[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    dv[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    return torch.sqrt(dh * dh + dv * dv + beta * beta).flatten(1).sum(1)


# --------------------------------------------------------------------------- targets

def as_targets(targets, n_classes: int | None = None) -> tuple[AMTarget, ...]:
    """Ints (class indices), ``"all"`` (every class) or :class:`AMTarget` s -> tuple of targets."""
    if isinstance(targets, str):
        if targets != "all":
            raise NnsensError(f"targets={targets!r}; use 'all', class indices or AMTarget objects")
        if not n_classes:
            raise NnsensError("targets='all' needs the number of classes (spec.class_names)")
        targets = list(range(n_classes))
    if isinstance(targets, (int, AMTarget)):
        targets = [targets]
    out = tuple(t if isinstance(t, AMTarget) else AMTarget(int(t)) for t in targets)
    if not out:
        raise NnsensError("no targets given; pick at least one class or neuron")
    return out


class _Objective:
    """Evaluates each target's activation on its own batch item: one forward pass for all."""

    def __init__(self, model: nn.Module, targets: tuple[AMTarget, ...]):
        self.model, self.targets = model, targets
        layers = sorted({t.layer for t in targets if t.layer is not None})
        for name in layers:
            get_module(model, name)
        self.mapping = {name: name for name in layers}
        self.needs_output = any(t.layer is None for t in targets)
        self.scripted = is_script(model) and bool(layers)
        if self.scripted and self.needs_output:   # no hooks: the output is read with the layers
            self.mapping[OUTPUT_MODULE] = OUTPUT_MODULE
        self.stop_after: int | None = None
        self._checked = False

    def __enter__(self):
        self.tap = _BlockTap(self.model, self.mapping, lambda _l, out: out.clone()).__enter__()
        return self

    def __exit__(self, *exc):
        return self.tap.__exit__(*exc)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.scripted:
            vals = dict(self.tap.run(x))
            out = vals.pop(OUTPUT_MODULE, None)
        elif self.needs_output:
            self.tap.stop_after = None
            self.tap.values, self.tap.calls = {}, 0
            out = self.model(x)
            vals = dict(self.tap.values)
        else:
            self.tap.stop_after = self.stop_after
            vals = self.tap.run(x)
            self.stop_after = self.tap.calls if self.stop_after is None else self.stop_after
            out = None
        if not self._checked:
            self._check(out, vals)
            self._checked = True
        acts = []
        for n, t in enumerate(self.targets):
            o = out if t.layer is None else vals[t.layer]
            o = o[n]
            if t.layer is None:
                acts.append(o.reshape(-1)[t.index])
            elif t.position is None:
                acts.append(o[t.index].mean())
            else:
                acts.append(o[t.index][tuple(t.position)])
        return torch.stack(acts)

    def _check(self, out, vals):
        for t in self.targets:
            o = out if t.layer is None else vals.get(t.layer)
            where = "the model output" if t.layer is None else f"layer {t.layer!r}"
            if o is None:
                raise NnsensError(f"{where} produced no output; pick a layer the forward pass calls")
            if not isinstance(o, torch.Tensor):
                raise NnsensError(f"{where} returns {type(o).__name__}, not a tensor")
            size = o[0].reshape(-1).shape[0] if t.layer is None else o.shape[1]
            if t.index >= size:
                what = "classes" if t.layer is None else "channels/units"
                raise NnsensError(f"target index {t.index} is out of range: {where} has {size} "
                                  f"{what}; use 0..{size - 1}")
            if t.position is not None:
                if o.ndim != 4:
                    raise NnsensError(f"position={t.position} needs a 4-D (N, C, H, W) output but "
                                      f"{where} has shape {tuple(o.shape)}; leave position empty")
                if t.position[0] >= o.shape[2] or t.position[1] >= o.shape[3]:
                    raise NnsensError(f"position={t.position} lies outside {where}'s "
                                      f"{o.shape[2]}x{o.shape[3]} map")


# --------------------------------------------------------------------------- main entry points

def _start_images(spec: ModelSpec, start, n: int, cfg: AMConfig, dev) -> torch.Tensor:
    shape = tuple(spec.input_shape)
    if start is None:
        gen = torch.Generator().manual_seed(cfg.seed)
        x01 = (0.5 + cfg.init_std * torch.randn((n, *shape), generator=gen)).clamp(0, 1)
        return spec.normalize(x01).to(dev)
    single = isinstance(start, torch.Tensor) and start.ndim == 3
    v.check_images(start, shape, what="the start image", batch=not single, finite=True)
    x = start.detach().float()
    if single:
        x = x[None].expand(n, *x.shape)
    if x.shape[0] != n:
        raise NnsensError(f"{x.shape[0]} start images for {n} targets; give one image or one per target")
    return x.to(dev).clone()


def _grey_projection(spec: ModelSpec, channels: int):
    """``x -> normalize(repeat(mean_c(denormalize(x))))`` for a ``channels``-channel model (None for
    one channel: nothing to project)."""
    if channels <= 1:
        return None

    def project(x: torch.Tensor) -> torch.Tensor:
        grey = spec.denormalize(x).mean(1, keepdim=True)
        return spec.normalize(grey.expand(-1, channels, *x.shape[2:]).contiguous())
    return project


def maximize(model: nn.Module, spec: ModelSpec, targets, cfg: AMConfig = AMConfig(), device="auto",
             start: torch.Tensor | None = None, progress=None, preview: Preview | None = None) -> AMResult:
    """Optimise one image per target, all in one batch.

    ``targets``: class indices, ``"all"``, or :class:`AMTarget` s (on a TorchScript model, a
    layer must be a stage of its forward chain, see :mod:`~nnsens_core._script_chain`).
    ``start``: ``None`` (seeded noise), one image (C, H, W) pushed toward every target (cross-class grid), or one image per
    target (N, C, H, W); model-input space. ``progress(step, steps)`` after each step;
    ``preview(step, images, activations)`` every ``cfg.preview_every`` steps.
    """
    if not isinstance(cfg, AMConfig):
        raise NnsensError(f"cfg must be an AMConfig, got {type(cfg).__name__}")
    if spec.task != "image":
        raise NnsensError(f"activation maximisation needs an image model; {spec.name!r} is {spec.task}")
    conv_c = _first_conv_channels(model)
    if conv_c is not None and conv_c != spec.input_shape[0]:
        raise NnsensError(f"the model's first convolution takes {conv_c} channels but its spec says "
                          f"{spec.input_shape[0]}; fix the model's input_shape")
    tg = as_targets(targets, len(spec.class_names) or None)
    dev = resolve_device(device)
    x = _start_images(spec, start, len(tg), cfg, dev)
    project = _grey_projection(spec, x.shape[1]) if cfg.grey else None
    if project is not None:
        x = project(x)
    x0 = x.clone()
    lo, hi = (t.to(dev) for t in spec.input_range(x))
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    history = []
    first = None  # activations at x0: read from step 0 when that step is not shifted
    t0 = time.perf_counter()
    with _Objective(model, tg) as objective:
        for step in range(cfg.steps):
            shift = None
            if cfg.jitter:
                shift = tuple(int(s) for s in torch.randint(-cfg.jitter, cfg.jitter + 1, (2,),
                                                            generator=gen))
            xr = torch.roll(x, shift, (2, 3)) if shift else x
            xr = xr.detach().requires_grad_(True)
            with torch.enable_grad():
                try:
                    act = objective(xr)
                except RuntimeError as exc:
                    raise NnsensError(f"the model failed on inputs of shape {tuple(xr.shape)}: "
                                      f"{str(exc).splitlines()[0][:300]}") from None
                (g,) = torch.autograd.grad(act.sum(), xr)
            if shift:
                g = torch.roll(g, (-shift[0], -shift[1]), (2, 3))
            history.append(act.detach())
            if step == 0 and not shift:
                first = history[0]
            with torch.no_grad():
                if cfg.normalize_grad:
                    g = g / g.abs().mean((1, 2, 3), keepdim=True).clamp_min(1e-12)
                if cfg.rule == "tv":
                    step_tv = cfg.tv_weight * tv_grad(x) if cfg.tv_weight else 0.0
                    x = x + cfg.lr * g - step_tv
                elif cfg.rule == "blur":
                    base = gaussian_blur(x, cfg.blur_sigma) if step % cfg.blur_every == 0 else x
                    x = base + cfg.lr * g
                else:
                    x = x + cfg.lr * g
                x = torch.maximum(torch.minimum(x, hi), lo)
                if project is not None:
                    x = project(x)
            if progress is not None:
                progress(step + 1, cfg.steps)
            if preview is not None and cfg.preview_every and (step + 1) % cfg.preview_every == 0:
                preview(step + 1, x.detach().cpu(), act.detach().cpu())
        with torch.no_grad():
            final = objective(x).detach()
            if first is None:
                first = objective(x0).detach()
    labels = tuple(t.label(spec.class_names) for t in tg)
    return AMResult(x.detach().cpu(), x0.cpu(), final.cpu(), first.cpu(), torch.stack(history).cpu(),
                    tg, labels, cfg, time.perf_counter() - t0)


def difference_map(model: nn.Module, spec: ModelSpec, x: torch.Tensor, classes, cfg: AMConfig = AMConfig(),
                   device="auto", aggregate: str = "mean", progress=None) -> torch.Tensor:
    """Channel-aggregated ``|x_AM - x_0|`` ``(N, H, W)`` for AM started at ``x`` (N, C, H, W),
    image ``n`` pushed toward class ``classes[n]``."""
    v.one_of("aggregate", aggregate, AGGREGATES)
    v.check_images(x)
    classes = [int(c) for c in torch.as_tensor(classes).reshape(-1).tolist()]
    if len(classes) != len(x):
        raise NnsensError(f"{len(x)} images but {len(classes)} classes; give one class per image")
    res = maximize(model, spec, classes, cfg, device, start=x, progress=progress)
    return res.difference(aggregate)
