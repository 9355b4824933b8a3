"""Gradient saliency: vanilla gradient, gradient x input, Integrated Gradients and SmoothGrad.

Every method explains ``classes[i]`` for image ``i`` of ``x`` (N, C, H, W) in model-input space
(or volume ``i`` of ``x`` (N, C, D, H, W): every sum and max below runs over the channels of each
voxel, and the maps are (N, D, H, W)),
through the class score ``f`` (the logit by default: the softmax saturates on confident models).
``r`` is a reference image (black by default; see :func:`nnsens_core.saliency._common.reference_image`).

* ``gradient`` (Simonyan et al. 2014): ``max_c |df/dx_c|`` per pixel (unsigned).
* ``gradxinput`` (Shrikumar et al. 2016): ``sum_c (x - r)_c df/dx_c``, the first-order share of
  each pixel in ``f(x) - f(r)``.
* ``ig``, Integrated Gradients (Sundararajan et al. 2017): ``sum_c (x - r)_c`` times the mean
  gradient at ``r + a (x - r)`` over ``steps`` midpoints ``a`` of [0, 1]; the map sums to
  ``f(x) - f(r)`` up to the Riemann error (completeness).
* ``smoothgrad`` (Smilkov et al. 2017), applied to gradient x input: the mean of
  ``sum_c (z - r)_c df/dz_c`` over ``samples`` noisy copies ``z = x + N(0, sigma^2)``; ``sigma``
  is a fraction of the valid input range (of each channel, when a ModelSpec gives it).

The signed maps are returned signed; :func:`nnsens_core.saliency.compare.explain` keeps their
positive part (evidence for the class). All model evaluations of a call go through one batching loop
(``batch_size`` inputs per forward + backward), so the batch size never changes a map.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from .. import _validate as v
from .._batching import Progress, map_batches
from ..device import inference_model, resolve_device
from ..errors import NnsensError
from ._common import (
    _classes,
    check_model_input,
    check_reference_settings,
    class_score,
    reference_image,
)
from .registry import Method, register

METHODS = ("gradient", "gradxinput", "ig", "smoothgrad")


@dataclass(frozen=True)
class GradientConfig:
    """Settings of the gradient methods (each uses the fields it needs).

    samples / sigma: SmoothGrad's noisy copies and noise std (fraction of the input range).
    steps: Integrated Gradients' path points. reference / constant / blur_sigma: ``r`` (black by
    default; ``constant`` in [0, 1] image units). score: ``"logit"`` or ``"prob"``.
    seed: SmoothGrad's noise. batch_size: model inputs per forward + backward pass.
    """
    samples: int = 16
    sigma: float = 0.15
    steps: int = 32
    reference: str = "constant"
    constant: float = 0.0
    blur_sigma: float = 5.0
    score: str = "logit"
    seed: int = 0
    batch_size: int = 64

    def __post_init__(self):
        v.positive("samples", self.samples, integer=True)
        v.positive("sigma", self.sigma)
        v.positive("steps", self.steps, integer=True)
        check_reference_settings(self)
        v.positive("batch_size", self.batch_size, integer=True)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise NnsensError(f"seed={self.seed!r} must be a whole number")


USES = {"gradient": ("score", "batch_size"),
        "gradxinput": ("score", "reference", "constant", "blur_sigma", "batch_size"),
        "ig": ("steps", "score", "reference", "constant", "blur_sigma", "batch_size"),
        "smoothgrad": ("samples", "sigma", "seed", "score", "reference", "constant", "blur_sigma",
                       "batch_size")}
"""The fields of :class:`GradientConfig` each method reads."""


def config_of(method: str, cfg: GradientConfig) -> GradientConfig:
    """``cfg`` with the fields ``method`` does not read set to their defaults, so that two configs
    giving the same map compare (and hash, e.g. as a cache key) equal."""
    v.one_of("method", method, METHODS)
    default = GradientConfig()
    return dataclasses.replace(default, **{f: getattr(cfg, f) for f in USES[method]})


def evaluations(method: str, cfg: GradientConfig) -> int:
    """Forward + backward passes per image."""
    v.one_of("method", method, METHODS)
    return {"ig": cfg.steps, "smoothgrad": cfg.samples}.get(method, 1)


def _noise_std(x: torch.Tensor, spec, sigma: float) -> torch.Tensor:
    """SmoothGrad's std in model-input units: ``sigma`` times each channel's valid range (from
    ``spec``), else times each image's (volume's) value range; shaped to broadcast over ``x``."""
    ones = (1,) * (x.ndim - 2)
    if spec is not None and getattr(spec, "input_shape", None):
        lo, hi = spec.input_range(x[0])
        return (sigma * (hi - lo)).reshape(1, -1, *ones)               # (1, C, 1, 1[, 1])
    flat = x.flatten(1)
    span = (flat.amax(1) - flat.amin(1)).clamp_min(1e-12)
    return (sigma * span).view(-1, 1, *ones)                            # (N, 1, 1, 1[, 1])


def gradient_maps(model: nn.Module, x: torch.Tensor, classes, method: str = "smoothgrad",
                  cfg: GradientConfig = GradientConfig(), device="auto", spec=None,
                  progress: Progress | None = None) -> torch.Tensor:
    """Maps ``(N, H, W)`` (CPU float32) of ``method`` for inputs ``x`` (N, C, H, W) in model-input
    space (``(N, D, H, W)`` for volumes ``x`` (N, C, D, H, W)), image ``i`` explaining ``classes[i]`` (one int for all). ``spec`` (a ModelSpec) maps
    the constant reference and SmoothGrad's noise through the model's normalisation.
    ``progress(done, total)`` counts forward + backward passes."""
    if not isinstance(cfg, GradientConfig):
        raise NnsensError(f"cfg must be a GradientConfig, got {type(cfg).__name__}")
    v.one_of("method", method, METHODS)
    dev = resolve_device(device)
    net = inference_model(model, dev)
    x, n_out = check_model_input(net, x, spec, dev)
    x = x.to(dev, torch.float32)
    n = len(x)
    cls = torch.as_tensor(_classes(classes, n, n_out), dtype=torch.long, device=dev)
    ref = reference_image(x, cfg.reference, cfg.blur_sigma, cfg.constant, spec)
    k = evaluations(method, cfg)
    if method == "smoothgrad":
        gen = torch.Generator().manual_seed(cfg.seed)  # drawn on CPU: the same noise on any device
        noise = torch.randn((n, k, *x.shape[1:]), generator=gen).to(dev)
        noise = noise * _noise_std(x, spec, cfg.sigma)[:, None]
    alphas = (torch.arange(k, device=dev, dtype=x.dtype) + 0.5) / k

    def fn(sl: slice) -> torch.Tensor:
        item = torch.arange(sl.start, sl.stop, device=dev)
        i, j = item // k, item % k                       # image, evaluation point
        if method == "ig":
            z = ref[i] + alphas[j].view(-1, *(1,) * (x.ndim - 1)) * (x[i] - ref[i])
        elif method == "smoothgrad":
            z = x[i] + noise[i, j]
        else:
            z = x[i]
        z = z.clone().requires_grad_(True)
        with torch.enable_grad():
            f = class_score(net(z), cls[i], cfg.score)
            (g,) = torch.autograd.grad(f.sum(), z)
        if method == "gradient":
            return g.abs().amax(1)
        base = x[i] if method == "ig" else z.detach()
        return ((base - ref[i]) * g).sum(1)              # (b, H, W) or (b, D, H, W)

    total = n * k
    per_item = map_batches(fn, total, cfg.batch_size, progress, out_device="cpu")
    return per_item.view(n, k, *x.shape[2:]).mean(1).float()


# --------------------------------------------------------------------------- registry entries

def _method_fn(method: str):
    def fn(model, x, targets, cfg: GradientConfig, *, spec=None, device="auto",
           progress: Progress | None = None) -> torch.Tensor:
        return gradient_maps(model, x, targets, method, cfg, device, spec, progress)
    fn.__name__ = f"gradient_maps_{method}"
    return fn


for _name, _label, _signed, _aliases, _description in (
        ("gradient", "Gradient", False, ("saliency",),
         "how much a tiny change of each pixel would change the class score (local and often "
         "speckled; max |df/dx| over channels)"),
        ("gradxinput", "Gradient × input", True, ("inputxgradient",),
         "gradient times the pixel's difference from the reference (black): red pixels push "
         "toward the class, blue ones away from it"),
        ("ig", "Integrated Gradients", True, ("integrated-gradients", "integratedgradients"),
         "each pixel's share of the class score, accumulated on the way from the reference "
         "(black) to this image: red = for the class, blue = against"),
        ("smoothgrad", "SmoothGrad × input", True, (),
         "gradient × input averaged over noisy copies of the image (less speckled): red = for "
         "the class, blue = against")):
    register(Method(_name, _label, _method_fn(_name), GradientConfig, signed=_signed,
                    aliases=_aliases, description=_description, family="gradients"))
del _name, _label, _signed, _aliases, _description
