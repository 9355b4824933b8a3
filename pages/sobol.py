"""Global sensitivity (Sobol'): S1 / ST / S2 of the output and of hidden neurons, convergence,
feature reduction by retraining, and a PCA comparison (paper section 2).

widgets -> SobolProblem / SobolConfig -> nnsens_core.sobol -> plotly.  Results are cached with
``st.cache_data`` (model & data key + bounds + config; shared by every session, progress bars
replayed finished on a hit) and kept in ``st.session_state["sobol"]``, so reruns and going back to
an earlier setting never recompute.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import pandas as pd
import streamlit as st

from nnsens_core import budget as B
from nnsens_core import sobol as S
from nnsens_core._results import export_json
from nnsens_core.data import parse_rows
from nnsens_core.errors import NnsensError
from nnsens_core.training import TrainConfig
from ui.cache import CACHE_TTL
from ui import plots, state
from ui.widgets import (Progress, cost_line, download_csv, download_json, guard, plain,
                        require_usable_model, within_budget, show_chart)

state.require_router()

st.title("Global sensitivity (Sobol')")
st.caption("Variance-based indices of the selected tabular model: inputs drawn uniformly within the "
           "bounds (Saltelli/Sobol' sampling), the model evaluated in large batches, and "
           f"{S.ESTIMATORS}, computed for all outputs at once in float64 torch.")

ctx = state.tabular()
require_usable_model(ctx.model, ctx.key, ctx.device)
data = ctx.data
for _w in S.target_warnings(data, ctx.model):  # before any analysis: a wrong target is named
    st.warning(plain(_w))
PAPER = S.PAPER


def _init(key: str, value, name: str = "value") -> dict:
    """``{name: value}`` for a widget's first render, nothing once ``key`` is in the session state
    (set by the widget or by the paper preset), so Streamlit never sees a default and a preset
    value for the same widget."""
    return {} if key in st.session_state else {name: value}


def _apply_paper_preset() -> None:
    """One click: every widget of the page takes the paper's value (see the table below)."""
    ss = st.session_state
    ss[f"sobol_rows|{ctx.key}"] = PAPER.bounds_rows
    ss["sobol_n"], ss["sobol_so"] = PAPER.sobol.n, PAPER.sobol.second_order
    ss["sobol_R"], ss["sobol_conf"] = PAPER.sobol.num_resamples, PAPER.sobol.conf_level
    ss["sobol_seed"] = PAPER.sobol.seed
    if PAPER.sobol.layer in _layers_now():
        ss["sobol_layer"] = PAPER.sobol.layer
    ss["sobol_step_on"], ss["sobol_step"] = True, PAPER.step * 100
    ss["sobol_clip_s2"] = PAPER.clip_s2
    ss["sobol_fr_tr"], ss["sobol_fr_te"] = PAPER.train_rows, PAPER.test_rows
    ss["sobol_fr_epochs"], ss["sobol_fr_lr"] = PAPER.train.epochs, PAPER.train.lr
    ss["sobol_fr_wd"], ss["sobol_fr_full"] = PAPER.train.weight_decay, False
    ss["sobol_fr_bs"] = PAPER.train.batch_size
    ss["sobol_pca_rows"], ss["sobol_pca_class_on"] = PAPER.pca_rows, PAPER.pca_class is not None
    ss["sobol_pca_class"] = float(PAPER.pca_class or 1.0)
    ss["sobol_pca_imp"] = PAPER.pca_importance
    ss["sobol_preset_used"] = True


def _layers_now() -> dict:
    with contextlib.suppress(NnsensError):
        return S.hidden_layers(ctx.model, data.n_features)
    return {}


p1, p2 = st.columns([1, 3])
p1.button("Paper preset", key="sobol_preset", on_click=_apply_paper_preset,
          help="Set every control to the tabular paper's values (rows 0:500 / 500:700, bounds = "
               "min/max of rows 0:700, SGD lr 0.01, weight decay 1e-3, N, S2, +1 % step, PCA on "
               "Outcome = 1 with normalised |loading|).")
