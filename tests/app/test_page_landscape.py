"""AppTest smoke test of the Loss-landscape page: renders, trains a cheap run, shows the trend and
consistency tables, the loaded model's sensitivities and loss surface, the digits variant, and
clear errors for bad input."""
import numpy as np
from streamlit.testing.v1 import AppTest

from app_pages import open_page
from nnsens_core.data import TabularData

PAGE = "pages/landscape.py"


def _open(**state) -> AppTest:
    return open_page(PAGE, state=state)


def _errors(at) -> list[str]:
    return [e.value for e in at.error]


def test_landscape_page_trains_and_shows_results():
    at = _open()
    assert at.title[0].value == "Loss landscape"
    assert not at.error, _errors(at)
    at.number_input(key="ls_epochs").set_value(12)
    at.number_input(key="ls_K").set_value(2)
    at.button(key="ls_run").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, _errors(at)
    store = at.session_state["landscape"]
    (key, res), = store["runs"].items()
    assert res.config.epochs == 12 and res.n_runs == 2
    # default rows: the train rows of the other pages (Pima demo: 0:500)
    assert key[1] == "0:500" and len(res.history.final_rows) == 500
    assert res.config.reading == "input_diagonal"
    # every reading x order is scored: the table and the verdict in words are shown
    assert any(list(f.columns[:3]) == ["reading_label", "order", "formula"] and len(f) == 12
               for f in (df.value for df in at.dataframe))
    assert any(res.verdict()[:60] in m.value for m in at.markdown)
    assert any(m.label.startswith("Agreement with Spearman sign") for m in at.metric)
    # trend table (run 0) and consistency table are shown with one row per feature
    d = len(res.feature_names)
    frames = [df.value for df in at.dataframe]
    assert any(list(f.columns[:3]) == ["spearman", "spearman_sign", "trend"] and len(f) == d
               for f in frames)
    assert any("share_agreeing" in f.columns and len(f) == d for f in frames)
    # the loaded model tab computed its NeuralSens summary (mean/std/RMS per feature) without a button
    (summary,) = store["grad"].values()
    assert summary["rms"].shape == (d,) and (summary["rms"] >= np.abs(summary["mean"]) - 1e-9).all()
    assert any(c.value.startswith("Units: ∂y/∂x_j") for c in at.caption)  # units on that tab
    # a rerun keeps the result (same object, not recomputed)
    at.selectbox(key="ls_view_run").set_value(1)
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["landscape"]["runs"][key] is res
    # a new session with the same data and settings gets the st.cache_data copy (no retraining)
    calls = []
    import nnsens_core.landscape as L
    orig = L.run_landscape_tabular
    L.run_landscape_tabular = lambda *a, **k: calls.append(1) or orig(*a, **k)
    try:
        at2 = _open()
        at2.number_input(key="ls_epochs").set_value(12)
        at2.number_input(key="ls_K").set_value(2)
        at2.button(key="ls_run").click()
        at2.run()
    finally:
        L.run_landscape_tabular = orig
    assert not at2.exception, at2.exception
    assert calls == [] and not at2.error, _errors(at2)
    (res2,) = at2.session_state["landscape"]["runs"].values()
    np.testing.assert_array_equal(res2.history.mean[2], res.history.mean[2])
    # loss surface of the loaded model on a small grid
    at.select_slider(key="ls_s_grid").set_value(11)
    at.button(key="ls_s_run").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, _errors(at)
    (surf,) = at.session_state["landscape"]["surface"].values()
    assert surf.loss.shape == (11, 11) and np.isfinite(surf.loss).all()
    # digits variant, tiny
    at.number_input(key="ls_d_n").set_value(150)
    at.number_input(key="ls_d_epochs").set_value(6)
    at.number_input(key="ls_d_K").set_value(1)
    at.button(key="ls_d_run").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, _errors(at)
    (dg,) = at.session_state["landscape"]["digits"].values()
    assert dg.increasing_mask.shape == (8, 8)
    assert any(m.label.startswith("Pixels with increasing trend") for m in at.metric)


def test_landscape_page_paper_preset_sets_and_names_the_values():
    at = _open()
    at.button(key="ls_preset").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error and not at.warning, (_errors(at), [w.value for w in at.warning])
    assert at.selectbox(key="ls_reading").value == "weight_diagonal"
    (table,) = [df.value for df in at.dataframe if "source" in df.value.columns]
    assert table.loc["reading", "source"].startswith("paper")
    assert "not stated" in table.loc["lr", "source"]
    at.number_input(key="ls_epochs").set_value(8)
    at.number_input(key="ls_K").set_value(1)
    at.button(key="ls_run").click()
    at.run()
    assert not at.exception, at.exception
    (res,) = at.session_state["landscape"]["runs"].values()
    assert res.config.reading == "weight_diagonal"
    assert any("weight-diagonal" in c.value and "x_j² g2" in c.value for c in at.caption)


def test_landscape_page_bad_epochs_is_a_clear_error():
    at = _open()
    at.number_input(key="ls_epochs").set_value(0)
    at.run()
    assert not at.exception, at.exception
    assert any("epochs=0" in e for e in _errors(at)), _errors(at)
    assert not any(b.key == "ls_run" for b in at.button)


def test_landscape_page_constant_feature_and_text_target():
    import nnsens_core.data as D
    demo = D.demo_tabular()
    X = demo.X[:120].copy()
    X[:, 1] = 3.0
    const = TabularData(X, demo.y[:120], demo.feature_names, demo.target_name, "const")
    text = TabularData(demo.X[:120], np.where(demo.y[:120] > 0, "yes", "no").astype(object),
                       demo.feature_names, demo.target_name, "text")
    uploads = {"tabular_data": {"const": const, "text": text}, "tabular_model": {}, "image_data": {},
               "image_model": {}}
    for label, message in (("const", f"feature {demo.feature_names[1]!r} is constant"),
                           ("text", "target is not numeric")):
        at = _open(uploads=uploads, sel_tabular_data=label)
        at.number_input(key="ls_epochs").set_value(5)
        at.number_input(key="ls_K").set_value(1)
        at.button(key="ls_run").click()
        at.run()
        assert not at.exception, at.exception
        assert any(message in e for e in _errors(at)), _errors(at)
        assert not at.session_state["landscape"]["runs"]
