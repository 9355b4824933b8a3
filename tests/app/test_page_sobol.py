"""AppTest smoke test of the Sobol page: renders, runs a small analysis, keeps it across reruns."""
from streamlit.testing.v1 import AppTest

from app_pages import APP


def test_sobol_page_runs_small_analysis():
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.switch_page("pages/sobol.py")
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value.startswith("Global sensitivity")
    assert not at.error, [e.value for e in at.error]
    at.select_slider(key="sobol_n").set_value(128)
    at.number_input(key="sobol_R").set_value(20)
    at.button(key="sobol_run").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any(m.label == "N" and m.value == "128" for m in at.metric)
    res = at.session_state["sobol"]["runs"]
    assert len(res) == 1
    (key, result), = res.items()
    assert result.indices.N == 128 and result.config.layer == "act1"  # paper MLP: act1 by default
    assert result.indices.S1.shape[0] == 1 + 10  # output + 10 hidden neurons
    # a rerun (any interaction) keeps the result and does not recompute
    at.checkbox(key="sobol_pca_std").uncheck()
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["sobol"]["runs"][key] is result
    assert any("Spearman" in c.value for c in at.caption)
    # convergence (tiny range) and feature reduction (1 seed, 2 epochs) from the other tabs
    at.select_slider(key="sobol_conv_range").set_value((32, 128))
    at.button(key="sobol_conv_run").click()
    at.run()
    assert not at.exception, at.exception
    conv = list(at.session_state["sobol"]["conv"].values())
    assert len(conv) == 1 and conv[0].ns == (32, 64, 128)
    at.number_input(key="sobol_fr_seeds").set_value(1)
    at.number_input(key="sobol_fr_epochs").set_value(2)
    at.button(key="sobol_fr_run").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    (fr,) = at.session_state["sobol"]["fr"].values()
    assert len(fr.accuracy) == 3 and all(len(a) == 1 for a in fr.accuracy.values())
    assert any(m.label == "Loaded model, test accuracy" for m in at.metric)
