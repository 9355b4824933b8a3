"""nnsens_core: how neural networks respond to their inputs, in pure PyTorch (never imports streamlit).

Domains: :mod:`~nnsens_core.sobol` (global Sobol indices of tabular networks),
:mod:`~nnsens_core.local_sensitivity` (per-block pixel-perturbation sensitivity of CNNs),
:mod:`~nnsens_core.activation_max` (activation maximization), :mod:`~nnsens_core.saliency` (saliency
methods, one registry, agreement and ground-truth metrics), :mod:`~nnsens_core.landscape`
(loss-landscape derivatives); models and data in ``zoo``, ``loading``, ``data``, ``volumes``
(3-D NIfTI volumes and atlases), ``demos``, ``phantom``, ``brain_phantom``, ``training``. CLI: ``nnsens --help`` (= ``python -m nnsens_core --help``).

The names in ``__all__`` are what a notebook needs; they are imported on first use, so
``import nnsens_core`` stays cheap.
"""
from __future__ import annotations

import importlib

__version__ = "0.2.0"

_LAZY = {
    # infrastructure
    "NnsensError": "errors", "resolve_device": "device", "available_devices": "device",
    "inference_model": "device",
    # models and data
    "load_model": "loading", "save_state_dict": "loading", "build_model": ("zoo", "build"),
    "LoadedModel": "zoo", "ModelSpec": "zoo", "load_csv": "data", "load_pima": "data",
    "load_npz": "data", "load_image_zip": "data", "load_image_folder": "data",
    "TabularData": "data", "ImageData": "data", "demo_tabular_model": "demos",
    "load_demo_cnn": "demos", "demo_cnn_names": "demos", "make_phantom": "phantom",
    "load_nifti": "volumes", "save_nifti": "volumes", "load_volume_zip": "volumes",
    "load_atlas": "volumes", "Atlas": "volumes", "make_brain_phantom": "brain_phantom",
    "train_cnn": "training", "CNNTrainConfig": "training",
    # global sensitivity (sample -> evaluate -> analyze, or run for all three)
    "SobolProblem": "sobol", "SobolConfig": "sobol",
    # local sensitivity and activation maximization
    "LocalConfig": "local_sensitivity", "AMConfig": "activation_max", "AMTarget": "activation_max",
    "maximize": "activation_max",
    # saliency
    "explain": "saliency.compare",
}
_SUBMODULES = ("sobol", "landscape", "saliency", "local_sensitivity", "activation_max", "zoo", "data",
               "demos", "phantom", "loading", "training", "volumes", "brain_phantom")

__all__ = ["__version__", *_LAZY, *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'nnsens_core' has no attribute {name!r}")
    module, attr = target if isinstance(target, tuple) else (target, name)
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
