"""Local sensitivity (paper §3): how much each CNN block's output moves when one pixel (or a k x k
patch) of one channel is perturbed.

widgets -> LocalConfig + blocks -> nnsens_core.local_sensitivity -> plotly heatmaps (block x channel).
Results are cached with ``st.cache_data`` (per model & data key, images, blocks and config) and kept
in ``st.session_state["local_sens"]`` so reruns never lose or recompute them.
"""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import streamlit as st
import torch

from nnsens_core import budget as B
from nnsens_core import local_sensitivity as P
from nnsens_core._validate import check_images
from nnsens_core._results import export_json, image_context
from nnsens_core.zoo import conv_layers
from ui.cache import CACHE_TTL
from ui import cnn_views as V
from ui import state
from ui.trust import model_warnings
from ui.widgets import (Progress, cost_line, download_json, download_npz, guard, plain,
                        require_usable_model, to_uint8, within_budget, show_chart)

state.require_router()

st.title("Local sensitivity (pixel perturbation)")
st.caption("For every pixel (or k×k patch) p of every channel and every block q: "
           "s = ‖B_q(x + δ e_p) − B_q(x)‖₂ (nnsens' default) or the paper's "
           "‖B_q(x + δ e_p)‖₂ − ‖B_q(x)‖₂ (*Paper preset*). "
           "All blocks are read from one forward pass per batch of perturbations (forward hooks); "
           "the fast mode replaces the finite differences by gradient estimates.")

ctx = state.images()
require_usable_model(ctx.model, ctx.key, ctx.device)
model_warnings(ctx)  # flags a model at chance or failing its sanity check
data, spec, model = ctx.data, ctx.model.spec, ctx.model.module
store = st.session_state.setdefault("local_sens", {"runs": {}, "last": {}})
FORMULA_TEXT = P.FORMULA_TEXT
# preset field -> widget key (and how the widget stores it)
PRESET_KEYS = {"formula": "ls_formula", "noise": "ls_noise", "epsilon": "ls_eps", "patch": "ls_patch",
               "method": "ls_method"}


def apply_preset(name: str) -> None:
    """Set the widgets to preset ``name`` (on_click: runs before the widgets are drawn)."""
    for field, key in PRESET_KEYS.items():
        value = P.PRESETS[name][field]
        st.session_state[key] = int(value) if field == "patch" else value
    st.session_state["ls_custom"] = False      # the detected blocks
    st.session_state["ls_tile"] = 1            # untiled maps
    st.session_state["ls_preset_applied"] = name


def preset_text(name: str) -> str:
    v = P.PRESETS[name]
    return (f"s = {FORMULA_TEXT[v['formula']]}; fixed ε = {v['epsilon']:g}; "
            + ("single pixels" if v["patch"] == 1 else f"{v['patch']}×{v['patch']} patches")
            + f"; {'finite differences' if v['method'] == 'finite' else 'gradient estimate'}; "
            f"blocks: {P.PRESET_BLOCKS}; tiles 1×1 (maps not pooled)")


def channel_names(c: int) -> list[str]:
    return {1: ["gray"], 3: ["R", "G", "B"]}.get(c, [f"c{i}" for i in range(c)])


@st.cache_data(show_spinner=False, max_entries=16, ttl=CACHE_TTL)
def compute(_model, key: str, x: np.ndarray, blocks: tuple, cfg: P.LocalConfig, device: str,
            compare: bool, input_shape: tuple):
    """Maps of every image of ``x`` (K, C, H, W, model-input space); with ``compare`` (gradient
    mode) also the finite differences for the agreement report. Progress bars live inside, so a
    cache hit replays them finished."""
    xs = torch.from_numpy(x)
    mapping = dict(blocks)
    with within_budget(_cost(_model, input_shape, cfg, len(xs), len(mapping), compare)):
        return _compute(_model, xs, mapping, cfg, device, compare, input_shape)


