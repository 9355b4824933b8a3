"""Robustness of perturbation masks (Thibeau-Sutre et al. 2020, "Visualization approach to assess
the robustness of neural networks for medical image classification"), on 3-D volumes and 2-D images.

Mask: one meaningful-perturbation mask for one input or a group (e.g. every AD patient); λ grid:
group masks over λ1 × λ2 and how similar they are; Runs & folds: the selected CNN's architecture
retrained with several seeds and folds, one group mask per network, inter-run / inter-fold
similarity (prob_CNN, ROI cosine). widgets -> MaskConfig / RetrainSettings / CNNTrainConfig ->
``ui.robustness_compute`` (cached ``nnsens_core.robustness`` calls) -> ``ui.volume_views`` slice
viewer and plotly. Results are kept in ``st.session_state["robustness"]`` by their settings.
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from nnsens_core import volumes
from nnsens_core._results import export_json
from nnsens_core.errors import NnsensError
from nnsens_core.robustness import RetrainSettings, top_regions
from nnsens_core.robustness.grid import METRICS, check_lambdas
from nnsens_core.saliency.meaningful_mask import PAPER_MASK, MaskConfig, formula
from nnsens_core.training import CNNTrainConfig
from ui import background as BG
from ui import robustness_compute as RC
from ui import state
from ui import volume_views as VV
from ui.widgets import (
    EXPORTS,
    cost_line,
    download_csv,
    download_json,
    download_npz,
    guard,
    plain,
    require_usable_model,
    show_chart,
)

state.require_router()
st.title("Robustness of perturbation masks")
st.caption("Which regions must be deleted to move the CNN away from a class, and does the answer "
           "survive other hyperparameters, other training seeds and other folds? Meaningful-"
           "perturbation group masks as in Thibeau-Sutre et al. (2020), on 3-D volumes or 2-D images.")

ctx = state.images(volumes=True)
require_usable_model(ctx.model, ctx.key, ctx.device)
data, lm = ctx.data, ctx.model
names = list(data.class_names)
labels = np.asarray(data.labels)
spatial = tuple(data.shape[1:])
is3d = len(spatial) == 3
atlas = data.atlas
dev = str(ctx.device)
store = st.session_state.setdefault("robustness", {"mask": {}, "grid": {}, "runs": {},
                                                    "last_mask": {}, "last_grid": {}, "last_runs": {}})
METRIC_LABELS = {"prob_cnn": "prob_CNN", "roi_cosine": "ROI cosine", "pixel_cosine": "pixel cosine",
                 "spearman": "Spearman ρ", "top_p_iou": "top-p IoU"}
DEFAULT = MaskConfig()
START = MaskConfig.paper(steps=30)  # the paper's settings with fewer steps: a first look in seconds
FORMS, REFS, SCORES = ["norm", "mean"], ["max", "constant", "black", "blur"], ["prob", "logit"]
PRESET = "rb_preset"
"""``st.session_state[PRESET]``: (the MaskConfig the settings widgets start from, a counter that
renews their keys when a preset button is pressed, so the widgets take the preset's values)."""


def apply_preset(cfg: MaskConfig) -> None:
    """A preset button's callback: the settings widgets restart from ``cfg``."""
    st.session_state[PRESET] = (cfg, st.session_state.get(PRESET, (START, 0))[1] + 1)


preset, version = st.session_state.setdefault(PRESET, (START, 0))


def wkey(name: str) -> str:
    """The key of a settings widget (renewed by the preset buttons; tests match its prefix)."""
    return f"{name}|{version}"


# ----------------------------------------------------------------------------- shared settings
with st.expander("Mask settings (shared by the three tabs)", expanded=True):
    p1, p2, p3, _ = st.columns(4)
    p1.button("Paper settings", key="rb_preset_paper", on_click=apply_preset, args=(PAPER_MASK,),
              help="Thibeau-Sutre et al.: λ1 0.005, λ2 0.05, β1 1, β2 3, 200 steps, lr 0.1, 8 per axis, "
                   "reference max, norm-form penalties, probability score.")
    p2.button("Per-image defaults", key="rb_preset_default", on_click=apply_preset, args=(DEFAULT,),
              help="The Saliency page's per-image mask: mean-form penalties, blurred reference.")
    p3.button("Quick look (paper, 30 steps)", key="rb_preset_quick", on_click=apply_preset, args=(START,))
    c = st.columns(4)
    lam1 = c[0].number_input("λ1 (area)", 0.0, 100.0, float(preset.lambda1), 0.001, format="%.4f",
                             key=wkey("rb_l1"))
    lam2 = c[1].number_input("λ2 (smoothness)", 0.0, 100.0, float(preset.lambda2), 0.01, format="%.4f",
                             key=wkey("rb_l2"))
    beta1 = c[2].number_input("β1", 0.1, 10.0, float(preset.beta1), 0.5, key=wkey("rb_b1"))
    beta2 = c[3].number_input("β2", 0.1, 10.0, float(preset.beta2), 0.5, key=wkey("rb_b2"))
    c = st.columns(4)
    steps = c[0].number_input("Steps", 1, 5000, int(preset.steps), 10, key=wkey("rb_steps"))
    lr = c[1].number_input("Learning rate (Adam)", 0.0001, 10.0, float(preset.lr), 0.01, format="%.4f",
                           key=wkey("rb_lr"))
    res = c[2].number_input("Mask resolution (cells per axis)", 1, min(spatial),
                            min(int(preset.resolution), min(spatial)), 1, key=wkey("rb_res"))
    form = c[3].selectbox("Penalty form", FORMS, FORMS.index(preset.form), key=wkey("rb_form"),
                          help="norm: ‖v‖_β = (Σ|v|^β)^(1/β) (the paper); mean: mean |v|^β (Fong & Vedaldi).")
    c = st.columns(4)
    ref = c[0].selectbox("Reference", REFS, REFS.index(preset.reference), key=wkey("rb_ref"),
                         help="What deleted voxels become: max = 1 (the paper), black = 0, a constant, "
                              "or the input blurred.")
    const = c[1].slider("Constant value", 0.0, 1.0, float(preset.constant), 0.05, key=wkey("rb_const"),
                        disabled=ref != "constant")
    sigma = c[2].number_input("Blur σ (px)", 0.0, 50.0, float(preset.blur_sigma), 0.5, key=wkey("rb_sigma"),
                             disabled=ref != "blur")
    score = c[3].selectbox("Score", SCORES, SCORES.index(preset.score), key=wkey("rb_score"))
    st.caption("Scope (every tab): the mask moves the chosen inputs away from the class below.")
    c = st.columns(4)
    cls = c[0].selectbox("Class to move away from", range(len(names)), format_func=lambda k: names[k],
                         index=min(1, len(names) - 1), key=f"rb_class|{ctx.key}")
    scope = c[1].radio("Inputs", ["group", "one"], horizontal=True, key="rb_scope",
                       format_func={"group": "a group (first N of the class)", "one": "one input"}.get)
    of_class = np.flatnonzero(labels == cls)
    n_group = c[2].number_input("N (group size)", 1, max(len(of_class), 1), min(8, max(len(of_class), 1)),
                                key=f"rb_n|{ctx.key}|{cls}", disabled=scope != "group")
    one = c[3].selectbox("Input (dataset index)", of_class.tolist() or [0], key=f"rb_one|{ctx.key}|{cls}",
                         disabled=scope != "one")

cfg = None
with guard("Checking the mask settings"):
    cfg = MaskConfig(lambda1=float(lam1), lambda2=float(lam2), beta1=float(beta1), beta2=float(beta2),
                     steps=int(steps), lr=float(lr), resolution=int(res), reference=ref,
                     constant=float(const), blur_sigma=float(sigma), score=score, form=form,
                     reduce="mean", batch_size=16)
if cfg is None:
    st.stop()
if len(of_class) == 0:
    st.warning(f"No input of class {plain(names[cls])} in the selected data; pick another class.")
    st.stop()
idx = tuple(int(i) for i in (of_class[:int(n_group)] if scope == "group" else [one]))
group = scope == "group"


def background(ids) -> np.ndarray:
    """The picture under the maps: the mean of the inputs (C, ...) of ``ids``."""
    return np.asarray(data.images)[list(ids)].mean(axis=0)


def nifti_bytes(deletion: np.ndarray) -> bytes:
    return volumes.save_nifti(np.asarray(deletion, dtype=np.float32))


def heatmap(table: pd.DataFrame, title: str, zrange=(0.0, 1.0)) -> go.Figure:
    vals = table.to_numpy(dtype=float)
    ticks = [f"{v:g}" for v in table.index]
    fig = go.Figure(go.Heatmap(z=vals, x=ticks, y=ticks, zmin=zrange[0], zmax=zrange[1],
                               colorscale="Viridis", text=np.round(vals, 3), texttemplate="%{text}",
                               hovertemplate="%{y} vs %{x}: %{z:.3f}<extra></extra>"))
    fig.update_layout(title=title, height=300, margin=dict(l=10, r=10, t=40, b=10),
                      xaxis=dict(type="category"), yaxis=dict(type="category", autorange="reversed"))
    return fig


def mean_std(trip) -> str:
    m, s, n = trip
    return "—" if not n else f"{m:.3f} ± {s:.3f} (n={n})"


who = (f"{len(idx)} input(s) of class {plain(names[cls])}" if group else
       f"input #{idx[0]} (class {plain(names[labels[idx[0]]])})")
tab_mask, tab_grid, tab_runs = st.tabs(["Mask", "λ grid", "Runs & folds"])

# ----------------------------------------------------------------------------- mask
with tab_mask:
    st.markdown(f"**Objective** ({who}, moved away from class {plain(names[cls])}):")
    st.code(formula(cfg, group=group), language=None)
    mkey = (ctx.key, idx, int(cls), cfg)
    ok = cost_line(RC.mask_cost(lm, cfg, len(idx)))
    if st.button("Compute the mask", type="primary", key="rb_mask_run", disabled=not ok):
        if mkey not in store["mask"]:
            with guard("The group mask"):
                store["mask"][mkey] = RC.run_group_mask(lm, data, ctx.key, idx, int(cls), cfg, dev)
        if mkey in store["mask"]:
            store["last_mask"][ctx.key] = mkey
    res = state.last_result(store["mask"], store["last_mask"], ctx.key, mkey, "Compute the mask")
    if res is not None:
        shown_idx, shown_cls = store["last_mask"][ctx.key][1], store["last_mask"][ctx.key][2]
        with guard("Showing the mask"):
            m = st.columns(4)
            m[0].metric(f"Mean p({plain(names[shown_cls])}) before", f"{np.mean(res.score_before):.3f}")
            m[1].metric("after the mask", f"{np.mean(res.score_after):.3f}",
                        f"{np.mean(res.score_after) - np.mean(res.score_before):+.3f}")
            m[2].metric("Deleted fraction (mean of 1 − M)", f"{np.mean(res.saliency):.1%}")
            m[3].metric("Time", f"{res.seconds:.1f} s")
            st.markdown("**Deletion map 1 − M** over the mean of the masked inputs"
                        + (" (sliders move the slices; the crosshair's voxel is named below)" if is3d else ""))
            VV.viewer(st, background(shown_idx), res.saliency, atlas, key="rb_view")
            hist = go.Figure(go.Scatter(y=res.history, mode="lines", name="objective"))
            hist.update_layout(height=260, margin=dict(l=10, r=10, t=30, b=10), title="Objective per step",
                               xaxis_title="step", yaxis_title="objective")
            show_chart(st, hist, key="rb_hist")
            if atlas is not None:
                n_top = st.number_input("Top regions", 1, len(atlas.region_ids), 5, key="rb_top_n")
                st.dataframe(top_regions(res.mask, atlas.labels, int(n_top), atlas.region_names),
                             hide_index=True, key="rb_top")
            e = st.columns(3)
            with e[0]:
                download_json("Mask (JSON)", export_json(
                    res, model=lm.spec.name, data=data.name, device=dev, indices=list(shown_idx),
                    explained_class=names[shown_cls], class_names=names), "group_mask.json",
                    key="rb_mask_json")
            with e[1]:
                download_npz("Mask (.npz)", res.arrays(), "group_mask.npz", key="rb_mask_npz")
            if is3d:
                nii = nifti_bytes(res.saliency)
                st.session_state.setdefault(EXPORTS, {})["rb_mask_nifti"] = nii
                e[2].download_button("Deletion map (NIfTI)", nii, "deletion_map.nii",
                                     "application/octet-stream", key="rb_mask_nii", on_click="ignore")

# ----------------------------------------------------------------------------- λ grid
def parse_lambdas(text: str, name: str) -> tuple[float, ...]:
    parts = [t for t in re.split(r"[,;\s]+", text.strip()) if t]
    try:
        vals = [float(t) for t in parts]
    except ValueError:
        raise NnsensError(f"{name} '{text}' is not a list of numbers; write e.g. 0.001, 0.005, 0.01") \
            from None
    return check_lambdas(name, vals)


with tab_grid:
    st.caption("One group mask per (λ1, λ2) cell with the other settings above, then how similar the "
               "masks are across λ1 (λ2 fixed) and across λ2 (λ1 fixed). prob_CNN: 0 = the two masks "
               "are equivalent for the CNN, 1 = dissimilar; the other metrics: 1 = identical.")
    g = st.columns(2)
    l1_text = g[0].text_input("λ1 values", "0.001, 0.005, 0.01", key="rb_grid_l1")
    l2_text = g[1].text_input("λ2 values", "0.01, 0.05, 0.1", key="rb_grid_l2")
    avail = [mt for mt in METRICS if mt != "roi_cosine" or atlas is not None]
    g = st.columns([3, 1])
    metrics = g[0].multiselect("Metrics", avail, default=avail, format_func=METRIC_LABELS.get,
                               key=f"rb_grid_metrics|{atlas is not None}")
    p_top = g[1].slider("p of top-p IoU", 0.01, 0.5, 0.1, 0.01, key="rb_grid_p")
    lams = None
    with guard("Reading the λ lists"):
        lams = (parse_lambdas(l1_text, "λ1 values"), parse_lambdas(l2_text, "λ2 values"))
        if not metrics:
            raise NnsensError("Pick at least one metric.")
    if lams is not None:
        l1s, l2s = lams
        gkey = (ctx.key, idx, int(cls), cfg, l1s, l2s, tuple(metrics), float(p_top))
        ok = cost_line(RC.grid_cost(lm, cfg, len(idx), len(l1s), len(l2s)))
        if st.button(f"Compute the {len(l1s)}×{len(l2s)} grid", type="primary", key="rb_grid_run",
                     disabled=not ok):
            if gkey not in store["grid"]:
                with guard("The λ grid"):
                    store["grid"][gkey] = RC.run_grid(lm, data, ctx.key, idx, int(cls), l1s, l2s, cfg,
                                                      tuple(metrics), float(p_top), dev)
            if gkey in store["grid"]:
                store["last_grid"][ctx.key] = gkey
    gres = state.last_result(store["grid"], store["last_grid"], ctx.key,
                             gkey if lams is not None else None, "Compute the grid")
    if gres is not None:
        with guard("Showing the grid"):
            shown = st.selectbox("Metric", list(gres.tables), format_func=METRIC_LABELS.get,
                                 key="rb_grid_show")
            cells = pd.DataFrame([{"λ1": a, "λ2": b, "deleted fraction": float((1 - gres.masks[i, j]).mean()),
                                   "mean score after": float(gres.score_after[i, j].mean())}
                                  for i, a in enumerate(gres.lambda1s) for j, b in enumerate(gres.lambda2s)])
            st.caption(f"Mean score before: {float(np.mean(gres.score_before)):.3f}; "
                       f"{gres.seconds:.1f} s.")
            st.dataframe(cells, hide_index=True, key="rb_grid_cells")
            for across, other, sym in (("lambda1", gres.lambda2s, "λ2"), ("lambda2", gres.lambda1s, "λ1")):
                st.markdown(f"**{METRIC_LABELS[shown]} across {'λ1' if across == 'lambda1' else 'λ2'}** "
                            f"(one table per {sym})")
                cols = st.columns(min(len(other), 4))
                for k, f in enumerate(other):
                    show_chart(cols[k % len(cols)], heatmap(gres.table(shown, across, f), f"{sym} = {f:g}"),
                               key=f"rb_grid_fig_{across}_{k}")
            download_csv("Similarity tables (CSV)", gres.to_frame(), "lambda_grid.csv", key="rb_grid_csv")
            download_npz("Grid masks (.npz)", gres.arrays(), "lambda_grid.npz", key="rb_grid_npz")
            st.markdown("**Deletion maps of every cell** (same slice for all)")
            shown_idx = store["last_grid"][ctx.key][1]
            VV.side_by_side(st, background(shown_idx),
                            {f"λ1={a:g}, λ2={b:g}": 1 - gres.masks[i, j]
                             for i, a in enumerate(gres.lambda1s) for j, b in enumerate(gres.lambda2s)},
                            atlas, key="rb_grid_view", per_row=max(len(gres.lambda2s), 2))

# ----------------------------------------------------------------------------- runs & folds
def balanced_first(n: int) -> np.ndarray:
    """The first inputs of every class in turn (``n`` in all), sorted: a class-balanced subset."""
    per = [list(np.flatnonzero(labels == k)) for k in range(len(names))]
    out = []
    while len(out) < n and any(per):
        for p in per:
            if p and len(out) < n:
                out.append(p.pop(0))
    return np.sort(np.asarray(out, dtype=int))


with tab_runs:
    st.caption("The selected CNN's architecture is retrained from scratch with several seeds (runs) "
               "and on several stratified folds; each network gets a group mask of the inputs of the "
               "class above, and masks are compared inter-run (same fold) and inter-fold (same run). "
               "This is heavy: start small.")
    r = st.columns(4)
    n_runs = r[0].number_input("Runs (seeds)", 1, 10, 2, key="rb_runs_n")
    k_folds = r[1].number_input("Folds", 2, 10, 2, key="rb_runs_k")
    design = r[2].selectbox("Design", ["cross", "full"], key="rb_runs_design",
                            format_func={"cross": "cross (runs on fold 0 + run 0 on every fold)",
                                         "full": "full (every run on every fold)"}.get)
    n_in = r[3].number_input("Inputs (class-balanced, first ones)", 4, len(data), min(16, len(data)),
                             key=f"rb_runs_inputs|{ctx.key}")
    r = st.columns(5)
    epochs = r[0].number_input("Epochs", 1, 200, 3, key="rb_runs_epochs")
    t_lr = r[1].number_input("Training lr", 1e-5, 1.0, 1e-3, format="%.5f", key="rb_runs_lr")
    t_bs = r[2].number_input("Batch size", 1, 256, 8, key="rb_runs_bs")
    patience = r[3].number_input("Patience (0: none)", 0, 100, 0, key="rb_runs_patience")
    mask_on = r[4].selectbox("Mask on", ["all", "val"], key="rb_runs_mask_on",
                             format_func={"all": "all inputs of the class", "val": "the held-out fold's"}.get)
    top_n = st.number_input("Top regions per mask", 1, 20, 5, key="rb_runs_top") if atlas is not None else 5
    settings = train = None
    with guard("Checking the study settings"):
        settings = RetrainSettings(n_runs=int(n_runs), k_folds=int(k_folds), design=design,
                                   split_seed=int(ctx.seed), mask_class=int(cls), mask_on=mask_on,
                                   top_n=int(top_n), mask=cfg)
        train = CNNTrainConfig(epochs=int(epochs), batch_size=int(t_bs), lr=float(t_lr),
                               patience=int(patience), seed=int(ctx.seed))
    if settings is not None and train is not None:
        ridx = tuple(int(i) for i in balanced_first(int(n_in)))
        n_mask = int((labels[list(ridx)] == cls).sum())
        rkey = (ctx.key, ridx, settings, train)
        n_units = int(n_runs) + int(k_folds) - 1 if design == "cross" else int(n_runs) * int(k_folds)
        st.caption(f"{n_units} trainings of {lm.spec.arch} on about "
                   f"{int(len(ridx) * (int(k_folds) - 1) / int(k_folds))} inputs each, then {n_units} "
                   f"group masks of {n_mask} input(s) × {cfg.steps} steps.")
        ok = cost_line(RC.retrain_cost(lm, settings, train, len(ridx), n_mask))
        bg = st.toggle("In the background", key="rb_runs_bg",
                       help="The study runs on the server while you use other pages; its progress "
                            "survives a reload of this page (same settings, data and model).")
        if st.button("Run the study", type="primary", key="rb_runs_run", disabled=not ok):
            if bg:
                with guard("Starting the study in the background"):
                    BG.start(st, *RC.retrain_study(lm, data, ctx.key, ridx, settings, train, dev),
                             "Runs & folds study")
            elif rkey not in store["runs"]:
                with guard("The runs & folds study"):
                    store["runs"][rkey] = RC.run_retrain(lm, data, ctx.key, ridx, settings, train, dev)
            if rkey in store["runs"]:
                store["last_runs"][ctx.key] = rkey
        job = BG.attached(st, RC.retrain_study_id(ctx.key, ridx, settings, train, dev)) if bg else None
        if job is not None:  # started by this session (or this owner before a reload): re-attach
            if job.error is not None:
                st.error(f"The background study failed: {plain(job.error)}")
            elif job.result is not None:
                store["runs"][rkey] = job.result
                store["last_runs"][ctx.key] = rkey
            BG.show_progress(st, job)
    rres = state.last_result(store["runs"], store["last_runs"], ctx.key,
                             rkey if settings is not None and train is not None else None, "Run the study")
    if rres is not None:
        with guard("Showing the study"):
            metrics_r = list(next(iter(rres.summary.values())))
            table = pd.DataFrame({METRIC_LABELS.get(mt, mt): [mean_std(rres.summary[k][mt])
                                                               for k in rres.summary]
                                  for mt in metrics_r},
                                 index=pd.Index([k.replace("_", "-") for k in rres.summary], name="pairs"))
            st.markdown("**Mask similarity** (mean ± std over the pairs; prob_CNN: 0 = equivalent)")
            st.dataframe(table, key="rb_runs_table")
            units = rres.units_frame()
            st.markdown("**Trained networks** (balanced accuracy on the held-out fold)")
            st.dataframe(units.style.format({"balanced_accuracy": "{:.3f}", "score_before": "{:.3f}",
                                             "score_after": "{:.3f}", "deleted_fraction": "{:.1%}",
                                             "seconds": "{:.1f}"}), hide_index=True, key="rb_runs_units")
            st.markdown("**Deletion maps of every network** (same slice for all)")
            r_idx = store["last_runs"][ctx.key][1]
            r_cls = rres.config.mask_class
            VV.side_by_side(st, background([i for i in r_idx if labels[i] == r_cls]),
                            {f"run {u.run}, fold {u.fold}": 1 - rres.masks[k] for k, u in enumerate(rres.units)},
                            atlas, key="rb_runs_view")
            if rres.agreement:
                st.markdown(f"**Top-{rres.config.top_n} regions and how many masks agree**")
                a = st.columns(len(rres.agreement))
                for col, (grp, df) in zip(a, rres.agreement.items()):
                    col.caption({"runs": "across runs (fold 0)", "folds": "across folds (run 0)",
                                 "all": "every network"}.get(grp, grp))
                    col.dataframe(df[["name", "count", "share"]], hide_index=True, key=f"rb_runs_agree_{grp}")
            e = st.columns(3)
            with e[0]:
                download_json("Study (JSON)", export_json(
                    rres, model=lm.spec.name, data=data.name, device=dev, indices=list(r_idx),
                    explained_class=names[r_cls], class_names=names, training=dataclasses.asdict(train)),
                    "training_robustness.json", key="rb_runs_json")
            with e[1]:
                download_csv("Pairs (CSV)", rres.pairs_frame(), "training_robustness_pairs.csv",
                             key="rb_runs_csv")
            with e[2]:
                download_npz("Masks (.npz)", rres.arrays(), "training_robustness.npz", key="rb_runs_npz")
