"""The Model & data page's "Train a CNN on the selected dataset" section: settings, cost line,
training through :func:`nnsens_core.training.train_cnn`, the result with its downloads."""
from __future__ import annotations

import io
import json
import re

import numpy as np
import streamlit as st
import torch

from nnsens_core import budget as B
from nnsens_core import data as nd
from nnsens_core.errors import NnsensError
from nnsens_core.model_manifest import manifest_entry
from nnsens_core.training import CNNTrainConfig, train_cnn
from nnsens_core.zoo import IMAGE, LoadedModel, ModelSpec, build

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

_NORM_MEAN, _NORM_STD = 0.5, 0.25
_TRAIN_ARCHS = {2: ("vgg16-small", "resnet18-small"), 3: ("cnn3d-small",)}



@st.cache_data(show_spinner=False, max_entries=32, ttl=cache.CACHE_TTL)
def _forward_gflop(arch: str, kwargs_json: str, shape: tuple[int, ...]) -> float:
    """GFLOP of one sample's forward pass through a fresh ``arch`` (for the cost line)."""
    return B.forward_flop(build(arch, **json.loads(kwargs_json)), shape) / 1e9


def _train_kwargs(arch: str, d: nd.ImageData, width) -> dict:
    """The architecture's keyword arguments for ``d`` (classes, channels, width; for cnn3d-small
    as many pooling blocks as the smallest side allows, at most 4)."""
    kw = {"num_classes": len(d.class_names), "in_channels": int(d.shape[0])}
    side = min(d.shape[1:])
    if arch == "cnn3d-small":
        blocks = min(4, int(np.floor(np.log2(side))) if side >= 2 else 0)
        if blocks < 1:
            raise NnsensError(f"the volumes are {tuple(d.shape[1:])} voxels; cnn3d-small needs at "
                              "least 2 voxels per side")
        kw.update(width=int(width), blocks=blocks)
    else:
        need = 32 if arch == "vgg16-small" else 8
        if side < need:
            raise NnsensError(f"the images are {d.shape[1]}×{d.shape[2]} pixels; {arch} needs at "
                              f"least {need} per side" + ("; use resnet18-small" if need == 32 else ""))
        kw["width"] = float(width)
    return kw


