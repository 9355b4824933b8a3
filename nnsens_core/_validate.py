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
