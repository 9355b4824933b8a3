"""The Model & data page's "Train a CNN on the selected dataset" section: architecture, input
recipe (size, channels, resize policy, normalisation), grouped split, balancing, augmentation,
optional ImageNet start; training through :func:`nnsens_core.training.train_image_model` (the
CLI's ``nnsens train`` too); the result with its test metrics, confusion matrix and downloads."""
from __future__ import annotations

import json
import re

import numpy as np
import streamlit as st

from nnsens_core import budget as B
from nnsens_core import data as nd
from nnsens_core import training as T
from nnsens_core.errors import NnsensError
from nnsens_core.preprocess import RESIZE_POLICIES, Recipe
from nnsens_core.zoo import NORMALISATIONS, LoadedModel, build, normalisation

from . import cache, state
from .training_views import history_figure
from .widgets import (
    Progress,
    cost_line,
    download_json,
    guard,
    plain,
    show_chart,
    within_budget,
)

_TRAIN_ARCHS = {2: ("vgg16-small", "resnet18-small", "vgg16", "resnet18"), 3: ("cnn3d-small",)}
_ARCH_LABELS = {"vgg16-small": "VGG-16 small (width multiplier)",
                "resnet18-small": "ResNet-18 small (width multiplier)",
                "vgg16": "VGG-16 (full size, 138 M parameters)",
                "resnet18": "ResNet-18 (full size, 11 M parameters)",
                "cnn3d-small": "3-D CNN (volumes)"}
_GROUPS = {"names": "from folder / file names (patient or clip id)",
           "csv": "from a CSV (file,group)",
           "none": "none: split by image (stratified)"}
_VOLUME_NORM = ((0.5,), (0.25,))


@st.cache_data(show_spinner=False, max_entries=32, ttl=cache.CACHE_TTL)
def _forward_gflop(arch: str, kwargs_json: str, shape: tuple[int, ...]) -> float:
    """GFLOP of one sample's forward pass through a fresh ``arch`` (for the cost line)."""
    return B.forward_flop(build(arch, **json.loads(kwargs_json)), shape) / 1e9


