"""Model & data: what the other pages analyse. Built-in demos work offline; uploads are checked.

Every upload is validated by nnsens_core before it is registered; a bad file gives a message and
the previously loaded state stays selected.
"""
from __future__ import annotations

import dataclasses
import io
import json
import zipfile

import numpy as np
import pandas as pd
import streamlit as st
import torch

from nnsens_core import budget as B
from nnsens_core import data as nd
from nnsens_core import deployment, volumes
from nnsens_core import sobol as sobol_core
from nnsens_core.demos import manifest, train_paper_mlp
from nnsens_core.errors import NnsensError
from nnsens_core.loading import code_models_allowed, is_torchscript, load_model
from nnsens_core.model_manifest import manifest_entry, spec_from_manifest
from nnsens_core.preprocess import RESIZE_POLICIES, Recipe
from nnsens_core.roi import ROI_CHOICES
from nnsens_core.training import TrainConfig
from nnsens_core.zoo import (
    ARCHITECTURES,
    IMAGE,
    NORMALISATIONS,
    ModelSpec,
    build,
    normalisation,
)
from ui import cache, state
from ui.image_views import model_view, outlined, thumbnail
from ui.slices import AXES, middle_slice, slice_index
from ui.train_section import train_section
from ui.widgets import (
    Progress,
    cost_line,
    download_json,
    guard,
    overlay,
    plain,
    within_budget,
)

_MODEL_FILES = "state_dict (.pt/.pth)" + (" or TorchScript" if code_models_allowed() else "")
_MODEL_HELP = ("Weights saved with torch.save(model.state_dict(), 'model.pt') for a built-in "
               "architecture. " + ("TorchScript files are accepted on this server: they are code and "
                                   "run here." if code_models_allowed() else
                                   "TorchScript files are code and this server does not run them."))

state.require_router()

st.title("Model & data")
st.caption("Pick what to analyse in the sidebar; add your own models and datasets here. "
           "Weights are read with `torch.load(weights_only=True)`: pickled code is refused, never run.")



state.flash()
tab_tab, tab_img = st.tabs(["Tabular", "Images"])

