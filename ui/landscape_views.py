"""Figures and tables of the Loss-landscape page (plotly / pandas / numpy only, no streamlit).

Kept apart from the page so they can be tested and reused; the page only wires widgets to them.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nnsens_core import landscape as L

_MARGIN = dict(l=50, r=20, t=50, b=40)
_ORDINAL = {1: "1st", 2: "2nd", 3: "3rd"}


def loss_curve(h: L.TrainHistory) -> go.Figure:
    """MSE loss per recorded epoch, one line per run (seed)."""
    fig = go.Figure()
    for k, s in enumerate(h.seeds):
        fig.add_scatter(x=h.epochs, y=h.loss[k], mode="lines", name=f"run {k} (seed {s})")
    fig.update_layout(title="Training loss (MSE, full data)", xaxis_title="epoch", yaxis_title="loss",
                      height=360, margin=_MARGIN)
    return fig


def derivative_histories(res: L.LandscapeResult, run: int, features: list[int],
                         band_feature: int | None = None) -> go.Figure:
    """Three stacked panels (1st, 2nd, 3rd derivative) of the per-feature mean over samples vs epoch;
    epochs where the loss does not fall are shaded; ``band_feature`` adds its 5-95 % and 25-75 %
    per-sample quantile bands."""
    h = res.history
    reading = getattr(h, "reading", "input_diagonal")
    titles = [f"{_ORDINAL[k]} derivative  mean {L.READING_FORMULAS[reading][k]}" for k in L.ORDERS]
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=titles)
    ep = h.epochs.astype(float)
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22", "#17becf"]
    for row, k in enumerate(L.ORDERS, start=1):
        if band_feature is not None:
            q = h.quantiles[k][run, :, :, band_feature]  # (T, Q)
            col = palette[features.index(band_feature) % len(palette)] if band_feature in features \
                else "#444444"
            for lo, hi, op in ((0, 4, 0.12), (1, 3, 0.25)):
                fig.add_scatter(x=np.r_[ep, ep[::-1]], y=np.r_[q[:, lo], q[::-1, hi]], fill="toself",
                                line=dict(width=0), fillcolor=col, opacity=op, hoverinfo="skip",
                                showlegend=False, row=row, col=1)
        for i, j in enumerate(features):
            fig.add_scatter(x=ep, y=h.mean[k][run, :, j], mode="lines", name=res.feature_names[j],
                            legendgroup=res.feature_names[j], showlegend=row == 1,
                            line=dict(color=palette[i % len(palette)]), row=row, col=1)
    unused = ~L.falling_mask(h.loss[run], res.config.descent_share)
    unused[0] = False
    for e0, e1 in _runs(ep, unused):
        fig.add_vrect(x0=e0, x1=e1, fillcolor="grey", opacity=0.12, line_width=0)
    fig.update_xaxes(title_text="epoch", row=3, col=1)
    fig.update_layout(height=740, margin=dict(l=50, r=20, t=90, b=40),
                      title=dict(text=f"Derivative histories ({L.READING_LABELS[reading]} reading), "
                                      f"run {run} (seed {h.seeds[run]})"
                                      "<br><sup>grey: epochs left out of the trend (loss not falling"
                                      " or past the main descent)</sup>"))
    return fig


def _runs(x: np.ndarray, mask: np.ndarray) -> list[tuple[float, float]]:
    """Contiguous stretches ``[x0, x1]`` where ``mask`` holds (for shading)."""
    out, start = [], None
    for i, m in enumerate(mask):
        if m and start is None:
            start = i
        if (not m or i == len(mask) - 1) and start is not None:
            stop = i if m else i - 1
            out.append((float(x[max(start - 1, 0)]), float(x[stop])))
            start = None
    return out


def spearman_bars(names, rho: np.ndarray, title: str = "Spearman(feature, target)") -> go.Figure:
    rho = np.asarray(rho, float)
    fig = go.Figure(go.Bar(x=rho, y=list(names), orientation="h",
                           marker_color=np.where(rho >= 0, "#2ca02c", "#d62728"),
                           text=[f"{r:+.3f}" for r in rho], textposition="auto"))
    fig.update_layout(title=title, height=max(260, 60 + 28 * len(rho)),
                      margin=dict(l=10, r=10, t=50, b=40), xaxis=dict(range=[-1, 1], title="rho"))
    fig.update_yaxes(automargin=True)
    fig.update_yaxes(autorange="reversed")
    return fig


def distribution_box(values: np.ndarray, names, title: str, yaxis: str = "") -> go.Figure:
    """Per-sample distribution (box with the points' spread) of one value per feature."""
    fig = go.Figure()
    for j, nm in enumerate(names):
        fig.add_box(y=values[:, j], name=str(nm), boxmean="sd", boxpoints=False)
    fig.update_layout(title=title, yaxis_title=yaxis, height=380, margin=_MARGIN, showlegend=False)
    return fig


def trend_frame(res: L.LandscapeResult, run: int = 0) -> pd.DataFrame:
    """Per feature: Spearman with the target, trend of the 2nd derivative in ``run`` and agreement."""
    t = res.trends[run]
    agree = {True: "yes", False: "no", None: "n/a"}
    return pd.DataFrame({
        "spearman": res.spearman, "spearman_sign": np.sign(res.spearman).astype(int),
        "trend": [str(x) for x in t.label], "direction": [str(x) for x in t.direction],
        "trend_rho": t.rho, "trend_slope": t.slope,
        "agrees": [agree[a] for a in res.agree[run]],
    }, index=pd.Index(res.feature_names, name="feature"))


def agreement_frame(res: L.LandscapeResult) -> pd.DataFrame:
    """One row per (reading, order): formula, agreement rate over all runs and in run 0, features
    whose runs mostly agree / disagree."""
    df = res.agreement_table()
    df.insert(0, "reading_label", [L.READING_LABELS[r] for r in df["reading"]])
    return df


def agreement_heatmap(res: L.LandscapeResult) -> go.Figure:
    """Reading x order heatmap of the agreement with the Spearman sign (all runs); text: the rate
    and the features whose runs mostly agree."""
    m = res.agreement_matrix("rate")
    counts = res.agreement_matrix("features_agreeing")
    d = len(res.feature_names)
    text = [[("n/a" if np.isnan(m[i, c]) else f"{m[i, c]:.0%}") + f"<br>{int(counts[i, c])}/{d} features"
             for c in range(m.shape[1])] for i in range(m.shape[0])]
    fig = go.Figure(go.Heatmap(
        z=m, x=[f"{_ORDINAL[k]} derivative" for k in L.ORDERS],
        y=[L.READING_LABELS[r] for r in L.READINGS], zmin=0, zmax=1, colorscale="RdYlGn",
        text=text, texttemplate="%{text}", colorbar=dict(title="agree"),
        hovertemplate="%{y}, %{x}: %{z:.2f}<extra></extra>"))
    fig.update_layout(title=f"Agreement of the trend with the Spearman sign ({res.n_runs} run(s); "
                            "chance 50%)", height=330, margin=dict(l=10, r=10, t=50, b=40))
    fig.update_yaxes(autorange="reversed", automargin=True)
    return fig


def consistency_frame(res: L.LandscapeResult) -> pd.DataFrame:
    df = pd.DataFrame(res.consistency()).set_index("feature")
    for k, s in enumerate(res.history.seeds):
        df[f"run{k}(seed {s})"] = [str(x) for x in res.trends[k].label]
    return df


def history_frame(res: L.LandscapeResult) -> pd.DataFrame:
    """Long table: run, seed, epoch, loss, feature, mean d1/d2/d3 (one row per run, epoch, feature)."""
    h = res.history
    K, T, d = h.mean[1].shape
    run, ep, feat = np.meshgrid(np.arange(K), np.arange(T), np.arange(d), indexing="ij")
    df = pd.DataFrame({"run": run.ravel(), "seed": np.asarray(h.seeds)[run.ravel()],
                       "epoch": h.epochs[ep.ravel()], "loss": h.loss[run.ravel(), ep.ravel()],
                       "feature": np.asarray(res.feature_names, dtype=object)[feat.ravel()]})
    for k in L.ORDERS:
        df[f"mean_d{k}"] = h.mean[k].ravel()
    return df


# ------------------------------------------------------------------------ loaded model

def gradient_summary_bars(summary: dict) -> go.Figure:
    names = list(summary["feature_names"])
    fig = go.Figure()
    fig.add_bar(name="mean ∂y/∂x (± std)", x=names, y=summary["mean"],
                error_y=dict(type="data", array=summary["std"], visible=True))
    fig.add_bar(name="RMS ∂y/∂x", x=names, y=summary["rms"])
    fig.update_layout(barmode="group", title="NeuralSens-style sensitivities of the loaded model",
                      height=400, margin=_MARGIN)
    return fig


def gradient_frame(summary: dict) -> pd.DataFrame:
    return pd.DataFrame({"mean": summary["mean"], "std": summary["std"], "rms": summary["rms"]},
                        index=pd.Index(summary["feature_names"], name="feature"))


def surface_figures(s: L.LossSurface) -> tuple[go.Figure, go.Figure]:
    """A 3-D surface and a contour map of the loss over the two directions."""
    z = s.loss.T  # plotly: z[row = beta, col = alpha]
    surf = go.Figure(go.Surface(x=s.alphas, y=s.betas, z=z, colorscale="Viridis"))
    surf.update_layout(title=f"Loss surface ({s.loss_kind}) around the trained weights", height=520,
                       margin=dict(l=0, r=0, t=50, b=0),
                       scene=dict(xaxis_title="α (direction 1)", yaxis_title="β (direction 2)",
                                  zaxis_title="loss"))
    cont = go.Figure(go.Contour(x=s.alphas, y=s.betas, z=z, colorscale="Viridis",
                                contours=dict(showlabels=True)))
    cont.add_scatter(x=[0], y=[0], mode="markers", marker=dict(symbol="x", size=12, color="red"),
                     name="trained weights")
    cont.update_layout(title="Contours (x: trained weights)", xaxis_title="α", yaxis_title="β",
                       height=520, margin=_MARGIN)
    return surf, cont


def surface_frame(s: L.LossSurface) -> pd.DataFrame:
    return s.to_frame()


# ------------------------------------------------------------------------ digits

def mask_overlay(image: np.ndarray, mask: np.ndarray, scale: int = 16,
                 colour=(255, 40, 40), alpha: float = 0.4) -> np.ndarray:
    """An (8, 8) grey image in [0, 1] with the pixels of ``mask`` tinted, upscaled to uint8 RGB."""
    g = np.clip(np.asarray(image, float), 0, 1)
    rgb = np.repeat(g[..., None], 3, axis=2) * 255
    m = np.asarray(mask, bool)
    rgb[m] = rgb[m] * (1 - alpha) + np.asarray(colour, float) * alpha
    big = np.kron(rgb, np.ones((scale, scale, 1)))
    return big.astype(np.uint8)


def pixel_map(z: np.ndarray, title: str, colorscale: str = "RdBu_r", zmin=None, zmax=None) -> go.Figure:
    fig = go.Figure(go.Heatmap(z=z, colorscale=colorscale, zmin=zmin, zmax=zmax,
                               hovertemplate="row %{y}, col %{x}: %{z:.3f}<extra></extra>"))
    fig.update_layout(title=title, height=340, width=360, margin=dict(l=20, r=20, t=50, b=20))
    fig.update_yaxes(autorange="reversed", scaleanchor="x")
    return fig
