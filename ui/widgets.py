"""Shared widgets: error guard, progress, downloads, plots."""
from __future__ import annotations

import contextlib
import io
import json
import time

import numpy as np
import streamlit as st

from nnsens_core.errors import NnsensError

from ._streamlit_internals import ScriptControlException


@contextlib.contextmanager
def guard(what: str = "This step"):
    """Show a core error as a message in the page, never a traceback; the app keeps running.

    Other exceptions are shown as a short message too (with the exception type); Streamlit's own
    control flow (``st.stop()``, ``st.rerun()``) passes through."""
    try:
        yield
    except ScriptControlException:
        raise
    except NnsensError as exc:
        st.error(str(exc))
    except Exception as exc:  # noqa: BLE001 - a page must never show a traceback
        st.error(f"{what} failed: {type(exc).__name__}: {str(exc)[:500]}")


class Progress:
    """A progress bar with a rate estimate; pass ``progress`` (the callable) to core functions."""

    def __init__(self, label: str, total: int | None = None):
        self.label, self.total, self.t0 = label, total, time.perf_counter()
        extra = f" ({total:,} steps)" if total else ""
        self.bar = st.progress(0.0, text=f"{label}{extra}")

    def __call__(self, done: int, total: int) -> None:
        dt = time.perf_counter() - self.t0
        eta = dt / max(done, 1) * (total - done)
        self.bar.progress(min(1.0, done / max(total, 1)),
                          text=f"{self.label}: {done:,}/{total:,} · {dt:.1f}s elapsed · ~{eta:.1f}s left")

    def done(self) -> None:
        self.bar.empty()


def download_json(label: str, obj, file_name: str, key: str | None = None) -> None:
    st.download_button(label, json.dumps(obj, indent=2, default=_jsonable), file_name,
                       "application/json", key=key)


def download_csv(label: str, df, file_name: str, key: str | None = None) -> None:
    st.download_button(label, df.to_csv(index=True).encode(), file_name, "text/csv", key=key)


def download_npz(label: str, arrays: dict, file_name: str, key: str | None = None) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    st.download_button(label, buf.getvalue(), file_name, "application/octet-stream", key=key)


def _jsonable(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


def to_uint8(img01: np.ndarray) -> np.ndarray:
    """(C, H, W) or (H, W) in [0, 1] -> (H, W[, 3]) uint8 for st.image."""
    a = np.asarray(img01, dtype=np.float32)
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)
    return (np.clip(a, 0, 1) * 255).astype(np.uint8)


def overlay(img01: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """A heat map (H, W) over an image, jet-like colours, as uint8 RGB."""
    base = to_uint8(img01).astype(np.float32)
    if base.ndim == 2:
        base = np.repeat(base[..., None], 3, axis=2)
    h = np.asarray(heat, dtype=np.float32)
    h = (h - h.min()) / (np.ptp(h) + 1e-12)
    colour = np.stack([np.clip(1.5 - abs(4 * h - 3), 0, 1), np.clip(1.5 - abs(4 * h - 2), 0, 1),
                       np.clip(1.5 - abs(4 * h - 1), 0, 1)], axis=-1) * 255
    return (base * (1 - alpha) + colour * alpha).astype(np.uint8)