if st.session_state.get("sobol_preset_used"):
    with p2.expander("Paper preset: the values set and where they come from", expanded=False):
        rec = PAPER.as_dict()
        src = rec.pop("source")
        st.dataframe(pd.DataFrame({"value": [str(v) for v in rec.values()],
                                   "source": [src.get(k, "") for k in rec]},
                                  index=pd.Index(list(rec), name="setting")), width="stretch")
store = st.session_state.setdefault("sobol", {"runs": {}, "conv": {}, "fr": {}, "last": {}})


class StageBars:
    """One progress bar per stage (sampling / evaluation / analysis), made when the stage starts."""

    LABELS = {"sampling": "Sampling (Sobol' sequence)", "evaluation": "Evaluating the model",
              "analysis": "Estimating indices (all bootstrap resamples)"}

    def __init__(self):
        self.bars: dict[str, Progress] = {}

    def __call__(self, done: int, total: int, stage: str = "") -> None:
        if stage not in self.bars:
            self.bars[stage] = Progress(self.LABELS.get(stage, stage), total)
        self.bars[stage](done, total)

    def done(self) -> None:
        for bar in self.bars.values():
            bar.done()


# ----------------------------------------------------------------------------- cached core calls
# Progress bars live inside the cached functions: a cache hit replays them already finished.
@st.cache_data(show_spinner=False, max_entries=32, ttl=CACHE_TTL)
def _run(_model, key: str, problem: S.SobolProblem, cfg: S.SobolConfig, device: str) -> S.SobolResult:
    bars = StageBars()
    try:
        with within_budget(B.sobol(_model, problem.D, cfg)):
            return S.run(_model, problem, cfg, device, progress=bars)
    finally:
        bars.done()


@st.cache_data(show_spinner=False, max_entries=16, ttl=CACHE_TTL)
def _convergence(_model, key: str, problem: S.SobolProblem, ns: tuple, cfg: S.SobolConfig,
                 device: str) -> S.ConvergenceResult:
    bars = StageBars()
    try:
        with within_budget(B.convergence(_model, problem.D, ns, cfg.num_resamples)):
            return S.convergence(_model, problem, list(ns), cfg, device, progress=bars)
    finally:
        bars.done()


@st.cache_data(show_spinner=False, max_entries=16, ttl=CACHE_TTL)
def _feature_reduction(_model, _data, key: str, train_rows: str, test_rows: str, ranking: tuple,
                       cfg: S.FeatureReductionConfig, device: str) -> S.FeatureReductionResult:
    bar = Progress("Retraining (all / top-k / bottom-k × seeds, per epoch)",
                   3 * len(cfg.seeds) * cfg.train.epochs)
    try:
        train = _data.rows(train_rows)
        with within_budget(B.feature_reduction(_model, len(train.X), cfg)):
            return S.feature_reduction(_model, train, _data.rows(test_rows), ranking, cfg, device,
                                       progress=bar)
    finally:
        bar.done()


def _default_bounds_rows() -> str:
    tr, te = parse_rows(ctx.train_rows, len(data.X)), parse_rows(ctx.test_rows, len(data.X))
    return f"{min(tr.start, te.start)}:{max(tr.stop, te.stop)}"


# ----------------------------------------------------------------------------- settings
# Inputs live in a collapsed expander; their errors and warnings are shown below it, in view.
box = st.expander("Inputs: rows and bounds", expanded=False)
rows_spec = box.text_input("Rows whose min/max give the bounds",
                           **_init(f"sobol_rows|{ctx.key}", _default_bounds_rows()),
                           key=f"sobol_rows|{ctx.key}",
                           help="The paper uses the min/max of the rows it trains and tests on.")
lim = edited = problem = None
with guard("Computing the bounds"):
    lim = data.rows(rows_spec).bounds()
