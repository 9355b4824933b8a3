"""Saliency comparison for clinicians: Grad-CAM family vs AM difference vs occlusion vs local
sensitivity vs meaningful-perturbation masks vs gradient methods, side by side and measured.

The methods offered, their labels and the way they run come from
``nnsens_core.saliency.registry`` (a registered method appears here with its default settings).
widgets -> CamConfig / OcclusionConfig / MaskConfig / GradientConfig / AMConfig / SensitivityConfig ->
nnsens_core.saliency.compare (explain, evaluate_dataset, sanity_check) and
nnsens_core.saliency.metrics -> PIL overlays and plotly. Maps of one image are cached with
``st.cache_data`` (context key + image + class + method + config) and kept in
``st.session_state["saliency"]``; dataset tables and sanity checks are kept there too, so a rerun
never loses work. The AM difference map of the image on screen is taken from the Activation
maximization page (an ``AMHandover`` in ``st.session_state["am_difference"]``) when that page
started from this image and pushed it toward the explained class.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import streamlit as st
import torch

from nnsens_core import budget as B
from nnsens_core import activation_max as A
from nnsens_core.data import ImageData
from nnsens_core.errors import NnsensError
from nnsens_core.local_sensitivity import LocalConfig
from nnsens_core.saliency import compare as C
from nnsens_core.saliency import metrics as mt
from nnsens_core.saliency import registry as R
from nnsens_core.saliency import dataset as DS
from nnsens_core.saliency import trust as TR
from nnsens_core import render
from nnsens_core import report as RP
from nnsens_core.saliency.am_difference import AMHandover
from nnsens_core.saliency.cam import CamConfig, default_target_layer, layer_grids
from nnsens_core._results import export_json
from nnsens_core.saliency.gradients import GradientConfig, config_of
from nnsens_core.saliency.io import read_gt_masks
from nnsens_core.saliency.meaningful_mask import MaskConfig
from nnsens_core.saliency.occlusion import OcclusionConfig
from nnsens_core.saliency.sensitivity import SensitivityConfig
from nnsens_core.zoo import image_blocks
from ui.cache import CACHE_TTL
from ui import saliency_views as V
from ui import state
from ui.trust import model_warnings
from ui.widgets import (Progress, cost_line, download_csv, download_json, download_npz, guard,
                        plain, require_usable_model, within_budget, show_chart)

state.require_router()
st.title("Saliency comparison")
st.caption("Which pixels made the CNN decide? Several explanation methods on the same image, side by "
           "side, and how much they agree with each other and with the ground-truth feature mask "
           "(the phantom's B-lines, consolidation or A-lines, or masks you upload).")

ctx = state.images()
require_usable_model(ctx.model, ctx.key, ctx.device)
model_warnings(ctx)  # flags a model at chance or failing its sanity check
data: ImageData = ctx.data
lm = ctx.model
store = st.session_state.setdefault("saliency", {"maps": {}, "eval": {}, "sanity": {}, "gt": {},
                                                  "last_eval": {}, "last_sanity": {}})
names = list(data.class_names)
H, W = data.shape[1:]
CHANCE_DRAWS = 50  # random-map draws behind every chance level


def _num(v):
    return f"{v:.3f}" if isinstance(v, (float, int, np.floating)) else v


# ----------------------------------------------------------------------------- cached core calls
@st.cache_data(show_spinner=False, max_entries=4, ttl=CACHE_TTL)
def _probabilities(_model, key: str, device: str) -> np.ndarray:
    x = lm.spec.normalize(torch.as_tensor(data.images, dtype=torch.float32))
    return C.predict_proba(_model, x, device).numpy()


@st.cache_data(show_spinner=False, max_entries=8, ttl=CACHE_TTL)
def _layer_table(_model, key: str, input_shape: tuple, device: str) -> tuple[dict, str]:
    grids = layer_grids(_model, input_shape, device=device)
    spatial = {n: s for n, s in grids.items() if len(s) == 3}
    return spatial, default_target_layer(_model, input_shape, device=device)


def _maps(_model, _spec, key: str, index: int, cls: int, method: str, cfg, device: str,
          progress=None) -> tuple[np.ndarray, np.ndarray, dict | None]:
    """One image's map ``(scaled to [0, 1] as compared, raw, approx)``, from the shared cache
    (:func:`V.shared_maps`) or computed (reporting ``progress`` within the method); ``approx``:
    the measured error of an approximate map (e.g. occlusion with τ > 0), else None."""
    ck = (key, index, cls, method, cfg, device)
    m = R.get(method)
    raw = V.shared_maps().get(ck)
    err = (V.shared_maps().info(ck) or {}).get("approx")
    if raw is None:
        x = _spec.normalize(torch.as_tensor(data.images[index:index + 1], dtype=torch.float32))
        details: dict = {}
        with within_budget(B.saliency_method(_model, _spec.input_shape, method, cfg, 1)):
            raw = m(_model, x, [cls], cfg, spec=_spec, device=device, progress=progress,
                    details=details)[0]
            raw = raw.detach().cpu().numpy()
        err = details.get("approx")
        V.shared_maps().put(ck, raw, {"approx": err} if err else None)
    scaled = C.normalize_maps(torch.as_tensor(raw)[None], clip_negative=m.signed)[0].numpy()
    return scaled, raw, err


def am_page_map(index: int, cls: int) -> tuple[np.ndarray, str] | None:
    """The Activation maximization page's |x_AM - x_0| for this image and class, if it ran on them.

    It matches when that run started from dataset image ``index`` of the same data & model and
    pushed it toward class ``cls``; the map is scaled to [0, 1] like every map of this page.
    """
    run = st.session_state.get("am_difference")
    if not st.session_state.get("sal_am_reuse", True) or not isinstance(run, AMHandover):
        return None
    m = run.map_for(ctx.key, index, cls)
    return None if m is None else (m, run.summary())


def maps_for(index: int, cls: int, methods: list[str], cfgs: dict) -> tuple[dict, dict]:
    """Maps of one image for each method ``({method: [0, 1] map as compared}, {method: raw
    map})``: from the session store, else the cache, else computed.

    The AM difference map comes from the Activation maximization page when that page ran on this
    image and class (and the user did not opt out), so the two pages show the same map.
    """
    out, raw, order = {}, {}, list(methods)
    reused = am_page_map(index, cls) if "am" in methods else None
    if reused is not None:
        out["am"] = raw["am"] = reused[0]
        st.session_state["sal_am_from_page"] = (index, cls, reused[1])
        methods = [m for m in methods if m != "am"]
    else:
        st.session_state["sal_am_from_page"] = None
    todo = [m for m in methods if (ctx.key, index, cls, m, cfgs[m]) not in store["maps"]]
    here = (ctx.key, index, cls, tuple(methods), tuple(cfgs[m] for m in methods))
    if todo and st.session_state.get("sal_paused") == here:
        done_n = len(methods) - len(todo)
        st.info(f"Cancelled after {done_n} of {len(methods)} methods; the finished maps are shown.")
        if st.button("Compute the remaining methods", key="sal_resume"):
            st.session_state["sal_paused"] = None
        else:
            todo, methods = [], [m for m in methods if m not in todo]
    if todo and not cost_line(B.compare(lm, lm.spec.input_shape, todo, cfgs, 1)):
        todo, methods = [], [m for m in methods if m not in todo]
    # a click during a run makes Streamlit stop it at the bar's next update and rerun the page;
    # this rerun then sees the click, keeps the finished maps and computes no more
    cancel = st.button("Cancel", key="sal_cancel",
                       help="Stop the maps being computed at the next progress step; the maps "
                            "already computed are kept.")
    if todo and cancel:
        st.session_state["sal_paused"] = here
        done_n = len(methods) - len(todo)
        st.info(f"Cancelled after {done_n} of {len(methods)} methods; the finished maps are shown.")
        todo, methods = [], [m for m in methods if m not in todo]
    bar = None
    if todo:
        pb = Progress("Computing maps", len(todo))
        bar = V.MethodsProgress(lambda f, t: pb.bar.progress(f, text=t), [V.label(m) for m in todo],
                                [V.unit(m) for m in todo], pb.done)
    for m in methods:
        sk = (ctx.key, index, cls, m, cfgs[m])
        if sk not in store["maps"]:
            k = todo.index(m)
            with guard(f"{V.label(m)}"):
                scaled, raw_m, err = _maps(lm.module, lm.spec, ctx.key, index, cls, m, cfgs[m],
                                           str(ctx.device), progress=bar.method(k))
                store["maps"][sk] = (scaled, raw_m)
                if err:  # approximate: its caption says by how much
                    store.setdefault("approx", {})[sk] = err
            bar.finished(k)
        if sk in store["maps"]:
            out[m], raw[m] = store["maps"][sk]
    if bar is not None:
        bar.done()
    return {m: out[m] for m in order if m in out}, {m: raw[m] for m in order if m in raw}


probs = None
with guard("Predicting the dataset"):
    p_all = _probabilities(lm.module, ctx.key, str(ctx.device))
    if p_all.ndim != 2 or p_all.shape != (len(data), len(names)):
        raise NnsensError(f"the model gives probabilities of shape {p_all.shape} for {len(data)} "
                          f"images of {len(names)} classes; pick a CNN with one output per class")
    if not np.isfinite(p_all).all():
        bad = int(np.flatnonzero(~np.isfinite(p_all).all(axis=1))[0])
        raise NnsensError(f"the model's outputs are NaN or infinite (first on image #{bad}); "
                          "retrain it or pick another CNN in the sidebar")
    probs = p_all
if probs is None:
    st.stop()
preds = probs.argmax(1)
labels = np.asarray(data.labels)
layers, default_layer = {}, None
with guard("Listing the convolutional layers"):
    layers, default_layer = _layer_table(lm.module, ctx.key, tuple(data.shape), str(ctx.device))
if not layers:
    st.error("This model has no convolutional layer producing a feature map; the saliency methods "
             "need a CNN. Pick another CNN in the sidebar.")
    st.stop()

# ----------------------------------------------------------------------------- settings
available = list(R.names())
def _paper_preset() -> None:
    """The AM vs Grad-CAM figures' settings (on_click: before the widgets are drawn)."""
    st.session_state["sal_methods"] = [m for m in ("gradcam", "am") if m in available]
    st.session_state["sal_am_rule"] = "tv"
    st.session_state["sal_am_preset"] = "paper"


