"""``model_warnings(ctx)``: the one place that flags a model whose maps should not be trusted.

Call it on every page that shows the selected model's maps (saliency, activation maximization,
local sensitivity, case view), right after ``ctx = state.images()``. It warns when

* the model is at chance on the selected dataset (its balanced accuracy is below the one-sided
  95 % bound of a chance-level guesser; :func:`nnsens_core.saliency.trust.accuracy_verdict`),
  checked once per model and data (:func:`dataset_confusion`, cached by the context key);
* a sanity check run on the Saliency comparison page for this model & data failed (a method's
  maps stay similar to the original ones once the weights are randomized;
  :func:`nnsens_core.saliency.trust.sanity_verdict`).

Returns the warning texts shown (empty when none).
"""
from __future__ import annotations

import streamlit as st

from nnsens_core.saliency import dataset as D
from nnsens_core.saliency import registry as R
from nnsens_core.saliency import trust as T

from .cache import CACHE_TTL
from .widgets import guard


@st.cache_data(show_spinner="Predicting the selected data ...", max_entries=16, ttl=CACHE_TTL)
def _confusion(_model, _data, key: str, device: str) -> D.Confusion:
    return D.confusion(_model, _data, device=device)


def dataset_confusion(ctx) -> D.Confusion:
    """The selected model's predictions on the selected data (cached per context key): what the
    trust flags and the pages that list misclassified images share."""
    return _confusion(ctx.model, ctx.data, ctx.key, str(ctx.device))


def accuracy_of(ctx) -> T.AccuracyVerdict:
    res = dataset_confusion(ctx)
    return T.accuracy_verdict(res.labels, res.preds, len(ctx.data.class_names))


def accuracy_warning(verdict: T.AccuracyVerdict) -> str | None:
    if not verdict.at_chance:
        return None
    return (f"⚠ This model is at chance on the selected data ({verdict.text()}): its maps "
            "explain guesses, not findings. Check the model and data on the Model & data page.")


def sanity_warning(verdict: T.SanityVerdict) -> str | None:
    if not verdict.failed:
        return None
    names = ", ".join(R.label(m) for m in verdict.failed)
    return (f"⚠ Sanity check failed for {names}: with every layer randomized the maps stay "
            f"similar to this model's ({verdict.metric} ≥ {verdict.threshold:g}), so they show the "
            "image more than what the model learned.")


def model_warnings(ctx) -> list[str]:
    """Show (``st.warning``) and return the trust warnings of the selected model & data."""
    out: list[str] = []
    with guard("Checking the model's accuracy"):
        if len(ctx.data) and len(ctx.data.class_names) >= 2:
            w = accuracy_warning(accuracy_of(ctx))
            if w:
                out.append(w)
    store = st.session_state.get("saliency") or {}
    san_key = (store.get("last_sanity") or {}).get(ctx.key)
    res = (store.get("sanity") or {}).get(san_key) if san_key is not None else None
    if res is not None:
        w = sanity_warning(T.sanity_verdict(res))
        if w:
            out.append(w)
    for key, verdict in ((st.session_state.get("case") or {}).get("sanity") or {}).items():
        if key[3] == ctx.key and sanity_warning(verdict) and sanity_warning(verdict) not in out:
            out.append(sanity_warning(verdict))  # the sanity badge of the Read a case page
    for w in out:
        st.warning(w)
    return out