def _cost(model, input_shape: tuple, cfg: P.LocalConfig, n_img: int, n_blocks: int,
          compare: bool) -> B.Estimate:
    est = B.local(model, input_shape, cfg, n_img, n_blocks)
    if compare and cfg.method == "gradient":
        est = est + B.local(model, input_shape, dataclasses.replace(cfg, method="finite"), n_img, n_blocks)
    return est


def _compute(_model, xs, mapping, cfg, device, compare, input_shape):
    total = P.count_forwards(tuple(xs.shape[1:]), cfg, len(xs), len(mapping))
    what = "Finite differences" if cfg.method == "finite" else "Gradient estimate"
    bar = Progress(f"{what}: {total:,} forward passes", total)
    results = P.local_sensitivity_many(_model, xs, mapping, cfg, device, bar, input_shape)
    bar.done()
    exact = None
    if compare and cfg.method == "gradient":
        fcfg = dataclasses.replace(cfg, method="finite")
        total_f = P.count_forwards(tuple(xs.shape[1:]), fcfg, len(xs), len(mapping))
        bar = Progress(f"Finite differences for the agreement report: {total_f:,} forward passes",
                       total_f)
        exact = P.local_sensitivity_many(_model, xs, mapping, fcfg, device, bar, input_shape)
        bar.done()
    return results, exact


# ----------------------------------------------------------------------------- images
st.subheader("Images")
modes = ["One image of the dataset", "First K images of a class", "Upload an image"]
mode = st.radio("Analyse", modes, horizontal=True, key="ls_mode")
x01, image_id, captions = None, None, []
if mode == modes[0]:
    idx = int(st.number_input(f"Image index (0..{len(data) - 1})", 0, len(data) - 1, 0, key="ls_index"))
    x01, image_id = data.images[[idx]], ("index", (idx,))
    captions = [f"#{idx} · {data.class_names[data.labels[idx]]}"]
elif mode == modes[1]:
    c1, c2 = st.columns(2)
    cls = c1.selectbox("Class", list(range(len(data.class_names))), key="ls_class",
                       format_func=lambda k: data.class_names[k])
    members = np.flatnonzero(data.labels == cls)
    if len(members) == 0:
        st.error(f"Class '{plain(data.class_names[cls])}' has no images in this dataset; pick another.")
        st.stop()
    k_img = int(c2.number_input(f"K (first K of {len(members)} images)", 1, int(len(members)),
                                min(3, int(len(members))), key="ls_k"))
    sel = members[:k_img]
    x01, image_id = data.images[sel], ("index", tuple(int(i) for i in sel))
    captions = [f"#{i} · {data.class_names[cls]}" for i in sel]
else:
    up = st.file_uploader("PNG or JPEG", type=["png", "jpg", "jpeg"], key="ls_upload")
    fit = st.checkbox(f"Convert and resize the upload to the model's input {tuple(spec.input_shape)}",
                      value=False, key="ls_fit",
                      help="Off: the image is used as it is, and a wrong size or channel count is "
                           "reported.")
    if up is None:
        st.info("Upload an image to analyse.")
        st.stop()
    with guard("Reading the upload"):
        raw = up.getvalue()
        x01 = V.read_image_upload(raw, spec.input_shape if fit else None)[None]
        image_id = ("upload", up.name, hashlib.sha1(raw).hexdigest(), bool(fit))
        captions = [up.name]
if x01 is None:
    st.stop()

x = None
with guard("Checking the image"):
    xt = torch.as_tensor(np.ascontiguousarray(x01), dtype=torch.float32)
    check_images(xt, spec.input_shape, what="the image", finite=True)
    x = spec.normalize(xt)
if x is None:
    if mode == modes[2]:
        st.info("Tick *Convert and resize the upload* above to fit it to the model.")
    st.stop()
cols = st.columns(8)
for k in range(min(len(x01), 8)):
    cols[k].image(to_uint8(x01[k]), caption=plain(captions[k]), width="stretch")
if len(x01) > 8:
    st.caption(f"… and {len(x01) - 8} more")