with st.expander("Methods and settings", expanded=True):
    st.button("Paper settings (AM vs Grad-CAM)", key="sal_preset_paper", on_click=_paper_preset,
              help="The paper's AM vs Grad-CAM figures: Grad-CAM and the AM difference map, AM with "
                   "the paper's update rule (" + A.update_rule_text(A.preset("paper")) + ")")
    methods = st.multiselect("Methods", available, default=[m for m in ("gradcam", "layercam", "occlusion",
                                                                       "smoothgrad") if m in available],
                             format_func=V.label, key="sal_methods",
                             help="  \n".join(f"**{m.label}**: {m.description}" for m in R.methods()))
    c1, c2, c3 = st.columns([2, 2, 1])
    layer_names = list(layers)
    target_layer = c1.selectbox(
        "Target layer (Grad-CAM family)", layer_names,
        index=layer_names.index(default_layer) if default_layer in layer_names else len(layer_names) - 1,
        format_func=lambda n: f"{n}  ({'×'.join(map(str, layers[n]))})", key=f"sal_layer|{ctx.key}",
        help="Convolutional layers and blocks only. Default: the deepest one whose grid is at least 8×8 "
             "(finer grids localize better, deeper ones are more class-specific).")
    target_mode = c2.radio("Class to explain", ["predicted", "true", "chosen"], horizontal=True,
                           key="sal_target")
    chosen = c3.selectbox("Chosen class", range(len(names)), format_func=lambda k: names[k],
                          key=f"sal_class|{ctx.key}", disabled=target_mode != "chosen")
    v1, v2, v3 = st.columns([2, 2, 2])
    view = v1.radio("Show maps as", ["wash", "contours"], horizontal=True, key="sal_view",
                    format_func={"wash": "Colour wash", "contours": "Contours (top 5/10/20 %)"}.get,
                    help="Contours outline each map's top 5 % (white), 10 % (amber) and 20 % (cyan) "
                         "of pixels and leave the image itself visible.")
    scale_mode = v2.radio("Colour scale", ["raw", "scaled"], horizontal=True, key="sal_scale",
                          format_func={"raw": "raw values", "scaled": "[0, 1] as compared"}.get,
                          help="raw: each method's own values (signed methods diverging around 0: "
                               "blue < 0 < red); [0, 1]: the min-max scaled maps every agreement "
                               "number below uses (signed maps clipped at 0 first).")
    alpha = v3.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key="sal_alpha")

    t_occ, t_mask, t_grad, t_am, t_sens, t_score = st.tabs(
        ["Occlusion", "Perturbation mask", "Gradients", "AM difference", "Local sensitivity", "Score-CAM"])
    with t_occ:
        o1, o2, o3, o4, o5 = st.columns(5)
        occ_default = OcclusionConfig().sized((H, W))  # 1/8 and 1/16 of the shorter side
        occ_window = o1.number_input("Window (px)", 1, min(H, W), occ_default.window, key="sal_occ_window",
                                     help="Default: 1/8 of the image's shorter side.")
        occ_stride = o2.number_input("Stride (px)", 1, min(H, W), occ_default.stride, key="sal_occ_stride",
                                     help="Default: 1/16 of the image's shorter side.")
        occ_ref = o3.selectbox("Reference", ["constant", "blur"], key="sal_occ_ref")
        occ_const = o4.slider("Constant grey", 0.0, 1.0, 0.0, 0.05, key="sal_occ_const",
                              disabled=occ_ref != "constant")
        occ_score = o5.selectbox("Score", ["prob", "logit"], key="sal_occ_score",
                                 help="The drop of the class probability or of its logit (the logit "
                                      "does not saturate when the model is very confident).")
        o6, o7, _ = st.columns([1, 1, 3])
        occ_tau = o6.number_input("Approximation τ", 0.0, 0.95, 0.0, 0.05, key="sal_occ_tau",
                                  help="0 = exact (default). Above 0 each layer of the model's "
                                       "leading conv chain recomputes only the part of an occluded "
                                       "patch's change above τ × its largest change: faster, less "
                                       "exact; the maps then say their measured error.")
        occ_drill = o7.number_input("Drill-down: top share", 0.05, 1.0, 1.0, 0.05, key="sal_occ_drill",
                                    help="1 = off (default). Below 1: the positions at twice the "
                                         "stride first, then the stride only at this share of "
                                         "positions where the coarse drops are largest; the maps "
                                         "then say their measured error.")
    with t_mask:
        st.caption("m* = argmin f(X'_m) + λ1·‖1−m‖_β1 + λ2·‖∇m‖_β2, X'_m = m·X + (1−m)·reference; the "
                   "mask is optimised at low resolution and upsampled.")
        m1, m2, m3, m4 = st.columns(4)
        lam1 = m1.number_input("λ1 (area)", 0.0, 10.0, MaskConfig().lambda1, 0.01, format="%.3f",
                               key="sal_mask_l1")
        lam2 = m2.number_input("λ2 (smoothness)", 0.0, 10.0, MaskConfig().lambda2, 0.05, format="%.3f",
                               key="sal_mask_l2")
        beta1 = m3.number_input("β1", 0.1, 10.0, MaskConfig().beta1, 0.5, key="sal_mask_b1")
        beta2 = m4.number_input("β2", 0.1, 10.0, MaskConfig().beta2, 0.5, key="sal_mask_b2")
        m5, m6, m7, m8 = st.columns(4)
        mask_steps = m5.number_input("Steps", 1, 2000, R.default_config("mask", (H, W), lm).steps, 10,
                                     key="sal_mask_steps",
                                     help=f"Default: {MaskConfig().steps} up to 64×64 images, fewer on "
                                          "larger images and heavier models (each step is a forward "
                                          "and backward pass).")
        mask_res = m6.number_input("Mask resolution", 1, min(H, W), min(MaskConfig().resolution, H, W),
                                   key="sal_mask_res")
        mask_ref = m7.selectbox("Reference", ["blur", "constant"], key="sal_mask_ref")
        mask_sigma = m8.number_input("Blur σ (px)", 0.0, 50.0, MaskConfig().blur_sigma, 0.5,
                                     key="sal_mask_sigma", disabled=mask_ref != "blur")
    with t_grad:
        st.caption("Gradient: max over channels of |∂f/∂x|. Gradient × input: Σ_c (x − r)·∂f/∂x. "
                   "Integrated Gradients: (x − r) times the mean gradient on the straight path from "
                   "the reference r. SmoothGrad × input: gradient × input averaged over noisy copies "
                   "x + N(0, σ²). f is the class logit (or probability); r is black by default.")
        gd = GradientConfig()
        g1, g2, g3 = st.columns(3)
        g_samples = g1.number_input("SmoothGrad samples", 1, 512, gd.samples, key="sal_grad_samples")
        g_sigma = g2.number_input("SmoothGrad σ (share of the input range)", 0.01, 1.0, gd.sigma, 0.01,
                                  key="sal_grad_sigma")
        g_steps = g3.number_input("Integrated Gradients steps", 1, 1024, gd.steps, key="sal_grad_steps")
        g4, g5, g6 = st.columns(3)
        g_score = g4.selectbox("Score f", ["logit", "prob"], key="sal_grad_score")
        g_ref = g5.selectbox("Reference r", ["constant", "blur"], key="sal_grad_ref",
                             format_func={"constant": "black", "blur": "the image blurred"}.get)
        g_blur = g6.number_input("Blur σ (px)", 0.0, 50.0, gd.blur_sigma, 0.5, key="sal_grad_blur",
                                 disabled=g_ref != "blur")
    with t_am:
        a1, a2 = st.columns(2)
        am_steps = a1.number_input("AM steps", 1, 2000, min(100, R.default_config("am", (H, W), lm).steps), 10,
                                   key="sal_am_steps")
        am_rule = a2.selectbox("Regulariser", ["tv", "blur", "none"], key="sal_am_rule")
        am_preset = st.radio("AM update rule", ["nnsens", "paper"], horizontal=True, key="sal_am_preset",
                             help="paper: ε1 = ε2 = 0.1 and the raw gradient (eqs. 1–5); nnsens: the "
                                  "gradient normalised by its mean |value|, ε1 = 0.05, ε2 = 0.02")
        st.caption("Update rule: " + A.update_rule_text(A.preset(am_preset, rule=am_rule)))
        st.caption("|x_AM − x|: activation maximization of the explained class started from the "
                   "image itself (channel mean).")
        st.checkbox("Use the Activation maximization page's run when it started from the image on "
                    "screen and pushed it toward the explained class", value=True, key="sal_am_reuse",
                    help="Otherwise (and for every other image, and in the dataset table) the map is "
                         "computed here with the steps and regulariser above.")
    with t_sens:
        blocks = {}
        with guard("Listing the blocks"):
            blocks = image_blocks(lm.module)
        block_opts = list(dict.fromkeys(list(blocks.values()) + layer_names))
        block = st.selectbox("Block whose output is measured", block_opts,
                             index=len(blocks) - 1 if blocks else len(block_opts) - 1,
                             key=f"sal_sens_block|{ctx.key}")
        probes = st.number_input("Gradient probes", 1, 256, 16, key="sal_sens_probes")
    with t_score:
        score_batch = st.number_input("Masked inputs per forward pass", 1, 1024, 64, key="sal_score_batch")

