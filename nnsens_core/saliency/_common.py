"""Pieces every saliency method shares: the class score, the reference image, the batch and
class checks, and per-image map scaling."""
from __future__ import annotations

import numpy as np
import torch

from .. import _validate as v
from .._filters import gaussian_blur
from .._hooks import cached_shape_probe
from ..errors import NnsensError
from ..zoo import module_of

REFERENCES = ("blur", "constant")
SCORES = ("prob", "logit")


# --------------------------------------------------------------------------- shared pieces

def check_reference_settings(cfg) -> None:
    """Validate the settings every perturbation / gradient config shares: ``reference`` (blur or
    constant), ``blur_sigma``, ``constant`` (in [0, 1] image units) and ``score`` (prob or logit)."""
    v.one_of("reference", cfg.reference, REFERENCES)
    v.non_negative("blur_sigma", cfg.blur_sigma)
    v.in_range("constant", cfg.constant, 0.0, 1.0)
    v.one_of("score", cfg.score, SCORES)


def reference_image(x: torch.Tensor, reference: str = "blur", blur_sigma: float = 5.0,
                    constant: float = 0.0, spec=None) -> torch.Tensor:
    """The image that replaces perturbed pixels (same shape and space as ``x``)."""
    v.one_of("reference", reference, REFERENCES)
    if reference == "blur":
        return gaussian_blur(x, blur_sigma)
    grey = torch.full_like(x, float(constant))
    return spec.normalize(grey) if spec is not None else grey


def class_score(logits: torch.Tensor, classes: torch.Tensor, score: str) -> torch.Tensor:
    """``f`` per row: softmax probability or logit of ``classes[i]``."""
    vals = torch.softmax(logits, dim=-1) if score == "prob" else logits
    return vals.gather(1, classes.view(-1, 1)).squeeze(1)


# --------------------------------------------------------------------------- sized defaults

REFERENCE_PIXELS = 64 * 64
"""The image size the iterative methods' default step counts were chosen for."""
MIN_SCALED_STEPS = 32
"""The fewest steps the pixel rule of :func:`scaled_steps` gives."""
STEP_WORK_GFLOP = 120.0
"""The forward work (GFLOP, :func:`~nnsens_core.budget.forward_flop`) an iterative method's default
may spend on one input: 32 steps of ResNet-18 at 224x224 (3.6 GFLOP a forward pass). Models that
cost more per pass get fewer steps (:func:`scaled_steps`), never below :data:`MIN_COST_STEPS`."""
MIN_COST_STEPS = 12
"""The fewest steps the work rule of :func:`scaled_steps` gives (VGG-16 at 224x224: 31 GFLOP a
pass, so 12 steps; the maps' agreement with longer runs is measured in the README)."""


def scaled_steps(steps: int, spatial, gflop: float | None = None) -> int:
    """Default step count of an iterative method (AM, perturbation mask) for images of spatial
    size ``spatial`` on a model whose forward pass of one such image costs ``gflop`` GFLOP.

    * Pixel rule: ``steps`` up to :data:`REFERENCE_PIXELS` pixels; above, scaled by
      ``REFERENCE_PIXELS / pixels`` (every step costs about the pixel count) but never below
      :data:`MIN_SCALED_STEPS`. 64x64: unchanged; 224x224: 32 instead of 150-200.
    * Work rule (with ``gflop``, images above 64x64): at most ``STEP_WORK_GFLOP / gflop`` steps
      (a fixed amount of model work) but never below :data:`MIN_COST_STEPS`. ResNet-18 at
      224x224 keeps 32; VGG-16 at 224x224 (8.5 times the work per pass) gets 12.

    Never more than ``steps``; volumes keep ``steps``."""
    spatial = tuple(int(s) for s in spatial)
    pixels = int(np.prod(spatial))
    if len(spatial) != 2 or pixels <= REFERENCE_PIXELS:
        return int(steps)
    out = int(min(steps, max(MIN_SCALED_STEPS, round(steps * REFERENCE_PIXELS / pixels))))
    if gflop is not None and gflop > 0:
        out = min(out, max(MIN_COST_STEPS, int(STEP_WORK_GFLOP / gflop)))
    return out


def forward_gflop(model, spatial) -> float | None:
    """GFLOP of one forward pass of ``model`` on one input of spatial size ``spatial`` (channels from
    the model's spec or first convolution; :func:`~nnsens_core.budget.forward_flop`, counted once
    per model and shape); ``None`` when unknown (no spec, no convolution)."""
    from .. import budget
    from .._blocks import _first_conv_channels

    if model is None or spatial is None:
        return None
    shape = getattr(getattr(model, "spec", None), "input_shape", None)
    channels = shape[0] if shape else _first_conv_channels(module_of(model))
    if channels is None:
        return None
    return budget.forward_flop(model, (int(channels), *(int(s) for s in spatial))) / 1e9


