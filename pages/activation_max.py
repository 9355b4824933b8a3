"""Activation maximization (paper §3): images that maximise class logits or a layer's channels.

widgets -> AMTarget s + AMConfig -> nnsens_core.activation_max.maximize -> images, activations.
All selected targets are optimised together in one batch; from a start image the same image is
pushed toward every target (cross-class grid). Results are cached with ``st.cache_data`` and kept
in ``st.session_state["am"]``.

For an image-started run the page stores ``st.session_state["am_difference"]``, a
:class:`nnsens_core.saliency.am_difference.AMHandover` for the saliency-comparison page (the
difference maps, the classes they were pushed toward, the config and the start image's identity).
"""
from __future__ import annotations

import hashlib

import numpy as np
import streamlit as st
import torch

from nnsens_core import activation_max as A
from nnsens_core import budget as B
from nnsens_core._results import export_json, image_context
from nnsens_core._hooks import get_module
from nnsens_core._script_chain import is_script, stage_shapes
from nnsens_core.device import resolve_device
from nnsens_core.errors import NnsensError
from nnsens_core._validate import check_images
from nnsens_core.saliency.am_difference import AMHandover
from nnsens_core.zoo import conv_layers
from ui.cache import CACHE_TTL
from ui import cnn_views as V
from ui import state
from ui.trust import model_warnings
from ui.widgets import (Progress, cost_line, download_json, download_npz, guard, plain,
                        require_usable_model, to_uint8, within_budget, show_chart)

state.require_router()

st.title("Activation maximization")
st.caption("Gradient ascent on the input: x ← x + ε1·∂a/∂x − ε2·∂TV/∂x (TV rule) or "
           "x ← blur_σ(x) + ε1·∂a/∂x (blur rule), optional jitter, clamped to the images the "
           "model's normalisation can produce. One forward and one backward pass per step for all "
           "targets together.")

ctx = state.images()
require_usable_model(ctx.model, ctx.key, ctx.device)
model_warnings(ctx)  # flags a model at chance or failing its sanity check
data, spec, model = ctx.data, ctx.model.spec, ctx.model.module
store = st.session_state.setdefault("am", {"runs": {}, "last": {}})
RULE_TEXT = {"tv": "TV: x + ε1·∂a/∂x − ε2·∂TV/∂x", "blur": "Blur: blur_σ(x) + ε1·∂a/∂x",
             "none": "Plain: x + ε1·∂a/∂x"}
PRESET_KEYS = {"rule": "am_rule", "lr": "am_lr", "tv_weight": "am_tv", "normalize_grad": "am_normgrad",
               "jitter": "am_jitter"}


def apply_preset(name: str) -> None:
    """Set the update-rule widgets to preset ``name`` (on_click: before the widgets are drawn)."""
    for field, key in PRESET_KEYS.items():
        st.session_state[key] = A.PRESETS[name][field]
    if name == "paper":  # the paper's AM images are RGB: its rule on every channel
        st.session_state[f"am_grey|{ctx.key}"] = False
    st.session_state["am_preset_applied"] = name


def preset_text(name: str) -> str:
    return A.update_rule_text(A.preset(name))


for _k, _v in (("am_lr", A.AMConfig().lr), ("am_tv", A.AMConfig().tv_weight),
               ("am_normgrad", A.AMConfig().normalize_grad), ("am_jitter", A.AMConfig().jitter)):
    st.session_state.setdefault(_k, _v)


@st.cache_data(show_spinner=False, ttl=CACHE_TTL, max_entries=8)
def shapes(_model, key: str, input_shape: tuple, device: str) -> dict:
    if is_script(_model):   # no forward hooks: the stages of its forward chain (checked)
        return stage_shapes(_model, torch.zeros((1, *input_shape), device=resolve_device(device)))
    return V.layer_shapes(_model, input_shape, device)