cfgs: dict = {}
with guard("Checking the settings"):
    # per method or per family ("cam", "gradients"); R.config_for fills in the rest with defaults
    all_cfgs = {"cam": CamConfig("gradcam", target_layer, score_batch_size=int(score_batch))}
    all_cfgs["occlusion"] = OcclusionConfig(window=int(occ_window), stride=int(occ_stride),
                                            reference=occ_ref, constant=float(occ_const),
                                            score=occ_score, tau=float(occ_tau),
                                            drill_top=float(occ_drill))
    all_cfgs["mask"] = MaskConfig(lambda1=float(lam1), lambda2=float(lam2), beta1=float(beta1),
                                  beta2=float(beta2), steps=int(mask_steps), resolution=int(mask_res),
                                  reference=mask_ref, blur_sigma=float(mask_sigma))
    grad_cfg = GradientConfig(samples=int(g_samples), sigma=float(g_sigma), steps=int(g_steps),
                              score=g_score, reference=g_ref, blur_sigma=float(g_blur),
                              seed=int(ctx.seed))
    all_cfgs.update({m.name: config_of(m.name, grad_cfg)  # unused fields: defaults
                     for m in R.methods() if m.family == "gradients"})
    all_cfgs["am"] = A.preset(am_preset, steps=int(am_steps), rule=am_rule, seed=int(ctx.seed),
                              preview_every=0)
    all_cfgs["sensitivity"] = SensitivityConfig(
        block=block, local=LocalConfig(method="gradient", n_probes=int(probes), seed=int(ctx.seed)))
    cfgs = {m: R.config_for(m, all_cfgs) for m in methods}