# ----------------------------------------------------------------------------- settings
st.subheader("Settings")
p1, p2, p3 = st.columns([1, 1, 3])
p1.button("Paper preset", key="ls_preset_paper", on_click=apply_preset, args=("paper",),
          help="Sets " + preset_text("paper"))
p2.button("nnsens preset", key="ls_preset_nnsens", on_click=apply_preset, args=("nnsens",),
          help="Sets " + preset_text("nnsens"))
applied = st.session_state.get("ls_preset_applied")
if applied:
    p3.caption(f"**{applied} preset** set: {preset_text(applied)}. Change any value below to "
               "depart from it.")
else:
    p3.caption("Paper preset: " + preset_text("paper"))
c1, c2, c3 = st.columns(3)
formula = c1.radio("Formula", P.FORMULAS, format_func=FORMULA_TEXT.get, key="ls_formula")
noise = c2.radio("Perturbation δ", P.NOISES, key="ls_noise",
                 format_func=lambda s: "fixed ε" if s == "fixed" else "Gaussian noise N(0, σ²), seeded")
eps, sigma, seed = 0.1, 0.1, ctx.seed
if noise == "fixed":
    if "ls_eps" not in st.session_state:
        st.session_state["ls_eps"] = 0.1
    eps = c3.number_input("ε (model-input units)", step=0.05, format="%.4f", key="ls_eps",
                          help="Added to one pixel of one channel; must be > 0.")
else:
    sigma = c3.number_input("σ (model-input units)", value=0.1, step=0.05, format="%.4f", key="ls_sigma")
    seed = int(c3.number_input("Noise seed", 0, 2**31 - 1, ctx.seed, key="ls_seed"))
c1, c2, c3 = st.columns(3)
st.session_state.setdefault("ls_patch", 4)
patch = int(c1.number_input("Patch size k (1 = single pixels)", 1, int(max(spec.input_shape[1:])),
                            key="ls_patch",
                            help="Perturb k×k patches instead of single pixels: k² fewer forward "
                                 "passes; each patch's value is spread over its pixels."))
method = c2.radio("Method", P.METHODS, key="ls_method",
                  format_func=lambda s: "Finite differences (exact, one forward per perturbation)"
                  if s == "finite" else "Gradient estimate (fast)")
probes, compare = P.LocalConfig().n_probes, False
if method == "gradient":
    if formula == "diff_norm":
        probes = int(c3.number_input("Random probes (Jacobian column norms)", 1, 4096, 32,
                                     key="ls_probes"))
    compare = c3.checkbox("Compare with finite differences (Spearman ρ, relative error)", value=True,
                          key="ls_compare")
with st.expander("Batching and engine"):
    bs = int(st.number_input("Perturbations per forward pass (0 = automatic from a memory budget)",
                             0, 65536, 0, key="ls_bs"))
    incremental = st.checkbox(
        "Incremental inference (exact: each layer recomputes only the region a perturbation reaches)",
        value=True, key="ls_incremental",
        help="For VGG-like models (blocks inside one nn.Sequential of conv / pool / pointwise layers); "
             "other models use full forward passes. Same numbers up to float rounding, several "
             "times faster (demo VGG-16: about 5x on a CPU).")
    tau = float(st.select_slider(
        "Approximation τ (0 = exact)", [0.0, 0.05, 0.1, 0.2, 0.4], 0.0, key="ls_tau",
        help="Projective-field thresholding: each layer recomputes only the box where a "
             "perturbation's change exceeded τ × its largest change on a calibration sample. The "
             "error measured against exact values is shown with the result. Needs incremental "
             "inference and finite differences."))

# blocks
scripted = P.is_script(model)
auto = P.detect_blocks(model)
custom = True
if scripted:
    st.caption("TorchScript model (no forward hooks): the blocks are read by running its children "
               "one after the other, checked once against the model's own output (to 1e-5); "
               "'output' is the model output itself, always available. Full forward passes (no "
               "incremental inference).")
