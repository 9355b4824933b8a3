"""Cached loaders (every cache is bounded: ``max_entries``, and ``ttl`` where uploads can reach it).
Models live in ``st.cache_resource`` (shared across sessions: never mutate them;
they are in eval mode from load), arrays and results in ``st.cache_data``."""
from __future__ import annotations

import streamlit as st

from nnsens_core import brain_phantom, demos, phantom
from nnsens_core.data import TabularData
from nnsens_core.device import resolve_device
from nnsens_core.zoo import LoadedModel

CACHE_TTL = 3600
"""Seconds an entry of a shared cache that may hold an upload's model or results is kept (every
such cache also has ``max_entries``); the demo caches are bounded by ``max_entries`` alone. Uploads
themselves live in ``st.session_state`` and are freed with their session."""


@st.cache_resource(show_spinner="Training the paper MLP on the demo data ...", max_entries=8)
def demo_tabular_model(seed: int) -> tuple[TabularData, LoadedModel, dict]:
    return demos.demo_tabular_model(seed=seed, device="cpu")


@st.cache_resource(show_spinner="Loading the demo CNN ...", max_entries=8)
def demo_cnn(name: str, device: str) -> LoadedModel:
    return demos.load_demo_cnn(name, device=resolve_device(device))


@st.cache_data(show_spinner="Generating phantom images ...", max_entries=8)
def demo_images(split: str, n: int):
    return phantom.demo_images(split, n=n)


@st.cache_data(show_spinner="Generating brain-phantom volumes ...", max_entries=4)
def demo_volumes(split: str, n: int):
    return brain_phantom.demo_volumes(split, n=n)


@st.cache_resource(max_entries=16, ttl=CACHE_TTL)
def model_on(_model: LoadedModel, key: str, device: str) -> LoadedModel:
    """The model on ``device`` (a copy when it is elsewhere), cached per content fingerprint ``key``
    (:func:`nnsens_core.fingerprint.fingerprint`, never an upload's name) and device; entries are
    dropped after an hour unused or when 16 are held."""
    import copy
    dev = resolve_device(device)
    if next(_model.module.parameters(), None) is not None and \
            next(_model.module.parameters()).device == dev:
        return _model
    return LoadedModel(copy.deepcopy(_model.module).to(dev).eval(), _model.spec, _model.report)
