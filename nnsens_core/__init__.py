"""nnsens_core: sensitivity analysis of neural networks, pure PyTorch (never imports streamlit).

Modules: ``sobol`` (global Sobol indices), ``perturbation`` (local pixel sensitivity),
``activation_max`` (activation maximization), ``cam``/``masks``/``metrics`` (saliency comparison),
``landscape`` (loss-landscape derivatives), ``phantom`` (synthetic lung ultrasound),
``data``/``loading``/``zoo``/``demos`` (models and data). CLI: ``python -m nnsens_core --help``.
"""
from .device import available_devices, resolve_device
from .errors import NnsensError

__version__ = "0.1.0"
__all__ = ["NnsensError", "resolve_device", "available_devices", "__version__"]
