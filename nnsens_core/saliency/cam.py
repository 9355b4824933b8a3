"""Grad-CAM family, a thin wrapper over the ``grad-cam`` package (``pytorch_grad_cam``).

What the wrapper adds to the package:

* **one target per image**: the package zips its ``targets`` list with the batch, so a single
  ``ClassifierOutputTarget`` silently explains only the first image of a batch (the others get a zero
  gradient). :func:`cam_maps` always builds one ``ClassifierOutputTarget(classes[i])`` per image.
* **thread-local hooks, released** in ``try/finally``, and parameter gradients the package leaves on
  the model cleared, so the (shared, cached) model is left as it was (every use of the package's
  internals sits in :mod:`nnsens_core.saliency._gradcam_adapter`). The package's context manager
  is not used because it swallows ``IndexError``.
* **target-layer validation**: a Conv2d (Conv3d for volumes), or a block that contains one,
  whose output is a ``(N, C, h, w)`` (``(N, C, d, h, w)``) feature map; anything else raises
  :class:`~nnsens_core.errors.NnsensError`.
* **volumes** ``(N, C, D, H, W)``: every method runs with the package's own (dimension-agnostic)
  weights; the CAM is upsampled trilinearly (half-voxel centres) to the input size instead of the
  package's cubic-spline zoom, and ScoreCAM's channel masks trilinearly
  (:func:`~nnsens_core.saliency._gradcam_adapter.volume_cam_class`).
* **ScoreCAM** with a batch size for its masked forward passes and no tqdm output (same weights as
  the package's ``ScoreCAM``: softmax over channels of the target score of the masked inputs).
* inputs that need no gradient on a model whose parameters are frozen still get gradients (the
  input is marked ``requires_grad``), and a model on another device is deep-copied, never moved.

Maps are ``(N, H, W)`` (volumes: ``(N, D, H, W)``) float32 in [0, 1] (the package min-max scales
each map, then resizes it bilinearly, trilinearly for volumes, to the input size). ``eigencam`` does not depend on the class (it is the first principal
component of the activations); every other method explains ``classes[i]`` for image ``i``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .. import _validate as v
from .._batching import Progress, map_batches
from .._hooks import cached_shape_probe, get_module, probe_outputs
from ..device import inference_model, resolve_device
from ..errors import NnsensError
from ..zoo import module_of
from ._common import _classes, check_model_input
from ._gradcam_adapter import make_cam, release_cam, score_cam_class, volume_cam_class
from .registry import Method, register


def _registry() -> dict[str, type]:
    from pytorch_grad_cam import (
        EigenCAM,
        GradCAM,
        GradCAMPlusPlus,
        HiResCAM,
        LayerCAM,
        XGradCAM,
    )
    return {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "hirescam": HiResCAM,
            "xgradcam": XGradCAM, "layercam": LayerCAM, "eigencam": EigenCAM,
            "scorecam": score_cam_class()}


CAM_METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "hirescam", "xgradcam", "layercam",
                                "eigencam", "scorecam")
"""Names accepted by :class:`CamConfig` (``method``), in display order."""


@dataclass(frozen=True)
class CamConfig:
    """One Grad-CAM-family run.

    ``target_layer``: module name (``None`` = :func:`default_target_layer`); ``batch_size``: images
    per forward/backward pass; ``score_batch_size``: ScoreCAM masked inputs per forward pass.
    """
    method: str = "gradcam"
    target_layer: str | None = None
    batch_size: int = 32
    score_batch_size: int = 64

    def __post_init__(self):
        v.one_of("method", self.method, CAM_METHODS)
        v.positive("batch_size", self.batch_size, integer=True)
        v.positive("score_batch_size", self.score_batch_size, integer=True)
        if self.target_layer is not None and not isinstance(self.target_layer, str):
            raise NnsensError(f"target_layer={self.target_layer!r} must be a module name (str)")


# --------------------------------------------------------------------------- layers

def _has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, (nn.Conv2d, nn.Conv3d)) for m in module.modules())


def _grid_kind(input_shape: Sequence[int]) -> str:
    return "(C, h, w)" if len(input_shape) == 3 else "(C, d, h, w)"


def target_layer_choices(model: nn.Module) -> list[str]:
    """Module names usable as target layers: Conv2d / Conv3d layers and blocks containing one (not
    the whole model), in definition order."""
    return [n for n, m in model.named_modules() if n and _has_conv(m)]


def layer_grids(model: nn.Module, input_shape: Sequence[int], names: Sequence[str] | None = None,
                device="cpu") -> dict[str, tuple[int, ...]]:
    """Output shape (without batch) of each named module for one zero input of ``input_shape``
    ((C, H, W) or (C, D, H, W)), in execution order."""
    names = list(target_layer_choices(model) if names is None else names)
    dev = resolve_device(device)

    def probe() -> dict[str, tuple[int, ...]]:
        x = torch.zeros((1, *input_shape), device=dev)
        return {n: s[1:] for n, s in probe_outputs(model, x, names).items()}

    key = ("layer_grids", tuple(int(s) for s in input_shape), str(dev), tuple(names))
    return dict(cached_shape_probe(module_of(model), key, probe))


def default_target_layer(model: nn.Module, input_shape: Sequence[int], min_grid: int = 8,
                         device="cpu") -> str:
    """The last-executed conv layer/block whose output grid (h, w; volumes: d, h, w) is at least
    ``min_grid`` pixels (voxels) on its shortest side (ResNet-small at 64x64: ``layer4``, 8x8; VGG16-small: ``features.30``, the last
    conv of block 4, 8x8). Falls back to the last conv layer when none is that fine.

    Coarser layers (e.g. VGG16-small ``features.40``, 4x4) are more class-specific but localize at
    a 16-pixel grid; the pages let the user pick."""
    grids = layer_grids(model, input_shape, device=device)
    dims = len(input_shape)
    fine = [n for n, s in grids.items() if len(s) == dims and min(s[1:]) >= min_grid]
    if fine:
        return fine[-1]
    spatial = [n for n, s in grids.items() if len(s) == dims]
    if spatial:
        return spatial[-1]
    conv = "Conv2d" if dims == 3 else "Conv3d"
    raise NnsensError(f"the model has no {conv} layer producing a {_grid_kind(input_shape)} feature "
                      "map; Grad-CAM methods need a convolutional model")


def validate_target_layer(model: nn.Module, name: str, input_shape: Sequence[int] | None = None,
                          device="cpu") -> nn.Module:
    """The module ``name`` if it is a Conv2d / Conv3d or a block containing one (and, when
    ``input_shape`` (C, H, W) or (C, D, H, W) is given, outputs an ``(N, C, h, w)`` map, or an
    ``(N, C, d, h, w)`` map for volumes); otherwise a :class:`NnsensError` naming valid choices."""
    module = get_module(model, name)
    choices = target_layer_choices(model)
    shown = ", ".join(choices[-12:])
    if name == "" or module is model:
        raise NnsensError(f"target_layer={name!r} is the whole model; pick a convolutional layer "
                          f"or block, e.g. {shown}")
    if not _has_conv(module):
        raise NnsensError(f"target_layer={name!r} is a {type(module).__name__}, not a convolutional "
                          f"layer or a block containing one; pick one of: {shown}")
    if input_shape is not None:
        grids = layer_grids(model, input_shape, device=device)  # the probe default_target_layer made
        shape = grids[name] if name in grids else layer_grids(model, input_shape, [name], device).get(name)
        if shape is None or len(shape) != len(input_shape):
            raise NnsensError(f"target_layer={name!r} outputs shape {shape}, not a "
                              f"{_grid_kind(input_shape)} feature map; pick one of: {shown}")
    return module


# --------------------------------------------------------------------------- compute

def cam_maps(model: nn.Module, x: torch.Tensor, classes, cfg: CamConfig = CamConfig(),
             device="auto", progress: Progress | None = None) -> torch.Tensor:
    """Grad-CAM-family maps ``(N, H, W)`` in [0, 1] for inputs ``x`` (N, C, H, W) in model-input
    space (maps ``(N, D, H, W)`` for volumes ``x`` (N, C, D, H, W)), each image explaining its own
    ``classes[i]``."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    dev = resolve_device(device)
    net = inference_model(model, dev)
    x, n_out = check_model_input(net, x, None, dev)
    layer_name = cfg.target_layer if cfg.target_layer is not None else \
        default_target_layer(net, tuple(x.shape[1:]), device=dev)
    layer = validate_target_layer(net, layer_name, tuple(x.shape[1:]), dev)
    cls = _classes(classes, len(x), n_out)
    cam_cls = _registry()[cfg.method]
    cam = make_cam(volume_cam_class(cam_cls) if x.ndim == 5 else cam_cls, net, layer)
    if cfg.method == "scorecam":
        cam.batch_size = cfg.score_batch_size
    try:
        def one(sl: slice) -> torch.Tensor:
            xb = x[sl].detach().to(dev).clone().requires_grad_(True)
            targets = [ClassifierOutputTarget(c) for c in cls[sl]]
            out = cam(input_tensor=xb, targets=targets)
            return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))

        maps = map_batches(one, len(x), cfg.batch_size, progress)
    finally:
        release_cam(cam)
        net.zero_grad(set_to_none=True)
    if maps is None:
        return torch.zeros((0, *x.shape[2:]))
    return maps.clamp_(0, 1)