if lim is not None:
    table = pd.DataFrame({"feature": list(data.feature_names), "min": lim[:, 0], "max": lim[:, 1]})
    edited = box.data_editor(table, key=f"sobol_bounds|{ctx.key}|{rows_spec}", hide_index=True,
                             disabled=["feature"], width="stretch")
    constant = [f for f, lo, hi in zip(data.feature_names, lim[:, 0], lim[:, 1]) if lo >= hi]
    if constant:
        st.warning(f"Constant in rows {rows_spec}: {', '.join(plain(c) for c in constant)}. "
                   "Widen their bounds in "
                   "'Inputs: rows and bounds' (or select more rows, or drop the columns).")
    with guard("Checking the bounds"):
        problem = S.SobolProblem(tuple(edited["feature"]),
                                 tuple(zip(edited["min"].astype(float), edited["max"].astype(float))))
    with box:
        download_csv("Download bounds (CSV)", edited.set_index("feature"), "sobol_bounds.csv",
                     key="dl_sobol_bounds")
if problem is None:
    st.stop()

layers = {}
with guard("Listing the hidden layers"):
    layers = S.hidden_layers(ctx.model, data.n_features)
default_layer = None
with guard("Choosing a hidden layer"):
    default_layer = S.default_layer(ctx.model, data.n_features)

c1, c2 = st.columns([3, 1])
n = c1.select_slider("Base samples N", [2**k for k in range(7, 18)], **_init("sobol_n", 2**12),
                     format_func=lambda x: f"2^{int(math.log2(x))} = {x:,}", key="sobol_n")
second = c2.checkbox("Second order (S2)", **_init("sobol_so", True), key="sobol_so",
                     help="2D+2 model runs per base sample instead of D+2")
c3, c4, c5 = st.columns(3)
seed = c3.number_input("Sampling seed", 0, 2**31 - 1, **_init("sobol_seed", int(ctx.seed)), key="sobol_seed",
                       help="Seed of the scrambled Sobol' sequence and of the bootstrap resamples "
                            "(the sidebar seed also retrains the demo model; this one does not).")
resamples = c4.number_input("Bootstrap resamples", 10, 2000, **_init("sobol_R", 100), step=10,
                            key="sobol_R")
conf = c5.slider("Confidence level", 0.80, 0.99, **_init("sobol_conf", 0.95), step=0.01,
                 key="sobol_conf")
layer_opts = ["(model output only)"] + list(layers)
layer_choice = st.selectbox(
    "Also analyse every neuron of a hidden layer", layer_opts,
    **_init("sobol_layer", layer_opts.index(default_layer) if default_layer in layer_opts else 0,
            "index"), key="sobol_layer",
    format_func=lambda s: s if s not in layers else f"{s} ({layers[s]} neurons)",
    help="All neurons of the layer are captured in the same forward pass as the output.")
rows_per = S.rows_per_sample(problem.D, bool(second))
st.caption(f"{n * rows_per:,} model evaluations (N × {rows_per}) on {ctx.device}.")

cfg = None
with guard("Checking the settings"):
    cfg = S.SobolConfig(n=int(n), second_order=bool(second), seed=int(seed),
                        num_resamples=int(resamples), conf_level=float(conf),
                        layer=None if layer_choice not in layers else layer_choice)
if cfg is None:
    st.stop()
run_key = (ctx.key, problem, cfg)
affordable = cost_line(B.sobol(ctx.model, problem.D, cfg))

if st.button("Run Sobol analysis", type="primary", key="sobol_run", disabled=not affordable):
    if run_key not in store["runs"]:
        with guard("The Sobol analysis"):
            store["runs"][run_key] = _run(ctx.model, ctx.key, problem, cfg, str(ctx.device))
    if run_key in store["runs"]:
        store["last"][ctx.key] = run_key

res: S.SobolResult | None = state.last_result(store["runs"], store["last"], ctx.key, run_key,
                                              "Run Sobol analysis")