if len(cfgs) != len(methods):
    st.stop()
if not methods:
    st.info("Pick at least one method above.")
    st.stop()


def target_of(i: int) -> int:
    return int(preds[i]) if target_mode == "predicted" else int(labels[i]) if target_mode == "true" \
        else int(chosen)


# ----------------------------------------------------------------------------- ground truth
def gt_masks() -> tuple[np.ndarray | None, str]:
    """(masks (n, H, W) or (1, H, W), source) of the chosen ground truth."""
    up = store["gt"].get(ctx.key)
    src = st.session_state.get("sal_gt_source", "dataset")
    if src == "uploaded" and up is not None:
        return up[0], f"uploaded {up[1]}"
    if data.masks is not None:
        return np.asarray(data.masks, dtype=bool), "dataset"
    return None, "none"


with st.expander("Ground-truth masks", expanded=data.masks is None):
    st.radio("Use", ["dataset", "uploaded"], horizontal=True, key="sal_gt_source",
             format_func=lambda s: {"dataset": "the dataset's masks" + ("" if data.masks is not None
                                                                        else " (this dataset has none)"),
                                    "uploaded": "an uploaded mask file"}[s])
    upl = st.file_uploader("Masks: .npz (array 'masks', N×H×W or H×W), .npy, or a black-and-white .png "
                           f"({H}×{W}; one mask = the image on screen)", type=["npz", "npy", "png"],
                           key=f"sal_gt_upload|{ctx.key}")
    if upl is not None:
        with guard("Reading the masks"):
            arr = read_gt_masks(upl.getvalue(), upl.name, len(data), (H, W))
            store["gt"][ctx.key] = (arr, upl.name)
            st.success(f"{plain(upl.name)}: {len(arr)} mask(s) of {H}×{W}.")
    masks, gt_source = gt_masks()
    st.caption(f"Ground truth in use: {plain(gt_source)}.")


def mask_of(i: int) -> np.ndarray | None:
    if masks is None:
        return None
    return masks[0] if len(masks) == 1 else masks[i]


def roi_of(i: int) -> np.ndarray | None:
    """Image ``i``'s region of interest at the model input (None: the whole image counts)."""
    return None if data.roi is None else np.asarray(data.roi[i], bool)