if auto:
    kind = "ResNet: layer1..layer4" if "layer1" in auto else "VGG: after each max-pool"
    st.caption(f"Blocks detected ({kind}): " + ", ".join(f"{k} = `{v}`" for k, v in auto.items()))
    custom = st.checkbox("Pick the modules myself", value=False, key="ls_custom")
elif not scripted:
    st.info("No VGG/ResNet structure detected: pick the modules whose outputs are the blocks.")
mapping: dict[str, str] = dict(auto)
if custom:
    names = P.block_choices(model) if scripted else V.module_names(model)
    default = (list(auto.values()) if auto else ["output"] if scripted
               else conv_layers(model)[-1:])
    picked = st.multiselect("Modules (blocks), in forward order", names, default=default,
                            key="ls_modules")
    typed = st.text_input("…or type module names (comma-separated; overrides the picker)", "",
                          key="ls_typed")
    chosen = V.parse_module_list(typed) or picked
    if not chosen:
        st.info("Pick at least one module.")
        st.stop()
    mapping = {n: n for n in chosen}

cfg = None
with guard("Checking the settings"):
    mapping = P.resolve_blocks(model, mapping)
    cfg = P.LocalConfig(epsilon=float(eps), noise=noise, sigma=float(sigma), seed=seed, formula=formula,
                        patch=patch, method=method, n_probes=probes, batch_size=bs or None,
                        incremental="auto" if incremental else "off",
                        tau=tau if incremental and method == "finite" else 0.0)
if cfg is None:
    st.stop()
n_img = len(x)
total = P.count_forwards(tuple(spec.input_shape), cfg, n_img, len(mapping))
extra = ""
if compare:
    fin = P.count_forwards(tuple(spec.input_shape), dataclasses.replace(cfg, method="finite"), n_img,
                           len(mapping))
    extra = f" + {fin:,} for the finite-difference comparison"
st.caption(f"This run makes **{total:,} forward passes**{extra} ({n_img} image(s) × "
           f"{len(mapping)} block(s), all blocks read from each pass) on {ctx.device}.")
run_key = (ctx.key, image_id, tuple(mapping.items()), cfg, compare)
affordable = cost_line(_cost(model, tuple(spec.input_shape), cfg, n_img, len(mapping), compare))

if st.button("Compute sensitivity maps", type="primary", key="ls_run", disabled=not affordable):
    if run_key not in store["runs"]:
        with guard("The sensitivity computation"):
            results, exact = compute(model, ctx.key, x.numpy(), tuple(mapping.items()), cfg,
                                     str(ctx.device), compare, tuple(spec.input_shape))
            store["runs"][run_key] = {"results": results, "exact": exact, "x01": np.asarray(x01),
                                      "captions": captions, "image_id": image_id}
    if run_key in store["runs"]:
        store["last"][ctx.key] = run_key

run = state.last_result(store["runs"], store["last"], ctx.key, run_key, "Compute sensitivity maps")
if run is None:
    st.info("Choose the settings and press **Compute sensitivity maps**.")
    st.stop()

# ----------------------------------------------------------------------------- results
results: list[P.LocalResult] = run["results"]
batch = P.LocalBatchResult(tuple(results), run["exact"])
r0 = results[0]
labels, n_c = list(r0.labels), r0.maps.shape[1]
mean, std = batch.mean_std()
st.subheader("Results")
k1, k2, k3, k4 = st.columns(4)
k1.metric("Forward passes", f"{sum(r.n_forward for r in results):,}")
k2.metric("Time", f"{sum(r.seconds for r in results):.2f} s")
k3.metric("Images", f"{len(results)}")
k4.metric("Blocks × channels", f"{r0.maps.shape[0]} × {r0.maps.shape[1]}",
          help=f"maps of {r0.maps.shape[2]}×{r0.maps.shape[3]} pixels")
st.caption("Formula used: " + P.describe(r0.config) + V.engine_text(r0.extra))

