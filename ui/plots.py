"""Plotly figures shared by the pages."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go


def bar_with_ci(names, values: dict[str, tuple[np.ndarray, np.ndarray]], title: str = "",
                yaxis: str = "") -> go.Figure:
    """Grouped bars ``{series: (value, ci_half_width)}`` with error bars."""
    fig = go.Figure()
    for label, (val, ci) in values.items():
        fig.add_bar(name=label, x=list(names), y=np.asarray(val),
                    error_y=dict(type="data", array=np.asarray(ci), visible=True))
    fig.update_layout(barmode="group", title=title, yaxis_title=yaxis, height=420,
                      margin=dict(l=40, r=20, t=50, b=40))
    return fig


def heatmap(z: np.ndarray, x=None, y=None, title: str = "", colorscale: str = "Viridis",
            zmin=None, zmax=None, height: int = 420, reverse_y: bool = True) -> go.Figure:
    fig = go.Figure(go.Heatmap(z=np.asarray(z), x=x, y=y, colorscale=colorscale, zmin=zmin, zmax=zmax))
    fig.update_layout(title=title, height=height, margin=dict(l=40, r=20, t=50, b=40))
    if reverse_y:
        fig.update_yaxes(autorange="reversed")
    return fig


def band_lines(x, series: dict[str, tuple[np.ndarray, np.ndarray]], title: str = "",
               xaxis: str = "", yaxis: str = "", log_x: bool = False) -> go.Figure:
    """Lines with shaded ``value ± half_width`` bands, ``{name: (value, half_width)}``."""
    fig = go.Figure()
    x = list(x)
    for name, (val, hw) in series.items():
        val, hw = np.asarray(val, float), np.asarray(hw, float)
        fig.add_scatter(x=x + x[::-1], y=list(val + hw) + list((val - hw)[::-1]), fill="toself",
                        opacity=0.2, line=dict(width=0), showlegend=False, hoverinfo="skip",
                        legendgroup=name)
        fig.add_scatter(x=x, y=val, mode="lines+markers", name=name, legendgroup=name)
    fig.update_layout(title=title, xaxis_title=xaxis, yaxis_title=yaxis, height=420,
                      margin=dict(l=40, r=20, t=50, b=40))
    if log_x:
        fig.update_xaxes(type="log")
    return fig


# --------------------------------------------------------------------------- many series, signed maps

# Plotly's "Dark24" (24 distinct qualitative colours): 8+ features never share a colour
QUALITATIVE = ("#2E91E5", "#E15F99", "#1CA71C", "#FB0D0D", "#DA16FF", "#222A2A", "#B68100",
               "#750D86", "#EB663B", "#511CFB", "#00A08B", "#FB00D1", "#FC0080", "#B2828D",
               "#6C7C32", "#778AAE", "#862A16", "#A777F1", "#620042", "#1616A7", "#DA60CA",
               "#6C4516", "#0D2A63", "#AF0038")


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def palette_lines(x, series: dict[str, tuple[np.ndarray, np.ndarray]], title: str = "",
                  xaxis: str = "", yaxis: str = "", log_x: bool = False) -> go.Figure:
    """Like :func:`band_lines` with one distinct :data:`QUALITATIVE` colour per series (line and
    band alike, cycling past 24) and axes/legend that never clip their labels."""
    fig = go.Figure()
    x = list(x)
    for i, (name, (val, hw)) in enumerate(series.items()):
        col = QUALITATIVE[i % len(QUALITATIVE)]
        val, hw = np.asarray(val, float), np.asarray(hw, float)
        fig.add_scatter(x=x + x[::-1], y=list(val + hw) + list((val - hw)[::-1]), fill="toself",
                        fillcolor=_rgba(col, 0.15), line=dict(width=0), showlegend=False,
                        hoverinfo="skip", legendgroup=name)
        fig.add_scatter(x=x, y=val, mode="lines+markers", name=name, legendgroup=name,
                        line=dict(color=col), marker=dict(color=col))
    fig.update_layout(title=title, xaxis_title=xaxis, yaxis_title=yaxis, height=460,
                      margin=dict(l=70, r=30, t=60, b=60))
    fig.update_xaxes(automargin=True, type="log" if log_x else None)
    fig.update_yaxes(automargin=True)
    return fig


def signed_heatmap(z: np.ndarray, x, y, title: str = "", clip_negative: bool = False,
                   fmt: str = ".3f", height: int = 460) -> go.Figure:
    """A diverging map centred at 0 (``zmid=0``, red > 0, blue < 0) with each value printed on its
    cell (NaN cells blank); ``clip_negative`` shows negative values as 0."""
    z = np.array(z, dtype=float)
    if clip_negative:
        z = np.where(z < 0, 0.0, z)
    text = [["" if not np.isfinite(v) else format(v, fmt) for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=z, x=list(x), y=list(y), colorscale="RdBu_r", zmid=0,
                               text=text, texttemplate="%{text}", hoverongaps=False))
    fig.update_layout(title=title, height=height, margin=dict(l=70, r=20, t=60, b=60))
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(autorange="reversed", automargin=True)
    return fig


def bars(names, values: dict[str, np.ndarray], title: str = "", yaxis: str = "",
         errors: dict[str, np.ndarray] | None = None) -> go.Figure:
    """Grouped bars ``{series: value per name}`` (optional ``errors``: ± per name)."""
    fig = go.Figure()
    for label, val in values.items():
        err = None if not errors or label not in errors else \
            dict(type="data", array=np.asarray(errors[label], float), visible=True)
        fig.add_bar(name=label, x=list(names), y=np.asarray(val, float), error_y=err)
    fig.update_layout(barmode="group", title=title, yaxis_title=yaxis, height=420,
                      margin=dict(l=70, r=20, t=60, b=60))
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    return fig


def loss_curves(curves: dict[str, list[list[float]]], title: str = "Training loss per epoch",
                log_y: bool = False) -> go.Figure:
    """One line per retrained model: ``{group: [losses of seed 0, seed 1, ...]}``, a colour per
    group."""
    fig = go.Figure()
    for i, (group, runs) in enumerate(curves.items()):
        col = QUALITATIVE[i % len(QUALITATIVE)]
        for j, loss in enumerate(runs):
            fig.add_scatter(x=list(range(1, len(loss) + 1)), y=list(loss), mode="lines",
                            name=group, legendgroup=group, showlegend=j == 0,
                            line=dict(color=col, width=1), opacity=0.8)
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_title="loss", height=420,
                      margin=dict(l=70, r=20, t=60, b=60))
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True, type="log" if log_y else None)
    return fig


# --------------------------------------------------------------------------- text as text

_FORMAT_TAGS = ("br", "b", "i", "sup", "sub", "extra")  # the markup nnsens's own figures use


def _escape(text: str) -> str:
    out = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for tag in _FORMAT_TAGS:  # keep the harmless formatting tags (never links, images or styles)
        out = out.replace(f"&lt;{tag}&gt;", f"<{tag}>").replace(f"&lt;/{tag}&gt;", f"</{tag}>")
    return out


def _escape_all(obj):
    if isinstance(obj, str):
        return _escape(obj) if any(c in obj for c in "<>&") else obj
    if isinstance(obj, dict):
        return {k: _escape_all(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_escape_all(v) for v in obj)
    if isinstance(obj, np.ndarray) and obj.dtype.kind in "OUS":
        return np.array([_escape_all(v) for v in obj.ravel().tolist()], dtype=object).reshape(obj.shape)
    return obj


def safe_figure(fig: go.Figure) -> go.Figure:
    """``fig`` with every text shown as text: Plotly renders a subset of HTML in titles, tick
    labels (category names), legend entries, annotations and hover text, so a class folder or CSV
    column named ``<a href=...>`` would become a live link. Every string is escaped (``&``, ``<``,
    ``>`` as entities, which Plotly shows literally) except the formatting tags nnsens's own figures
    use (``<br>``, ``<b>``, ``<i>``, ``<sup>``, ``<sub>``, ``<extra>``). Pages show figures only
    through :func:`ui.widgets.show_chart`, which calls this."""
    return go.Figure(_escape_all(fig.to_plotly_json()))