def roi_original(i: int) -> np.ndarray | None:
    """Image ``i``'s region of interest on its original (None: no ROI)."""
    if data.roi is None:
        return None
    if ctx.roi_originals is not None:
        return np.asarray(ctx.roi_originals[i], bool)
    return V.on_original(data.roi[i].astype(np.float32), placement_of(i)) > 0.5


def placement_of(i: int):
    return None if data.placements is None else data.placements[i]


tab_browse, tab_agree, tab_view, tab_data, tab_sanity = st.tabs(
    ["Browse", "Agreement", "Dataset view", "Dataset table", "Sanity check"])

# ----------------------------------------------------------------------------- browse
with tab_browse:
    f1, f2 = st.columns([3, 2])
    cls_filter = f1.multiselect("Classes", range(len(names)), default=list(range(len(names))),
                                format_func=lambda k: names[k], key=f"sal_filter|{ctx.key}")
    correctness = f2.radio("Predictions", ["all", "correct", "incorrect"], horizontal=True,
                           key="sal_correct")
    shown = V.filtered_indices(labels, preds, cls_filter, correctness)
    if len(shown) == 0:
        st.warning("No image matches the filter; widen it.")
        current = None
    else:
        if not 1 <= st.session_state.get("sal_pos", 1) <= len(shown):
            st.session_state["sal_pos"] = 1

        def _step(d: int) -> None:
            st.session_state["sal_pos"] = (st.session_state.get("sal_pos", 1) - 1 + d) % len(shown) + 1

        n1, n2, n3 = st.columns([1, 2, 1])
        n1.button("◀ Previous", on_click=_step, args=(-1,), key="sal_prev", width="stretch")
        n2.number_input(f"Image (1–{len(shown)} of the filtered images)", 1, len(shown), key="sal_pos")
        n3.button("Next ▶", on_click=_step, args=(1,), key="sal_next", width="stretch")
        current = int(shown[st.session_state["sal_pos"] - 1])
    st.session_state["sal_current"] = current

    if current is not None:
        cls = target_of(current)
        original = np.asarray(data.original(current), np.float32)
        place = placement_of(current)
        mask = mask_of(current)
        roi_here, roi_orig = roi_of(current), roi_original(current)
        show_gt = st.checkbox("Outline the ground truth on the maps", value=mask is not None,
                              key="sal_outline", disabled=mask is None)
        i1, i2 = st.columns([1, 2])
        with i1:
            st.image(render.to_rgb(original), width="stretch",
                     caption=f"#{current} · true: {plain(names[labels[current]])} · "
                             f"{original.shape[2]}×{original.shape[1]} px (own resolution)")
        with i2:
            ok = labels[current] == preds[current]
            st.markdown(f"**Prediction: {plain(names[preds[current]])}** "
                        f"({probs[current, preds[current]]:.1%}) · "
                        f"true label: **{plain(names[labels[current]])}** · "
                        f"{'correct' if ok else '**incorrect**'} · explaining **{plain(names[cls])}**")
            show_chart(st, V.prob_figure(probs[current], names, int(labels[current]), int(preds[current])),
                            key="sal_probs")
        maps, raw_maps = maps_for(current, cls, methods, cfgs)
        st.session_state["sal_current_maps"] = (current, cls, maps)
        approx_here = {m: store.get("approx", {}).get((ctx.key, current, cls, m, cfgs[m]))
                       for m in maps if m in cfgs}
        st.session_state["sal_current_approx"] = {m: r for m, r in approx_here.items() if r}
        from_page = st.session_state.get("sal_am_from_page")
        if from_page is not None:
            st.caption(f"AM difference: the Activation maximization page's run on this image "
                       f"({from_page[2]}).")
        if roi_orig is not None:
            st.caption(V.roi_caption(float(roi_orig.mean())))
        gt_orig = None
        if show_gt and mask is not None:
            gt_orig = V.on_original(mask.astype(np.float32), place) > 0.5
        drawn = {}
        entries = []
        for m, a in maps.items():
            meth = R.get(m) if m in R.names() else None
            signed = bool(meth.signed) if meth is not None and scale_mode == "raw" else False
            src = raw_maps[m] if scale_mode == "raw" else a
            drawn[m] = V.on_original(src, place, roi_orig)
            entries.append(RP.MapEntry(m, V.label(m), drawn[m], signed,
                                       meth.description if meth is not None else ""))
        st.session_state["sal_shown_maps"] = drawn  # what is drawn: NaN = transparent
        if view == "contours":
            st.caption("Outlines of each map's top 5 % (white), 10 % (amber) and 20 % (cyan) of "
                       "pixels" + (" inside the region of interest" if roi_orig is not None else "")
                       + ".")
        per_row = 3
        for start in range(0, len(entries), per_row - 1):
            cols = st.columns(per_row)
            cols[0].image(render.to_rgb(original), caption="original", width="stretch")
            for c, e in zip(cols[1:], entries[start:start + per_row - 1]):
                with guard(f"Drawing {e.label}"):
                    pics = e.pictures(original, alpha)
                    pic = pics["wash" if view == "wash" else "contours"]
                    if gt_orig is not None:
                        pic = V.outline(pic, gt_orig)
                    c.image(pic, caption=e.label, width="stretch")
                    c.image(pics["colorbar"], width="stretch")
                    how = (e.scale_text() if scale_mode == "raw" else
                           "0 = the map's lowest value on this image, 1 = its highest (min-max "
                           "scaled per image" + (", negative values clipped at 0" if
                                                R.get(e.method).signed else "")
                           + "; not comparable across images), inferno: low = dark, high = bright")
                    c.caption(f"**What this shows:** {e.description or 'n/a'}. "
                              f"**Scale:** {how}.")
                    if approx_here.get(e.method):
                        c.caption("⚠ " + V.approx_caption(e.method, approx_here[e.method]))
        if mask is not None and show_gt:
            st.caption("Green outline: the ground-truth mask.")
        if mask is not None and maps:
            st.markdown("**Against the ground truth** (this image)")
            with guard("Scoring the maps"):
                st.dataframe(V.localization_table(maps, mask[None], None, 0.0, chance=CHANCE_DRAWS,
                                                  seed=int(ctx.seed),
                                                  within=None if roi_here is None else roi_here[None])
                             .style.format(_num), key="sal_gt_table")
                st.caption(V.CHANCE_NOTE.format(n=CHANCE_DRAWS))
            st.caption("GT IoU: the map's top-k pixels (k = mask area) vs the mask; pointing game: 1 when "
                       "the map's maximum lies in the mask; relevance mass: share of the map inside it.")