ag = batch.agreement()
if ag is not None:
    st.markdown("**Agreement of the gradient estimate with finite differences**"
                + (" (maps averaged over the images)" if len(results) > 1 else ""))
    st.dataframe(V.agreement_table(ag), width="stretch")
    n_fd = sum(r.n_forward for r in run["exact"])
    t_fd = sum(r.seconds for r in run["exact"])
    st.caption(f"Finite differences: {n_fd:,} forward passes in {t_fd:.2f} s; the estimate: "
               f"{sum(r.n_forward for r in results):,} passes in "
               f"{sum(r.seconds for r in results):.2f} s.")

c1, c2, c3, c4 = st.columns(4)
stat_opts = ["mean", "std"] + [f"image {k}" for k in range(len(results))] if len(results) > 1 \
    else ["image 0"]


def _stat_label(s: str) -> str:
    if s in ("mean", "std"):
        return f"{s} over the {len(results)} images"
    return f"{s} ({run['captions'][int(s.split()[1])]})"


stat = c1.selectbox("Show", stat_opts, key="ls_stat", format_func=_stat_label)
chan = c2.selectbox("Channels", ["each"] + list(P.AGGREGATES), key="ls_chan",
                    format_func=lambda s: "each channel" if s == "each" else f"{s} over channels")
st.session_state.setdefault("ls_tile", 1)
tile = int(c3.number_input("Pool into k×k tiles (1 = off)", 1, int(max(spec.input_shape[1:])),
                           key="ls_tile"))
tile_how = c3.selectbox("Tile pooling", ["mean", "max", "sum"], key="ls_tile_how") if tile > 1 else "mean"
shared = c4.radio("Colour scale", ["shared", "per block"], key="ls_scale") == "shared"

maps = mean if stat == "mean" else std if stat == "std" else results[int(stat.split()[1])].maps
names_c = channel_names(n_c)
if chan != "each":
    maps = P.aggregate_channels(maps, chan, dim=1)[:, None]
    names_c = [f"{chan} over channels"]
if tile > 1:
    maps = P.pool_tiles(maps, tile, tile_how)
maps_np = maps.numpy()
exps = [P.order_of_magnitude(m) for m in maps_np]
st.caption("Order of magnitude per block (values are printed as value × 10^n): "
           + ", ".join(f"{lb}: 10^{n}" for lb, n in zip(labels, exps))
           + (f"; shared scale 10^{P.order_of_magnitude(maps_np)}" if shared else ""))
v1, v2, v3 = st.columns([3, 2, 2])
view = v1.radio("View", list(V.VIEWS), format_func=V.VIEWS.get, horizontal=True, key="ls_view",
                help="One block at a time over the anatomy (or alone), or every block × channel "
                     "heatmap at once.")
if view == "grid":
    show_chart(st, V.block_channel_grid(maps_np, labels, names_c, shared=shared,
                                         title="Sensitivity per block × channel"), key="ls_grid")
else:
    q = v2.selectbox("Block", range(len(labels)), index=len(labels) - 1, key="ls_block",
                     format_func=lambda k: labels[k] or f"block {k}")
    alpha = v3.slider("Overlay opacity", 0.0, 1.0, 0.6, 0.05, key="ls_alpha",
                      disabled=view != "over")
    # the anatomy beneath: the image analysed (image 0 for the mean / std over images), at its
    # own resolution for a dataset image
    k_img = int(stat.split()[1]) if stat.startswith("image") else 0
    base, place = np.asarray(run["x01"][k_img], np.float32), None
    if run["image_id"][0] == "index":
        i_data = int(run["image_id"][1][k_img])
        base = np.asarray(data.original(i_data), np.float32)
        place = None if data.placements is None else data.placements[i_data]
    H, W = spec.input_shape[1:]
    block_maps = V.tiles_to_grid(maps_np[q], tile, (H, W))
    from nnsens_core import render
    # shared: one range for every block and channel (the grid's shared scale)
    scale = render.scale_of(maps_np, bool(maps_np.min() < 0)) if shared else (None, None)
    with guard("Drawing the maps"):
        pics, (lo, hi), signed = V.block_pictures(block_maps, base, place, alpha, view == "over",
                                                  *scale)
        cols = st.columns(min(len(pics), 4) + 1)
        cols[0].image(render.to_rgb(base), width="stretch",
                      caption=f"image ({base.shape[2]}×{base.shape[1]} px)"
                              + (" · image 0 of the mean / std" if not stat.startswith("image")
                                 else ""))
        for c, (pic, nm) in enumerate(zip(pics[:4], names_c[:4])):
            cols[c + 1].image(pic, width="stretch", caption=f"{labels[q]} · {nm}")
        if len(pics) > 4:
            st.caption(f"The first 4 of {len(pics)} channels; pick a channel aggregate or the "
                       "full grid for the rest.")
        st.image(render.colorbar(lo, hi, "sensitivity s", signed), width=296)
        st.caption("**Scale:** " + V.scale_text(lo, hi, signed, shared)
                   + (f"; pooled into {tile}×{tile} tiles ({tile_how})" if tile > 1 else "")
                   + ". The full grid shows every block × channel at once.")