def _file_stem(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "cnn"


def confusion_figure(cm: np.ndarray, class_names) -> object:
    """A plotly heatmap of a confusion matrix (rows: true class, columns: predicted), counts
    written in the cells."""
    import plotly.graph_objects as go
    names = [str(c) for c in class_names]
    cm = np.asarray(cm)
    fig = go.Figure(go.Heatmap(z=cm, x=names, y=names, colorscale="Blues", showscale=False,
                               text=cm.astype(str), texttemplate="%{text}",
                               hovertemplate="true %{y}<br>predicted %{x}<br>%{z}<extra></extra>"))
    fig.update_layout(title="Confusion matrix on the test split", xaxis_title="predicted class",
                      yaxis_title="true class", yaxis_autorange="reversed", height=320 + 20 * len(names),
                      margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def _recipe_widgets(d: nd.ImageData):
    """Input size, channels, resize policy and normalisation; a dataset without originals keeps
    its size and channels."""
    c_in, h, w = (int(s) for s in d.shape)
    has_orig = d.originals is not None
    c1, c2, c3, c4, c5 = st.columns(5)
    H = c1.number_input("Input height", 8, 1024, h, key="tr_h", disabled=not has_orig)
    W = c2.number_input("Input width", 8, 1024, w, key="tr_w", disabled=not has_orig)
    ch = c3.selectbox("Channels", (1, 3), index=0 if c_in == 1 else 1, key="tr_channels",
                      disabled=not has_orig, format_func=lambda c: "1 (grey)" if c == 1 else "3 (RGB)")
    resize = c4.selectbox("Resize policy", tuple(RESIZE_POLICIES), key="tr_resize",
                          format_func=lambda k: RESIZE_POLICIES[k].split(":")[0],
                          disabled=not has_orig, help="; ".join(RESIZE_POLICIES.values()))
    norm = c5.selectbox("Normalisation", tuple(NORMALISATIONS), index=tuple(NORMALISATIONS).index("demo"),
                        key="tr_norm", format_func=lambda k: NORMALISATIONS[k].split(" (")[0])
    if not has_orig:
        st.caption(f"This dataset keeps no originals, so the model takes its images as they are "
                   f"({h}×{w}, {c_in} channel(s)); load a ZIP or folder to choose another size.")
        H, W, ch = h, w, c_in
    mean, std = normalisation(norm, int(ch))
    return Recipe((int(H), int(W)), int(ch), resize, tuple(mean), tuple(std))


def _groups(d: nd.ImageData, how: str, pattern: str, csv_file):
    """(group ids or None, how they were found)."""
    if how == "none":
        return None, _GROUPS["none"]
    if how == "csv":
        if csv_file is None:
            raise NnsensError("upload the CSV of file,group rows (or pick another group source)")
        return T.groups_from_csv(d, csv_file.getvalue()), f"from {plain(csv_file.name)}"
    if not pattern and d.groups is not None:
        return tuple(d.groups), ("from the folders (class/patient/image)"
                                 if d.meta.get("group_source") == "folders"
                                 else "from the file names (the stem before the frame number)")
    if not d.files:
        raise NnsensError("this dataset keeps no file names to take groups from (e.g. the demo "
                          "phantom); pick 'none' or load a ZIP / folder")
    return T.groups_from_names(d.files, pattern or None), (
        f"from the file names (pattern {plain(pattern)})" if pattern else
        "from the file-name stems before their frame number")


def train_section(label: str, d: nd.ImageData) -> None:
    vol = d.ndim_spatial == 3
    kind = "volumes" if vol else "images"
    st.caption(f"Trains a CNN on '{plain(label)}' ({len(d)} {kind}, classes "
               f"{', '.join(plain(c) for c in d.class_names)}) with Adam and cross-entropy. The data "
               "are split into train / validation / test; with groups (a patient or a video clip), "
               "all frames of one group stay in one part. The weights of the epoch with the best "
               "validation balanced accuracy are kept, and training stops after *patience* epochs "
               "without improvement; the test split is scored once, at the end.")
    c1, c2, c3, c4 = st.columns(4)
    arch = c1.selectbox("Architecture", _TRAIN_ARCHS[d.ndim_spatial], key=f"tr_arch_{d.ndim_spatial}",
                        help="; ".join(f"{a}: {_ARCH_LABELS[a]}" for a in _TRAIN_ARCHS[d.ndim_spatial]))
    if vol:
        width = c2.number_input("Base channels", 1, 64, 8, key="tr_width3",
                                help="channels of the first Conv3d block; each block doubles them")
    else:
        width = c2.number_input("Width multiplier", 0.03, 1.0, 0.125, format="%.3f", key="tr_width2",
                                disabled=not arch.endswith("-small"),
                                help="fraction of VGG-16 / ResNet-18's channels (at least 4 per "
                                     "layer); the full-size models have their own widths")
    epochs = c3.number_input("Epochs", 1, 500, 10, key="tr_epochs")
    batch = c4.number_input("Batch size", 2, 512, 16, key="tr_batch")
    recipe = None
    if not vol:
        with guard("Checking the input recipe"):
            recipe = _recipe_widgets(d)
        if recipe is None:
            return
    c1, c2, c3, c4, c5 = st.columns(5)
    lr = c1.number_input("Learning rate (Adam)", 1e-6, 1.0, 1e-3, format="%.5f", key="tr_lr")
    patience = c2.number_input("Patience (0: never stop early)", 0, 500, 5, key="tr_patience")
    val_frac = c3.number_input("Validation fraction", 0.0, 0.5, 0.2, step=0.05, key="tr_val")
    test_frac = c4.number_input("Test fraction", 0.0, 0.5, 0.2, step=0.05, key="tr_test")
    seed = c5.number_input("Seed", 0, 2**31 - 1, state.seed(), key="tr_seed")
    c1, c2, c3 = st.columns(3)
    has_names = d.groups is not None or bool(d.files)
    gsrc = c1.selectbox("Groups (kept within one split)", tuple(_GROUPS),
                        index=0 if has_names else 2, key=f"tr_groups|{label}",  # per dataset
                        format_func=_GROUPS.get)
    pattern, csv_file = "", None
    if gsrc == "names":
        pattern = c2.text_input("Group pattern (regex, optional)", "", key="tr_group_pattern",
                                help="its first group is the id in each file name, e.g. "
                                     r"(patient\d+); empty: the folders of class/patient/image, "
                                     "else the file-name stem before its frame number "
                                     "(clip12_f003.png → clip12)")
    elif gsrc == "csv":
        csv_file = c2.file_uploader("Groups CSV (file,group)", type=["csv", "txt"], key="tr_group_csv")
    balance = c3.selectbox("Class balancing", T.BALANCING, key="tr_balance",
                           format_func={"none": "none", "weights": "weighted cross-entropy",
                                        "sampler": "weighted sampler"}.get)
    aug = None
    if not vol:
        c1, c2, c3, c4 = st.columns(4)
        geo = c1.checkbox("Rotate / zoom / shift", True, key="tr_aug_geo",
                          help="rotation up to 10° about the probe apex (top centre), zoom ±10 %, "
                               "shift ±5 %; never a vertical flip")
        inten = c2.checkbox("Brightness / contrast / gamma", True, key="tr_aug_int")
        speckle = c3.checkbox("Speckle noise", True, key="tr_aug_speckle",
                              help="multiplicative noise x·(1 + 0.1·N(0, 1))")
        hflip = c4.checkbox("Horizontal flip", False, key="tr_aug_hflip",
                            help="off by default: left and right may differ in the anatomy")
        full = T.AugmentConfig()
        aug = T.AugmentConfig(full.rotation_deg * geo, full.scale * geo, full.translate * geo,
                              full.brightness * inten, full.contrast * inten, full.gamma * inten,
                              full.speckle * speckle, bool(hflip))
    ckpt = None
    if arch in T.IMAGENET_HEADS:
        ckpt = st.file_uploader(f"ImageNet checkpoint of torchvision's {arch} (optional .pt / .pth "
                                "state_dict; nothing is downloaded)", type=["pt", "pth"],
                                key=f"tr_imagenet_{arch}",
                                help="every tensor is copied but the classifier head; for 1-channel "
                                     "input the first conv's RGB weights are summed. Pair it with "
                                     "the ImageNet normalisation (3 channels).")
    cfg = kw = est = groups = None
    how = ""
    with guard("Checking the training settings"):
        cfg = T.CNNTrainConfig(epochs=int(epochs), batch_size=int(batch), lr=float(lr),
                               patience=int(patience), val_fraction=float(val_frac),
                               test_fraction=float(test_frac), seed=int(seed), balance=balance,
                               augment=aug if aug is not None and aug.enabled else None)
        shape = tuple(d.shape) if vol else (recipe.channels, *recipe.size)
        kw = T.model_kwargs(arch, len(d.class_names), shape, width)
        groups, how = _groups(d, gsrc, pattern, csv_file)
        if groups is not None:
            st.caption(f"Groups {how}: {len(set(groups))} for {len(d)} {kind}.")
        if recipe is not None:
            st.caption(f"Model input: {recipe.describe()}.")
        fwd = _forward_gflop(arch, json.dumps(kw, sort_keys=True), shape)
        est = T.cnn_training_estimate(fwd, len(d), cfg, arch)
    ok = est is not None and cost_line(est)
    if st.button("Train CNN", key="btn_train_cnn", disabled=not ok):
        with guard("Training the CNN"), within_budget(est):
            mlabel = state.unique_label("image_model", f"{arch} on {label}")
            bar = Progress(f"Training {arch}")
            mean, std = _VOLUME_NORM if vol else ((), ())
            tm = T.train_image_model(d, arch, cfg, recipe=recipe, mean=mean, std=std, width=width,
                                     groups=groups, name=mlabel,
                                     imagenet=None if ckpt is None else ckpt.getvalue(),
                                     device=state.device(), progress=bar)
            bar.done()
            rep = tm.report
            text = tm.summary() + ("" if tm.init is None else f"; {tm.init.describe()}")
            file = _file_stem(mlabel) + ".pt"
            entry = tm.manifest(file, groups_from=how)
            st.session_state.setdefault("cnn_trained", {})[mlabel] = {
                "frame": rep.to_frame(), "best_epoch": rep.best_epoch,
                "bacc": rep.best_val_balanced_accuracy, "n_val": len(rep.val_idx),
                "n_train": len(rep.train_idx), "n_test": len(rep.test_idx),
                "test_acc": rep.test_accuracy, "test_bacc": rep.test_balanced_accuracy,
                "confusion": rep.confusion, "class_names": rep.class_names,
                "groups": dict(rep.groups), "groups_from": how,
                "init": None if tm.init is None else tm.init.describe(),
                "recipe": None if recipe is None else recipe.describe(),
                "epochs_run": rep.epochs_run, "stopped_early": rep.stopped_early,
                "weights": tm.state_dict_bytes(), "file": file, "manifest": {mlabel: entry},
                "report": rep.to_dict()}
            st.session_state["cnn_trained_last"] = mlabel
            state.add_upload("image_model", mlabel, LoadedModel(tm.module.eval(), tm.spec, text),
                             f"Trained {plain(mlabel)}: {plain(text)}. It is now selected in the "
                             "sidebar.")
    _show_last()


def _show_last() -> None:
    last = st.session_state.get("cnn_trained_last")
    run = st.session_state.get("cnn_trained", {}).get(last)
    if run is None:
        return
    st.markdown(f"**Last trained CNN: {plain(last)}**")
    if run.get("recipe"):
        st.caption(f"Preprocessing recipe (saved with the model): {plain(run['recipe'])}.")
    if run.get("init"):
        st.caption(plain(run["init"]))
    m1, m2, m3, m4, m5 = st.columns(5)
    m1.metric("Validation balanced accuracy", "—" if run["bacc"] is None else f"{run['bacc']:.3f}")
    m1.caption(f"on {run['n_val']} held-out samples (trained on {run['n_train']})")
    m2.metric("Test accuracy", "—" if run.get("test_acc") is None else f"{run['test_acc']:.3f}")
    m3.metric("Test balanced accuracy",
              "—" if run.get("test_bacc") is None else f"{run['test_bacc']:.3f}")
    if run.get("test_bacc") is not None:
        k = len(run["class_names"])
        m3.caption(f"on {run['n_test']} test samples; chance is {1 / k:.3f} for {k} classes")
    else:
        m3.caption("no test split (test fraction 0)")
    m4.metric("Kept epoch", run["best_epoch"])
    m5.metric("Epochs run", run["epochs_run"])
    if run["stopped_early"]:
        m5.caption("stopped early (patience)")
    if run.get("groups"):
        g = run["groups"]
        st.caption(f"Groups {run['groups_from']}: {g['train']} train, {g['val']} validation, "
                   f"{g['test']} test; none in two parts.")
    show_chart(st, history_figure(run["frame"], run["best_epoch"]), key="cnn_train_chart")
    if run.get("confusion") is not None:
        show_chart(st, confusion_figure(run["confusion"], run["class_names"]), key="cnn_confusion")
    d1, d2, d3 = st.columns(3)
    with d1:
        st.download_button("Download the weights (state_dict .pt)", run["weights"], run["file"],
                           "application/octet-stream", key="dl_cnn_weights", on_click="ignore")
    with d2:
        download_json("Download the manifest (.json)", run["manifest"],
                      run["file"][:-3] + ".json", key="dl_cnn_manifest")
    with d3:
        download_json("Download the training report (.json)", run["report"],
                      run["file"][:-3] + "_report.json", key="dl_cnn_report")
    st.caption("Reload it later under *Add a CNN*: upload the .pt with this manifest (the "
               "architecture, classes, input size, channels, resize policy and normalisation come "
               "from it).")
