"""Device selection: cuda, else mps, else cpu."""
from __future__ import annotations

import torch

from .errors import NnsensError

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


def available_devices() -> list[str]:
    """Devices usable on this machine, best first (always ends with ``"cpu"``)."""
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    found.append("cpu")
    return found


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"``/``None``/a name/a ``torch.device`` into a usable ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    name = "auto" if device is None else str(device).lower()
    if name == "auto":
        return torch.device(available_devices()[0])
    kind = name.split(":")[0]
    if kind not in DEVICE_CHOICES:
        raise NnsensError(f"device={device!r} is unknown; use one of {DEVICE_CHOICES}")
    if kind not in available_devices():
        raise NnsensError(
            f"device={device!r} is not available on this machine; "
            f"use one of {available_devices()} or 'auto'")
    return torch.device(name)


def inference_model(model, device: str | torch.device | None = "auto") -> "torch.nn.Module":
    """``model`` (an ``nn.Module`` or a :class:`~nnsens_core.zoo.LoadedModel`) ready for inference:
    in eval mode on ``device``, without changing the caller's model.

    The model itself is returned when every sub-module is already in eval mode and its parameters
    are on ``device``; otherwise a deep copy is put there and switched to eval mode (the dashboard
    shares one cached model among sessions, and a notebook user's model in training mode must stay
    in training mode)."""
    import copy

    from .zoo import module_of

    module = module_of(model)
    if not isinstance(module, torch.nn.Module):
        raise NnsensError(f"model must be a torch.nn.Module or a LoadedModel, got {type(model).__name__}")
    dev = resolve_device(device)
    p = next(module.parameters(), None)
    if p is None:
        p = next(module.buffers(), None)
    on_device = p is None or p.device == dev
    if on_device and not any(m.training for m in module.modules()):
        return module
    return copy.deepcopy(module).to(dev).eval()