summary = batch.to_frame().rename(columns={"std_over_images": "std over images",
                                           "order_of_magnitude": "order of magnitude",
                                           "base_norm_image0": "‖B(x)‖ (image 0)"})
st.dataframe(summary, width="stretch")

# ----------------------------------------------------------------------------- both measures
other = [f for f in P.FORMULAS if f != r0.config.formula][0]
if st.toggle("Compare both measures (per-block mean sensitivity under each formula)", key="ls_both",
             help=f"Runs the same images, blocks and perturbations with {FORMULA_TEXT[other]} too "
                  "(as many forward passes again). On the demo VGG the choice decides whether "
                  "sensitivity decays with depth."):
    other_cfg = dataclasses.replace(r0.config, formula=other)
    xs_run = spec.normalize(torch.as_tensor(np.asarray(run["x01"]), dtype=torch.float32))
    blocks_run = tuple(zip(r0.labels, r0.modules))
    if cost_line(_cost(model, tuple(spec.input_shape), other_cfg, len(results), len(blocks_run),
                       False)):
        cmp = None
        with guard("The comparison of both measures"):
            other_res, _ = compute(model, ctx.key, xs_run.numpy(), blocks_run, other_cfg,
                                   str(ctx.device), False, tuple(spec.input_shape))
            cmp = P.MeasureComparison({r0.config.formula: batch,
                                       other: P.LocalBatchResult(tuple(other_res))})
        if cmp is not None:
            means, absm, decays = cmp.block_means(), cmp.block_means(absolute=True), cmp.decays()
            show_chart(st, V.measure_figure(means, labels, absm), key="ls_both_chart")
            st.dataframe(cmp.to_frame(), width="stretch")
            st.caption(" · ".join(f"{FORMULA_TEXT[f]}: mean s "
                                  + ("**decays** with depth" if decays[f] else
                                     "does **not** decay with depth")
                                  for f in P.FORMULAS)
                       + " (decays = every block's mean below the previous block's).")
            download_json("Download the comparison (JSON)", export_json(cmp, model=spec.name),
                          "local_sensitivity_measures.json", key="dl_ls_both_json")

# ----------------------------------------------------------------------------- export
# the core builds both documents: the JSON is the CLI's summary.json for the same images and settings
if run["image_id"][0] == "index":
    context = image_context(data, run["image_id"][1])
else:
    context = {"upload": run["image_id"][1], "sha1": run["image_id"][2]}
doc = export_json(batch, model=spec.name, **context)
arrays = {**batch.arrays(), "images01": np.asarray(run["x01"], dtype=np.float32)}
if "image_indices" in context:
    arrays.update(image_indices=np.asarray(context["image_indices"]),
                  labels=np.asarray(context["labels"]))
d1, d2 = st.columns(2)
with d1:
    download_npz("Download maps (NPZ: blocks × channels × H × W)", arrays, "local_sensitivity.npz",
                 key="dl_ls_npz")
with d2:
    download_json("Download summary (JSON)", doc, "local_sensitivity.json", key="dl_ls_json")