# ----------------------------------------------------------------------------- agreement
with tab_agree:
    cur = st.session_state.get("sal_current_maps")
    p = st.slider("p: top-p% of pixels compared", 1, 100, 10, 1, key="sal_p", format="%d%%") / 100
    if not cur or len(cur[2]) < 1:
        st.info("Pick an image on the Browse tab first.")
    else:
        i_cur, cls_cur, maps_cur = cur
        roi_cur = roi_of(i_cur)
        within_cur = None if roi_cur is None else roi_cur[None]
        st.markdown(f"**Image #{i_cur}**, explaining **{plain(names[cls_cur])}**: agreement between every pair "
                    "of maps")
        if roi_cur is not None:
            st.caption(V.roi_caption(float(roi_original(i_cur).mean())))
        for m, err in st.session_state.get("sal_current_approx", {}).items():
            if m in maps_cur:
                st.caption("⚠ " + V.approx_caption(m, err))
        if len(maps_cur) < 2:
            st.info("Select at least two methods to compare them.")
        else:
            with guard("Measuring agreement"):
                arrs = {m: a[None] for m, a in maps_cur.items()}
                table = V.pairwise_table(arrs, p, chance=CHANCE_DRAWS, seed=int(ctx.seed),
                                         within=within_cur)
                st.dataframe(table, hide_index=True, key="sal_pair_table")
                st.caption(V.CHANCE_NOTE.format(n=CHANCE_DRAWS))
                which = st.radio("Matrix", list(V.SIM_LABELS), format_func=V.SIM_LABELS.get,
                                 horizontal=True, key="sal_matrix")
                show_chart(st, V.agreement_matrix(arrs, p, which, within=within_cur),
                           key="sal_matrix_fig")
                download_csv("Pairwise agreement (CSV)", table.set_index(["method A", "method B"]),
                             f"agreement_image{i_cur}.csv", key="sal_pair_csv")
        m_cur = mask_of(i_cur)
        if m_cur is not None:
            tol = st.number_input("Pointing-game tolerance (px)", 0.0, 32.0, 0.0, 1.0, key="sal_tol")
            use_p = st.checkbox("GT IoU on the top-p% region (instead of top-k, k = mask area)",
                                key="sal_gt_use_p")
            with guard("Scoring against the ground truth"):
                st.dataframe(V.localization_table({m: a[None] for m, a in maps_cur.items()}, m_cur[None],
                                                  p if use_p else None, tol, chance=CHANCE_DRAWS,
                                                  seed=int(ctx.seed), within=within_cur)
                             .style.format(_num),
                             key="sal_gt_table2")
        else:
            st.caption("No ground-truth mask for this image (upload one in 'Ground-truth masks').")

# ----------------------------------------------------------------------------- dataset view
@st.cache_data(show_spinner=False, max_entries=16, ttl=CACHE_TTL)
def _confusion(_model, key: str, device: str):
    return DS.confusion(_model, data, device=device)