# ----------------------------------------------------------------------------- rendering
def _indices_tab(res: S.SobolResult) -> None:
    out = res.output()
    names = list(res.names)
    k1, k2, k3, k4 = st.columns(4)
    k1.metric("N", f"{res.indices.N:,}")
    k2.metric("Model evaluations", f"{res.indices.N * S.rows_per_sample(len(names), res.config.second_order):,}")
    k3.metric("Time", f"{sum(res.timings.values()):.2f} s")
    k4.metric("Σ S1 (output)", f"{np.sum(out.S1[0]):.3f}")
    st.caption(" · ".join(f"{k} {v:.2f}s" for k, v in res.timings.items())
               + f" · CIs at {res.config.conf_level:.0%} from {res.config.num_resamples} resamples")
    show_chart(st, plots.bar_with_ci(names, {"S1": (out.S1[0], out.S1_conf[0]),
                                              "ST": (out.ST[0], out.ST_conf[0])},
                                      title="First-order and total indices of the model output",
                                      yaxis="index"), key="sobol_bar")
    if out.S2 is not None:
        clip = st.checkbox("Show negative S2 estimates as 0 (as the authors did)",
                           key="sobol_clip_s2", value=False,
                           help="Negative S2 are estimation noise around 0; the table keeps them.")
        show_chart(st, plots.signed_heatmap(out.S2[0], names, names, clip_negative=clip,
                                            title="Second-order indices S2 (upper triangle; "
                                                  "red > 0 > blue)"), key="sobol_s2")
    if res.config.layer is not None:
        layer = res.group(res.config.layer)
        labels = [t for t, g in zip(res.targets, res.groups) if g == res.config.layer]
        a, b = st.columns(2)
        show_chart(a, plots.heatmap(layer.S1, x=names, y=labels, zmin=0, zmax=1,
                                     title=f"S1 of every {res.config.layer} neuron"), key="sobol_l1")
        show_chart(b, plots.heatmap(layer.ST, x=names, y=labels, zmin=0, zmax=1,
                                     title=f"ST of every {res.config.layer} neuron"), key="sobol_lt")
        dead = [lab for lab, c in zip(labels, layer.constant) if c]
        if dead:
            st.caption(f"Constant on the whole input box (indices set to 0): {', '.join(dead)}")
        summ = res.layer_summary()
        show_chart(st, plots.bars(names, {"mean S1": summ["S1_mean"], "mean ST": summ["ST_mean"]},
                                  errors={"mean S1": summ["S1_std"], "mean ST": summ["ST_std"]},
                                  title=f"Per feature: mean over the {summ.attrs['neurons']} "
                                        f"non-constant {res.config.layer} neurons (± std)",
                                  yaxis="index"), key="sobol_lsum")
    _step_section(res)
    frames = res.to_frames()
    for name, df in frames.items():
        with st.expander(f"Table: {name}", expanded=name == "indices"):
            st.dataframe(df, width="stretch")
            download_csv(f"Download {name} (CSV)", df, f"sobol_{name.replace(' ', '_')}.csv",
                         key=f"dl_sobol_{name}")


@st.cache_data(show_spinner=False, max_entries=16, ttl=CACHE_TTL)
def _step(_model, key: str, rows: str, layer: str, step: float, device: str) -> S.StepSensitivity:
    sub = data.rows(rows)
    return S.step_sensitivity(_model, sub.X, sub.feature_names, layer, step, device)


