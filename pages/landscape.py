"""Loss landscape: input-derivative histories of a one-tanh-unit network vs Spearman correlation
(Faroz 2024), retrain consistency, NeuralSens-style summaries and a 2-D loss surface of the loaded
model, and the image variant on scikit-learn's digits.

widgets -> LandscapeConfig / SurfaceConfig -> nnsens_core.landscape (cached with st.cache_data on
the context key + config) -> plotly.  Results also live in ``st.session_state["landscape"]`` so a
rerun never loses them.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import streamlit as st

from nnsens_core import budget as B
from nnsens_core import landscape as L
from nnsens_core._results import export_json
from nnsens_core.data import TabularData
from nnsens_core.errors import NnsensError
from ui.cache import CACHE_TTL
from ui import landscape_views as V
from ui import state
from ui.widgets import (Progress, cost_line, download_csv, download_json, guard, plain,
                        show_chart, usable_model, within_budget)

state.require_router()
st.title("Loss landscape")
st.caption("The method of *Sensitivity Analysis on Loss Landscape*: train the simplest network "
           "(inputs → one tanh unit, MSE loss, Xavier-normal initialisation) and record, every epoch, "
           "the 1st, 2nd and 3rd derivatives of the loss per feature (torch.func, vectorised). The "
           "paper's \"derivative\" can be read several ways (with respect to the input or the weight, "
           "diagonal, Hessian row sums, first Hessian column); every reading and order is scored. The "
           "claim tested: the **trend of the 2nd derivative while the loss falls** has the sign of the "
           "feature's Spearman correlation with the target.")

ctx = state.tabular()
data = ctx.data
store = st.session_state.setdefault("landscape", {"runs": {}, "last": {}, "grad": {}, "surface": {},
                                                  "digits": {}})


# ----------------------------------------------------------------------------- cached core calls
# Progress bars live inside the cached functions: a cache hit replays them already finished.
@st.cache_data(show_spinner=False, max_entries=16, ttl=CACHE_TTL)
def _train(_data: TabularData, key: str, rows: str, cfg: L.LandscapeConfig,
           device: str) -> L.LandscapeResult:
    bar = Progress(f"Training {cfg.retrains} run(s) for {cfg.epochs} epochs, then the derivatives")
    try:
        with within_budget(B.landscape(len(_data.rows(rows or None).X), _data.n_features, cfg)):
            return L.run_landscape_tabular(_data, cfg, rows=rows or None, device=device, progress=bar)
    finally:
        bar.done()


@st.cache_data(show_spinner=False, max_entries=16, ttl=CACHE_TTL)
def _gradients(_model, _data: TabularData, key: str, rows: str, output: int, device: str) -> dict:
    d = _data.rows(rows or None)
    return L.input_gradient_summary(_model.module, d.X, d.feature_names, output, device)


@st.cache_data(show_spinner=False, max_entries=16, ttl=CACHE_TTL)
def _surface(_model, _data: TabularData, key: str, rows: str, cfg: L.SurfaceConfig,
             device: str) -> L.LossSurface:
    d = _data.rows(rows or None)
    bar = Progress(f"Evaluating {cfg.grid ** 2} grid points")
    try:
        with within_budget(B.surface(_model, len(d.X), cfg.grid)):
            return L.loss_surface(_model.module, d.X, d.y, cfg, device, progress=bar)
    finally:
        bar.done()


@st.cache_data(show_spinner=False, max_entries=8, ttl=CACHE_TTL)
def _digits(digit: int, n: int, cfg: L.LandscapeConfig, device: str) -> L.DigitsLandscape:
    bar = Progress("Digits: training and derivatives")
    try:
        with within_budget(B.landscape(n, 64, cfg)):
            return L.digits_landscape(digit, cfg, n=n, device=device, progress=bar)
    finally:
        bar.done()


# ----------------------------------------------------------------------------- settings
_PRESET_CFG, _PRESET_ROWS = L.paper_preset()
_D = L.LandscapeConfig()


def _apply_paper_preset() -> None:
    """Set the widgets to the paper's preset (before they are drawn on the rerun)."""
    c = _PRESET_CFG
    st.session_state.update({"ls_reading": c.reading, "ls_opt": c.optimizer, "ls_lr": c.lr,
                             "ls_epochs": c.epochs, "ls_K": c.retrains, "ls_std": c.standardize,
                             "ls_tscale": c.target_scaling, "ls_flat": c.flat_tol,
                             "ls_descent": c.descent_share, "ls_every": c.record_every,
                             "ls_preset_applied": True})


