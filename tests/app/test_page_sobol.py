"""AppTest of the Sobol page: every control of issue 3 (N range, second order, seed, editable
bounds, confidence level, resamples, hidden-layer target), caching across reruns, the studies
(convergence, feature reduction, PCA) and the exports (CSV per table, JSON of the whole result)."""
import numpy as np
from streamlit.testing.v1 import AppTest

from app_pages import APP
from nnsens_core.data import demo_tabular

DEMO = demo_tabular()  # Pima (shipped): the page's demo data
D, NAME1 = DEMO.n_features, DEMO.feature_names[1]


def _edit_bounds(at, row: int, column: str, value: float) -> None:
    (editor,) = at.data_editor
    at.session_state[editor.key] = {"edited_rows": {row: {column: value}}, "added_rows": [],
                                    "deleted_rows": []}


def _ok(at) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_sobol_page_controls_run_cache_studies_and_exports():
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.switch_page("pages/sobol.py")
    at.run()
    _ok(at)
    assert at.title[0].value.startswith("Global sensitivity")
    # N slider: exactly the powers of two 2^7 .. 2^17
    assert at.select_slider(key="sobol_n").options == [f"2^{k} = {2**k:,}" for k in range(7, 18)]
    # the bounds table is editable and starts at the min/max of rows 0:700 (train + test rows)
    (editor,) = at.data_editor
    assert editor.editing_mode == "fixed" and list(editor.value.columns) == ["feature", "min", "max"]

    at.select_slider(key="sobol_n").set_value(128)
    at.number_input(key="sobol_R").set_value(20)
    at.number_input(key="sobol_seed").set_value(3)
    at.slider(key="sobol_conf").set_value(0.9)
    _edit_bounds(at, 1, "max", 150.0)  # feature 1 (Glucose on Pima) in [min, 150]
    at.button(key="sobol_run").click()
    at.run()
    _ok(at)
    assert any(m.label == "N" and m.value == "128" for m in at.metric)
    runs = at.session_state["sobol"]["runs"]
    assert len(runs) == 1
    (key, result), = runs.items()
    cfg = result.config
    assert (cfg.n, cfg.seed, cfg.num_resamples, cfg.conf_level, cfg.second_order) == (128, 3, 20, 0.9, True)
    assert result.problem.bounds[1][1] == 150.0 and result.problem.names[1] == NAME1
    assert cfg.layer == "act1" and result.indices.S1.shape == (1 + 10, D)  # output + 10 neurons
    # bar chart with CIs, S2 heatmap, neuron x feature heatmaps of S1 and ST
    assert len(at.get("plotly_chart")) >= 4
    labels = [d.label for d in at.get("download_button")]
    for table in ("indices", "second_order", "act1 S1", "act1 ST", "all targets"):
        assert f"Download {table} (CSV)" in labels, labels
    assert "Download the whole result (JSON)" in labels
    doc = at.session_state["sobol_export"]
    assert doc["N"] == 128 and doc["config"]["seed"] == 3
    np.testing.assert_allclose(doc["ST"], result.output().ST[0])
    assert "pca" in doc and doc["pca"]["names"][1] == NAME1

    # any rerun keeps the result (no recomputation)
    at.checkbox(key="sobol_pca_std").uncheck()
    at.run()
    _ok(at)
    assert at.session_state["sobol"]["runs"][key] is result
    assert any("Spearman" in c.value for c in at.caption)

    # first order only, model output only: a second cached result
    at.checkbox(key="sobol_so").uncheck()
    at.selectbox(key="sobol_layer").set_value("(model output only)")
    at.run()  # settings changed, not yet run: the last result stays, marked as stale
    assert any("Showing the last result" in i.value and "Run Sobol analysis" in i.value
               for i in at.info), [i.value for i in at.info]
    assert at.session_state["sobol"]["last"] and len(at.session_state["sobol"]["runs"]) == 1
    at.button(key="sobol_run").click()
    at.run()
    _ok(at)
    runs = at.session_state["sobol"]["runs"]
    assert len(runs) == 2 and runs[key] is result
    other = next(r for k, r in runs.items() if k != key)
    assert other.indices.S2 is None and other.indices.S1.shape == (1, D)
    assert at.session_state["sobol_export"]["S2"] is None

    # bad bounds (min >= max): a clear message, no traceback, no run
    _edit_bounds(at, 1, "max", -5.0)
    at.run()
    assert not at.exception, at.exception
    assert any(f"'{NAME1}'" in e.value and "min must be < max" in e.value for e in at.error)
    _edit_bounds(at, 1, "max", 150.0)
    at.run()
    _ok(at)
    # bounds from a single row: every column constant -> named in a warning, and a clear error
    (rows,) = [t for t in at.text_input if t.key.startswith("sobol_rows|")]
    default_rows = rows.value  # train + test rows of the demo (0:700 on Pima)
    rows.set_value("0:1").run()
    assert not at.exception, at.exception
    assert any("Constant in rows 0:1" in w.value and NAME1 in w.value for w in at.warning)
    assert any("min must be < max" in e.value for e in at.error)
    rows.set_value(default_rows).run()
    _ok(at)

    # convergence (tiny range) and feature reduction (1 seed, 2 epochs) from the other tabs
    at.select_slider(key="sobol_conv_range").set_value((32, 128))
    at.button(key="sobol_conv_run").click()
    at.run()
    _ok(at)
    conv = list(at.session_state["sobol"]["conv"].values())
    assert len(conv) == 1 and conv[0].ns == (32, 64, 128)
    assert at.session_state["sobol_export"]["convergence"]["N"] == [32, 64, 128]
    bands = [c for c in at.get("plotly_chart") if '"toself"' in c.proto.spec]
    assert len(bands) == 2  # S1 and ST vs N, each with shaded CI bands
    at.number_input(key="sobol_fr_seeds").set_value(2)
    at.number_input(key="sobol_fr_epochs").set_value(2)
    at.button(key="sobol_fr_run").click()
    at.run()
    _ok(at)
    (fr,) = at.session_state["sobol"]["fr"].values()
    assert len(fr.accuracy) == 3 and all(len(a) == 2 for a in fr.accuracy.values())
    # issue 13: train and test accuracy of the loaded model, each naming its rows
    assert any(m.label.startswith("Loaded model, test accuracy (") for m in at.metric)
    assert any(m.label.startswith("Loaded model, train accuracy (") for m in at.metric)
    assert at.session_state["sobol_export"]["feature_reduction"]["seeds"] == [0, 1]
    labels = [d.label for d in at.get("download_button")]
    for name in ("bounds", "convergence", "feature reduction", "ranking comparison", "loadings"):
        assert f"Download {name} (CSV)" in labels, labels


def test_sobol_results_are_shared_between_sessions():
    """A second browser session with the same model, data and settings gets the cached result."""
    results = []
    for _ in range(2):
        at = AppTest.from_file(APP, default_timeout=240)
        at.run()
        at.switch_page("pages/sobol.py")
        at.run()
        at.select_slider(key="sobol_n").set_value(128)
        at.number_input(key="sobol_R").set_value(10)
        at.number_input(key="sobol_seed").set_value(11)
        at.checkbox(key="sobol_so").uncheck()
        at.selectbox(key="sobol_layer").set_value("(model output only)")
        at.button(key="sobol_run").click()
        at.run()
        _ok(at)
        (res,) = at.session_state["sobol"]["runs"].values()
        results.append(res)
    first, second = results
    assert second is not first  # each session holds its own copy ...
    assert second.timings == first.timings  # ... of the one computation (a rerun would time anew)
    np.testing.assert_array_equal(second.indices.ST, first.indices.ST)
