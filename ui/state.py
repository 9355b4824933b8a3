"""Shared state: what the sidebar selected (device, seed, datasets, models) and uploads.

Pages call :func:`tabular` or :func:`images` to get the selected data and model together with a
``key`` string that identifies them for ``st.cache_data`` (pass models as ``_model`` arguments).
The key is built from content fingerprints (:func:`nnsens_core.fingerprint.fingerprint`), never from
upload names: the caches are shared by every session, and two users who upload different files with
the same name must never see each other's model or results.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import streamlit as st
import torch

from nnsens_core import roi as roi_core
from nnsens_core.data import ImageData, TabularData, align_classes, demo_rows
from nnsens_core.demos import demo_cnn_names
from nnsens_core.device import DEVICE_CHOICES, available_devices, resolve_device
from nnsens_core.errors import NnsensError
from nnsens_core.fingerprint import fingerprint
from nnsens_core.preprocess import Recipe
from nnsens_core.zoo import LoadedModel

from . import cache
from ._streamlit_internals import leave_pages_directory_mode
from .widgets import plain

DEMO_TABULAR = "Demo: Pima diabetes"
DEMO_PHANTOM = "Demo: lung-ultrasound phantom"
DEMO_BRAIN = "Demo: brain phantom (3-D)"
DEMO_MLP = "Demo: paper MLP (trained on the demo data)"
PHANTOM_TEST_N = 90
BRAIN_TEST_N = 40


@dataclass
class TabularContext:
    data: TabularData
    model: LoadedModel
    train_rows: str
    test_rows: str
    key: str  # identifies (data, model) for caches
    device: torch.device
    seed: int


@dataclass
class ImageContext:
    """The selected images as the selected CNN's input (``data.images`` built through the model's
    recipe from the originals, ``data.placements`` saying where each original sits, ``data.roi``
    the region of interest at model resolution), with the model and a cache key."""
    data: ImageData
    model: LoadedModel
    key: str
    device: torch.device
    seed: int
    roi_originals: tuple | None = None  # bool (h, w) per image on data.original(i); None: no ROI
    recipe: Recipe | None = None        # the model's recipe (None: volumes)
    roi_choice: tuple[str, str] = ("none", "")  # (mode, polygon text) chosen on Model & data


def require_router() -> None:
    """Call first in every page: make sure the page runs inside ``app.py``'s router.

    On a freshly started server, a page opened by its URL (``/sobol``) is run by Streamlit's legacy
    ``pages/`` folder path: the page file alone, without ``app.py`` and so without the shared sidebar.
    ``st.navigation`` switches that path off for the process; until it has run once, turn it off here
    and rerun, which goes through the router to the same page.
    """
    if leave_pages_directory_mode():
        st.rerun()


def last_result(runs: dict, last: dict, ctx_key: str, key, button: str):
    """The result a page last computed for this data & model (``runs[last[ctx_key]]``), or None.

    Pages keep every result in ``runs`` by its settings ``key`` and the key of the last one per
    context in ``last``, so reruns never lose work; when the settings shown differ from those of the
    result, say so and name the ``button`` that updates it.
    """
    shown = last.get(ctx_key)
    res = runs.get(shown)
    if res is not None and shown != key:
        st.info(f"Showing the last result; the settings above have changed since (press **{button}** "
                "to update).")
    return res


def _uploads() -> dict:
    if "uploads" not in st.session_state:
        st.session_state["uploads"] = {"tabular_data": {}, "tabular_model": {}, "image_data": {},
                                       "image_model": {}}
    return st.session_state["uploads"]


def _upload_ids() -> dict:
    if "upload_ids" not in st.session_state:
        st.session_state["upload_ids"] = {k: {} for k in _uploads()}
    return st.session_state["upload_ids"]


def content_id(kind: str, label: str, obj) -> str:
    """The fingerprint of the upload ``label`` (computed once, when it was added)."""
    ids = _upload_ids()[kind]
    if label not in ids:
        ids[label] = fingerprint(obj)
    return ids[label]


def register_upload(kind: str, label: str, obj) -> None:
    """Keep an uploaded dataset/model (``kind`` one of the four upload kinds) under ``label`` in this
    session, identified by its content fingerprint."""
    _uploads()[kind][label] = obj
    _upload_ids()[kind][label] = fingerprint(obj)


def add_upload(kind: str, label: str, obj, message: str = "") -> None:
    """Register an upload (:func:`register_upload`), select it in the sidebar and rerun; ``message``
    is shown once after the rerun (see :func:`flash`)."""
    register_upload(kind, label, obj)
    st.session_state.setdefault("_pending_sel", {})[kind] = label
    st.session_state["_flash"] = message
    st.rerun()


def flash() -> None:
    """Show the message left by :func:`add_upload` (once)."""
    msg = st.session_state.pop("_flash", "")
    if msg:
        first, _, rest = msg.partition("\n")
        st.success(first)
        if rest:
            st.code(rest)


def unique_label(kind: str, label: str) -> str:
    """``label``, or ``label (2)``, ``label (3)``... when an upload of ``kind`` already has it."""
    existing = set(options(kind))
    out, k = label, 2
    while out in existing:
        out, k = f"{label} ({k})", k + 1
    return out


def options(kind: str) -> list[str]:
    demo = {"tabular_data": [DEMO_TABULAR], "tabular_model": [DEMO_MLP],
            "image_data": [DEMO_PHANTOM, DEMO_BRAIN],
            "image_model": [f"Demo: {n}" for n in demo_cnn_names(None)]}[kind]
    return demo + list(_uploads()[kind])


def device() -> torch.device:
    return resolve_device(st.session_state.get("sel_device", "auto"))


def seed() -> int:
    return int(st.session_state.get("sel_seed", 0))


def sidebar(show_tabular: bool = True, show_images: bool = True) -> None:
    """The shared sidebar (rendered by ``app.py`` before every page)."""
    sb = st.sidebar
    for kind, label in st.session_state.pop("_pending_sel", {}).items():
        st.session_state[f"sel_{kind}"] = label  # before the widget exists, so this is allowed
    avail = [d for d in DEVICE_CHOICES if d == "auto" or d in available_devices()]
    sb.selectbox("Device", avail, key="sel_device",
                 help="auto = cuda if present, else mps, else cpu")
    sb.number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, key="sel_seed")
    for kind, label, show in (("tabular_data", "Tabular dataset", show_tabular),
                              ("tabular_model", "Tabular model", show_tabular),
                              ("image_data", "Image dataset", show_images),
                              ("image_model", "CNN", show_images)):
        opts = options(kind)
        if st.session_state.get(f"sel_{kind}") not in opts:
            st.session_state[f"sel_{kind}"] = opts[0] if opts else None
        if show and opts:
            sb.selectbox(label, opts, key=f"sel_{kind}")


def tabular_data() -> tuple[str, TabularData, tuple[str, str]]:
    """The selected tabular dataset whatever the selected model: (label, data, (train rows, test
    rows)); the Model & data page trains a model on it even when the selected model does not fit."""
    label = st.session_state.get("sel_tabular_data", DEMO_TABULAR)
    demo_data = cache.demo_tabular_model(seed())[0]
    data = demo_data if label == DEMO_TABULAR else _uploads()["tabular_data"].get(label, demo_data)
    rows = st.session_state.get("tabular_rows", {}).get(label) or demo_rows(data)
    return label, data, tuple(rows)


def tabular(stop: bool = True) -> TabularContext | None:
    """The selected tabular data and model. When they do not fit, show why and stop the page
    (``stop=False``: return None instead, so the page can offer a fix)."""
    dev, sd = device(), seed()
    data_label, data, rows = tabular_data()
    model_label = st.session_state.get("sel_tabular_model", DEMO_MLP)
    demo_data, demo_model, _info = cache.demo_tabular_model(sd)
    ups = _uploads()
    model = demo_model if model_label == DEMO_MLP else ups["tabular_model"].get(model_label, demo_model)
    data_id = "demo:pima" if data is demo_data else content_id("tabular_data", data_label, data)
    model_id = f"demo:paper-mlp:seed={sd}" if model is demo_model else \
        content_id("tabular_model", model_label, model)
    width = model.spec.input_shape[0]
    if width != data.n_features:
        st.error(f"The model '{plain(model_label)}' takes {width} inputs but the dataset "
                 f"'{plain(data_label)}' has {data.n_features} features. Pick a matching pair in the "
                 "sidebar, or train the paper MLP on this dataset on the Model & data page.")
        return _stop(stop)
    key = f"{data_id}|{model_id}"
    return TabularContext(data, cache.model_on(model, model_id, str(dev)), rows[0], rows[1], key, dev,
                          sd)


def image_data() -> tuple[str, ImageData | None, str | None]:
    """The selected image dataset whatever the selected CNN: (label, data, content id), data None
    when nothing is selected; the Model & data page shows it and trains a CNN on it even when the
    selected CNN does not fit it."""
    label = st.session_state.get("sel_image_data", DEMO_PHANTOM)
    if label == DEMO_PHANTOM:
        return label, cache.demo_images("test", PHANTOM_TEST_N), f"demo:phantom:test:{PHANTOM_TEST_N}"
    if label == DEMO_BRAIN:
        return label, cache.demo_volumes("test", BRAIN_TEST_N), f"demo:brain:test:{BRAIN_TEST_N}"
    data = _uploads()["image_data"].get(label)
    return label, data, None if data is None else content_id("image_data", label, data)


def image_model() -> tuple[str | None, LoadedModel | None, str | None]:
    """The selected CNN whatever the selected data: (label, model on the selected device, content
    id), model None when none is selected."""
    names = demo_cnn_names(None)
    dev = device()
    model_label = st.session_state.get("sel_image_model") or (f"Demo: {names[0]}" if names else None)
    if model_label and model_label.startswith("Demo: ") and model_label[6:] in names:
        return model_label, cache.demo_cnn(model_label[6:], str(dev)), f"demo:{model_label[6:]}"
    model = _uploads()["image_model"].get(model_label)
    if model is None:
        return model_label, None, None
    model_id = content_id("image_model", model_label, model)
    return model_label, cache.model_on(model, model_id, str(dev)), model_id


def images(stop: bool = True, volumes: bool = False) -> ImageContext | None:
    """The selected image data and CNN. When they do not fit, show why and stop the page
    (``stop=False``: return None instead). Pages that work on 3-D volumes too pass
    ``volumes=True``; the others say so and stop when a volume dataset is selected."""
    dev, sd = device(), seed()
    data_label, data, data_id = image_data()
    model_label, model, model_id = image_model()
    if data is None or model is None:
        st.error("Select an image dataset and a CNN in the sidebar (upload them on Model & data).")
        return _stop(stop)
    if data.ndim_spatial == 3 and not volumes:
        st.error(f"'{plain(data_label)}' holds 3-D volumes; this page works on 2-D images. Pick an "
                 "image dataset in the sidebar, or study the volumes on the Robustness page.")
        return _stop(stop)
    roi_orig, roi_tag = _roi(data_id, data)
    recipe = None
    if data.ndim_spatial == 2 and len(model.spec.input_shape) == 3:
        recipe = Recipe.from_spec(model.spec)
        if data.originals is not None:  # the same upload serves models of any size
            mode, poly = roi_setting(data_id)
            data = _for_model(data_id, (recipe.size, recipe.channels, recipe.resize), (mode, poly),
                              _data=data, _recipe=recipe, _roi=roi_orig)
        elif roi_orig is not None and tuple(data.shape[1:]) == recipe.size:
            data = dataclasses.replace(data, roi=np.stack(roi_orig))
    data, tag = _aligned(data, model, f"{data_id}|{model_id}")
    if data is None:
        return _stop(stop)
    if tuple(data.shape) != tuple(model.spec.input_shape):
        layout = "(C, H, W)" if len(model.spec.input_shape) == 3 else "(C, D, H, W)"
        st.error(f"The CNN '{plain(model_label)}' takes inputs of shape {tuple(model.spec.input_shape)} "
                 f"{layout} but '{plain(data_label)}' has {tuple(data.shape)}, and an .npz or "
                 "volume dataset keeps no originals to resize from. Upload the images as a ZIP of "
                 "class folders (any size: each CNN gets its input through its own recipe), save "
                 "the .npz at that size / channel count, or pick another model.")
        return _stop(stop)
    return ImageContext(data, model, f"{data_id}{roi_tag}{tag}|{model_id}", dev, sd, roi_orig,
                        recipe, roi_setting(data_id))


def roi_setting(data_id: str) -> tuple[str, str]:
    """The region-of-interest choice for the dataset ``data_id``: (mode, polygon text), mode one of
    :data:`nnsens_core.roi.ROI_CHOICES` (set on the Model & data page)."""
    s = st.session_state.get("roi", {}).get(data_id, {})
    return s.get("mode", "none"), s.get("polygon", "") if s.get("mode") == "polygon" else ""


def set_roi(data_id: str, mode: str, polygon: str = "") -> None:
    """Choose the region of interest of the dataset ``data_id`` (see :func:`roi_setting`)."""
    st.session_state.setdefault("roi", {})[data_id] = {"mode": mode, "polygon": polygon}


def roi_masks(data_id: str, data: ImageData, mode: str, polygon: str = "") -> tuple | None:
    """One bool (h, w) mask per image on its original (:func:`nnsens_core.roi.roi_masks`),
    cached by content id and choice (errors raise :class:`NnsensError`)."""
    return _roi_masks(data_id, mode, polygon, _data=data)


@st.cache_resource(show_spinner="Finding the region of interest ...", max_entries=8,
                   ttl=cache.CACHE_TTL)
def _roi_masks(data_id: str, mode: str, polygon: str, _data: ImageData) -> tuple | None:
    src = _data.originals if _data.originals is not None else [im for im in _data.images]
    masks = roi_core.roi_masks(src, mode, polygon)
    return None if masks is None else tuple(masks)


@st.cache_resource(show_spinner="Preparing the images for this model ...", max_entries=8,
                   ttl=cache.CACHE_TTL)
def _for_model(data_id: str, recipe_key: tuple, roi_key: tuple, _data: ImageData,
               _recipe: Recipe, _roi) -> ImageData:
    """The dataset ``data_id`` as the input of a model with ``recipe_key`` (size, channels, resize)
    and region of interest ``roi_key``; shared, never mutated (ImageData is frozen)."""
    return _data.for_recipe(_recipe, _roi)


def _roi(data_id: str, data: ImageData) -> tuple[tuple | None, str]:
    """(masks on the originals, key tag) of the dataset's region of interest; a choice that fails
    (no fan found, a polygon outside the images) is named in a warning and left out."""
    mode, poly = roi_setting(data_id)
    if mode == "none" or data.ndim_spatial != 2:
        return None, ""
    try:
        masks = roi_masks(data_id, data, mode, poly)
    except NnsensError as exc:
        st.warning(f"Region of interest left out: {plain(exc)}.", icon=":material/warning:")
        return None, ""
    return masks, f"|roi:{mode}" + (f":{fingerprint(poly)[7:23]}" if mode == "polygon" else "")


def model_info(label: str) -> dict:
    """What is known about the CNN ``label`` besides its spec (e.g. ``accuracy`` from its
    manifest), as set by :func:`set_model_info`."""
    return st.session_state.get("model_info", {}).get(label, {})


def set_model_info(label: str, info: dict) -> None:
    """Record numbers about the CNN ``label`` (accuracy, balanced accuracy ...) for the page."""
    st.session_state.setdefault("model_info", {})[label] = dict(info)


def _aligned(data: ImageData, model: LoadedModel, key: str) -> tuple[ImageData | None, str]:
    """``data`` with its classes matched to the model's (:func:`align_classes`): by name, or by the
    matching the user chose here; returns ``(data, tag)`` where ``tag`` marks a matching chosen by
    hand (it enters the context key, so widgets and cached results follow the matching). Until the
    classes can be matched: a warning, the matching widgets and ``(None, "")`` (the page stops: its
    predictions and labels would carry the wrong class names)."""
    maps = st.session_state.setdefault("class_maps", {})
    mapping = maps.get(key)
    names = list(model.spec.class_names)
    aligned = None
    try:
        aligned = align_classes(data, names, mapping)[0]
    except NnsensError as exc:
        st.warning(f"{plain(exc)}.", icon=":material/warning:")
    if aligned is not None and not mapping:
        return aligned, ""
    with st.expander("Match the dataset's classes to the model's", expanded=aligned is None):
        cols = st.columns(min(4, len(data.class_names)))
        choice = {}
        for k, c in enumerate(data.class_names):
            start = names.index(mapping[c]) if mapping and mapping.get(c) in names else k % len(names)
            choice[c] = cols[k % len(cols)].selectbox(
                f"Dataset class {plain(c)} is the model's", names, index=start, key=f"class_map|{key}|{c}")
        if len(set(choice.values())) < len(choice):
            st.caption("Several dataset classes are matched to one model class.")
        b1, b2 = st.columns(2)
        if b1.button("Use this matching", key=f"class_map_apply|{key}"):
            maps[key] = choice
            st.rerun()
        if mapping and b2.button("Forget this matching", key=f"class_map_forget|{key}"):
            maps.pop(key, None)
            st.rerun()
    if aligned is None:
        return None, ""
    return aligned, "|classes:" + fingerprint(sorted(mapping.items()))[7:23]


def _stop(stop: bool) -> None:
    if stop:
        st.stop()
