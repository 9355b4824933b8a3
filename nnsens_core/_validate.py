"""Validation helpers shared by the frozen config dataclasses of every module.

Each feature module defines its own ``@dataclass(frozen=True)`` config and validates it in
``__post_init__`` with these helpers, so every message names the bad value and the fix.
"""
from __future__ import annotations

from .errors import NnsensError


def positive(name: str, value, *, integer: bool = False) -> None:
    if integer and (not isinstance(value, int) or isinstance(value, bool)):
        raise NnsensError(f"{name}={value!r} must be a whole number")
    if not value > 0:
        raise NnsensError(f"{name}={value!r} must be > 0")


def non_negative(name: str, value) -> None:
    if not value >= 0:
        raise NnsensError(f"{name}={value!r} must be >= 0")


def in_range(name: str, value, lo, hi, *, lo_open: bool = False, hi_open: bool = False) -> None:
    ok_lo = value > lo if lo_open else value >= lo
    ok_hi = value < hi if hi_open else value <= hi
    if not (ok_lo and ok_hi):
        lb, rb = "(" if lo_open else "[", ")" if hi_open else "]"
        raise NnsensError(f"{name}={value!r} must lie in {lb}{lo}, {hi}{rb}")


def one_of(name: str, value, choices) -> None:
    if value not in choices:
        raise NnsensError(f"{name}={value!r} is not allowed; use one of {tuple(choices)}")


def power_of_two(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1 or value & (value - 1):
        lower = 1 << max(0, int(value).bit_length() - 1) if isinstance(value, int) and value > 0 else 1
        raise NnsensError(f"{name}={value!r} is not a power of two; use {lower} or {lower * 2}")


_KINDS = {1: "grayscale (1 channel)", 3: "RGB (3 channels)"}


def _kind(c: int) -> str:
    return _KINDS.get(int(c), f"{int(c)} channels")


def check_images(x, expected_shape=None, what: str = "x", *, batch: bool = True,
                 finite: bool = False, arrays: bool = False, volumes: bool = False) -> None:
    """A clear error unless ``x`` is a tensor of images in model-input space: a batch
    ``(N, C, H, W)`` (``batch=True``) or one image ``(C, H, W)`` (``batch=False``); with
    ``volumes=True`` (callers that handle 3-D) also volumes ``(N, C, D, H, W)`` / ``(C, D, H, W)``.

    ``expected_shape`` ``(C, H, W)`` or ``(C, D, H, W)`` (e.g. ``spec.input_shape``; a 4-entry
    shape implies ``volumes``) also checks the channel count, whether ``x`` is 2-D or 3-D and its
    size; ``finite=True`` refuses NaN / infinite values; ``arrays=True`` also accepts a numpy
    array. ``what`` names ``x`` in the messages."""
    import numpy as np
    import torch

    lead = "N, " if batch else ""
    spatial = (None if volumes else 2) if expected_shape is None else len(expected_shape) - 1
    dims = {2: "H, W", 3: "D, H, W"}
    layout = (f"({lead}C, {dims[spatial]})" if spatial in dims
              else f"({lead}C, H, W) or ({lead}C, D, H, W)")
    if expected_shape is not None:
        if spatial not in dims:
            raise NnsensError(f"expected_shape={tuple(expected_shape)} must be (C, H, W) or (C, D, H, W)")
        layout += f" = ({lead}{', '.join(str(int(s)) for s in expected_shape)})"
    types = (torch.Tensor, np.ndarray) if arrays else (torch.Tensor,)
    if not isinstance(x, types):
        raise NnsensError(f"{what} must be a {' or '.join(t.__name__ for t in types)} of shape "
                          f"{layout}; got {type(x).__name__}")
    lead_dims = 2 if batch else 1  # (N,) C
    allowed = (lead_dims + 2, lead_dims + 3) if spatial is None else (lead_dims + spatial,)
    if x.ndim not in allowed:
        thing = {None: ("images or volumes", "image or volume"), 2: ("images", "image"),
                 3: ("volumes", "volume")}[spatial]
        raise NnsensError(f"{what} has shape {tuple(x.shape)}; expected "
                          f"{'a batch of ' + thing[0] if batch else 'one ' + thing[1]} {layout}")
    if expected_shape is not None:
        c, size = int(expected_shape[0]), tuple(int(s) for s in expected_shape[1:])
        got_c, got = int(x.shape[-spatial - 1]), tuple(int(s) for s in x.shape[-spatial:])
        if got_c != c:
            raise NnsensError(f"{what} is {_kind(got_c)} but the model expects {_kind(c)}; convert "
                              f"it (e.g. load it with channels={c})")
        if got != size:
            fmt = "x".join
            raise NnsensError(f"{what} is {fmt(map(str, got))} but the model expects "
                              f"{fmt(map(str, size))}; resize it to {fmt(map(str, size))}")
    if finite:
        ok = torch.isfinite(x).all() if isinstance(x, torch.Tensor) else np.isfinite(x).all()
        if not ok:
            raise NnsensError(f"{what} contains NaN or infinite values")
