"""AppTest of issue 13 on the tabular pages: the paper preset (one click, values shown, the
authors' +1 % hidden-layer measure, signed S2 map, PCA on Outcome = 1) and the warnings/accuracy
of the Model & data page for a wrong target and an uploaded model."""
import json

from app_pages import open_page

from nnsens_core import sobol as S


def _ok(at):
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_paper_preset_sets_values_and_runs_the_authors_measures():
    at = open_page("pages/sobol.py", timeout=300)
    at.button(key="sobol_preset").click().run()
    _ok(at)
    (rows,) = [t for t in at.text_input if t.key.startswith("sobol_rows|")]
    assert rows.value == "0:700" and at.checkbox(key="sobol_so").value
    assert at.session_state["sobol_n"] == S.PAPER.sobol.n and at.selectbox(key="sobol_layer").value == "act1"
    at.button(key="sobol_run").click().run()
    _ok(at)
    (res,) = at.session_state["sobol"]["runs"].values()
    assert res.config.n == 1024 and res.config.second_order and res.problem.bounds[0][0] == 0.0
    doc = at.session_state["sobol_export"]
    assert doc["preset"]["train_rows"] == "0:500" and "Jansen" in doc["estimators"]
    assert len(doc["hidden_step"]["values"]) == 8 and doc["hidden_step"]["layer"] == "act1"
    assert set(doc["layer_summary"]["Glucose"]) >= {"S1_mean", "ST_mean"}
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    s2 = [f for f in specs if "S2" in json.dumps(f["layout"].get("title", ""))]
    assert s2 and s2[0]["data"][0]["zmid"] == 0 and s2[0]["data"][0]["texttemplate"] == "%{text}"
    cells = [t for row in s2[0]["data"][0]["text"] for t in row if t]
    assert len(cells) == 8 * 7 // 2 and not any(t.startswith("-") for t in cells)  # clipped
    assert doc["pca"]["config"]["class_value"] == 1.0
    assert doc["pca"]["config"]["importance"] == "abs_loading" and doc["pca"]["n_rows"] < 700


def test_model_data_warns_on_age_target_and_scores_uploaded_models(pima_path):
    at = open_page("pages/model_data.py", timeout=300)
    raw = pima_path.read_bytes()
    at.file_uploader(key="up_tab_data").set_value(("pima.csv", raw, "text/csv"))
    at.run()
    at.selectbox(key="up_tab_target").set_value("Age")
    at.button(key="btn_tab_data").click().run()
    assert not at.exception, at.exception
    warns = " ".join(w.value for w in at.warning)
    assert "'Age'" in warns and "not 0/1" in warns and "'Outcome'" in warns
    at.number_input(key="mlp_epochs").set_value(2)
    at.button(key="btn_train_mlp").click().run()
    assert not at.exception, at.exception
    assert any("not 0/1" in e.value for e in at.error)  # refused in words, no RuntimeError
    # the right target: an uploaded (trained) model shows its train and test accuracy
    at.selectbox(key="up_tab_target").set_value("Outcome")
    at.button(key="btn_tab_data").click().run()
    at.button(key="btn_train_mlp").click().run()
    _ok(at)
    labels = [m.label for m in at.metric]
    assert any(lab.startswith("Train accuracy (") for lab in labels), labels
    assert any(lab.startswith("Test accuracy (") for lab in labels), labels
