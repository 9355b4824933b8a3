"""Shared widgets: error guard, progress, downloads, plots."""
from __future__ import annotations

import contextlib
import time

import numpy as np
import streamlit as st


from nnsens_core import budget
from nnsens_core._results import csv_bytes, dumps, markdown_text, npz_bytes
from nnsens_core.errors import NnsensError
from nnsens_core.loading import check_forward

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
        st.error(plain(" ".join(str(exc).split())))
    except Exception as exc:  # noqa: BLE001 - a page must never show a traceback
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        st.error(plain(f"{what} failed: {type(exc).__name__}: {first}. Check that the selected "
                       "model and data fit each other (Model & data page)."))


def plain(text) -> str:
    """``text`` (a user-provided name: class folder, file, feature, model) escaped so that
    Streamlit's markdown shows it literally (:func:`nnsens_core._results.markdown_text`: no links
    or autolinks, images, emphasis, code, colour directives or LaTeX; raw HTML is never rendered:
    ``unsafe_allow_html`` stays off). Use it for every user-provided string inside ``st.markdown``
    / ``st.success`` / ``st.error`` / ``st.caption`` / metric labels; newlines become spaces.
    Ordinary punctuation (quotes, ``=``, ``<``, ``>``, ``.``, ``(``) is left as it is, so messages
    read the same."""
    return markdown_text(text, html=False)


def show_chart(where, fig, **kwargs) -> None:
    """``where.plotly_chart(fig, **kwargs)`` (``where`` is ``st`` or a column) with every text of
    ``fig`` shown as text (:func:`ui.plots.safe_figure`): the one way pages show a figure."""
    from .plots import safe_figure
    where.plotly_chart(safe_figure(fig), **kwargs)


@st.cache_data(show_spinner=False, max_entries=64)
def _model_problem(_module, _spec, key: str, device: str) -> str:
    try:
        check_forward(_module, _spec, device)
    except NnsensError as exc:
        return str(exc)
    return ""


def require_usable_model(model, key: str, device) -> None:
    """Stop the page with one message when the selected model's outputs do not fit its
    description (shape ``(N, classes)``, finite; :func:`nnsens_core.loading.check_forward`), so no
    computation runs on it; checked once per model (``key``: its content id) and device."""
    if not usable_model(model, key, device):
        st.stop()


def usable_model(model, key: str, device) -> bool:
    """False (after one message) when the selected model's outputs do not fit its description;
    for a part of a page that uses the model while the rest does not (:func:`require_usable_model`
    stops the whole page)."""
    msg = _model_problem(model.module, model.spec, key, str(device))
    if msg:
        st.error(plain(msg.rstrip(".")) + ". Pick another model in the sidebar.")
    return not msg


def cost_line(est: "budget.Estimate | None") -> bool:
    """Show a run's cost estimate next to its button; when it alone is over the server budget, say
    so (and what to reduce) in one line and return False (disable the button)."""
    if est is None:
        return True
    b = budget.server_budget()
    why = b.refusal(est)
    if why:
        st.error(why)
        return False
    busy = f", {b.in_use:,.0f} in use now" if b.running else ""
    st.caption(f"Estimated cost: {est.text()}; server budget {b.limit:,.0f} GFLOP{busy}.")
    return True


def within_budget(est: "budget.Estimate"):
    """``with within_budget(est):`` reserves ``est`` in the server budget while the run computes;
    raises NnsensError (shown by :func:`guard`) when it does not fit now."""
    return budget.server_budget().admit(est)


class Progress:
    """A progress bar with a rate estimate; pass ``progress`` (the callable) to core functions."""

    def __init__(self, label: str, total: int | None = None):
        self.label, self.total, self.t0 = label, total, time.perf_counter()
        extra = f" ({total:,} steps)" if total else ""
        self.bar = st.progress(0.0, text=f"{label}{extra}")

    def __call__(self, done: int, total: int, stage: str = "") -> None:
        dt = time.perf_counter() - self.t0
        eta = dt / max(done, 1) * (total - done)
        what = f"{self.label} ({stage})" if stage else self.label
        self.bar.progress(min(1.0, done / max(total, 1)),
                          text=f"{what}: {done:,}/{total:,} · {dt:.1f}s elapsed · ~{eta:.1f}s left")

    def done(self) -> None:
        self.bar.empty()


EXPORTS = "exports"
"""``st.session_state[EXPORTS][key]``: the JSON text each download button offered last (tests
compare it with the CLI's file)."""


def download_json(label: str, doc: dict, file_name: str, key: str | None = None) -> None:
    """Offer an export document (built by the core, e.g. ``export_json(result, ...)``) as the same
    text the CLI writes."""
    text = dumps(doc)
    if key:
        st.session_state.setdefault(EXPORTS, {})[key] = text
    st.download_button(label, text, file_name, "application/json", key=key, on_click="ignore")


def download_csv(label: str, df, file_name: str, key: str | None = None) -> None:
    """Offer a table as :func:`nnsens_core._results.csv_bytes` (formula cells neutralised)."""
    st.download_button(label, csv_bytes(df), file_name, "text/csv", key=key, on_click="ignore")


def download_npz(label: str, arrays: dict, file_name: str, key: str | None = None) -> None:
    st.download_button(label, npz_bytes(arrays), file_name, "application/octet-stream", key=key,
                       on_click="ignore")


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
