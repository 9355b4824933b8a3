""""Train" on the Model & data page works on the selected dataset whatever the selected model's
width (issue 11: it silently did nothing when the CSV's width differed from the model's)."""
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.app.app_pages import APP
from ui._streamlit_internals import keep_router_in_apptest

pytestmark = pytest.mark.slow


def test_train_on_a_dataset_narrower_than_the_selected_model(monkeypatch):
    keep_router_in_apptest(monkeypatch)
    rng = np.random.default_rng(0)
    X = rng.random((60, 3))
    rows = "\n".join(f"{a:.4f},{b:.4f},{c:.4f},{int(a + b > 1)}" for a, b, c in X)
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.file_uploader(key="up_tab_data").set_value(("three.csv", f"a,b,c,y\n{rows}\n".encode(), "text/csv"))
    at.run()
    at.button(key="btn_tab_data").click().run()
    assert at.session_state["sel_tabular_data"] == "three.csv"
    assert at.session_state["sel_tabular_model"].startswith("Demo")   # 8 inputs: does not fit
    at.number_input(key="mlp_epochs").set_value(3)
    at.button(key="btn_train_mlp").click().run()
    assert not at.exception, at.exception
    model = at.session_state["sel_tabular_model"]
    assert model.startswith("Paper MLP 10 on three.csv"), model
    lm = at.session_state["uploads"]["tabular_model"][model]
    assert lm.spec.input_shape == (3,)
    assert not at.error, [e.value for e in at.error]        # the new pair fits