@st.cache_data(show_spinner=False, max_entries=8, ttl=CACHE_TTL)
def compute(_model, _spec, key: str, targets: tuple, cfg: A.AMConfig, start: np.ndarray | None,
            device: str) -> A.AMResult:
    """One AM run; the progress bar and the live preview live inside, so a cache hit replays
    them finished."""
    bar = Progress(f"Activation maximisation: {cfg.steps} steps × {len(targets)} image(s)", cfg.steps)
    every = max(1, cfg.steps // 100)
    preview = st.empty()

    def progress(done, total, stage=""):
        if done % every == 0 or done == total:
            bar(done, total)

    def show(step, images, acts):
        pics = _spec.denormalize(images).clamp(0, 1).numpy()
        preview.image(V.mosaic(pics), width=min(1100, 150 * len(pics)),
                      caption=f"step {step}: " + " · ".join(
                          f"{plain(t.label(_spec.class_names))} {a:.2f}"
                          for t, a in zip(targets, acts.tolist())))

    x0 = None if start is None else torch.from_numpy(start)
    with within_budget(B.am(_model, len(targets), cfg, _spec.input_shape)):
        res = A.maximize(_model, _spec, list(targets), cfg, device, start=x0, progress=progress,
                         preview=show)
    bar.done()
    preview.empty()
    return res


# ----------------------------------------------------------------------------- targets
st.subheader("Targets")
kind = st.radio("Maximise", ["classes", "layer"], horizontal=True, key="am_kind",
                format_func=lambda s: "Class logits" if s == "classes" else "Channels / neurons of a layer")
targets: list[A.AMTarget] = []
if kind == "classes":
    n_cls = len(spec.class_names)
    if not n_cls:
        st.error("This model has no class names; maximise a layer's channels instead, or give the "
                 "class names when uploading it.")
        st.stop()
    chosen = st.multiselect("Classes (all optimised together in one batch)", list(range(n_cls)),
                            default=list(range(n_cls)), key="am_classes",
                            format_func=lambda k: spec.class_names[k])
    targets = [A.AMTarget(int(c)) for c in chosen]
else:
    layer_shape: dict = {}
    with guard("Reading the layer shapes"):
        layer_shape = shapes(model, ctx.key, tuple(spec.input_shape), str(ctx.device))
    opts = [n for n, s in layer_shape.items() if len(s) in (1, 3)]
    if not opts:
        st.info("No layer of this model can be read; maximise class logits instead.")
        st.stop()
    convs = [c for c in conv_layers(model) if c in opts]
    c1, c2 = st.columns(2)
    layer = c1.selectbox("Layer", opts, index=opts.index(convs[-1]) if convs else 0, key="am_layer",
                         format_func=lambda n: f"{n}  {tuple(layer_shape[n])}")
    typed = c2.text_input("…or type a module name (overrides the picker)", "", key="am_layer_typed")
    name = typed.strip() or layer
    ok = False
    with guard("Checking the layer"):
        get_module(model, name)
        if name not in layer_shape:
            raise NnsensError(f"layer {name!r} " + (
                "is not a stage of this TorchScript model's forward chain (only those can be "
                "read); pick one from the list" if is_script(model) else
                "returns no tensor in the forward pass; pick another"))
        ok = True
    if not ok:
        st.stop()
    shp = layer_shape[name]
    chans = st.multiselect(f"Channels / units of {name} (0..{shp[0] - 1})", list(range(shp[0])),
                           default=list(range(min(3, shp[0]))), key="am_channels")
    pos = None
    if len(shp) == 3 and st.checkbox("One neuron (row, col) instead of the channel mean",
                                     key="am_neuron"):
        p1, p2 = st.columns(2)
        pos = (int(p1.number_input(f"Row (0..{shp[1] - 1})", 0, shp[1] - 1, shp[1] // 2, key="am_row")),
               int(p2.number_input(f"Col (0..{shp[2] - 1})", 0, shp[2] - 1, shp[2] // 2, key="am_col")))
    targets = [A.AMTarget(int(c), name, pos) for c in chans]
if not targets:
    st.info("Pick at least one target.")
    st.stop()

# ----------------------------------------------------------------------------- start
st.subheader("Start")
starts = ["noise", "dataset", "upload"]
start_mode = st.radio("Start from", starts, horizontal=True, key="am_start",
                      format_func={"noise": "Noise (seeded)", "dataset": "A dataset image",
                                   "upload": "An uploaded image"}.get)
c1, c2 = st.columns(2)
seed = int(c1.number_input("Seed (noise start and jitter)", 0, 2**31 - 1, ctx.seed, key="am_seed"))
init_std = A.AMConfig().init_std
start01, start_id, start_index, start_class = None, ("noise",), None, None
if start_mode == "noise":
    init_std = float(c2.number_input("Noise std around grey 0.5", 0.0, 1.0, init_std, step=0.05,
                                     key="am_init_std"))
elif start_mode == "dataset":
    start_index = int(c2.number_input(f"Image index (0..{len(data) - 1})", 0, len(data) - 1, 0,
                                      key="am_index"))
    start01, start_class = data.images[start_index], int(data.labels[start_index])
    start_id = ("index", start_index)
else:
    up = st.file_uploader("PNG or JPEG", type=["png", "jpg", "jpeg"], key="am_upload")
    fit = st.checkbox(f"Convert and resize the upload to the model's input {tuple(spec.input_shape)}",
                      value=False, key="am_fit")
    if up is None:
        st.info("Upload a start image.")
        st.stop()
    with guard("Reading the upload"):
        raw = up.getvalue()
        start01 = V.read_image_upload(raw, spec.input_shape if fit else None)
        start_id = ("upload", up.name, hashlib.sha1(raw).hexdigest(), bool(fit))
    if start01 is None:
        st.stop()
start = None
if start01 is not None:
    with guard("Checking the start image"):
        xt = torch.as_tensor(np.ascontiguousarray(start01), dtype=torch.float32)
        check_images(xt, spec.input_shape, what="the start image", batch=False, finite=True)
        start = spec.normalize(xt).numpy()
    if start is None:
        if start_mode == "upload":
            st.info("Tick *Convert and resize the upload* above to fit it to the model.")
        st.stop()
    cap = plain(f"#{start_index} · {data.class_names[start_class]}" if start_mode == "dataset"
                else start_id[1])
    st.image(to_uint8(start01), caption=f"start: {cap} (pushed toward every target: cross-class grid)",
             width=160)

# ----------------------------------------------------------------------------- update rule
st.subheader("Update rule")
p1, p2, p3 = st.columns([1, 1, 3])
p1.button("Paper preset", key="am_preset_paper", on_click=apply_preset, args=("paper",),
          help="The paper's eqs. 1–5: " + preset_text("paper") + "; grey images off (the "
               "paper optimises every channel)")
p2.button("nnsens preset", key="am_preset_nnsens", on_click=apply_preset, args=("nnsens",),
          help=preset_text("nnsens"))
applied = st.session_state.get("am_preset_applied")
p3.caption(f"**{applied} preset** set: {preset_text(applied)}" if applied else
           "Paper preset (eqs. 1–5): ε1 = ε2 = 0.1, raw gradient, TV rule. nnsens preset (the "
           "default): normalised gradient, ε1 = 0.05, ε2 = 0.02.")
c1, c2, c3, c4 = st.columns(4)
rule = c1.radio("Rule", A.RULES, key="am_rule", format_func=RULE_TEXT.get)
steps = int(c2.number_input("Steps", 1, 5000, 100, step=10, key="am_steps"))
lr = c2.number_input("ε1 (step on ∂a/∂x)", step=0.01, format="%.4f", key="am_lr",
                     help="Must be > 0. With normalised gradients this is a step in model-input units.")
tv_w, sigma, blur_every = A.AMConfig().tv_weight, A.AMConfig().blur_sigma, 1
if rule == "tv":
    tv_w = c3.number_input("ε2 (TV step)", step=0.01, format="%.4f", key="am_tv")
elif rule == "blur":
    sigma = c3.number_input("σ (blur, pixels)", value=0.5, step=0.1, format="%.3f", key="am_sigma")
    blur_every = int(c3.number_input("Blur every n steps", 1, 100, 1, key="am_blur_every"))
jitter = int(c4.number_input("Jitter (pixels, 0 = off)", 0, 16, key="am_jitter"))
norm_grad = c4.checkbox("Normalise the gradient", key="am_normgrad",
                        help="Divide each image's gradient by its mean |value|, so ε1 does not depend "
                             "on the scale of the activation.")
preview_every = int(c4.number_input("Live preview every n steps (0 = off)", 0, 1000, 10,
                                    key="am_preview"))
grey_default = ctx.data.is_grey()  # grey originals, or equal channels
grey = c4.toggle("Grey images", value=grey_default, key=f"am_grey|{ctx.key}",
                 help="Optimise one grey channel repeated to the model's channels (for grey "
                      "modalities such as ultrasound). On by default when the dataset's images "
                      "are grey.")

cfg = None
with guard("Checking the settings"):
    cfg = A.AMConfig(steps=steps, rule=rule, lr=float(lr), tv_weight=float(tv_w),
                     blur_sigma=float(sigma), blur_every=blur_every, jitter=jitter,
                     normalize_grad=bool(norm_grad), init_std=init_std, seed=seed,
                     preview_every=preview_every, grey=bool(grey))
if cfg is None:
    st.stop()
st.caption("Update rule: " + A.update_rule_text(cfg) + ".")
st.caption(f"{len(targets)} image(s) in one batch: {steps} forward + backward passes on {ctx.device}; "
           f"values clamped to the model's valid input range (images in [0, 1] after "
           f"de-normalisation).")
run_key = (ctx.key, tuple(targets), cfg, start_id)
affordable = cost_line(B.am(model, len(targets), cfg, spec.input_shape))

if st.button("Run activation maximization", type="primary", key="am_run", disabled=not affordable):
    if run_key not in store["runs"]:
        with guard("Activation maximisation"):
            res = compute(model, spec, ctx.key, tuple(targets), cfg, start, str(ctx.device))
            store["runs"][run_key] = {"res": res, "start01": start01, "start_index": start_index,
                                      "start_class": start_class, "start_id": start_id}
    if run_key in store["runs"]:
        store["last"][ctx.key] = run_key
        run = store["runs"][run_key]
        res = run["res"]
        if run["start01"] is not None:
            sid = run["start_id"]
            st.session_state["am_difference"] = AMHandover.from_result(
                res, ctx.key, run["start_index"],
                f"{ctx.key}#{sid[1]}" if sid[0] == "index" else f"upload:{sid[1]}:{sid[2]}")

run = state.last_result(store["runs"], store["last"], ctx.key, run_key, "Run activation maximization")
if run is None:
    st.info("Choose the targets and settings and press **Run activation maximization**.")
    st.stop()

# ----------------------------------------------------------------------------- results
res: A.AMResult = run["res"]
st.subheader("Results")
k1, k2, k3, k4 = st.columns(4)
k1.metric("Images", f"{len(res.labels)}")
k2.metric("Steps", f"{res.config.steps}")
k3.metric("Time", f"{res.seconds:.2f} s")
k4.metric("Steps / s", f"{res.config.steps / max(res.seconds, 1e-9):.1f}")
st.caption("Update rule used: " + A.update_rule_text(res.config) + ".")
imgs01 = res.images01(spec).numpy()
acts = res.activations.numpy()
table = res.to_frame()
if kind == "classes" and all(t.layer is None for t in res.targets):
    with torch.no_grad():
        logits = model(res.images.to(ctx.device)).float().cpu()
    probs = torch.softmax(logits, 1)
    table["predicted class"] = [spec.class_names[int(k)] if int(k) < len(spec.class_names) else int(k)
                                for k in logits.argmax(1)]
    table["p(target)"] = [float(probs[n, t.index]) for n, t in enumerate(res.targets)]
st.markdown("**Final activations**")
st.dataframe(table, width="stretch")

captions = [f"{lb}: {a:.2f}" for lb, a in zip(res.labels, acts)]
if run["start01"] is not None:
    st.markdown("**Cross-class grid**: the start image pushed toward every target")
    V.image_grid(np.concatenate([np.asarray(run["start01"])[None], imgs01]), ["start"] + captions,
                 columns=min(6, len(imgs01) + 1))
    diff = res.difference("mean").numpy()
    show_chart(st, V.map_row(diff, list(res.labels), title="|x_AM − x_0| (mean over channels)",
                              colorscale="Inferno"), key="am_diff")
    st.caption(f"**Scale:** |x_AM − x_0| in image units ([0, 1] pixel values), from "
               f"{float(diff.min()):.3g} to {float(diff.max()):.3g}; one colour scale shared by "
               "every target (colour bar at the right, values printed as value × 10^n); inferno: "
               "low = dark, high = bright.")
    st.caption("Saved for the saliency comparison (st.session_state['am_difference']).")
else:
    V.image_grid(imgs01, captions, columns=min(6, len(imgs01)))
show_chart(st, V.history_figure(res.history.numpy(), list(res.labels)), key="am_history")

# ----------------------------------------------------------------------------- export
# the core builds the documents: the JSON is the CLI's activations.json for the same run
names = res.file_names(start_image=run["start01"] is not None)
pngs = ([np.asarray(run["start01"])] if run["start01"] is not None else []) + list(imgs01)
sid = run["start_id"]
start_ctx = ("noise" if sid[0] == "noise" else image_context(data, [sid[1]]) if sid[0] == "index"
             else {"upload": sid[1], "sha1": sid[2]})
doc = export_json(res, model=spec.name, start=start_ctx, files=names)
arrays = {**res.arrays(), "images01": imgs01}
d1, d2, d3 = st.columns(3)
with d1:
    st.download_button("Download images (ZIP of PNGs)", V.zip_pngs(np.stack(pngs), names),
                       "activation_max_png.zip", "application/zip", key="dl_am_png", on_click="ignore")
with d2:
    download_npz("Download arrays (NPZ)", arrays, "activation_max.npz", key="dl_am_npz")
with d3:
    download_json("Download activations (JSON)", doc, "activation_max.json", key="dl_am_json")
