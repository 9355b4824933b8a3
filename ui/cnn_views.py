"""Figures and small widgets of the CNN pages (local sensitivity, activation maximisation)."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nnsens_core.local_sensitivity import order_of_magnitude


def _scaled(maps: np.ndarray, shared: bool) -> tuple[np.ndarray, list[int]]:
    """Maps divided by 10^n (n = order of magnitude, shared or per block), as the paper prints."""
    if shared:
        n = order_of_magnitude(maps)
        return maps / 10.0 ** n, [n] * len(maps)
    exps = [order_of_magnitude(m) for m in maps]
    return np.stack([m / 10.0 ** n for m, n in zip(maps, exps)]), exps


def block_channel_grid(maps: np.ndarray, labels, channel_names, shared: bool = True,
                       colorscale: str = "Viridis", title: str = "") -> go.Figure:
    """Heatmaps ``maps`` (blocks, channels, H, W): one row per block, one column per channel.

    Values are shown as ``value x 10^n`` with ``n`` printed in each row's title; ``shared`` uses one
    colour scale (and one n) for every block, else each block has its own.
    """
    maps = np.asarray(maps, dtype=np.float64)
    q_n, c_n = maps.shape[:2]
    scaled, exps = _scaled(maps, shared)
    titles = [(f"{labels[q]} · " if labels[q] else "") + f"{channel_names[c]} (×10^{exps[q]})"
              for q in range(q_n) for c in range(c_n)]
    fig = make_subplots(rows=q_n, cols=c_n, subplot_titles=titles, horizontal_spacing=0.03,
                        vertical_spacing=min(0.06, 0.3 / max(q_n, 1)))
    gmin, gmax = float(scaled.min()), float(scaled.max())
    for q in range(q_n):
        zmin, zmax = (gmin, gmax) if shared else (float(scaled[q].min()), float(scaled[q].max()))
        for c in range(c_n):
            show = (shared and q == 0 and c == c_n - 1) or (not shared and c == c_n - 1)
            cb = dict(len=1.0 / q_n, y=1 - (q + 0.5) / q_n, thickness=12) if not shared else dict(thickness=12)
            fig.add_trace(go.Heatmap(z=scaled[q, c], zmin=zmin, zmax=zmax, colorscale=colorscale,
                                     showscale=show, colorbar=cb if show else None,
                                     hovertemplate=f"{labels[q]} ch {channel_names[c]}<br>row %{{y}}, "
                                                   f"col %{{x}}<br>%{{z:.3f}} ×10^{exps[q]}<extra></extra>"),
                          row=q + 1, col=c + 1)
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False, constrain="domain")
    for k in range(1, q_n * c_n + 1):  # square pixels in every panel
        fig.layout[f"yaxis{'' if k == 1 else k}"].update(scaleanchor=f"x{'' if k == 1 else k}",
                                                         constrain="domain")
    fig.update_layout(height=max(260, 210 * q_n), title=title, margin=dict(l=10, r=10, t=60, b=10))
    for ann in fig.layout.annotations:
        ann.font.size = 11
    return fig


def agreement_table(ag: dict) -> "object":
    import pandas as pd
    return pd.DataFrame(ag).T.rename(columns={"spearman": "Spearman ρ", "rel_error": "relative error"})


def history_figure(history: np.ndarray, labels, title: str = "Activation per step") -> go.Figure:
    fig = go.Figure()
    steps = np.arange(1, len(history) + 1)
    for n, lb in enumerate(labels):
        fig.add_scatter(x=steps, y=history[:, n], mode="lines", name=str(lb))
    fig.update_layout(title=title, xaxis_title="step", yaxis_title="activation", height=360,
                      margin=dict(l=40, r=20, t=50, b=40))
    return fig


def image_grid(images01: np.ndarray, captions, columns: int = 6):
    """Show images (N, C, H, W) in [0, 1] in rows of ``columns`` (streamlit)."""
    import streamlit as st

    from ui.widgets import plain, to_uint8
    n = len(images01)
    for start in range(0, n, columns):
        cols = st.columns(columns)
        for k in range(start, min(n, start + columns)):
            cols[k - start].image(to_uint8(images01[k]), caption=plain(captions[k]), width="stretch")


# --------------------------------------------------------------------------- helpers shared by both pages

def read_image_upload(raw: bytes, fit_shape=None) -> np.ndarray:
    """An uploaded PNG/JPEG as (C, H, W) float32 in [0, 1].

    Without ``fit_shape`` the file keeps its own size and channels (grayscale -> 1 channel, else
    RGB), so a mismatch with the model reaches the core and gets its clear error; with
    ``fit_shape=(C, H, W)`` it is converted and resized to the model's input.
    """
    import io

    from PIL import Image, UnidentifiedImageError

    from nnsens_core.errors import NnsensError
    try:
        img = Image.open(io.BytesIO(raw))
        img.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise NnsensError(f"the upload is not a readable image ({exc}); upload a PNG or JPEG") from None
    if fit_shape is not None:
        c, h, w = (int(s) for s in fit_shape)
        img = img.convert("L" if c == 1 else "RGB")
        if img.size != (w, h):
            img = img.resize((w, h), Image.BILINEAR)
    else:
        img = img.convert("L" if img.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB")
    a = np.asarray(img, dtype=np.float32) / 255.0
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def module_names(model) -> list[str]:
    """Every named sub-module (forward order of registration), for module pickers."""
    return [n for n, _ in model.named_modules() if n]


def parse_module_list(text: str) -> list[str]:
    """``"features.4, features.9"`` -> ``["features.4", "features.9"]``."""
    return [t.strip() for t in text.replace("\n", ",").split(",") if t.strip()]


def layer_shapes(model, input_shape, device) -> dict[str, tuple[int, ...]]:
    """Output shape (without batch) of every named module that returns a tensor, in the order of
    ``module_names``: one probe pass of a zero image (``_hooks.probe_outputs``)."""
    import torch

    from nnsens_core._hooks import probe_outputs
    from nnsens_core.device import resolve_device
    names = module_names(model)
    shapes = probe_outputs(model, torch.zeros((1, *input_shape), device=resolve_device(device)), names)
    return {n: shapes[n][1:] for n in names if shapes.get(n)}


def mosaic(images01: np.ndarray, gap: int = 2) -> np.ndarray:
    """Images (N, C, H, W) in [0, 1] side by side as one uint8 picture (for live previews)."""
    from ui.widgets import to_uint8
    tiles = [to_uint8(im) for im in np.asarray(images01)]
    if tiles[0].ndim == 2:
        tiles = [np.repeat(t[..., None], 3, axis=2) for t in tiles]
    h = tiles[0].shape[0]
    sep = np.full((h, gap, 3), 255, np.uint8)
    row = []
    for k, t in enumerate(tiles):
        row += [t] + ([sep] if k < len(tiles) - 1 else [])
    return np.concatenate(row, axis=1)


def png_bytes(img01: np.ndarray) -> bytes:
    """One image (C, H, W) or (H, W) in [0, 1] as PNG bytes."""
    import io

    from PIL import Image

    from ui.widgets import to_uint8
    buf = io.BytesIO()
    Image.fromarray(to_uint8(img01)).save(buf, format="PNG")
    return buf.getvalue()


def zip_pngs(images01: np.ndarray, names) -> bytes:
    """A ZIP holding one PNG per image (N, C, H, W) in [0, 1], named ``names[n]``."""
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for im, nm in zip(images01, names):
            z.writestr(nm, png_bytes(im))
    return buf.getvalue()


def map_row(maps: np.ndarray, labels, title: str = "", colorscale: str = "Viridis",
            shared: bool = True) -> go.Figure:
    """Several (H, W) maps side by side (``maps`` (N, H, W)), printed as value x 10^n."""
    maps = np.asarray(maps, dtype=np.float64)
    fig = block_channel_grid(maps[None], [""], list(labels), shared=shared, colorscale=colorscale,
                             title=title)
    fig.update_layout(height=400)
    return fig


def engine_text(extra: dict) -> str:
    """How finite differences ran (``LocalResult.extra``), for a caption: '' for the gradient mode."""
    engine = extra.get("engine")
    if engine == "incremental" and extra.get("approx"):
        from nnsens_core._approx import describe_error
        return (f"; approximate incremental inference (τ = {extra['approx']['tau']:g}), "
                + describe_error(extra["approx"]))
    if engine == "incremental":
        return "; incremental inference (only the region each perturbation reaches is recomputed)"
    if engine == "full":
        reason = extra.get("engine_reason")
        return "; full forward passes" + (f" (incremental inference does not apply: {reason})"
                                          if reason else "")
    return ""


def measure_figure(means: dict, labels, absolute: dict | None = None,
                   title: str = "Mean sensitivity per block under each measure") -> go.Figure:
    """Per-block mean of s under each formula (``{formula: [values]}``), one panel per formula
    (their scales differ by orders of magnitude); ``absolute`` adds the mean of |s| dashed."""
    from nnsens_core.local_sensitivity import FORMULA_TEXT
    forms = list(means)
    fig = make_subplots(rows=1, cols=len(forms), subplot_titles=[FORMULA_TEXT[f] for f in forms])
    for k, f in enumerate(forms):
        fig.add_scatter(x=list(labels), y=means[f], mode="lines+markers", name=f"mean s ({f})",
                        row=1, col=k + 1)
        if absolute is not None:
            fig.add_scatter(x=list(labels), y=absolute[f], mode="lines+markers",
                            line=dict(dash="dash"), name=f"mean |s| ({f})", row=1, col=k + 1)
    fig.update_yaxes(exponentformat="e")
    fig.update_layout(title=title, height=340, margin=dict(l=40, r=20, t=70, b=40))
    for ann in fig.layout.annotations:
        ann.font.size = 11
    return fig


# ----------------------------------------------------------------------------- maps over the anatomy
VIEWS = {"over": "over the image (one block)", "alone": "alone (one block)",
         "grid": "full grid (every block × channel)"}


def tiles_to_grid(m: np.ndarray, tile: int, size: tuple[int, int]) -> np.ndarray:
    """A map pooled into ``tile`` × ``tile`` tiles (ceil mode) back on the (H, W) grid: each tile's
    value on its pixels (the pooled map is piecewise constant, so nothing is invented)."""
    m = np.asarray(m, np.float32)
    if tile > 1:
        m = np.repeat(np.repeat(m, tile, axis=-2), tile, axis=-1)
    return m[..., :size[0], :size[1]]


def block_pictures(maps: np.ndarray, base: np.ndarray, placement=None, alpha: float = 0.6,
                   over: bool = True, vmin: float | None = None, vmax: float | None = None,
                   ) -> tuple[list[np.ndarray], tuple[float, float], bool]:
    """One block's maps ``(channels, H, W)`` at the model input as pictures: over ``base`` (the
    original (C, h, w) in [0, 1], at its own resolution through ``placement``, smooth resize) or
    alone (the colour map; NaN where the model never saw the original). One colour scale for the
    block's channels (``vmin``/``vmax`` or the maps' own range; diverging around 0 when a map has
    negative values). Returns (pictures uint8 RGB, (vmin, vmax), signed)."""
    from nnsens_core import render
    from nnsens_core.preprocess import map_to_original
    maps = np.asarray(maps, np.float32)
    on_orig = [m if placement is None else map_to_original(m, placement) for m in maps]
    signed = bool(np.nanmin(maps) < 0 or (vmin is not None and vmin < 0))
    lo, hi = render.scale_of(np.stack(on_orig), signed)
    lo = lo if vmin is None else float(vmin)
    hi = hi if vmax is None else float(vmax)
    if signed:
        a = max(abs(lo), abs(hi)) or 1.0
        lo, hi = -a, a
    if not hi > lo:
        hi = lo + 1.0
    pics = []
    for m in on_orig:
        if over:
            pics.append(render.overlay(base, m, alpha, signed, lo, hi))
        else:
            rgba = render.colorize(m, signed, lo, hi)
            white = np.full(rgba.shape[:2] + (3,), 255.0)
            a = rgba[..., 3:4] / 255.0
            pics.append((rgba[..., :3] * a + white * (1 - a)).round().astype(np.uint8))
    return pics, (lo, hi), signed


def scale_text(lo: float, hi: float, signed: bool, shared: bool) -> str:
    """The stated colour scale of the sensitivity maps shown."""
    how = ("diverging around 0: red = positive, white = 0, blue = negative" if signed
           else "low = dark, high = bright (inferno)")
    whose = ("shared by every block and channel shown" if shared else
             "this block's channels (another block has its own range)")
    return f"sensitivity s from {lo:.3g} to {hi:.3g} ({whose}); {how}"
