"""ui.cine_views.sequence_view through a tiny script (AppTest): frame slider, Play advancing the
frame, the overlay and prediction strip, downloads, and identifiers never on screen."""
import json

import numpy as np
from streamlit.testing.v1 import AppTest

from nnsens_core import sequences as sq
from ui import cine_views as cv

NAME, PID = "DOE^JANE", "PAT-98765"


def _script():
    import dataclasses

    import streamlit as st
    import torch

    from nnsens_core import sequences as sq
    from nnsens_core import zoo
    from ui.cine_views import sequence_view

    @st.cache_resource
    def case():
        torch.manual_seed(0)
        spec = zoo.ModelSpec("tiny", "vgg16-small", "image", (1, 64, 64),
                             ("regular", "covid", "pneumonia"), mean=(0.5,), std=(0.25,))
        lm = zoo.LoadedModel(zoo.build("vgg16-small", width=0.0625, in_channels=1).eval(), spec)
        seq, _ = sq.phantom_cine(n_frames=6, size=(48, 64), seed=0)
        seq = dataclasses.replace(seq, identifiers={"PatientName": "DOE^JANE",
                                                    "PatientID": "PAT-98765"})
        return seq, sq.explain_frames(lm, seq, "gradcam")

    seq, fm = case()
    shown = sequence_view(seq, fm, key="v")
    st.text(f"shown={shown}")
    sequence_view(sq.phantom_cine(n_frames=3, size=(40, 48), seed=1)[0], key="plain")


def _texts(at) -> list[str]:
    out = []
    for kind in ("markdown", "caption", "text", "error", "warning", "info", "success"):
        out += [str(e.value) for e in getattr(at, kind)]
    return out


def _download_labels(at) -> list[str]:
    return [e.proto.label for e in at.get("download_button")]


def test_sequence_view_slider_play_overlay_and_hidden_identifiers():
    at = AppTest.from_function(_script, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    texts = _texts(at)
    assert "patient identifiers present and hidden" in texts
    assert not any(NAME in t or PID in t or "DOE" in t for t in texts)
    assert at.checkbox(key="v_ids").value is False
    assert "plain_ids" not in [c.key for c in at.checkbox]  # no identifiers: no opt-in
    slider = at.slider(key="v_frame")
    assert slider.min == 0 and slider.max == 5 and slider.value == 0
    assert any(t.startswith("Frame 1: predicted ") for t in texts)
    assert any(t.startswith("Over 6 frames") for t in texts)
    assert at.slider(key="plain_frame").max == 2
    labels = _download_labels(at)
    assert labels.count("Loop MP4") == 2 and labels.count("Loop GIF") == 2
    assert {"Maps NPZ", "Frames CSV", "Summary JSON"} <= set(labels)
    summary = json.loads(at.session_state["exports"]["v_dl_json"])
    assert summary["n_frames"] == 6 and "identifiers" not in summary

    at.slider(key="v_frame").set_value(3).run()
    assert any(t.startswith("Frame 4: predicted ") for t in _texts(at))
    assert "shown=3" in _texts(at)

    at.toggle(key="v_play").set_value(True).run()  # playing: each run of the player advances
    assert not at.exception, at.exception
    step = cv.advance(3, 6, 20.0, cv.play_interval(20.0))
    assert at.slider(key="v_frame").value == step == 5
    at.toggle(key="v_play").set_value(False).run()
    assert at.slider(key="v_frame").value == 5  # paused: stays

    at.checkbox(key="v_ids").check().run()  # the opt-in changes the downloads only
    assert not any(NAME in t or PID in t for t in _texts(at))
    summary = json.loads(at.session_state["exports"]["v_dl_json"])
    assert summary["identifiers"]["PatientName"] == NAME


def test_helpers_without_an_app():
    seq, _ = sq.phantom_cine(n_frames=4, size=(48, 64), seed=0)
    assert cv.zoom(seq.size) == 7 and cv.zoom((400, 600)) == 1
    base, over = cv.frame_pictures(seq, None, 2)
    assert base.shape == (48 * 7, 64 * 7, 3) and over is None
    assert cv.advance(5, 6, 20.0, 0.1) == 1 and cv.advance(0, 6, 5.0, 0.2) == 1
    assert cv.play_interval(50.0) == cv.MIN_INTERVAL and cv.play_interval(4.0) == 0.25
    line = cv.describe(seq)
    assert "4 frames" in line and "64×48 px" in line and "20 frames/s" in line
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]], np.float32)
    fm = sq.FrameMaps(np.zeros((2, 8, 8), np.float32), None, probs, np.array([0, 1]),
                      np.array([0, 1]), ("a", "b", "c"), "m", "M", False, 10.0, "tiny", {},
                      None)
    fig = cv.strip_figure(fm)
    assert [t.name for t in fig.data] == ["p(a)", "p(b)", "p(c)", "predicted"]
    assert list(fig.data[-1].text) == ["a", "b"]