# ----------------------------------------------------------------------------- tabular
with tab_tab:
    ctx = None
    with guard("Loading the selected tabular data"):
        ctx = state.tabular(stop=False)
    if ctx is not None:
        d, m = ctx.data, ctx.model
        c1, c2, c3 = st.columns(3)
        c1.metric("Dataset", plain(d.name))
        c1.caption(f"{len(d.X)} rows × {d.n_features} features, target '{plain(d.target_name)}'")
        c2.metric("Model", m.spec.arch)
        c2.caption(plain(m.spec.name))
        c3.metric("Train / test rows", f"{ctx.train_rows} / {ctx.test_rows}")
        if st.session_state.get("sel_tabular_model") == state.DEMO_MLP:
            _, _, info = cache.demo_tabular_model(ctx.seed)
            st.caption(f"Demo MLP (SGD lr 0.01, weight decay 1e-3, 100 epochs, raw features): train "
                       f"accuracy {info['train_acc']:.3f}"
                       + (f", test accuracy {info['test_acc']:.3f}" if "test_acc" in info else ""))
        else:
            with guard("Scoring the selected model"):
                acc = sobol_core.model_accuracy(m, d, ctx.train_rows, ctx.test_rows, ctx.device)
                a1, a2 = st.columns(2)
                a1.metric(f"Train accuracy ({ctx.train_rows})", f"{acc['train']:.3f}")
                a2.metric(f"Test accuracy ({ctx.test_rows})", f"{acc['test']:.3f}")
        for warning in sobol_core.target_warnings(d, m):
            st.warning(plain(warning))
        with st.expander("Preview the data", expanded=False):
            df = pd.DataFrame(d.X, columns=list(d.feature_names))
            df[d.target_name] = d.y
            st.dataframe(df.head(200), width="stretch")
            st.dataframe(df.describe().T, width="stretch")

    st.subheader("Add a dataset")
    up = st.file_uploader("CSV (numeric columns) or .npz with X and y", type=["csv", "npz"],
                          key="up_tab_data")
    if up is not None:
        target = None
        if up.name.lower().endswith(".csv"):
            with guard("Reading the CSV header"):
                cols = list(pd.read_csv(up, nrows=0).columns)
                up.seek(0)
                target = st.selectbox("Target column", cols, index=len(cols) - 1, key="up_tab_target")
        if st.button("Load dataset", key="btn_tab_data"):
            with guard("Loading the dataset"):
                raw = up.getvalue()
                deployment.check_data_size(len(raw), up.name)
                loaded = nd.load_npz(raw) if up.name.lower().endswith(".npz") else \
                    nd.load_csv(raw, target=target, name=up.name)
                if not isinstance(loaded, nd.TabularData):
                    raise NnsensError(f"{up.name} holds images; add it under the Images tab")
                label = state.unique_label("tabular_data", up.name)
                state.add_upload("tabular_data", label, loaded,
                                 f"Loaded {plain(label)}: {len(loaded.X)} rows, {loaded.n_features} "
                                 f"features, target '{plain(loaded.target_name)}'. It is now selected "
                                 "in the sidebar.")

    st.subheader("Train/test rows")
    # the selected dataset whatever the selected model: training a new model on it must work
    # even when the selected model's width does not fit it
    tdata = None
    with guard("Loading the selected tabular data"):
        data_label, tdata, _ = state.tabular_data()
    if tdata is not None:
        rows = st.session_state.setdefault("tabular_rows", {})
        default = rows.get(data_label) or nd.demo_rows(tdata)
        r1, r2 = st.columns(2)
        tr = r1.text_input("Train rows", default[0], key=f"rows_tr_{data_label}")
        te = r2.text_input("Test rows", default[1], key=f"rows_te_{data_label}")
        with guard("Checking the rows"):
            for spec in (tr, te):
                nd.parse_rows(spec, len(tdata.X))
            rows[data_label] = (tr, te)
        train_rows, test_rows = rows.get(data_label) or default

    st.subheader("Add a model")
    mode = st.radio("Model source", ["Train the paper MLP on the selected dataset",
                                     "Upload weights"], horizontal=True, key="tab_model_mode")
    if mode.startswith("Train"):
        c1, c2, c3 = st.columns(3)
        hidden = c1.number_input("Hidden neurons", 1, 512, 10, key="mlp_hidden")
        epochs = c2.number_input("Epochs", 1, 2000, 100, key="mlp_epochs")
        lr = c3.number_input("Learning rate (SGD)", 1e-5, 1.0, 0.01, format="%.4f", key="mlp_lr")
        train_ok, train_cost = True, None
        if tdata is not None:
            train_cost = B.training(build("paper-mlp", n_inputs=tdata.n_features, hidden=int(hidden)),
                                    len(tdata.rows(train_rows).X), TrainConfig(epochs=int(epochs)),
                                    input_shape=(tdata.n_features,))
            train_ok = cost_line(train_cost)
        if st.button("Train", key="btn_train_mlp", disabled=not train_ok) and tdata is not None:
            with guard("Training"), within_budget(train_cost):
                bad = sobol_core.target_warnings(tdata)
                if bad:  # BCE on a non-0/1 target: refuse in words, never a RuntimeError
                    raise NnsensError(bad[0])
                bar = Progress("Training the paper MLP", int(epochs))
                model, info = train_paper_mlp(
                    tdata, train_rows, int(hidden),
                    TrainConfig(epochs=int(epochs), lr=float(lr), seed=state.seed()), device="cpu",
                    progress=bar)
                bar.done()
                from nnsens_core.training import binary_accuracy
                test = tdata.rows(test_rows)
                acc = binary_accuracy(model.module, test.X, test.y, "cpu")
                label = state.unique_label("tabular_model", f"Paper MLP {hidden} on {tdata.name}")
                state.add_upload("tabular_model", label, model,
                                 f"Trained {plain(label)}: train accuracy {info['train_acc']:.3f}, "
                                 f"test accuracy ({test_rows}) {acc:.3f}. It is now selected in the "
                                 "sidebar.")
    else:
        f = st.file_uploader(_MODEL_FILES, type=["pt", "pth", "bin"], key="up_tab_model",
                             help=_MODEL_HELP)
        c1, c2 = st.columns(2)
        n_in = c1.number_input("Inputs", 1, 10000,
                               tdata.n_features if tdata is not None else 8, key="mlp_up_in")
        hid = c2.number_input("Hidden neurons", 1, 10000, 10, key="mlp_up_hidden")
        st.caption("A state_dict loads into the paper MLP; key names may differ when tensor order "
                   "and shapes match (the mapping is reported).")
        if f is not None and st.button("Load model", key="btn_tab_model"):
            with guard("Loading the model"):
                lm = load_model(f.getvalue(), arch="paper-mlp", max_bytes=deployment.max_weights_bytes(),
                                arch_kwargs={"n_inputs": int(n_in), "hidden": int(hid)},
                                input_shape=(int(n_in),), name=f.name)
                if tdata is not None:
                    lm.spec = lm.spec.replace(feature_names=tdata.feature_names
                                              if tdata.n_features == int(n_in) else ())
                label = state.unique_label("tabular_model", f.name)
                state.add_upload("tabular_model", label, lm, f"Loaded {plain(label)}: {lm.report}")