with tab_view:
    st.caption("No masks needed: how the model does on every image of the dataset, what it looks at "
               "on average per class, and the images it gets wrong.")
    conf = None
    with guard("Predicting the dataset"):
        conf = _confusion(lm, ctx.key, str(ctx.device))
    if conf is not None:
        verdict = TR.accuracy_verdict(conf.labels, conf.preds, len(names))
        v1, v2, v3 = st.columns(3)
        v1.metric("Accuracy", f"{conf.accuracy:.1%}")
        v2.metric("Balanced accuracy", f"{conf.balanced_accuracy:.1%}")
        v3.metric("Misclassified", f"{len(conf.wrong)} of {len(conf.labels)}")
        st.caption(("⚠ at chance: " if verdict.at_chance else "") + verdict.text() + ".")
        show_chart(st, V.confusion_figure(conf.matrix, names), key="sal_view_confusion")
        download_csv("Confusion matrix (CSV)", conf.to_frame(), "confusion_matrix.csv",
                     key="sal_view_conf_csv")
        st.markdown("**Per-class mean maps** (mean over the correctly classified images of each class, "
                    "each map scaled to [0, 1], at model resolution)")
        cm1, cm2 = st.columns([2, 1])
        cm_method = cm1.selectbox("Method", methods, format_func=V.label, key="sal_view_method")
        n_ok = int((conf.labels == conf.preds).sum())
        cm_key = (ctx.key, cm_method, cfgs.get(cm_method))
        cm_cost = B.compare(lm, lm.spec.input_shape, [cm_method], cfgs, max(n_ok, 1))
        cm_ok = cost_line(cm_cost)
        if cm2.button("Compute the class means", key="sal_view_run", disabled=not cm_ok or n_ok == 0):
            if cm_key not in store.setdefault("class_means", {}):
                with guard("The class mean maps"), within_budget(cm_cost):
                    bar = Progress(f"{V.label(cm_method)} on {n_ok} images")
                    cm_details: dict = {}
                    store["class_means"][cm_key] = DS.class_mean_maps(
                        lm.module, data, cm_method, cfgs[cm_method], spec=lm.spec, preds=conf.preds,
                        device=ctx.device, progress=bar, details=cm_details)
                    store.setdefault("class_means_approx", {})[cm_key] = cm_details.get("approx")
                    bar.done()
        means = store.get("class_means", {}).get(cm_key)
        if means is not None:
            cols = st.columns(max(len(names), 1))
            for c, name in enumerate(names):
                if c not in means:
                    cols[c].caption(f"{plain(name)}: no correctly classified image")
                    continue
                mean, count = means[c]
                if data.roi is not None:  # transparent where no image of the class has its ROI
                    inside = np.asarray(data.roi)[np.asarray(data.labels) == c].any(0)
                    mean = np.where(inside, mean, np.float32(np.nan))
                cols[c].image(render.colorize(mean, vmin=0.0, vmax=1.0),  # RGBA: NaN transparent
                              caption=f"{plain(name)} (n = {count})", width="stretch")
            st.image(render.colorbar(0.0, 1.0, "mean of per-image [0, 1] maps"), width=256)
            if data.roi is not None:
                st.caption("Transparent: outside the region of interest of every image of the class.")
            cm_err = store.get("class_means_approx", {}).get(cm_key)
            if cm_err:
                st.caption("⚠ " + V.approx_caption(cm_method, cm_err))
        st.markdown("**Images the model gets wrong**")
        wrong = conf.wrong
        if len(wrong) == 0:
            st.caption("None: every image is classified correctly.")
        else:
            shown_w = wrong[:24]
            cols = st.columns(6)
            for k, i in enumerate(shown_w):
                cols[k % 6].image(render.to_rgb(np.asarray(data.original(i), np.float32)),
                                  width="stretch",
                                  caption=f"#{i} · true: {plain(names[conf.labels[i]])} · "
                                          f"predicted: {plain(names[conf.preds[i]])}")
            if len(wrong) > len(shown_w):
                st.caption(f"The first {len(shown_w)} of {len(wrong)} are shown; pick 'incorrect' "
                           "on the Browse tab to walk through all of them with their maps.")
    st.markdown("**Dataset report (PDF / HTML)**")
    rep_eval_key = store["last_eval"].get(ctx.key)
    rep_ev = store["eval"].get(rep_eval_key) if rep_eval_key is not None else None
    if rep_ev is None:
        st.caption("The dataset report holds the comparison table of an evaluation (and the "
                   "sanity check, when run): evaluate a subset on the Dataset table tab first.")
    else:
        san_last = store["last_sanity"].get(ctx.key)
        san_res = store["sanity"].get(san_last) if san_last is not None else None
        rkey = str((rep_eval_key, san_last))
        files = store.setdefault("reports", {}).get(rkey)
        if files is None:
            with guard("Building the dataset report"):
                drep = RP.DatasetReport.from_evaluation(rep_ev, lm, data.name, sanity=san_res)
                files = store["reports"][rkey] = (drep.to_pdf(), drep.to_html())
        if files is not None:
            st.caption(f"{len(rep_ev.indices)} images × {len(rep_ev.config.methods)} methods"
                       + (", with the sanity check" if san_res is not None else
                          "; the sanity check is not run yet (Sanity check tab)")
                       + (f"; metrics inside the region of interest ({rep_ev.roi_share:.0%} of "
                          "the model input)" if rep_ev.roi_share is not None else "") + ".")
            r1, r2 = st.columns(2)
            r1.download_button("Dataset report (PDF)", files[0], "dataset_report.pdf",
                               "application/pdf", key="sal_ds_report_pdf", on_click="ignore")
            r2.download_button("Dataset report (HTML)", files[1], "dataset_report.html",
                               "text/html", key="sal_ds_report_html", on_click="ignore")

