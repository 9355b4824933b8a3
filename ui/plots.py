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
