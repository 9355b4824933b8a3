"""The one batching loop of nnsens_core (Captum style: written once, used everywhere).

Every function that evaluates many perturbed inputs goes through :func:`map_batches`, so
batch size never changes results and progress is reported the same way everywhere.
"""
from __future__ import annotations

from typing import Callable, Iterator, Protocol, Sequence

import torch

from .errors import NnsensError


class Progress(Protocol):
    """``progress(done, total, stage="")``: the one progress signature of nnsens_core.

    Called with ``0 <= done <= total``; ``done`` reaches ``total`` when the job (or, for jobs with
    stages, the stage) ends. ``stage`` names the part of a longer job (Sobol: ``sampling`` /
    ``evaluation`` / ``analysis``; landscape: ``training`` / ``derivatives``; saliency comparison:
    the method), ``""`` for jobs without stages.
    """

    def __call__(self, done: int, total: int, stage: str = "") -> None: ...


def sub_progress(progress: Progress | None, stage: str = "", start: int = 0, total: int | None = None,
                 span: int | None = None) -> Progress | None:
    """A :data:`Progress` for one part of a longer job, reporting to ``progress``.

    The part's ``(done, t)`` becomes ``start + done`` (or ``start + span * done / t`` with ``span``)
    out of ``total`` (default: the part's own ``t``); ``stage`` (default: the part's own) is passed on.
    """
    if progress is None:
        return None
    outer = stage

    def sub(done: int, t: int, stage: str = "") -> None:
        d = done if span is None else int(span * done / max(t, 1))
        if outer or stage:
            progress(start + d, t if total is None else total, stage=outer or stage)
        else:  # stage-less jobs also accept a plain (done, total) callable
            progress(start + d, t if total is None else total)
    return sub

DEFAULT_MEMORY_BUDGET = 512 * 2**20  # bytes of activations one batch may use


def batch_slices(total: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices covering ``range(total)`` in chunks of ``batch_size``."""
    if batch_size < 1:
        raise NnsensError(f"batch_size={batch_size} must be >= 1")
    for start in range(0, total, batch_size):
        yield slice(start, min(start + batch_size, total))


def map_batches(fn: Callable[[slice], torch.Tensor | Sequence[torch.Tensor]], total: int,
                batch_size: int, progress: Progress | None = None,
                out_device: torch.device | str | None = "cpu"):
    """Call ``fn(slice)`` for consecutive slices of ``range(total)`` and concatenate results on dim 0.

    ``fn`` returns a tensor, or a tuple/list of tensors (each concatenated separately).
    Results are moved to ``out_device`` (``None`` keeps them where ``fn`` made them) so that GPU
    memory holds one batch at a time.
    """
    if total < 0:
        raise NnsensError(f"total={total} must be >= 0")
    parts: list = []
    done = 0
    for sl in batch_slices(total, batch_size):
        out = fn(sl)
        if isinstance(out, torch.Tensor):
            parts.append(out.detach().to(out_device) if out_device is not None else out.detach())
        else:
            parts.append(tuple(o.detach().to(out_device) if out_device is not None else o.detach()
                               for o in out))
        done = sl.stop
        if progress is not None:
            progress(done, total)
    if not parts:
        return None
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts, dim=0)
    return tuple(torch.cat([p[i] for p in parts], dim=0) for i in range(len(parts[0])))


def auto_batch_size(bytes_per_item: float, budget: int = DEFAULT_MEMORY_BUDGET,
                    lo: int = 1, hi: int = 65536) -> int:
    """Largest batch whose estimated memory ``bytes_per_item * batch`` fits ``budget``."""
    if bytes_per_item <= 0:
        return hi
    return int(max(lo, min(hi, budget // max(1, int(bytes_per_item)))))


def check_memory(estimate_bytes: float, limit_bytes: float, what: str) -> None:
    """Refuse up front a run whose memory estimate exceeds the limit (message has both numbers)."""
    if estimate_bytes > limit_bytes:
        raise NnsensError(
            f"{what} needs about {estimate_bytes / 2**30:.2f} GiB, more than the "
            f"{limit_bytes / 2**30:.2f} GiB allowed; reduce N / the number of outputs, "
            "or raise the memory limit")
