"""Read a case: one image at its own resolution beside one overlay per explanation method, the
prediction named with the model's classes, how far to trust the maps (sanity-check badge, accuracy
at chance) and a case report (PDF / HTML) to take to a case discussion.

widgets -> method configs -> nnsens_core.report (case_input, case_probabilities, case_map,
model_sanity, case_report; trust.accuracy_verdict) -> nnsens_core.render pictures and plotly bars. Maps are
kept in ``st.session_state["case"]`` per (model, image, class, method, settings), so a rerun never
loses work; the sanity check is cached per model fingerprint with ``st.cache_data``.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import streamlit as st
import torch

from nnsens_core import budget as B
from nnsens_core import render
from nnsens_core import report as RP
from nnsens_core import roi as roi_core
from nnsens_core.errors import NnsensError
from nnsens_core.fingerprint import fingerprint
from nnsens_core.preprocess import Recipe
from nnsens_core.saliency import registry as R
from nnsens_core.saliency.compare import DEFAULT_METHODS
from nnsens_core.saliency.trust import SanityVerdict, accuracy_verdict
from nnsens_core.sequences import load_sequence
from ui import saliency_views as V
from ui import state
from ui.cache import CACHE_TTL
from ui.case_loop import loop_case
from ui.trust import dataset_confusion, model_warnings
from ui.widgets import (
    Progress,
    cost_line,
    guard,
    plain,
    require_usable_model,
    show_chart,
    within_budget,
)

state.require_router()
st.title("Read a case")
st.caption("One image at its own resolution beside each explanation of the model's decision, with "
           "colour bars and a stated scale, how far to trust the maps, and a case report (PDF / "
           "HTML) for a case discussion. Research software, not a medical device.")

ctx = state.images()
require_usable_model(ctx.model, ctx.key, ctx.device)
model_warnings(ctx)  # at chance on this data / a failed sanity check: flagged wherever maps show
data, lm = ctx.data, ctx.model
spec = lm.spec
names = list(spec.class_names) or [f"class {k}" for k in range(len(data.class_names))]
model_id = ctx.key.rsplit("|", 1)[-1]
store = st.session_state.setdefault("case", {"maps": {}, "runs": {}, "last": {}, "sanity": {},
                                             "reports": {}})

st.markdown(f"**Model** {plain(spec.name)}: {plain(Recipe.from_spec(spec).describe())}; classes "
            + ", ".join(f"*{plain(c)}*" for c in names) + ".")


# ----------------------------------------------------------------------------- cached core calls
@st.cache_data(show_spinner=False, max_entries=64, ttl=CACHE_TTL)
def _sanity(_model, _spec, model_key: str, methods: tuple, _cfgs, cfg_key: str, x_np: np.ndarray,
            classes: tuple, device: str, seed: int, _progress=None, roi=None) -> SanityVerdict:
    return RP.model_sanity(_model, _spec, torch.as_tensor(x_np), list(classes), list(methods),
                           _cfgs, device, seed, progress=_progress, within=roi)


preds_all = None
with guard("Predicting the dataset"):
    preds_all = dataset_confusion(ctx).preds  # shared with the trust flags (one prediction pass)
labels = np.asarray(data.labels)

# ----------------------------------------------------------------------------- the case
src = st.radio("Case", ["dataset", "upload"], horizontal=True, key="case_source",
               format_func={"dataset": "An image of the selected dataset",
                            "upload": "Upload one image"}.get)
image = true_label = case_name = image_id = roi_orig = None
if src == "dataset":
    c1, c2 = st.columns([1, 3])
    which = c1.radio("Show", ["all", "misclassified"], key="case_filter", horizontal=True)
    pool = np.arange(len(data))
    if which == "misclassified" and preds_all is not None:
        pool = np.flatnonzero(preds_all != labels)
    if len(pool) == 0:
        st.info("The model gets every image of this dataset right; showing all of them.")
        pool = np.arange(len(data))

    def _name(i: int) -> str:
        base = f"#{i}" + (f" {data.files[i]}" if data.files is not None else "")
        return base + f" · {names[labels[i]]}" if labels[i] < len(names) else base
    index = int(c2.selectbox(f"Image ({len(pool)} of {len(data)})", pool.tolist(),
                             format_func=_name, key=f"case_index|{ctx.key}|{which}"))
    image = np.asarray(data.original(index), np.float32)
    if data.roi is not None and ctx.roi_originals is not None:  # the region of interest
        roi_orig = np.asarray(ctx.roi_originals[index], bool)
        if roi_orig.shape != image.shape[1:]:
            roi_orig = None
    true_label = int(labels[index])
    case_name = data.files[index] if data.files is not None else f"{data.name} #{index}"
    image_id = f"{ctx.key}|{index}"
else:
    up = st.file_uploader("Image (PNG, JPEG, BMP, TIFF, WebP), cine loop (MP4, AVI, MOV, GIF) or "
                          "DICOM (single or multi-frame)", key="case_upload",
                          type=["png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp", "gif", "dcm",
                                "dicom", "mp4", "avi", "mov"])
    if up is None:
        st.info("Upload an image to read it with the selected model.")
        st.stop()
    raw = up.getvalue()
    if RP.is_sequence(raw, up.name):
        seq = None
        with guard("Reading the loop"):
            seq = load_sequence(raw, up.name)
        if seq is not None and len(seq) > 1:
            loop_case(seq, fingerprint(raw), lm, model_id, ctx.device, ctx.seed, store)
            st.stop()
    with guard("Reading the image"):
        image = RP.load_case_image(raw, up.name)
    if image is None:
        st.stop()
    image_id = f"upload:{fingerprint(raw)}"
    case_name = f"uploaded image {image_id[7:19]}"  # the file name may carry a patient's name
    if ctx.roi_choice[0] != "none":  # the selected data's region of interest, found on this image
        try:
            roi_orig = np.asarray(roi_core.roi_masks([image], *ctx.roi_choice)[0], bool)
        except NnsensError as exc:
            st.caption(f"No region of interest on this image: {plain(str(exc))}.")

case_ctx = f"{model_id}|{image_id}"  # the last result shown for this model and image
probs = None
with guard("Predicting the case"):
    x, place = RP.case_input(image, spec)
    probs = RP.case_probabilities(lm, x, ctx.device)
if probs is None:
    st.stop()
pred = int(probs.argmax())

# ----------------------------------------------------------------------------- how far to trust it
chance = None
if preds_all is not None and len(labels):
    chance = accuracy_verdict(labels, preds_all, len(names))  # for the report

# ----------------------------------------------------------------------------- settings
available = list(R.names())
with st.expander("Methods and settings", expanded=False):
    methods = st.multiselect("Methods", available, default=[m for m in DEFAULT_METHODS
                                                            if m in available],
                             format_func=V.label, key="case_methods",
                             help="  \n".join(f"**{m.label}**: {m.description}" for m in R.methods()))
    H, W = spec.input_shape[1:]
    side = min(H, W)
    occ0 = R.default_config("occlusion", (H, W))  # defaults for this input size (the registry's)
    o1, o2, o3, o4 = st.columns(4)
    occ_window = o1.number_input("Occlusion window (model px)", 1, side, occ0.window,
                                 key="case_occ_window",
                                 help="Default: 1/8 of the model's input side.")
    occ_stride = o2.number_input("Occlusion stride (model px)", 1, side, occ0.stride,
                                 key="case_occ_stride")
    am_steps = o3.number_input("AM steps", 1, 2000, R.default_config("am", (H, W), lm).steps, 10,
                               key="case_am_steps")
    mask_steps = o4.number_input("Perturbation-mask steps", 1, 2000,
                                 R.default_config("mask", (H, W), lm).steps,
                                 10, key="case_mask_steps")
    view = st.radio("Show maps as", ["wash", "contours"], horizontal=True, key="case_view",
                    format_func={"wash": "Colour wash",
                                 "contours": "Contours (top 5/10/20 %)"}.get)
    alpha = st.slider("Colour-wash opacity", 0.0, 1.0, 0.5, 0.05, key="case_alpha")
cls = st.selectbox("Class to explain", range(len(names)), index=pred, format_func=lambda k: names[k],
                   key=f"case_class|{image_id}")


def _cfg(m: str):
    cfg = R.default_config(m, (H, W), lm)
    fields = {f.name for f in dataclasses.fields(cfg)}
    ch = {}
    if m == "occlusion":
        ch = {"window": int(occ_window), "stride": int(occ_stride)}
    elif m in ("am", "mask") and "steps" in fields:
        ch = {"steps": int(am_steps if m == "am" else mask_steps)}
    if "seed" in fields:
        ch["seed"] = ctx.seed
    return dataclasses.replace(cfg, **ch) if ch else cfg


cfgs = {}
with guard("Checking the settings"):
    cfgs = {m: _cfg(m) for m in methods}
methods = [m for m in methods if m in cfgs]

# ----------------------------------------------------------------------------- prediction
i1, i2 = st.columns([1, 2])
with i1:
    st.image(render.to_rgb(image), width="stretch",
             caption=f"{plain(case_name)} · {image.shape[2]}×{image.shape[1]} px (own resolution)")
with i2:
    head = f"**Prediction: {plain(names[pred])}** ({probs[pred]:.1%})"
    if true_label is not None:
        head += f" · true label **{plain(names[true_label])}**"
    st.markdown(head + f" · explaining **{plain(names[cls])}**")
    show_chart(st, V.prob_figure(probs, names, -1 if true_label is None else true_label, pred),
               key="case_probs")

# ----------------------------------------------------------------------------- sanity badge
data_x = np.asarray(data.images[:2], np.float32)
san_x = spec.normalize(torch.as_tensor(data_x)).numpy()
san_cls = tuple(int(c) for c in (preds_all[:2] if preds_all is not None else labels[:2]))
cfg_key = fingerprint([(m, cfgs[m]) for m in methods])
san_key = (model_id, tuple(methods), cfg_key, ctx.key, int(ctx.seed))
sanity = store["sanity"].get(san_key)
b1, b2 = st.columns([3, 1])
if sanity is None:
    b1.info("Sanity check for this model and these methods: **not run**. It compares each "
            "method's maps with those of the same model with its layers re-initialised; maps "
            "that do not change do not explain what the model learned.")
elif sanity.overall == "pass":
    b1.success("Sanity check: **pass**. " + plain(sanity.text()))
else:
    b1.error("Sanity check: **" + sanity.overall + "**. " + plain(sanity.text()))
san_cost = B.compare(lm, tuple(spec.input_shape), methods, cfgs, len(san_x), 3) if methods else None
with b2:
    san_ok = cost_line(san_cost) if san_cost is not None else False
    if st.button("Run the sanity check", key="case_sanity_run", disabled=not (san_ok and methods)):
        with guard("The sanity check"), within_budget(san_cost):
            bar = Progress("Sanity check (trained, output layer re-initialised, every layer)", 3)
            store["sanity"][san_key] = _sanity(lm.module, spec, model_id, tuple(methods), cfgs,
                                               cfg_key, san_x, san_cls, str(ctx.device),
                                               int(ctx.seed), bar,
                                               None if data.roi is None else
                                               np.asarray(data.roi[:2], bool))
            bar.done()
        if san_key in store["sanity"]:
            st.rerun()

# ----------------------------------------------------------------------------- maps
run_key = (model_id, image_id, int(cls), tuple((m, cfgs[m]) for m in methods))
todo = [m for m in methods if (model_id, image_id, int(cls), m, cfgs[m]) not in store["maps"]]
est = B.compare(lm, tuple(spec.input_shape), todo, cfgs, 1) if todo else None
go = False
if todo and st.session_state.get("case_cancel"):  # this rerun comes from a Cancel click
    st.info(f"Cancelled: {len(methods) - len(todo)} of {len(methods)} maps computed and kept; the "
            "button below computes the rest.")
if todo:
    ok = cost_line(est)
    go = st.button(f"Explain this case ({len(todo)} method(s) to compute)", type="primary",
                   key="case_run", disabled=not ok)
elif methods:
    store["runs"][run_key] = {m: store["maps"][(model_id, image_id, int(cls), m, cfgs[m])]
                              for m in methods}
    store["last"][case_ctx] = run_key
if go:
    # a click makes Streamlit stop the run at the next progress update and rerun the page; maps
    # finished so far are kept in the session store
    st.button("Cancel", key="case_cancel", help="Stop at the next progress step; the maps already "
                                                "computed are kept.")
    with guard("Explaining the case"), within_budget(est):
        for k, m in enumerate(todo):
            bar = Progress(f"{V.label(m)} ({k + 1}/{len(todo)})")
            with guard(V.label(m)):
                store["maps"][(model_id, image_id, int(cls), m, cfgs[m])] = RP.case_map(
                    lm, spec, x, place, m, cfgs[m], int(cls), ctx.device, bar)[1]
            bar.done()
    done = {m: store["maps"].get((model_id, image_id, int(cls), m, cfgs[m])) for m in methods}
    if all(v is not None for v in done.values()):
        store["runs"][run_key] = done
        store["last"][case_ctx] = run_key
        st.rerun()  # redraw without the button that asked for them (the maps are kept)
res = state.last_result(store["runs"], store["last"], case_ctx, run_key, "Explain this case")
if res is None:
    if not methods:
        st.info("Choose at least one method under 'Methods and settings'.")
    st.stop()
shown_cls = store["last"][case_ctx][2]
entries = []
for m, a in res.items():
    meth = R.get(m)
    if roi_orig is not None and np.shape(a) == roi_orig.shape:  # transparent outside the ROI
        a = np.where(roi_orig, a, np.float32(np.nan))
    entries.append(RP.MapEntry(m, meth.label, a, meth.signed, meth.description))
st.session_state["case_shown_maps"] = {e.method: e.map for e in entries}

st.subheader(f"Explanations of {plain(names[shown_cls])}")
if roi_orig is not None:
    st.caption(V.roi_caption(float(roi_orig.mean())))
if view == "contours":
    st.caption("Outlines of each map's top 5 % (white), 10 % (amber) and 20 % (cyan) of pixels.")
per_row = 3
original_rgb = render.to_rgb(image)
for start in range(0, len(entries), per_row - 1):
    cols = st.columns(per_row)
    cols[0].image(original_rgb, caption="original", width="stretch")
    for c, e in zip(cols[1:], entries[start:start + per_row - 1]):
        pics = e.pictures(image, alpha)
        c.image(pics["wash" if view == "wash" else "contours"], width="stretch",
                caption=e.label)
        c.image(pics["colorbar"], width="stretch")
        c.caption(f"**What this shows:** {e.description}. Scale: {e.scale_text()}.")

# ----------------------------------------------------------------------------- agreement
ag = {}
if len(entries) > 1:
    with guard("Measuring agreement"):
        ag = RP.agreement({e.method: e.map for e in entries}, {e.method: e.signed for e in entries})
        st.markdown("**Agreement between the methods** (this image)")
        st.dataframe([{"method A": V.label(r["a"]), "method B": V.label(r["b"]),
                       f"IoU top {ag['p']:.0%}": round(r["top_p_iou"], 3),
                       "Spearman ρ": round(r["spearman"], 3)} for r in ag["pairs"]],
                     hide_index=True, key="case_agreement")
        st.caption(f"Chance level for independent maps: IoU {ag['chance']['top_p_iou']:.3f}, "
                   "Spearman 0. Signed maps are compared by their positive part"
                   + (", on the pixels inside the region of interest only (top-p % among them)"
                      if roi_orig is not None else "") + ".")

# ----------------------------------------------------------------------------- report
st.markdown("**Case report**")
r1, r2 = st.columns(2)
blackout = roi_orig is not None and r1.checkbox(
    "Black out everything outside the region of interest in the report", True, key="case_blackout",
    help="Burned-in names, IDs and dates of a scanner screenshot sit outside the fan; the report's "
         "pictures then show the region of interest only.")
with_name = r2.checkbox("Put the file name in the report", False, key="case_with_name",
                        help="File names often carry a patient's name or ID; off: the report says "
                             "'image #N'.") if src == "dataset" else False
report_image = np.where(roi_orig[None], image, 0.0).astype(np.float32) if blackout else image
report_case = case_name if with_name or src != "dataset" else f"image #{index} of {data.name}"
rep_key = (store["last"][case_ctx], float(alpha), None if sanity is None else sanity.final,
           bool(blackout), report_case)
rep_files = store["reports"].get(str(rep_key))
if rep_files is None:
    with guard("Building the case report"):
        rep = RP.case_report(report_image, lm, probs, {e.method: e.map for e in entries},
                             case=report_case,
                             explained=shown_cls, true_label=true_label,
                             settings={m: cfgs.get(m, R.default_config(m, (H, W), lm)) for m in res},
                             sanity=sanity, chance=chance, alpha=alpha,
                             model_sha256=None)
        rep_files = store["reports"][str(rep_key)] = (rep.to_pdf(), rep.to_html())
if rep_files is not None:
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(report_case))[:60] or "case"
    d1, d2 = st.columns(2)
    d1.download_button("Case report (PDF)", rep_files[0], f"{stem}_report.pdf", "application/pdf",
                       key="case_pdf", on_click="ignore")
    d2.download_button("Case report (HTML)", rep_files[1], f"{stem}_report.html", "text/html",
                       key="case_html", on_click="ignore")