p1, p2 = st.columns([1, 4])
p1.button("Paper preset", key="ls_preset", on_click=_apply_paper_preset,
          help="Set the paper's values (weight-diagonal reading); the table says which come from "
               "the paper and which are nnsens defaults.")
if st.session_state.get("ls_preset_applied"):
    with p2.expander("Paper preset: the values set and where they come from", expanded=False):
        st.dataframe(pd.DataFrame(_PRESET_ROWS).astype(str).set_index("setting"), width="stretch")

with st.expander("Training settings (one tanh unit)", expanded=True):
    reading = st.selectbox("Reading of the paper's derivatives (shown per feature; all readings are "
                           "scored)", list(L.READINGS), key="ls_reading",
                           format_func=lambda r: f"{L.READING_LABELS[r]}: {L.READING_FORMULAS[r][2]}")
    c1, c2, c3, c4, c5 = st.columns(5)
    optimizer = c1.selectbox("Optimizer", ["sgd", "adam"], key="ls_opt")
    lr = c2.number_input("Learning rate", value=0.05, min_value=0.0, step=0.01, format="%.4f",
                         key="ls_lr")
    epochs = c3.number_input("Epochs", value=200, step=10, key="ls_epochs",
                             help="Epochs <= 0 are refused; see 'Record every' for how often the "
                                  "loss and the three derivatives are recorded.")
    retrains = c4.number_input("Retrains K", value=5, step=1, key="ls_K",
                               help="Runs with seeds seed, seed+1, ... trained together.")
    seed = c5.number_input("Seed", value=int(ctx.seed), min_value=0, step=1, key="ls_seed",
                           help="Defaults to the sidebar seed.")
    c6, c7, c8, c9, c10, c11 = st.columns(6)
    rows = c6.text_input("Rows", ctx.train_rows, key="ls_rows",
                         help="Default: the train rows the other pages use; e.g. 0:500; empty = all rows")
    standardize = c7.checkbox("Standardise inputs", value=True, key="ls_std",
                              help="z-score each feature (tanh saturates on raw Pima values)")
    scaling = c8.selectbox("Target scaling", ["none", "minmax"], key="ls_tscale",
                           help="minmax maps the target onto [-1, 1], the range of tanh")
    flat_tol = c9.number_input("Flat below |rho|", value=0.05, min_value=0.0, max_value=0.99,
                               step=0.01, key="ls_flat",
                               help="A trend whose rank correlation with the epoch is smaller "
                                    "than this is 'flat'.")
    descent = c10.number_input("Main descent share", value=1.0, min_value=0.05, max_value=1.0,
                               step=0.05, key="ls_descent",
                               help="Use the falling-loss epochs only until the loss has made this "
                                    "share of its total drop (1 = every epoch where the loss falls).")
    record_every = c11.number_input("Record every", value=1, min_value=1, step=1, key="ls_every",
                                    help="Record the derivatives every N epochs (the last epoch "
                                         "always); larger N is faster on big data.")

cfg = None
with guard("Checking the settings"):
    cfg = L.LandscapeConfig(epochs=int(epochs), lr=float(lr), optimizer=optimizer,
                            retrains=int(retrains), seed=int(seed), standardize=bool(standardize),
                            target_scaling=scaling, flat_tol=float(flat_tol),
                            descent_share=float(descent), record_every=int(record_every),
                            reading=reading)
run_key = (ctx.key, rows.strip(), cfg)
affordable = True
if cfg is not None:
    with contextlib.suppress(NnsensError):  # bad rows: the run itself says so
        affordable = cost_line(B.landscape(len(data.rows(rows.strip() or None).X), data.n_features, cfg))

if cfg is not None and st.button("Train and record derivatives", type="primary", key="ls_run",
                                 disabled=not affordable):
    with guard("The loss-landscape training"):
        store["runs"][run_key] = _train(data, ctx.key, rows.strip(), cfg, str(ctx.device))
        store["last"][ctx.key] = run_key

res: L.LandscapeResult | None = state.last_result(store["runs"], store["last"], ctx.key, run_key,
                                                  "Train and record derivatives")


