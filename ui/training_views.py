"""The per-epoch chart of a CNN training (:class:`nnsens_core.training.TrainReport`)."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots


def history_figure(frame: pd.DataFrame, best_epoch: int | None = None,
                   title: str = "Training history") -> go.Figure:
    """Train loss (left axis) and validation balanced accuracy (right axis, 0..1) per epoch from
    :meth:`TrainReport.to_frame`, with the kept epoch marked."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=frame["epoch"], y=frame["train_loss"], mode="lines+markers",
                             name="train loss"), secondary_y=False)
    if frame["val_balanced_accuracy"].notna().any():
        fig.add_trace(go.Scatter(x=frame["epoch"], y=frame["val_balanced_accuracy"],
                                 mode="lines+markers", name="validation balanced accuracy"),
                      secondary_y=True)
        fig.update_yaxes(title_text="balanced accuracy", range=[0, 1.02], secondary_y=True,
                         tickmode="array", tickvals=[0, 0.25, 0.5, 0.75, 1], showgrid=False)
    if best_epoch:
        fig.add_vline(x=best_epoch, line_dash="dot", annotation_text=f"kept: epoch {best_epoch}")
    fig.update_yaxes(title_text="cross-entropy", secondary_y=False)
    fig.update_xaxes(title_text="epoch", dtick=1 if len(frame) <= 20 else None)
    fig.update_layout(title=title, height=340, margin={"l": 10, "r": 10, "t": 50, "b": 10},
                      legend={"orientation": "h", "y": -0.25})
    return fig