def _step_section(res: S.SobolResult) -> None:
    """The authors' hidden-layer measure (their Fig. 3) next to the per-neuron Sobol indices."""
    layer = res.config.layer or S.OUTPUT
    on = st.checkbox(f"Authors' measure: mean norm of the change of {layer}'s output when one "
                     "input is raised by a relative step", key="sobol_step_on", value=False)
    if not on:
        store["step"] = None
        return
    pct = st.number_input("Relative step (%)", -50.0, 50.0, **_init("sobol_step", 1.0), step=0.5,
                          key="sobol_step")
    with guard("The step measure"):
        if pct == 0:
            raise NnsensError("the relative step is 0 %; use e.g. 1 % as the authors")
        r = _step(ctx.model, ctx.key, rows_spec, layer, float(pct) / 100, str(ctx.device))
        store["step"] = r
        zero = [n for n, z in zip(r.names, r.zero_share) if z > 0]
        show_chart(st, plots.bars(list(r.names), {"mean ‖Δ‖": r.values},
                                  title=f"Mean ‖Δ {layer}‖ for x_d × (1 {pct:+g} %), rows "
                                        f"{rows_spec} ({r.n_rows} rows)", yaxis="mean norm change"),
                   key="sobol_step_bar")
        if zero:
            st.caption("A relative step leaves 0 values unchanged; share of rows at 0: "
                       + ", ".join(f"{plain(n)} {z:.0%}" for n, z in zip(r.names, r.zero_share) if z > 0))
        st.dataframe(r.to_frame(), width="stretch")
        download_csv("Download step measure (CSV)", r.to_frame(), "sobol_hidden_step.csv",
                     key="dl_sobol_step")


def _convergence_tab() -> S.ConvergenceResult | None:
    st.write("S1 and ST of the model output against N (powers of two). One Sobol' sample at the "
             "largest N is evaluated once; its first n blocks are exactly the sample for n.")
    lo, hi = st.select_slider("N range", [2**k for k in range(5, 18)], value=(2**7, 2**12),
                              format_func=lambda x: f"2^{int(math.log2(x))}", key="sobol_conv_range")
    cfg_c = cfg
    key = (ctx.key, problem, int(lo), int(hi), cfg_c.seed, cfg_c.num_resamples, cfg_c.conf_level)
    conv_ok = True
    with contextlib.suppress(NnsensError):  # a bad range: the run itself says so
        ns_all = S.powers_of_two(int(lo), int(hi))
        conv_ok = cost_line(B.convergence(ctx.model, problem.D, ns_all, cfg_c.num_resamples))
    if st.button("Run convergence study", key="sobol_conv_run", disabled=not conv_ok):
        with guard("The convergence study"):
            ns = S.powers_of_two(int(lo), int(hi))
            if len(ns) < 2:
                st.warning("Pick a range with at least two values of N.")
            elif key not in store["conv"]:
                store["conv"][key] = _convergence(ctx.model, ctx.key, problem, tuple(ns), cfg_c,
                                                  str(ctx.device))
    conv = store["conv"].get(key)
    if conv is None:
        return None
    names = list(conv.names)
    for idx, conf_key in (("S1", "S1_conf"), ("ST", "ST_conf")):
        vals, cis = getattr(conv, idx), getattr(conv, conf_key)
        show_chart(st, plots.palette_lines(conv.ns, {nm: (vals[:, d], cis[:, d]) for d, nm in enumerate(names)},
                                           title=f"{idx} vs N (bands: {cfg_c.conf_level:.0%} CI)",
                                           xaxis="N", yaxis=idx, log_x=True), key=f"sobol_conv_{idx}")
    df = conv.to_frame()
    download_csv("Download convergence (CSV)", df, "sobol_convergence.csv", key="dl_sobol_conv")
    return conv