# ----------------------------------------------------------------------------- rendering
def _simple_tab(res: L.LandscapeResult) -> None:
    h = res.history
    rate0, rate = res.agreement_rate(0), res.agreement_rate()
    fmt = lambda r: "n/a" if r is None else f"{r:.0%}"  # noqa: E731
    k1, k2, k3, k4 = st.columns(4)
    k1.metric("Agreement with Spearman sign (run 0)", fmt(rate0))
    k2.metric(f"Agreement, all {res.n_runs} runs", fmt(rate))
    k3.metric("Final loss (run 0)", f"{h.loss[0, -1]:.4f}", f"{h.loss[0, -1] - h.loss[0, 0]:+.4f}",
              delta_color="inverse")
    k4.metric("Recorded epochs used for the trend (run 0)",
              f"{res.trends[0].n_epochs} / {len(h.epochs) - 1}",
              help="Epochs where the loss falls (within the main-descent share).")
    r = res.config.reading
    st.caption(f"Reading used for the per-feature views: **{L.READING_LABELS[r]}**, 2nd derivative "
               f"mean over rows of {L.READING_FORMULAS[r][2]} (g₂ = d²L/dz², z = w·x + b, x the "
               f"{'standardised' if res.config.standardize else 'raw'} inputs). Agreement: an "
               "*increasing* net direction (rank correlation with the epoch) meets a positive, a "
               "*decreasing* one a negative Spearman correlation; flat/undetermined trends are left out. "
               "The trend label describes the curve's shape (e.g. *rises then falls*).")
    st.subheader("Agreement per reading and order")
    st.markdown(plain(res.verdict()))
    a, b = st.columns([3, 2])
    show_chart(a, V.agreement_heatmap(res), key="ls_agree_heat")
    af = V.agreement_frame(res)
    b.dataframe(af[["reading_label", "order", "formula", "rate", "features_agreeing",
                    "features_disagreeing"]], width="stretch", hide_index=True)
    with b:
        download_csv("Agreement table (CSV)", af, "landscape_agreement.csv", key="dl_ls_agree")
    show_chart(st, V.loss_curve(h), key="ls_loss")

    names = list(res.feature_names)
    a, b = st.columns([2, 1])
    with a:
        c1, c2, c3 = st.columns([1, 3, 2])
        run = c1.selectbox("Run", list(range(res.n_runs)), key="ls_view_run",
                           format_func=lambda k: f"{k} (seed {h.seeds[k]})")
        default = names if len(names) <= 10 else names[:10]
        chosen = c2.multiselect("Features", names, default=default, key="ls_view_feats")
        band = c3.selectbox("Per-sample quantile bands of", ["(none)"] + names, key="ls_view_band")
        feats = [names.index(f) for f in chosen] or [0]
        show_chart(st, V.derivative_histories(res, run, feats,
                                               None if band == "(none)" else names.index(band)),
                        key="ls_hist")
    with b:
        show_chart(st, V.spearman_bars(names, res.spearman), key="ls_spear")
        tf = V.trend_frame(res, run)
        st.dataframe(tf[["trend", "agrees"]], width="stretch")

    order = st.radio("Per-sample distribution at the last epoch of derivative", [1, 2, 3], index=1,
                     horizontal=True, key="ls_dist_order")
    show_chart(st, V.distribution_box(h.final[order][run], names,
                                       f"Per-sample {L.READING_FORMULAS[r][order]} at epoch {h.epochs[-1]}, "
                                       f"run {run}, {h.final[order].shape[1]:,} rows "
                                       "(box: quartiles, dashed: mean ± sd)"),
                    key="ls_dist")

    st.subheader(f"Trend of the 2nd derivative while the loss falls ({L.READING_LABELS[r]}, run {run})")
    st.dataframe(tf, width="stretch")
    st.subheader(f"Consistency across {res.n_runs} retrains")
    cf = V.consistency_frame(res)
    st.caption("consistency: share of runs with the majority trend; share_agreeing: share of runs "
               "with a determined trend that agree with the Spearman sign.")
    st.dataframe(cf, width="stretch")
    c1, c2, c3, c4 = st.columns(4)
    with c1:
        download_csv("Trends (CSV)", tf, f"landscape_trends_run{run}.csv", key="dl_ls_trend")
    with c2:
        download_csv("Consistency (CSV)", cf, "landscape_consistency.csv", key="dl_ls_cons")
    with c3:
        download_csv("Histories (CSV)", V.history_frame(res), "landscape_histories.csv",
                     key="dl_ls_hist")
    with c4:
        run_rows = store["last"][ctx.key][1] or None  # the rows of the run shown
        download_json("Summary (JSON)", export_json(res, data=data.name, rows=run_rows,
                                                    n_rows=int(res.history.final[1].shape[1])),
                      "landscape_summary.json", key="dl_ls_json")


