"""Cine loops on a page: a frame slider with Play / Pause, each frame beside its overlay (one colour
scale for the whole loop, with its colour bar), the per-frame prediction strip, the mean map and
downloads of the annotated loop. Identifiers a DICOM carried are never shown.

The one entry point is :func:`sequence_view`; the picture and figure helpers above it need no
running app (tests call them directly).
"""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from nnsens_core import render
from nnsens_core._results import export_json
from nnsens_core.sequences import FrameMaps, Sequence, export_loop, maps_npz

from .widgets import download_csv, download_json, plain, show_chart

MIN_INTERVAL = 0.1
"""Shortest time (s) between two shown frames while playing (faster loops skip frames to keep
their real speed)."""
VIEW_SIDE = 320
"""Small frames are enlarged (nearest neighbour, whole factor) until their shorter side reaches this."""


def zoom(shape) -> int:
    """The whole enlargement factor of a frame of ``shape`` (h, w) on the page."""
    return max(1, math.ceil(VIEW_SIDE / max(1, min(shape[0], shape[1]))))


def _up(img: np.ndarray, f: int) -> np.ndarray:
    return img if f == 1 else np.repeat(np.repeat(img, f, axis=0), f, axis=1)


def frame_pictures(seq: Sequence, fm: FrameMaps | None, i: int,
                   alpha: float = 0.5) -> tuple[np.ndarray, np.ndarray | None]:
    """Frame ``i`` as uint8 RGB and, with maps, its overlay on the same pixels (the loop's shared
    colour scale, :meth:`FrameMaps.scale`); both enlarged by :func:`zoom`."""
    f = zoom(seq.size)
    base = _up(render.to_rgb(seq.frames[i]), f)
    if fm is None:
        return base, None
    vmin, vmax = fm.scale()
    over = render.overlay(seq.frames[i], fm.frame_original(i), alpha, fm.signed, vmin, vmax)
    return base, _up(over, f)


def advance(i: int, n: int, fps: float, interval: float) -> int:
    """The frame shown ``interval`` seconds after frame ``i`` of ``n`` at ``fps`` (wrapping)."""
    return (int(i) + max(1, round(fps * interval))) % max(1, n)


def play_interval(fps: float) -> float:
    """Seconds between two shown frames while playing: one frame period, at least :data:`MIN_INTERVAL`."""
    return max(MIN_INTERVAL, 1.0 / fps)