# ----------------------------------------------------------------------------- dataset table
with tab_data:
    st.caption("Every selected method explains each image of the subset; the table shows mean ± std "
               "per method and class (and over all classes) of GT IoU, pointing game and relevance mass.")
    d1, d2, d3, d4 = st.columns(4)
    ds_classes = d1.multiselect("Classes", range(len(names)), default=list(range(len(names))),
                                format_func=lambda k: names[k], key=f"sal_ds_classes|{ctx.key}")
    ds_correct = d2.radio("Predictions", ["all", "correct", "incorrect"], key="sal_ds_correct")
    ds_per = d3.number_input("Images per class (first ones)", 1, len(data), min(10, len(data)),
                             key="sal_ds_per")
    ds_target = d4.radio("Explain", ["label", "pred"], key="sal_ds_target",
                         format_func={"label": "true class", "pred": "predicted class"}.get)
    e1, e2 = st.columns(2)
    ds_tol = e1.number_input("Pointing-game tolerance (px)", 0.0, 32.0, 0.0, 1.0, key="sal_ds_tol")
    ds_use_p = e2.checkbox("GT IoU on the top-p% region (p from the Agreement tab)", key="sal_ds_use_p")
    subset = V.per_class_subset(V.filtered_indices(labels, preds, ds_classes, ds_correct), labels,
                                int(ds_per))
    ds_p = float(st.session_state.get("sal_p", 10)) / 100 if ds_use_p else None
    st.caption(f"{len(subset)} images × {len(methods)} methods on {ctx.device}.")
    eval_key = (ctx.key, gt_source, tuple(subset.tolist()), ds_target, ds_p, float(ds_tol),
                tuple((m, cfgs[m]) for m in methods))
    eval_cost = B.compare(lm, lm.spec.input_shape, methods, cfgs, max(len(subset), 1))
    eval_ok = cost_line(eval_cost)
    if st.button("Evaluate the subset", type="primary", key="sal_eval_run", disabled=not eval_ok):
        if masks is None or len(masks) != len(data):
            st.error("The dataset table needs one ground-truth mask per image: use the dataset's masks "
                     f"or upload an .npz with {len(data)} masks of {H}×{W}.")
        elif len(subset) == 0:
            st.error("No image in the subset; widen the classes or the prediction filter.")
        elif eval_key not in store["eval"]:
            with guard("The dataset evaluation"), within_budget(eval_cost):
                bar = Progress(f"Explaining {len(subset)} images with {len(methods)} methods")
                gt_data = dataclasses.replace(data, masks=masks)
                store["eval"][eval_key] = C.evaluate_dataset(
                    lm.module, lm.spec, gt_data, methods, cfgs, indices=subset, target=ds_target,
                    p=ds_p, tolerance=float(ds_tol), batch_size=16, device=ctx.device, progress=bar,
                    roi=data.roi)
                bar.done()
        if eval_key in store["eval"]:
            store["last_eval"][ctx.key] = eval_key
    ev = state.last_result(store["eval"], store["last_eval"], ctx.key, eval_key, "Evaluate the subset")
    if ev is not None:
        with guard("Summarising"):
            summary = ev.summary()
            if ev.roi_share is not None:
                st.caption(V.roi_caption(ev.roi_share).replace("of the image", "of the model input"))
            st.dataframe(V.summary_display(summary), key="sal_summary")
            st.caption(f"{len(ev.indices)} images; accuracy on them "
                       f"{(ev.probs.argmax(1).numpy() == labels[ev.indices]).mean():.1%}. "
                       "n counts the images with a non-empty mask.")
            for m, err in ev.approx.items():
                st.caption("⚠ " + V.approx_caption(m, err))
            c_a, c_b, c_c, c_d = st.columns(4)
            with c_a:
                download_csv("Summary (CSV)", summary, "saliency_summary.csv", key="sal_sum_csv")
            with c_b:
                download_csv("Per-image records (CSV)", ev.records.set_index("index"),
                             "saliency_records.csv", key="sal_rec_csv")
            with c_c:
                download_npz("Maps (.npz)", ev.arrays(), "saliency_maps.npz", key="sal_maps_npz")
            with c_d:  # the CLI's metrics.json for the same images and settings
                download_json("Metrics (JSON)", export_json(
                    ev, model=lm.spec.name, data=data.name, device=str(ctx.device),
                    class_names=list(data.class_names)), "saliency_metrics.json", key="sal_metrics_json")
            if len(ev.maps) > 1:
                pp = float(st.session_state.get("sal_p", 10)) / 100
                st.markdown(f"**Agreement between methods over the subset** (mean over images, p = {pp:.0%})")
                st.dataframe(V.pairwise_table({m: v.numpy() for m, v in ev.maps.items()}, pp,
                                              chance=CHANCE_DRAWS, seed=int(ctx.seed),
                                              within=None if data.roi is None
                                              else np.asarray(data.roi[ev.indices], bool)),
                             hide_index=True, key="sal_ds_pairs")
                st.caption(V.CHANCE_NOTE.format(n=CHANCE_DRAWS))

# ----------------------------------------------------------------------------- sanity check
with tab_sanity:
    st.caption("Cascading randomization (Adebayo et al. 2018): the model's layers are re-initialised "
               "one by one from the output down (on a copy); a method that explains the *model* shows "
               "similarity to its original maps falling as layers are randomized.")
    all_layers = mt.randomizable_layers(lm.module)[::-1]
    s1, s2, s3 = st.columns(3)
    n_layers = s1.number_input("Layers to randomize (from the top)", 1, len(all_layers),
                               len(all_layers), key=f"sal_san_layers|{ctx.key}")
    n_img = s2.number_input("Images (from the one on screen)", 1, 16, 2, key="sal_san_n")
    metric = s3.selectbox("Similarity", list(V.SIM_LABELS), format_func=V.SIM_LABELS.get,
                          key="sal_san_metric")
    cur_i = st.session_state.get("sal_current")
    base_list = V.filtered_indices(labels, preds, range(len(names)), "all")
    start = int(cur_i) if cur_i is not None else 0
    san_idx = [int(base_list[(start + k) % len(base_list)]) for k in range(int(n_img))]
    san_cls = [target_of(i) for i in san_idx]
    san_key = (ctx.key, tuple(san_idx), tuple(san_cls), int(n_layers), metric, int(ctx.seed),
               tuple((m, cfgs[m]) for m in methods))
    st.caption(f"Images {san_idx}; {int(n_layers) + 1} rounds × {len(methods)} methods.")
    san_cost = B.compare(lm, lm.spec.input_shape, methods, cfgs, len(san_idx), int(n_layers) + 1)
    san_ok = cost_line(san_cost)
    if st.button("Run the sanity check", type="primary", key="sal_san_run", disabled=not san_ok):
        if san_key not in store["sanity"]:
            with guard("The sanity check"), within_budget(san_cost):
                bar = Progress("Randomizing layers", int(n_layers) + 1)
                x = lm.spec.normalize(torch.as_tensor(data.images[san_idx], dtype=torch.float32))
                store["sanity"][san_key] = C.sanity_check(
                    lm.module, lm.spec, x, san_cls, methods, cfgs, layers=all_layers[:int(n_layers)],
                    metric=metric, seed=int(ctx.seed), device=ctx.device, progress=bar,
                    within=None if data.roi is None else np.asarray(data.roi[san_idx], bool))
                bar.done()
        if san_key in store["sanity"]:
            store["last_sanity"][ctx.key] = san_key
    res = state.last_result(store["sanity"], store["last_sanity"], ctx.key, san_key,
                            "Run the sanity check")
    if res is not None:
        show_chart(st, V.sanity_figure(res), key="sal_san_fig")
        if getattr(res.config, "roi_share", None) is not None:
            st.caption(f"Similarities inside the region of interest ({res.config.roi_share:.0%} of "
                       "the model input).")
        table = res.to_frame()
        table.columns = [f"{V.label(c.rsplit('_', 1)[0])} {c.rsplit('_', 1)[1]}" for c in table.columns]
        st.dataframe(table.style.format("{:.3f}"), key="sal_san_table")
        download_csv("Sanity check (CSV)", res.to_frame(), "sanity_check.csv", key="sal_san_csv")