# --------------------------------------------------------------------------- registry entries

def _method_fn(method: str):
    def fn(model, x, targets, cfg: CamConfig, *, spec=None, device="auto",
           progress: Progress | None = None) -> torch.Tensor:
        if cfg.method != method:
            cfg = dataclasses.replace(cfg, method=method)
        return cam_maps(model, x, targets, cfg, device, progress)
    fn.__name__ = f"cam_{method}"
    return fn


for _name, _label, _aliases, _description in (
        ("gradcam", "Grad-CAM", ("cam", "grad-cam"),
         "the regions whose deep features the network used for this class (coarse blobs: a small "
         "feature grid upsampled); brighter = more support for the class"),
        ("gradcam++", "Grad-CAM++", ("gradcampp", "gradcam-plus-plus"),
         "like Grad-CAM, better at showing several separate regions of the same finding"),
        ("hirescam", "HiResCAM", (), "like Grad-CAM but kept place by place (no averaging), so it "
                                     "follows the model's computation more closely; still coarse"),
        ("xgradcam", "XGrad-CAM", (), "a Grad-CAM variant scaled so the map adds up to the class "
                                      "score; coarse regions supporting the class"),
        ("layercam", "LayerCAM", (), "like Grad-CAM but weighted place by place; finer detail "
                                     "when taken from an earlier layer"),
        ("eigencam", "EigenCAM", (), "the dominant pattern in the network's deep features, "
                                     "whatever the class: where it looks, not why it chose the "
                                     "class (class-agnostic)"),
        ("scorecam", "Score-CAM", (), "regions that alone keep the class score high (each feature "
                                      "map tried as a mask of the image); no gradients, slower")):
    register(Method(_name, _label, _method_fn(_name), CamConfig, class_agnostic=_name == "eigencam",
                    aliases=_aliases, description=_description, family="cam",
                    config_method_field="method"))
del _name, _label, _aliases, _description