def _file_stem(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "cnn"


def train_section(label: str, d: nd.ImageData) -> None:
    vol = d.ndim_spatial == 3
    kind = "volumes" if vol else "images"
    c_in = int(d.shape[0])
    st.caption(f"Trains a fresh CNN on '{plain(label)}' ({len(d)} {kind} of shape {tuple(d.shape)}, "
               f"classes {', '.join(plain(c) for c in d.class_names)}) with Adam and cross-entropy, "
               "validating on a stratified held-out split of the dataset: the weights of the epoch "
               "with the best validation balanced accuracy are kept, and training stops after "
               "*patience* epochs without improvement. Inputs are normalised per channel with mean "
               f"{_NORM_MEAN} and std {_NORM_STD}: (x − 0.5) / 0.25 for x in [0, 1].")
    c1, c2, c3, c4 = st.columns(4)
    arch = c1.selectbox("Architecture", _TRAIN_ARCHS[d.ndim_spatial], key=f"tr_arch_{d.ndim_spatial}")
    if vol:
        width = c2.number_input("Base channels", 1, 64, 8, key="tr_width3",
                                help="channels of the first Conv3d block; each block doubles them")
    else:
        width = c2.number_input("Width multiplier", 0.03, 1.0, 0.125, format="%.3f", key="tr_width2",
                                help="fraction of VGG-16 / ResNet-18's channels (at least 4 per layer)")
    epochs = c3.number_input("Epochs", 1, 500, 10, key="tr_epochs")
    batch = c4.number_input("Batch size", 2, 512, 16, key="tr_batch")
    c1, c2, c3, c4 = st.columns(4)
    lr = c1.number_input("Learning rate (Adam)", 1e-6, 1.0, 1e-3, format="%.5f", key="tr_lr")
    patience = c2.number_input("Patience (0: never stop early)", 0, 500, 5, key="tr_patience")
    val_frac = c3.number_input("Validation fraction", 0.0, 0.5, 0.2, step=0.05, key="tr_val")
    seed = c4.number_input("Seed", 0, 2**31 - 1, state.seed(), key="tr_seed")
    cfg = kw = est = None
    with guard("Checking the training settings"):
        kw = _train_kwargs(arch, d, width)
        cfg = CNNTrainConfig(epochs=int(epochs), batch_size=int(batch), lr=float(lr),
                             patience=int(patience), val_fraction=float(val_frac), seed=int(seed))
        n_val = round(len(d) / max(2, round(1 / cfg.val_fraction))) if cfg.val_fraction else 0
        fwd = _forward_gflop(arch, json.dumps(kw, sort_keys=True), tuple(d.shape))
        steps = -(-(len(d) - n_val) // cfg.batch_size)
        est = B.Estimate(f"training {arch} for {cfg.epochs} epochs on {len(d) - n_val} {kind} "
                         f"(+ {n_val} validating)",
                         cfg.epochs * ((len(d) - n_val) * B.BACKWARD * fwd + n_val * fwd
                                       + steps * B.STEP_FLOP / 1e9),
                         "reduce the epochs, the width or the dataset")
    ok = est is not None and cost_line(est)
    if st.button("Train CNN", key="btn_train_cnn", disabled=not ok):
        with guard("Training the CNN"), within_budget(est):
            mlabel = state.unique_label("image_model", f"{arch} on {label}")
            spec = ModelSpec(name=mlabel, arch=arch, task=IMAGE, input_shape=tuple(d.shape),
                             class_names=tuple(d.class_names), mean=(_NORM_MEAN,) * c_in,
                             std=(_NORM_STD,) * c_in, arch_kwargs=kw)
            torch.manual_seed(cfg.seed)  # the initial weights follow the seed too
            module = build(arch, **kw)
            bar = Progress(f"Training {arch}")
            module, rep = train_cnn(module, d, cfg, spec=spec, device=state.device(), progress=bar)
            bar.done()
            bacc = rep.best_val_balanced_accuracy
            text = (f"{rep.epochs_run} epoch(s) in {rep.seconds:.1f} s, kept epoch {rep.best_epoch}"
                    + (f", validation balanced accuracy {bacc:.3f} on {len(rep.val_idx)} held-out "
                       f"{kind}" if bacc is not None else ", no validation split (last epoch kept)"))
            buf = io.BytesIO()
            torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, buf)
            file = _file_stem(mlabel) + ".pt"
            entry = manifest_entry(spec, file, balanced_accuracy=bacc, best_epoch=rep.best_epoch,
                                   epochs_run=rep.epochs_run, n_train=len(rep.train_idx),
                                   n_val=len(rep.val_idx), train_seed=cfg.seed,
                                   data=str(d.name), lr=cfg.lr, batch_size=cfg.batch_size)
            st.session_state.setdefault("cnn_trained", {})[mlabel] = {
                "frame": rep.to_frame(), "best_epoch": rep.best_epoch, "bacc": bacc,
                "n_val": len(rep.val_idx), "n_train": len(rep.train_idx),
                "epochs_run": rep.epochs_run, "stopped_early": rep.stopped_early,
                "weights": buf.getvalue(), "file": file, "manifest": {mlabel: entry}}
            st.session_state["cnn_trained_last"] = mlabel
            state.add_upload("image_model", mlabel, LoadedModel(module.eval(), spec, text),
                             f"Trained {plain(mlabel)}: {plain(text)}. It is now selected in the "
                             "sidebar.")
    last = st.session_state.get("cnn_trained_last")
    run = st.session_state.get("cnn_trained", {}).get(last)
    if run is None:
        return
    st.markdown(f"**Last trained CNN: {plain(last)}**")
    m1, m2, m3 = st.columns(3)
    m1.metric("Validation balanced accuracy",
              "—" if run["bacc"] is None else f"{run['bacc']:.3f}")
    m1.caption(f"on {run['n_val']} held-out samples (trained on {run['n_train']})")
    m2.metric("Kept epoch", run["best_epoch"])
    m3.metric("Epochs run", run["epochs_run"])
    if run["stopped_early"]:
        m3.caption("stopped early (patience)")
    show_chart(st, history_figure(run["frame"], run["best_epoch"]), key="cnn_train_chart")
    d1, d2 = st.columns(2)
    with d1:
        st.download_button("Download the weights (state_dict .pt)", run["weights"], run["file"],
                           "application/octet-stream", key="dl_cnn_weights", on_click="ignore")
    with d2:
        download_json("Download the manifest (.json)", run["manifest"],
                      run["file"][:-3] + ".json", key="dl_cnn_manifest")
    st.caption("Reload it later under *Add a CNN*: upload the .pt with this manifest (the "
               "architecture, classes, input shape and normalisation come from it).")
