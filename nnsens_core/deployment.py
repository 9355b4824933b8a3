"""Server settings for deployments: public mode and the upload limits.

``NNSENS_PUBLIC=1`` (``./run.sh public``) is for demo servers open to people you do not know:
graph-format (TorchScript) uploads are refused even when ``NNSENS_ALLOW_CODE_MODELS`` is set, the
server-wide compute budget is tighter (:mod:`nnsens_core.budget`) and uploads are smaller. Each limit
can be set on its own (``NNSENS_MAX_WEIGHTS_MB``, ``NNSENS_MAX_DATA_MB``); Streamlit's
``server.maxUploadSize`` stays the outer bound of any single upload.
"""
from __future__ import annotations

import os

from .errors import NnsensError

PUBLIC_ENV = "NNSENS_PUBLIC"
CODE_MODELS_ENV = "NNSENS_ALLOW_CODE_MODELS"
WEIGHTS_ENV = "NNSENS_MAX_WEIGHTS_MB"
DATA_ENV = "NNSENS_MAX_DATA_MB"

MAX_WEIGHTS_MB = 600         # an ImageNet VGG-16 state_dict is 528 MiB
MAX_DATA_MB = 500            # CSV / NPZ / ZIP of images (before the ZIP/pixel limits of data.py)
PUBLIC_MAX_WEIGHTS_MB = 100  # the ResNet-18 / small VGG sizes; a full VGG-16 is refused
PUBLIC_MAX_DATA_MB = 50


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def public_mode() -> bool:
    """``NNSENS_PUBLIC`` is set (``1``/``true``/``yes``/``on``)."""
    return _flag(PUBLIC_ENV)


def code_models_allowed() -> bool:
    """The server setting ``NNSENS_ALLOW_CODE_MODELS`` (``1``/``true``/``yes``/``on``; off by
    default): whether uploaded TorchScript (code) may be loaded; always off in public mode."""
    return not public_mode() and _flag(CODE_MODELS_ENV)


def _mb(name: str, default: float) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return int(default * 2**20)
    try:
        value = float(raw)
    except ValueError:
        raise NnsensError(f"{name}={raw!r} is not a number; give megabytes, e.g. {name}=100") from None
    if value <= 0:
        raise NnsensError(f"{name}={raw!r} must be > 0 (megabytes)")
    return int(value * 2**20)


def max_weights_bytes() -> int:
    """Largest model file accepted (``NNSENS_MAX_WEIGHTS_MB``; 600 MiB, 100 MiB in public mode)."""
    return _mb(WEIGHTS_ENV, PUBLIC_MAX_WEIGHTS_MB if public_mode() else MAX_WEIGHTS_MB)


def max_data_bytes() -> int:
    """Largest dataset upload accepted (``NNSENS_MAX_DATA_MB``; 500 MiB, 50 MiB in public mode)."""
    return _mb(DATA_ENV, PUBLIC_MAX_DATA_MB if public_mode() else MAX_DATA_MB)


def check_data_size(n_bytes: int, name: str = "the upload") -> None:
    """Refuse a dataset upload above :func:`max_data_bytes` (before it is parsed)."""
    limit = max_data_bytes()
    if n_bytes > limit:
        raise NnsensError(f"{name} is {n_bytes / 2**20:.1f} MiB, over this server's "
                          f"{limit / 2**20:.0f} MiB limit for datasets; upload fewer or smaller "
                          "images / rows")