def strip_figure(fm: FrameMaps, title: str = "Per-frame prediction") -> go.Figure:
    """Probability of every class per frame (lines) with each frame's predicted class as a row of
    markers along the top."""
    t = np.arange(len(fm))
    fig = go.Figure()
    for k, c in enumerate(fm.class_names):
        fig.add_trace(go.Scatter(x=t, y=fm.probs[:, k], mode="lines", name=f"p({c})"))
    names = fm.predicted_names()
    fig.add_trace(go.Scatter(x=t, y=np.full(len(fm), 1.06), mode="markers", name="predicted",
                             marker={"symbol": "square", "size": 9,
                                     "color": [int(p) for p in fm.preds], "colorscale": "Viridis",
                                     "cmin": 0, "cmax": max(1, len(fm.class_names) - 1)},
                             text=names, hovertemplate="frame %{x}: %{text}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="frame", yaxis_title="probability",
                      yaxis_range=[0, 1.12], height=280, margin={"t": 40, "b": 40, "l": 50, "r": 10})
    return fig


def describe(seq: Sequence) -> str:
    """One line about the loop (never its identifiers): frames, size, rate, spacing, modality."""
    h, w = seq.size
    parts = [f"{len(seq)} frames", f"{w}×{h} px", "grey" if seq.channels == 1 else "RGB",
             f"{seq.fps:.3g} frames/s ({seq.duration:.2f} s)"]
    if seq.info.get("fps_source") == "default":
        parts[-1] += " (rate not stated in the file: assumed)"
    if seq.pixel_spacing:
        parts.append(f"pixel spacing {seq.pixel_spacing[0]:.3g} × {seq.pixel_spacing[1]:.3g} mm")
    for k in ("Modality", "ManufacturerModelName"):
        if seq.info.get(k):
            parts.append(str(seq.info[k]))
    return " · ".join(parts)


def sequence_view(seq: Sequence, frame_maps: FrameMaps | None = None, key: str = "cine", *,
                  alpha: float = 0.5) -> int:
    """Show a cine loop; returns the index of the frame shown.

    ``seq``: a :class:`~nnsens_core.sequences.Sequence` (``load_sequence(bytes, name)``);
    ``frame_maps``: the loop's :class:`~nnsens_core.sequences.FrameMaps`
    (``explain_frames(model, seq, method)``; computed by the caller, e.g. inside ``guard`` with a
    ``Progress``) or None to show the frames alone; ``key``: a prefix for every widget key (one per
    view on a page; the frame slider is ``{key}_frame``, the Play toggle ``{key}_play``, the
    identifiers opt-in ``{key}_ids``); ``alpha``: opacity of the maps.

    Draws: one line about the loop; when the file carried patient identifiers, the line "patient
    identifiers present and hidden" and an opt-in checkbox that only adds them to the downloads;
    a Play / Pause toggle and the frame slider (while playing, a fragment advances the frame every
    frame period, at least :data:`MIN_INTERVAL` s, skipping frames to keep the loop's speed); the
    frame beside its overlay with the colour bar of the loop's shared scale and the frame's
    prediction; the per-frame prediction strip; the mean map over frames; downloads of the
    annotated loop (MP4, GIF; made when clicked), the maps (NPZ), the strip (CSV) and the
    summary (JSON).
    """
    n = len(seq)
    if frame_maps is not None and len(frame_maps) != n:
        st.error(f"The maps cover {len(frame_maps)} frames but the loop has {n}; run the "
                 "explanation again on this loop.")
        frame_maps = None
    st.caption(plain(describe(seq)))
    include_ids = False
    if seq.identifiers:
        st.caption("patient identifiers present and hidden")
        include_ids = st.checkbox("Include patient identifiers in downloads", value=False,
                                  key=f"{key}_ids",
                                  help="Only the downloaded files change (MP4 / GIF metadata, "
                                       "NPZ, JSON); identifiers are never shown on screen.")
    fkey, pkey = f"{key}_frame", f"{key}_play"
    st.session_state[fkey] = min(int(st.session_state.get(fkey, 0)), n - 1)
    playing = st.toggle("▶ Play", key=pkey, disabled=n < 2,
                        help="Play / pause the loop (Pause: switch off)") and n > 1
    interval = play_interval(seq.fps)

    @st.fragment(run_every=interval if playing else None)
    def player():
        if playing:
            st.session_state[fkey] = advance(st.session_state[fkey], n, seq.fps, interval)
        i = st.slider("Frame", 0, max(n - 1, 1), key=fkey, disabled=n < 2) if n > 1 else 0
        base, over = frame_pictures(seq, frame_maps, i, alpha)
        when = f"frame {i + 1} of {n} · t = {i / seq.fps:.2f} s"
        if over is None:
            st.image(base, caption=when)
            return
        left, right = st.columns(2)
        left.image(base, caption=when, width="stretch")
        p = frame_maps.probs[i]
        pred = frame_maps.class_names[int(frame_maps.preds[i])]
        why = frame_maps.class_names[int(frame_maps.targets[i])]
        right.image(over, caption=plain(f"{frame_maps.label}, explaining {why}"), width="stretch")
        vmin, vmax = frame_maps.scale()
        right.image(render.colorbar(vmin, vmax, "raw map value, one scale for all frames",
                                    frame_maps.signed))
        st.markdown(plain(f"Frame {i + 1}: predicted {pred} ({p.max():.0%})"))

    player()
    if frame_maps is None:
        _downloads(seq, None, key, include_ids)
        return int(st.session_state.get(fkey, 0))
    show_chart(st, strip_figure(frame_maps), key=f"{key}_strip")
    s = frame_maps.summary()
    shares = ", ".join(f"{c} {v:.0%}" for c, v in s["class_fractions"].items())
    st.markdown(plain(f"Over {n} frames: {shares} (majority {s['majority']}; mean top probability "
                      f"{s['mean_confidence']:.0%})"))
    mean_frame = seq.frames.mean(axis=0)
    lo, hi = render.scale_of(s["mean_map"], frame_maps.signed)
    c1, c2 = st.columns(2)
    c1.image(_up(render.overlay(mean_frame, s["mean_map"], alpha, frame_maps.signed, lo, hi),
                 zoom(seq.size)), caption="Mean map over frames, on the mean frame", width="stretch")
    c1.image(render.colorbar(lo, hi, "mean raw map value", frame_maps.signed))
    with c2.expander("Prediction per frame (table)"):
        st.dataframe(frame_maps.to_frame(), hide_index=True)
    _downloads(seq, frame_maps, key, include_ids)
    return int(st.session_state.get(fkey, 0))


def _downloads(seq: Sequence, fm: FrameMaps | None, key: str, include_ids: bool) -> None:
    stem = "loop" if fm is None else f"loop_{fm.method}"
    cols = st.columns(5 if fm is not None else 2)
    cols[0].download_button("Loop MP4", lambda: export_loop(
        seq, fm, "mp4", include_identifiers=include_ids), f"{stem}.mp4", "video/mp4",
        key=f"{key}_dl_mp4", on_click="ignore", help="The annotated loop: overlay, predicted class "
        "and colour bar on every frame (made when clicked)")
    cols[1].download_button("Loop GIF", lambda: export_loop(
        seq, fm, "gif", include_identifiers=include_ids), f"{stem}.gif", "image/gif",
        key=f"{key}_dl_gif", on_click="ignore", help="The annotated loop as an animated GIF")
    if fm is None:
        return
    cols[2].download_button("Maps NPZ", lambda: maps_npz(fm, seq, include_identifiers=include_ids),
                            f"{stem}_maps.npz", "application/octet-stream", key=f"{key}_dl_npz",
                            on_click="ignore")
    with cols[3]:
        download_csv("Frames CSV", fm.to_frame().set_index("frame"),
                     f"{stem}_frames.csv", key=f"{key}_dl_csv")
    context = {"identifiers": seq.identifiers} if include_ids and seq.identifiers else {}
    with cols[4]:
        download_json("Summary JSON", export_json(fm, **context), f"{stem}_summary.json",
                      key=f"{key}_dl_json")