# ----------------------------------------------------------------------------- images
_MAX_NAMES_BYTES = 1 << 20


def _named(raw: bytes, name: str) -> io.BytesIO:
    """``raw`` as a file object called ``name`` (the core's messages name the file)."""
    f = io.BytesIO(raw)
    f.name = name
    return f


def _zip_holds_volumes(raw: bytes) -> bool:
    """True when a ZIP holds NIfTI / .npy files (3-D volumes) rather than images."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            return any(n.lower().endswith(volumes.VOLUME_SUFFIXES) and "__MACOSX" not in n
                       for n in zf.namelist())
    except zipfile.BadZipFile:
        return False  # the image loader says what is wrong


def _show_samples(d: nd.ImageData) -> None:
    """A few samples per class: 2-D images at their own size and aspect ratio (originals), or the
    middle slice of volumes across each axis, with the ground-truth masks over them when the
    dataset has some."""
    vol = d.ndim_spatial == 3
    per_class = [np.where(d.labels == k)[0][:2 if vol else 3] for k in range(len(d.class_names))]
    show_masks = d.masks is not None and d.originals is None and st.toggle(
        "Overlay ground-truth masks", True, key="md_masks")
    if not vol:
        if d.originals is not None:
            st.caption("Originals at their own size and aspect ratio (the CNN gets its input through "
                       "its recipe: see *What the model sees* below).")
        cols = st.columns(len(per_class) * 3 or 1)
        k = 0
        for cls, idx in enumerate(per_class):
            for i in idx:
                orig = d.original(int(i))
                img = overlay(d.images[i], d.masks[i].astype(float), 0.35) if show_masks \
                    else thumbnail(orig)
                name = f" {plain(d.files[i])}" if d.files is not None else ""
                cols[k % len(cols)].image(
                    img, caption=f"#{i} {plain(d.class_names[cls])} · {orig.shape[2]}×{orig.shape[1]} "
                                 f"px{name}")
                k += 1
        return
    st.caption("Middle slice of each volume across D, H and W (the file's axes as stored; nothing "
               "is reoriented)" + (", ground-truth mask in red." if show_masks else "."))
    for cls, idx in enumerate(per_class):
        if not len(idx):
            continue
        cols = st.columns(3 * len(idx))
        for j, i in enumerate(idx):
            for a in range(3):
                img = middle_slice(d.images[i], a, d.masks[i] if show_masks else None)
                cols[3 * j + a].image(
                    img, width="stretch",
                    caption=f"#{i} {plain(d.class_names[cls])} · {AXES[a]} = "
                            f"{slice_index(d.images[i], a)}")
    if d.atlas is not None:
        names = d.atlas.region_names
        st.caption(f"Atlas: {len(names)} regions: " + ", ".join(plain(n) for n in names.values()))
        with st.expander("Atlas regions", expanded=False):
            counts = np.bincount(d.atlas.labels.reshape(-1))
            st.dataframe(pd.DataFrame({"label": list(names), "region": list(names.values()),
                                       "voxels": [int(counts[k]) for k in names]}),
                         hide_index=True)


def _cnn_info(label: str, lm) -> None:
    """What the selected CNN is: classes, input recipe, architecture, parameters, accuracy, and
    its manifest to download."""
    spec = lm.spec
    n_par = sum(p.numel() for p in lm.module.parameters())
    rows = {"class names (output order)": ", ".join(plain(c) for c in spec.class_names) or "—",
            "input": (Recipe.from_spec(spec).describe() if len(spec.input_shape) == 3 else
                      "×".join(map(str, spec.input_shape)) + " voxels (C, D, H, W), "
                      + ("no normalisation" if not spec.mean else
                         f"mean {list(spec.mean)}, std {list(spec.std)}")),
            "architecture": spec.arch + (f" {dict(spec.arch_kwargs)}" if spec.arch_kwargs else ""),
            "parameters": f"{n_par:,}"}
    info = dict(state.model_info(label))
    if label.startswith("Demo: "):
        entry = manifest().get(label[6:], {})
        info.update({k: v for k, v in entry.items() if "accuracy" in k})
    for k, v in info.items():
        if "accuracy" in k and isinstance(v, (int, float)):
            rows[k.replace("_", " ")] = f"{v:.3f}"
    st.dataframe(pd.DataFrame({"": list(rows), "value": list(rows.values())}), hide_index=True,
                 width="stretch")
    if spec.arch in ARCHITECTURES:
        download_json("Download the model's manifest (JSON)",
                      manifest_entry(spec, label if label.endswith((".pt", ".pth", ".bin"))
                                     else f"{label}.pt", **{k: v for k, v in info.items()
                                                            if isinstance(v, (int, float, str))}),
                      "model.json", key="md_manifest")


def _model_sees(ictx, sel_data) -> None:
    """An original beside the selected CNN's input made from it through the model's recipe."""
    d = ictx.data
    n = len(d)
    i = int(st.number_input("Image", 0, max(n - 1, 0), 0, key="md_sees_idx")) if n > 1 else 0
    orig = d.original(i)
    c1, c2 = st.columns(2)
    c1.image(outlined(orig, None if ictx.roi_originals is None else ictx.roi_originals[i]),
             caption=f"original {orig.shape[2]}×{orig.shape[1]} px, {orig.shape[0]} channel(s)")
    c2.image(model_view(d.images[i], None if d.roi is None else d.roi[i]),
             caption=f"model input {d.images.shape[3]}×{d.images.shape[2]} px: "
                     f"{ictx.recipe.describe()}")


def _roi_section(sel_id: str, sel_data) -> None:
    """Choose the dataset's region of interest (none / auto fan / polygon) with a preview."""
    mode0, poly0 = state.roi_setting(sel_id)
    choices = list(ROI_CHOICES)
    c1, c2 = st.columns([1, 2])
    mode = c1.radio("Region of interest", choices, index=choices.index(mode0),
                    format_func=ROI_CHOICES.get, key=f"roi_mode|{sel_id}")
    first = sel_data.original(0)
    c2.text_input("Polygon vertices in original pixels: x,y; x,y; ... (x to the right, y down)",
                  poly0 or f"0,0; {first.shape[2] - 1},0; {first.shape[2] - 1},{first.shape[1] - 1}; "
                           f"0,{first.shape[1] - 1}",
                  key=f"roi_poly|{sel_id}", disabled=mode != "polygon")
    c2.caption("Maps and metrics are restricted to the region: the black frame, burned-in text and "
               "depth scales are left out. The auto fan is the largest bright region after thin "
               "text is removed, its holes filled, convex.")
    if mode == "none":
        return
    with guard("Finding the region of interest"):
        masks = state.roi_masks(sel_id, sel_data, mode, poly0)
        cols = st.columns(3)
        for k in range(min(3, len(sel_data))):
            o = sel_data.original(k)
            cols[k].image(outlined(o, masks[k]),
                          caption=f"#{k}: {100 * masks[k].mean():.0f} % of the image inside")