def _model_tab() -> None:
    if not usable_model(ctx.model, ctx.key, ctx.device):
        return
    st.write(f"The loaded model **{plain(ctx.model.spec.name)}** (any architecture; a deep copy in eval "
             "mode is used, the shared model is never changed).")
    c1, c2 = st.columns(2)
    g_rows = c1.text_input("Rows", ctx.train_rows, key="ls_g_rows", help="empty = all rows")
    output = int(c2.number_input("Output index", value=0, min_value=0, step=1, key="ls_g_out"))
    g_key = (ctx.key, g_rows.strip(), output, str(ctx.device))
    summary = None
    with guard("The input-gradient summary"):
        summary = _gradients(ctx.model, data, ctx.key, g_rows.strip(), output, str(ctx.device))
        store["grad"][g_key] = summary
    if summary is not None:
        st.subheader("Sensitivities ∂y/∂x (NeuralSens: mean, std, root mean square)")
        st.caption(f"Units: ∂y/∂x_j is the change of output {output} of the model (in its own units, "
                   "e.g. a probability for the demo MLP) per **one unit of feature j as the model "
                   "receives it** (the data's raw units, e.g. mg/dL for a glucose column, unless the "
                   "model standardises inside); mean, std and RMS share those units, so features "
                   "measured on different scales are not directly comparable.")
        a, b = st.columns([3, 2])
        show_chart(a, V.gradient_summary_bars(summary), key="ls_g_bars")
        gf = V.gradient_frame(summary)
        b.dataframe(gf, width="stretch")
        with b:
            download_csv("Sensitivities (CSV)", gf, "landscape_model_sensitivities.csv", key="dl_ls_g")
        show_chart(st, V.distribution_box(summary["gradients"], summary["feature_names"],
                                           "Per-sample ∂y/∂x", "∂y/∂x"), key="ls_g_dist")

    st.subheader("2-D loss surface along two filter-normalised random directions")
    c1, c2, c3, c4, c5 = st.columns(5)
    grid = c1.select_slider("Grid", [11, 15, 21, 31, 41], value=21, key="ls_s_grid")
    span = c2.number_input("Span ±", value=1.0, min_value=0.05, step=0.25, key="ls_s_span")
    loss = c3.selectbox("Loss", ["auto", "mse", "bce", "cross_entropy"], key="ls_s_loss")
    s_seed = c4.number_input("Direction seed", value=int(ctx.seed), min_value=0, step=1, key="ls_s_seed")
    ignore = c5.checkbox("Biases/BN fixed", value=True, key="ls_s_ign",
                         help="Zero directions for 1-D parameters, as Li et al. (2018) do")
    s_rows = st.text_input("Rows for the loss", ctx.train_rows, key="ls_s_rows", help="empty = all rows")
    scfg = None
    with guard("Checking the surface settings"):
        scfg = L.SurfaceConfig(grid=int(grid), span=float(span), loss=loss, seed=int(s_seed),
                               ignore_biasbn=bool(ignore))
    if scfg is None:
        return
    s_key = (ctx.key, s_rows.strip(), scfg)
    s_ok = True
    with contextlib.suppress(NnsensError):
        s_ok = cost_line(B.surface(ctx.model, len(data.rows(s_rows.strip() or None).X), scfg.grid))
    if st.button("Compute loss surface", key="ls_s_run", disabled=not s_ok):
        with guard("The loss surface"):
            store["surface"][s_key] = _surface(ctx.model, data, ctx.key, s_rows.strip(), scfg,
                                               str(ctx.device))
    surf = store["surface"].get(s_key)
    if surf is None:
        st.info("Press **Compute loss surface**.")
        return
    st.caption(f"Loss at the trained weights: {surf.center:.4f} ({surf.loss_kind}); grid minimum "
               f"{np.nanmin(surf.loss):.4f}. Units: α and β are multiples of the two directions, "
               "each scaled filter by filter to the norm of the trained weights (dimensionless); the "
               "loss is per row (BCE/cross-entropy in nats, MSE in squared target units).")
    fig_s, fig_c = V.surface_figures(surf)
    a, b = st.columns(2)
    show_chart(a, fig_s, key="ls_s_3d")
    show_chart(b, fig_c, key="ls_s_contour")
    download_csv("Loss surface (CSV)", V.surface_frame(surf), "landscape_loss_surface.csv",
                 key="dl_ls_surf")


