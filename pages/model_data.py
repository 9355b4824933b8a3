"""Model & data: what the other pages analyse. Built-in demos work offline; uploads are checked.

Every upload is validated by nnsens_core before it is registered; a bad file gives a message and
the previously loaded state stays selected.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import streamlit as st

from nnsens_core import budget as B
from nnsens_core import data as nd
from nnsens_core import deployment
from nnsens_core.demos import manifest, train_paper_mlp
from nnsens_core.errors import NnsensError
from nnsens_core.loading import code_models_allowed, load_model
from nnsens_core.training import TrainConfig
from nnsens_core.zoo import ARCHITECTURES, IMAGE, ModelSpec, build
from ui import cache, state
from ui.widgets import Progress, cost_line, guard, overlay, plain, to_uint8, within_budget

_MODEL_FILES = "state_dict (.pt/.pth)" + (" or TorchScript" if code_models_allowed() else "")
_MODEL_HELP = ("Weights saved with torch.save(model.state_dict(), 'model.pt') for a built-in "
               "architecture. " + ("TorchScript files are accepted on this server: they are code and "
                                   "run here." if code_models_allowed() else
                                   "TorchScript files are code and this server does not run them."))

state.require_router()

st.title("Model & data")
st.caption("Pick what to analyse in the sidebar; add your own models and datasets here. "
           "Weights are read with `torch.load(weights_only=True)`: pickled code is refused, never run.")


def _unique(kind: str, label: str) -> str:
    existing = set(state.options(kind))
    out, k = label, 2
    while out in existing:
        out, k = f"{label} ({k})", k + 1
    return out


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
                label = _unique("tabular_data", up.name)
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
                bar = Progress("Training the paper MLP", int(epochs))
                model, info = train_paper_mlp(
                    tdata, train_rows, int(hidden),
                    TrainConfig(epochs=int(epochs), lr=float(lr), seed=state.seed()), device="cpu",
                    progress=bar)
                bar.done()
                from nnsens_core.training import binary_accuracy
                test = tdata.rows(test_rows)
                acc = binary_accuracy(model.module, test.X, test.y, "cpu")
                label = _unique("tabular_model", f"Paper MLP {hidden} on {tdata.name}")
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
                label = _unique("tabular_model", f.name)
                state.add_upload("tabular_model", label, lm, f"Loaded {plain(label)}: {lm.report}")

# ----------------------------------------------------------------------------- images
with tab_img:
    ictx = None
    with guard("Loading the selected images and CNN"):
        ictx = state.images(stop=False)
    if ictx is not None:
        d, m = ictx.data, ictx.model
        c1, c2, c3 = st.columns(3)
        c1.metric("Images", plain(d.name))
        c1.caption(f"{len(d)} images of shape {tuple(d.shape)} (C, H, W)")
        c2.metric("CNN", m.spec.arch)
        c2.caption(plain(m.spec.name))
        c3.metric("Classes", len(d.class_names))
        c3.caption(", ".join(plain(c) for c in d.class_names))
        per_class = [np.where(d.labels == k)[0][:3] for k in range(len(d.class_names))]
        show_masks = d.masks is not None and st.toggle("Overlay ground-truth masks", True,
                                                       key="md_masks")
        cols = st.columns(len(per_class) * 3 or 1)
        k = 0
        for cls, idx in enumerate(per_class):
            for i in idx:
                img = overlay(d.images[i], d.masks[i].astype(float), 0.35) if show_masks \
                    else to_uint8(d.images[i])
                cols[k % len(cols)].image(img, caption=f"#{i} {plain(d.class_names[cls])}", width="stretch")
                k += 1

    demos_ = manifest()
    if demos_:
        st.subheader("Shipped demo CNNs")
        st.dataframe(pd.DataFrame([{"model": n, "architecture": e["arch"],
                                    "input": "×".join(map(str, e["input_shape"])),
                                    "test accuracy": e.get("test_accuracy")}
                                   for n, e in demos_.items()]), hide_index=True)

    st.subheader("Add images")
    shape = tuple(ictx.model.spec.input_shape) if ictx is not None else (3, 64, 64)
    f = st.file_uploader("ZIP of class sub-folders (class_name/image.png) or .npz with images, "
                         "labels (optional masks, class_names)", type=["zip", "npz"], key="up_img")
    st.caption(f"Images are resized to the selected CNN's input {shape[1]}×{shape[2]} with "
               f"{shape[0]} channel(s).")
    if f is not None and st.button("Load images", key="btn_img"):
        with guard("Loading the images"):
            raw = f.getvalue()
            deployment.check_data_size(len(raw), f.name)
            if f.name.lower().endswith(".npz"):
                loaded = nd.load_npz(raw)
                if not isinstance(loaded, nd.ImageData):
                    raise NnsensError(f"{f.name} holds tabular X/y; add it under the Tabular tab")
            else:
                loaded = nd.load_image_zip(raw, size=shape[1:], channels=shape[0])
            label = _unique("image_data", f.name)
            state.add_upload("image_data", label, loaded,
                             f"Loaded {plain(label)}: {len(loaded)} images in classes "
                             f"{', '.join(plain(c) for c in loaded.class_names)}.")

    st.subheader("Add a CNN")
    f = st.file_uploader(f"{_MODEL_FILES} (at most {deployment.max_weights_bytes() // 2**20} MiB)",
                         type=["pt", "pth", "bin"], key="up_cnn", help=_MODEL_HELP)
    archs = [a for a, (task, _) in ARCHITECTURES.items() if task == IMAGE]
    c1, c2, c3 = st.columns(3)
    arch = c1.selectbox("Architecture (for a state_dict)", archs, key="cnn_arch")
    n_cls = c2.number_input("Classes", 2, 10000, 3, key="cnn_classes")
    size = c3.number_input("Input size (pixels)", 16, 512, 224 if arch in ("vgg16", "resnet18") else 64,
                           key="cnn_size")
    c1, c2, c3 = st.columns(3)
    names = c1.text_input("Class names (comma separated, optional)", key="cnn_names")
    norm = c2.selectbox("Input normalisation", ["ImageNet", "none ([0, 1])", "mean 0.5, std 0.25"],
                        key="cnn_norm")
    width = c3.number_input("Width multiplier (small variants)", 0.05, 1.0, 0.125, key="cnn_width")
    if f is not None and st.button("Load CNN", key="btn_cnn"):
        with guard("Loading the CNN"):
            cls_names = tuple(s.strip() for s in names.split(",") if s.strip()) or tuple(
                str(i) for i in range(int(n_cls)))
            if len(cls_names) != int(n_cls):
                raise NnsensError(f"{len(cls_names)} class names for {int(n_cls)} classes; give one "
                                  "name per class or leave the field empty")
            mean, std = {"ImageNet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                         "none ([0, 1])": ((), ()),
                         "mean 0.5, std 0.25": ((0.5,) * 3, (0.25,) * 3)}[norm]
            kwargs = {"num_classes": int(n_cls)}
            if arch.endswith("-small"):
                kwargs["width"] = float(width)
            spec = ModelSpec(name=f.name, arch=arch, task=IMAGE, input_shape=(3, int(size), int(size)),
                             class_names=cls_names, mean=mean, std=std, arch_kwargs=kwargs)
            lm = load_model(f.getvalue(), arch=arch, arch_kwargs=kwargs, spec=spec,
                            max_bytes=deployment.max_weights_bytes())
            label = _unique("image_model", f.name)
            state.add_upload("image_model", label, lm, f"Loaded {plain(label)}: {lm.report}")

st.divider()
st.caption("Offline demos: Pima diabetes (shipped with nnsens; `NNSENS_PIMA_CSV` points to another "
           "copy), the paper's data; a synthetic lung-ultrasound phantom "
           "(A-lines / B-lines / consolidation) with shipped VGG-16 and ResNet-18 variants.")
with st.expander("Environment"):
    import torch
    st.code(json.dumps({"torch": torch.__version__, "device": str(state.device()),
                        "cuda": torch.cuda.is_available()}, indent=1))