def _reduction_tab(res: S.SobolResult | None) -> S.FeatureReductionResult | None:
    if res is None:
        st.info("Run the Sobol analysis first: features are ranked by their total index ST.")
        return None
    st.write("Retrain the same architecture (fresh weights; the loaded model is never touched) on "
             "the k features with the highest ST and on the k lowest, over several seeds.")
    D = len(res.names)
    r1, r2 = st.columns(2)
    tr_rows = r1.text_input("Training rows", **_init("sobol_fr_tr", ctx.train_rows), key="sobol_fr_tr")
    te_rows = r2.text_input("Test rows", **_init("sobol_fr_te", ctx.test_rows), key="sobol_fr_te")
    c1, c2, c3 = st.columns(3)
    k = c1.slider("k features", 1, max(1, D - 1), max(1, D // 2), key="sobol_fr_k")
    n_seeds = c2.number_input("Seeds", 1, 20, 5, key="sobol_fr_seeds")
    epochs = c3.number_input("Epochs", 1, 20000, **_init("sobol_fr_epochs", 100), key="sobol_fr_epochs")
    c4, c5, c6, c7 = st.columns(4)
    lr = c4.number_input("Learning rate (SGD)", 1e-6, 10.0, **_init("sobol_fr_lr", 0.01), format="%.5f",
                    key="sobol_fr_lr")
    wd = c5.number_input("Weight decay", 0.0, 1.0, **_init("sobol_fr_wd", 1e-3), format="%.5f",
                    key="sobol_fr_wd")
    full = c6.checkbox("Full batch", value=False, key="sobol_fr_full",
                       help="One gradient step per epoch on all training rows.")
    bs = c7.number_input("Mini-batch", 2, 100000, **_init("sobol_fr_bs", 32), key="sobol_fr_bs",
                         disabled=full)
    ranking = tuple(float(x) for x in res.output().ST[0])
    fcfg = n_train = None
    with guard("Checking the settings"):
        n_train = len(data.rows(tr_rows).X)
        data.rows(te_rows)
        fcfg = S.FeatureReductionConfig(
            k=int(k), seeds=tuple(range(ctx.seed, ctx.seed + int(n_seeds))),
            train=TrainConfig(epochs=int(epochs), lr=float(lr), weight_decay=float(wd),
                              batch_size=n_train if full else int(bs), seed=ctx.seed),
            full_batch=bool(full))
    if fcfg is None:
        return None
    key = (ctx.key, tr_rows, te_rows, ranking, fcfg)
    fr_ok = cost_line(B.feature_reduction(ctx.model, n_train, fcfg))
    if st.button("Retrain and compare", key="sobol_fr_run", disabled=not fr_ok) and key not in store["fr"]:
        with guard("Retraining"):
            store["fr"][key] = _feature_reduction(ctx.model, data, ctx.key, tr_rows, te_rows,
                                                  ranking, fcfg, str(ctx.device))
    fr = store["fr"].get(key)
    if fr is None:
        return None
    df = fr.to_frame()
    m1, m2 = st.columns(2)
    if fr.original_train_accuracy is not None:
        m1.metric(f"Loaded model, train accuracy ({tr_rows})", f"{fr.original_train_accuracy:.3f}")
    if fr.original_accuracy is not None:
        m2.metric(f"Loaded model, test accuracy ({te_rows})", f"{fr.original_accuracy:.3f}")
    show_chart(st, plots.bars(list(df.index), {"train accuracy": df["train_acc_mean"],
                                               "test accuracy": df["acc_mean"]},
                              errors={"train accuracy": df["train_acc_std"],
                                      "test accuracy": df["acc_std"]},
                              title="Accuracy, mean ± std over seeds", yaxis="accuracy"),
               key="sobol_fr_bar")
    show_chart(st, plots.loss_curves(fr.losses, title="Training loss per epoch (one line per seed)"),
               key="sobol_fr_loss")
    st.dataframe(df, width="stretch")
    download_csv("Download feature reduction (CSV)", df, "sobol_feature_reduction.csv", key="dl_sobol_fr")
    return fr


def _pca_tab(res: S.SobolResult | None) -> S.PCAComparison | None:
    if res is None:
        st.info("Run the Sobol analysis first: the PCA ranking is compared with the ST ranking.")
        return None
    c1, c2, c3 = st.columns(3)
    prows = c1.text_input("PCA rows (independent of the bounds)", **_init("sobol_pca_rows", rows_spec),
                          key="sobol_pca_rows")
    by_class = c2.checkbox(f"Only rows of one {plain(data.target_name)} value", value=False,
                           key="sobol_pca_class_on", help="The authors used Outcome = 1 only.")
    cls = c3.number_input(f"{plain(data.target_name)} =", **_init("sobol_pca_class", 1.0), key="sobol_pca_class",
                          disabled=not by_class)
    c4, c5, c6 = st.columns(3)
    how = c4.radio("Components", ["variance share", "fixed number"], key="sobol_pca_how",
                   horizontal=True)
    if how == "fixed number":
        ncomp = c5.number_input("Number of components", 1, data.n_features, min(2, data.n_features),
                                key="sobol_pca_ncomp")
        share = 0.8
    else:
        ncomp = None
        share = c5.slider("Explained-variance share to reach", 0.5, 0.99, 0.8, 0.01, key="sobol_pca_share")
    standardize = c6.checkbox("Standardise features first", value=True, key="sobol_pca_std",
                              help="Raw features: PCA is dominated by the largest-scale columns.")
    imp = st.radio("Importance formula", list(S.PCA_IMPORTANCE), key="sobol_pca_imp",
                   format_func=lambda k: S.PCA_IMPORTANCE[k], horizontal=False)
    pca = None
    with guard("The PCA comparison"):
        rows = S.pca_rows(data, prows, float(cls) if by_class else None)
        pca = S.pca_comparison(rows.X, rows.feature_names, res.output().ST[0], float(share),
                               bool(standardize), None if ncomp is None else int(ncomp), imp,
                               prows, float(cls) if by_class else None)
        st.caption(f"{pca.n_components} component(s) explain "
                   f"{pca.explained[:pca.n_components].sum():.1%} of the variance ({pca.n_rows} rows "
                   f"of {plain(prows)}" + (f" with {plain(data.target_name)} = {cls:g}" if by_class else "")
                   + f"); importance = {S.PCA_IMPORTANCE[imp]}; Spearman rank correlation with the "
                   f"ST ranking: {pca.spearman:+.2f}.")
        load = pca.loadings_frame()
        show_chart(st, plots.heatmap(load.to_numpy(), x=list(load.columns), y=list(load.index),
                                      colorscale="RdBu_r", zmin=-1, zmax=1, title="PCA loadings",
                                      height=200 + 40 * len(load)), key="sobol_pca_load")
        df = pca.to_frame()
        show_chart(st, plots.bars(list(df.index), {"ST (normalised)": df["sobol"] / df["sobol"].abs().sum(),
                                                   "PCA importance": df["pca_importance"]},
                                  title="ST vs PCA importance (each sums to 1)"), key="sobol_pca_bar")
        st.dataframe(df, width="stretch")
        download_csv("Download ranking comparison (CSV)", df, "sobol_pca_ranking.csv", key="dl_sobol_pca")
        download_csv("Download loadings (CSV)", load, "sobol_pca_loadings.csv", key="dl_sobol_pcal")
    return pca


tabs = st.tabs(["Indices", "Convergence", "Feature reduction", "PCA comparison"])
with tabs[0]:
    if res is None:
        st.info("Choose the settings and press **Run Sobol analysis**.")
    else:
        _indices_tab(res)
with tabs[1]:
    conv_shown = _convergence_tab()
with tabs[2]:
    fr_shown = _reduction_tab(res)
with tabs[3]:
    pca_shown = _pca_tab(res)

if res is not None:  # the CLI's document, plus each study on screen
    studies = {name: part.to_dict() for name, part in (
        ("convergence", conv_shown), ("feature_reduction", fr_shown), ("pca", pca_shown),
        ("hidden_step", store.get("step"))) if part is not None}
    if res.config.layer is not None:
        studies["layer_summary"] = res.layer_summary().to_dict(orient="index")
    if st.session_state.get("sobol_preset_used"):
        studies["preset"] = PAPER.as_dict()
    doc = export_json(res, model=ctx.model.spec.name, data=data.name, rows=rows_spec,
                      estimators=S.ESTIMATORS, **studies)
    st.session_state["sobol_export"] = doc
    download_json("Download the whole result (JSON)", doc, "sobol_result.json", key="dl_sobol_json")