def _digits_tab() -> None:
    st.write("The same experiment on scikit-learn's 8×8 digits (shipped with the library): each "
             "pixel is a feature, the target is *image shows digit d* (1) vs the rest (0). The mask "
             "marks pixels whose 2nd-derivative trend **increases** while the loss falls.")
    c1, c2, c3, c4 = st.columns(4)
    digit = int(c1.selectbox("Digit", list(range(10)), key="ls_d_digit"))
    n = int(c2.number_input("Images", value=600, min_value=20, max_value=1797, step=100, key="ls_d_n"))
    d_epochs = int(c3.number_input("Epochs", value=100, step=10, key="ls_d_epochs"))
    d_K = int(c4.number_input("Retrains K", value=3, step=1, key="ls_d_K"))
    dcfg = None
    with guard("Checking the digits settings"):
        dcfg = L.LandscapeConfig(epochs=d_epochs, retrains=d_K, lr=float(lr), optimizer=optimizer,
                                 seed=int(seed), standardize=bool(standardize),
                                 target_scaling=scaling, flat_tol=float(flat_tol),
                                 descent_share=float(descent), reading=reading)
    if dcfg is None:
        return
    d_key = (digit, n, dcfg)
    d_ok = cost_line(B.landscape(n, 64, dcfg))
    if st.button("Train on digits", key="ls_d_run", disabled=not d_ok):
        with guard("The digits experiment"):
            store["digits"][d_key] = _digits(digit, n, dcfg, str(ctx.device))
    dg = store["digits"].get(d_key)
    if dg is None:
        st.info("Press **Train on digits** (optimizer, learning rate, seed and scaling come from the "
                "training settings above).")
        return
    r0, r = dg.result.agreement_rate(0), dg.result.agreement_rate()
    k1, k2, k3 = st.columns(3)
    k1.metric("Pixels with increasing trend (run 0)", f"{int(dg.increasing_mask.sum())} / "
              f"{len(dg.pixel_index)}")
    k2.metric("Agreement with Spearman sign (run 0)", "n/a" if r0 is None else f"{r0:.0%}")
    k3.metric(f"Agreement, all {dg.result.n_runs} runs", "n/a" if r is None else f"{r:.0%}")
    a, b, c = st.columns(3)
    show_chart(a, V.pixel_map(dg.increasing_share, "Share of runs with increasing trend", "Reds",
                               0, 1), key="ls_d_share")
    show_chart(b, V.pixel_map(dg.spearman_map, "Spearman(pixel, target)", "RdBu_r", -1, 1),
                   key="ls_d_spear")
    show_chart(c, V.pixel_map(dg.rho_map, "Trend rho of d²L/dx² (run 0)", "RdBu_r", -1, 1),
                   key="ls_d_rho")
    idx = np.where(dg.labels == digit)[0][:6]
    other = np.where(dg.labels != digit)[0][:2]
    st.caption("Sample images with the mask (red: increasing trend in run 0); the last two are "
               "other digits. Constant pixels (never inked) are left out of training.")
    cols = st.columns(len(idx) + len(other))
    for col, i in zip(cols, np.r_[idx, other]):
        col.image(V.mask_overlay(dg.images[i], dg.increasing_mask), caption=f"label {dg.labels[i]}",
                  width="stretch")
    maps = pd.DataFrame({"pixel": [f"({p // 8},{p % 8})" for p in range(64)],
                         "increasing_run0": dg.increasing_mask.ravel(),
                         "increasing_share": dg.increasing_share.ravel(),
                         "spearman": dg.spearman_map.ravel(), "trend_rho_run0": dg.rho_map.ravel()})
    c1, c2 = st.columns(2)
    with c1:
        download_csv("Pixel maps (CSV)", maps.set_index("pixel"), f"landscape_digits_{digit}.csv",
                     key="dl_ls_digits")
    with c2:
        download_json("Digits summary (JSON)", dg.to_dict(), f"landscape_digits_{digit}.json",
                      key="dl_ls_digits_json")


tabs = st.tabs(["Simple network: derivatives vs Spearman", "Loaded model: sensitivities & loss surface",
                "Digits (image variant)"], key="ls_tabs")
with tabs[0]:
    if res is None:
        st.info("Choose the settings and press **Train and record derivatives**.")
    else:
        with guard("Showing the result"):
            _simple_tab(res)
with tabs[1]:
    with guard("The loaded-model tab"):
        _model_tab()
with tabs[2]:
    with guard("The digits tab"):
        _digits_tab()
