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