def _apply_roi_choice(sel_id: str | None) -> None:
    """Store the region-of-interest widgets' values (rendered lower on this page) before the
    context is built, so this run already uses them."""
    if sel_id is None or f"roi_mode|{sel_id}" not in st.session_state:
        return
    mode = st.session_state[f"roi_mode|{sel_id}"]
    poly = st.session_state.get(f"roi_poly|{sel_id}", "") if mode == "polygon" else ""
    if (mode, poly) != state.roi_setting(sel_id):
        state.set_roi(sel_id, mode, poly)


def _floats(text: str, what: str, n: int) -> tuple[float, ...]:
    try:
        vals = tuple(float(t) for t in text.replace(";", ",").split(",") if t.strip())
    except ValueError:
        raise NnsensError(f"the custom {what} {text!r} is not a comma list of numbers, e.g. "
                          + ", ".join(["0.5"] * n)) from None
    if len(vals) != n:
        raise NnsensError(f"the custom {what} has {len(vals)} value(s) for {n} channel(s); give one "
                          "per channel")
    return vals


with tab_img:
    sel_label, sel_data, sel_id = None, None, None
    with guard("Loading the selected images"):
        sel_label, sel_data, sel_id = state.image_data()
    _apply_roi_choice(sel_id)
    ictx = None
    with guard("Loading the selected images and CNN"):
        ictx = state.images(stop=False, volumes=True)
    d = sel_data
    if d is not None:
        vol = d.ndim_spatial == 3
        c1, c2, c3 = st.columns(3)
        c1.metric("Volumes" if vol else "Images", plain(d.name))
        c1.caption(f"{len(d)} {'volumes' if vol else 'images'} "
                   + (f"of shape {tuple(d.shape)} {'(C, D, H, W)' if vol else '(C, H, W)'}"
                      if d.originals is None else "kept at their own size"))
        if ictx is not None:
            c2.metric("CNN", ictx.model.spec.arch)
            c2.caption(plain(ictx.model.spec.name))
        else:
            c2.metric("CNN", "—")
            c2.caption("the selected CNN does not fit this dataset (see above); train one below")
        c3.metric("Classes", len(d.class_names))
        c3.caption(", ".join(plain(c) for c in d.class_names))
        for line in nd.load_report(d):
            st.caption(plain(line))
        _show_samples(d)

    st.subheader("The selected CNN")
    m_label, m_model = None, None
    with guard("Loading the selected CNN"):
        m_label, m_model, _ = state.image_model()
    if m_model is not None:
        _cnn_info(m_label, m_model)
    if ictx is not None and ictx.recipe is not None and ictx.data.ndim_spatial == 2:
        st.markdown("**What the model sees**")
        _model_sees(ictx, sel_data)

    if sel_data is not None and sel_data.ndim_spatial == 2 and sel_id is not None:
        st.subheader("Region of interest")
        _roi_section(sel_id, sel_data)

    demos_ = manifest()
    if demos_:
        st.subheader("Shipped demo CNNs")
        st.dataframe(pd.DataFrame([{"model": n, "architecture": e["arch"],
                                    "input": "×".join(map(str, e["input_shape"])),
                                    "test accuracy": e.get("test_accuracy")}
                                   for n, e in demos_.items()]), hide_index=True)

    st.subheader("Add images or volumes")
    load_recipe = ictx.recipe if ictx is not None and ictx.recipe is not None else (
        Recipe.from_spec(m_model.spec) if m_model is not None and len(m_model.spec.input_shape) == 3
        else Recipe((64, 64), 3))
    f = st.file_uploader("ZIP of class sub-folders (class_name/image.png or "
                         "class_name/patient/image.png; class_name/scan.nii.gz / .nii / .npy for "
                         "3-D volumes) or .npz with images, labels (optional masks, class_names; "
                         "volumes (N, C, D, H, W) with an optional atlas, region_labels, "
                         "region_names)", type=["zip", "npz"], key="up_img")
    st.caption(f"Images are kept at their own size (grey or colour, 8 or 16-bit; longest side up to "
               f"{nd.MAX_ORIGINAL_SIDE} px); each CNN gets its input through its own recipe, so one "
               f"upload serves CNNs of any size (the selected one: {load_recipe.describe()}). "
               "Volumes are not resampled: all must share one voxel grid; each is min-max scaled "
               f"to [0, 1], at most 256³ voxels, {volumes.MAX_UPLOAD_VOXELS // 2**20} M voxels per "
               "upload.")
    if f is not None and st.button("Load images", key="btn_img"):
        with guard("Loading the images"):
            raw = f.getvalue()
            deployment.check_data_size(len(raw), f.name)
            if f.name.lower().endswith(".npz"):
                loaded = nd.load_npz(raw)
                if not isinstance(loaded, nd.ImageData):
                    raise NnsensError(f"{f.name} holds tabular X/y; add it under the Tabular tab")
            elif _zip_holds_volumes(raw):
                loaded = dataclasses.replace(volumes.load_volume_zip(raw), name=f.name)
            else:
                loaded = nd.load_image_zip(raw, recipe=load_recipe)
            label = state.unique_label("image_data", f.name)
            vol = loaded.ndim_spatial == 3
            what = (f"{len(loaded)} {'volumes' if vol else 'images'}"
                    + ("" if loaded.originals is not None else f" of shape {tuple(loaded.shape)}"))
            state.add_upload("image_data", label, loaded,
                             f"Loaded {plain(label)}: {what} in classes "
                             f"{', '.join(plain(c) for c in loaded.class_names)}"
                             + (f", atlas of {len(loaded.atlas.region_ids)} regions"
                                if loaded.atlas is not None else "") + "."
                             + "".join("\n" + line for line in nd.load_report(loaded)))

    if sel_data is not None and sel_data.ndim_spatial == 3:
        st.subheader("Attach an atlas to the selected volumes")
        fa = st.file_uploader("Atlas: integer region labels (0 = background), one 3-D volume in the "
                              "volumes' voxel grid (.nii, .nii.gz or .npy)", type=["nii", "gz", "npy"],
                              key="up_atlas")
        fn = st.file_uploader("Region names (optional CSV: label,name)", type=["csv", "txt"],
                              key="up_atlas_names")
        st.caption(f"Attached to '{plain(sel_label)}' (spatial shape {tuple(sel_data.shape[1:])}) "
                   "as a new dataset; the atlas must have that shape (nothing is resampled).")
        if fa is not None and st.button("Attach atlas", key="btn_atlas"):
            with guard("Attaching the atlas"):
                raw = fa.getvalue()
                deployment.check_data_size(len(raw), fa.name)
                names = None
                if fn is not None:
                    names = fn.getvalue()
                    if len(names) > _MAX_NAMES_BYTES:
                        raise NnsensError(f"the region table {fn.name} is {len(names) / 2**20:.1f} MiB, "
                                          "over the 1 MiB limit")
                atlas = volumes.load_atlas(_named(raw, fa.name), None if names is None else
                                           _named(names, fn.name))
                atlas.check_shape(tuple(sel_data.shape[1:]), f"the volumes of '{sel_label}'")
                with_atlas = dataclasses.replace(sel_data, atlas=atlas,
                                                 name=f"{sel_data.name} + atlas {fa.name}")
                label = state.unique_label("image_data", f"{sel_label} + atlas {fa.name}")
                regions = atlas.region_names
                state.add_upload("image_data", label, with_atlas,
                                 f"Attached the atlas {plain(fa.name)} ({len(regions)} regions: "
                                 f"{', '.join(plain(n) for n in regions.values())}) to "
                                 f"{plain(sel_label)} as {plain(label)}. It is now selected in the "
                                 "sidebar.")

    st.subheader("Train a CNN on the selected dataset")
    if sel_data is None:
        st.info("Select an image dataset in the sidebar (or add one above) to train a CNN on it.")
    else:
        train_section(sel_label, sel_data)

    st.subheader("Add a CNN")
    f = st.file_uploader(f"{_MODEL_FILES} (at most {deployment.max_weights_bytes() // 2**20} MiB)",
                         type=["pt", "pth", "bin"], key="up_cnn", help=_MODEL_HELP)
    fm = st.file_uploader("Manifest (.json, optional): written next to the weights by *Train a CNN* "
                          "(or an entry like models/manifest.json's); it sets the fields below",
                          type=["json"], key="up_cnn_manifest")
    archs = [a for a, (task, _) in ARCHITECTURES.items() if task == IMAGE]
    c1, c2, c3 = st.columns(3)
    arch = c1.selectbox("Architecture (for a state_dict)", archs, key="cnn_arch")
    n_cls = c2.number_input("Classes", 2, 10000, 3, key="cnn_classes")
    names = c3.text_input("Class names in output order (comma separated, optional)",
                          key="cnn_names")
    vol3 = arch == "cnn3d-small"
    c1, c2, c3, c4 = st.columns(4)
    size = c1.number_input("Input height H (pixels; voxels per side for cnn3d-small)", 8, 1024,
                           224 if arch in ("vgg16", "resnet18") else (48 if vol3 else 64),
                           key="cnn_size")
    size_w = c2.number_input("Input width W (empty: same as H)", 8, 1024, value=None,
                             key="cnn_size_w", disabled=vol3)
    chans = c3.selectbox("Channels", [3, 1], key="cnn_channels", disabled=vol3,
                         format_func=lambda c: "3 (RGB)" if c == 3 else "1 (grey)")
    resize = c4.selectbox("Resize policy", list(RESIZE_POLICIES), key="cnn_resize",
                          format_func=lambda r: RESIZE_POLICIES[r].split(":")[0], disabled=vol3,
                          help="How images of other sizes reach H × W: "
                               + "; ".join(RESIZE_POLICIES.values()))
    c1, c2, c3, c4 = st.columns(4)
    norm = c1.selectbox("Input normalisation", [*NORMALISATIONS, "custom"], key="cnn_norm",
                        format_func=lambda k: NORMALISATIONS.get(k, "custom mean / std per channel"),
                        help="How the model's inputs were normalised in training: "
                             "(x01 − mean) / std per channel.")
    mean_txt = c2.text_input("Custom mean per channel", "0.5", key="cnn_mean",
                             disabled=norm != "custom")
    std_txt = c3.text_input("Custom std per channel", "0.25", key="cnn_std",
                            disabled=norm != "custom")
    if vol3:
        width = c4.number_input("Base channels (cnn3d-small)", 1, 64, 8, key="cnn_width3")
    else:
        width = c4.number_input("Width multiplier (small variants)", 0.03, 1.0, 0.125, key="cnn_width")
    if f is not None and st.button("Load CNN", key="btn_cnn"):
        with guard("Loading the CNN"):
            extra = {}
            if fm is not None:
                spec = spec_from_manifest(fm.getvalue(), file_name=f.name, name=f.name)
                kwargs = spec.arch_kwargs
                doc = json.loads(fm.getvalue())
                entry = doc if "arch" in doc else next(
                    (e for e in doc.values() if isinstance(e, dict) and e.get("file") == f.name),
                    next((e for e in doc.values() if isinstance(e, dict)), {}))
                extra = {k: v for k, v in entry.items() if "accuracy" in k
                         and isinstance(v, (int, float)) and not isinstance(v, bool)}
            else:
                cls_names = tuple(s.strip() for s in names.split(",") if s.strip()) or tuple(
                    str(i) for i in range(int(n_cls)))
                if len(cls_names) != int(n_cls):
                    raise NnsensError(f"{len(cls_names)} class names for {int(n_cls)} classes; give "
                                      "one name per class or leave the field empty")
                c_in = 1 if vol3 else int(chans)
                if norm == "custom":
                    mean = _floats(mean_txt, "mean", c_in)
                    std = _floats(std_txt, "std", c_in)
                    if min(std) <= 0:
                        raise NnsensError(f"the custom std {std} must be > 0 for every channel")
                else:
                    mean, std = normalisation(norm, c_in)
                kwargs = {"num_classes": int(n_cls)}
                if arch.endswith("-small"):
                    kwargs["width"] = int(width) if vol3 else float(width)
                if not vol3 and c_in != 3:
                    kwargs["in_channels"] = c_in
                h_px = int(size)
                shape_in = (c_in, h_px, h_px, h_px) if vol3 else (c_in, h_px, int(size_w or h_px))
                # a TorchScript file brings its own architecture (the minimum size is its own)
                spec_arch = "torchscript" if is_torchscript(f.getvalue()) else arch
                spec = ModelSpec(name=f.name, arch=spec_arch, task=IMAGE, input_shape=shape_in,
                                 class_names=cls_names, mean=mean, std=std, arch_kwargs=kwargs,
                                 resize="letterbox" if vol3 else resize)
            lm = load_model(f.getvalue(), arch=spec.arch, arch_kwargs=kwargs, spec=spec,
                            max_bytes=deployment.max_weights_bytes())
            label = state.unique_label("image_model", f.name)
            if extra:
                state.set_model_info(label, extra)
            recipe = (Recipe.from_spec(lm.spec).describe() if len(lm.spec.input_shape) == 3 else
                      "×".join(map(str, lm.spec.input_shape)))
            state.add_upload("image_model", label, lm,
                             f"Loaded {plain(label)}: {lm.report}; classes "
                             f"{', '.join(plain(c) for c in lm.spec.class_names)}; input {recipe}.")

st.divider()
st.caption("Offline demos: Pima diabetes (shipped with nnsens; `NNSENS_PIMA_CSV` points to another "
           "copy), the paper's data; a synthetic lung-ultrasound phantom "
           "(A-lines / B-lines / consolidation) with shipped VGG-16 and ResNet-18 variants.")
with st.expander("Environment"):
    import torch
    st.code(json.dumps({"torch": torch.__version__, "device": str(state.device()),
                        "cuda": torch.cuda.is_available()}, indent=1))
