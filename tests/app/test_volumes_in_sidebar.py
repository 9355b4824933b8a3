"""The 3-D demo (brain phantom + cnn3d-brain) is offered in the shared sidebar; pages that work on
2-D images only say so in one line when volumes are selected (issue 12)."""
import pytest
from streamlit.testing.v1 import AppTest

from tests.app.app_pages import APP
from ui import state
from ui._streamlit_internals import keep_router_in_apptest


@pytest.mark.parametrize("page", ["pages/local_sensitivity.py", "pages/activation_max.py",
                                  "pages/saliency.py"])
def test_two_d_pages_refuse_volumes_in_one_line(monkeypatch, page):
    keep_router_in_apptest(monkeypatch)
    at = AppTest.from_file(APP, default_timeout=240)
    at.switch_page(page)
    at.run()
    assert state.DEMO_BRAIN in at.sidebar.selectbox(key="sel_image_data").options
    assert "Demo: cnn3d-brain" in at.sidebar.selectbox(key="sel_image_model").options
    at.sidebar.selectbox(key="sel_image_data").set_value(state.DEMO_BRAIN)
    at.sidebar.selectbox(key="sel_image_model").set_value("Demo: cnn3d-brain")
    at.run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "3-D volumes; this page works on 2-D images" in errors[0], errors