def _classes(classes, n: int, n_out: int | None) -> list[int]:
    c = np.asarray(classes if classes is not None else [], dtype=np.int64).reshape(-1)
    if c.size == 1 and n > 1:
        c = np.repeat(c, n)
    if c.size != n:
        raise NnsensError(f"{c.size} classes given for {n} images; give one class per image "
                          "(or a single class for all)")
    if n_out is not None and len(c) and (c.min() < 0 or c.max() >= n_out):
        raise NnsensError(f"classes {sorted(set(c.tolist()))} must lie in 0..{n_out - 1} "
                          f"(the model has {n_out} outputs)")
    return c.tolist()





def check_model_input(model, x, spec=None, device=None) -> tuple[torch.Tensor, int | None]:
    """The one input check of every saliency method (run by :class:`registry.Method`): ``x`` a
    finite floating-point batch of images ``(N, C, H, W)`` or volumes ``(N, C, D, H, W)`` whose
    channels, dimensionality (2-D or 3-D, from the ``spec`` or the first convolution) and, with a
    ``spec``, size are what ``model`` (in eval mode) expects and which it accepts (one forward pass of
    ``x[0]``, once per model object, input shape and device:
    :func:`~nnsens_core._hooks.cached_shape_probe`).

    Returns ``x`` (detached) and the model's number of outputs (``None`` for an empty batch);
    every mismatch is a :class:`NnsensError` naming the expected input."""
    from .._blocks import _first_conv

    v.check_images(x, volumes=True)
    if not torch.is_floating_point(x):
        raise NnsensError(f"x has dtype {x.dtype}; expected floating-point images in model-input "
                          "space (e.g. spec.normalize(images01) with images01 float32 in [0, 1])")
    module = module_of(model)
    expected = tuple(getattr(spec, "input_shape", None) or ())
    if len(expected) not in (3, 4):
        conv = _first_conv(module) if isinstance(module, torch.nn.Module) else None
        expected = None
        if conv is not None:  # the first convolution tells the channels and 2-D or 3-D
            spatial = 3 if isinstance(conv, torch.nn.Conv3d) else 2
            if x.ndim - 2 != spatial:
                kind = "volumes (N, C, D, H, W)" if spatial == 3 else "images (N, C, H, W)"
                raise NnsensError(f"x has shape {tuple(x.shape)} but the model (first layer "
                                  f"{type(conv).__name__}) takes {kind}; give it {kind.split()[0]}")
            expected = (conv.in_channels, *x.shape[2:])
    x = x.detach()
    if len(x) == 0:
        return x, None
    v.check_images(x, expected, finite=True, volumes=True)
    dev = torch.device(device) if device is not None else x.device

    def probe() -> int:
        with torch.no_grad():
            return int(module(x[:1].to(dev)).shape[-1])

    try:  # one forward pass per model, input shape and device (cached_shape_probe)
        n_out = cached_shape_probe(module, ("n_out", tuple(x.shape[1:]), str(dev), x.dtype), probe) \
            if isinstance(module, torch.nn.Module) else probe()
    except RuntimeError as exc:
        what = "images of shape {} (C, H, W)" if x.ndim == 4 else "volumes of shape {} (C, D, H, W)"
        raise NnsensError(f"the model does not accept {what.format(tuple(x.shape[1:]))}: "
                          f"{str(exc).splitlines()[0][:300]}; give the images the model was "
                          "trained on") from None
    return x, int(n_out)


def normalize_maps(maps: torch.Tensor, clip_negative: bool = False) -> torch.Tensor:
    """Per-image min-max scaling to [0, 1] of maps ``(N, H, W)`` or ``(N, D, H, W)`` (constant maps
    -> 0); with ``clip_negative`` values below 0 are set to 0 first."""
    m = maps.detach().float().cpu()
    if clip_negative:
        m = m.clamp_min(0)
    flat = m.flatten(1)
    lo, hi = flat.min(1)[0], flat.max(1)[0]
    ones = (1,) * (m.ndim - 1)
    span = (hi - lo).view(-1, *ones)
    out = (m - lo.view(-1, *ones)) / torch.where(span > 0, span, torch.ones_like(span))
    out[span.view(-1) <= 0] = 0
    return out.clamp_(0, 1)
