"""Settings survive page switches (issue 13): Streamlit forgets a widget's value after a run that
does not draw it; the router writes the settings of the page being left back into Session State."""
from streamlit.testing.v1 import AppTest

from tests.app.app_pages import APP
from ui._streamlit_internals import keep_router_in_apptest


def test_sobol_and_saliency_settings_survive_a_visit_to_other_pages(monkeypatch):
    keep_router_in_apptest(monkeypatch)
    at = AppTest.from_file(APP, default_timeout=240)
    at.switch_page("pages/sobol.py")
    at.run()
    at.number_input(key="sobol_R").set_value(37)
    at.checkbox(key="sobol_so").uncheck()
    at.select_slider(key="sobol_n").set_value(256)
    at.run()
    at.switch_page("pages/saliency.py")
    at.run()
    at.multiselect(key="sal_methods").set_value(["gradient"])
    at.run()
    at.switch_page("pages/landscape.py")
    at.run()
    at.switch_page("pages/sobol.py")
    at.run()
    assert not at.exception, at.exception
    assert at.number_input(key="sobol_R").value == 37
    assert at.checkbox(key="sobol_so").value is False
    assert at.select_slider(key="sobol_n").value == 256
    at.switch_page("pages/saliency.py")
    at.run()
    assert at.multiselect(key="sal_methods").value == ["gradient"]
    assert not at.exception, at.exception
