"""AppTest smoke tests of the router and the Model & data page (demo + bad uploads)."""
from streamlit.testing.v1 import AppTest

from app_pages import APP, page_files




def _app():
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    return at


def test_model_data_page_renders_the_demo():
    at = _app()
    assert not at.exception, at.exception
    assert at.title[0].value == "Model & data"
    labels = [s.label for s in at.sidebar.selectbox]
    assert {"Device", "Tabular dataset", "Tabular model", "Image dataset", "CNN"} <= set(labels)
    assert not at.error, [e.value for e in at.error]
    assert any("Dataset" == m.label for m in at.metric)


def test_switching_every_page_renders_without_exception():
    at = _app()

    for path in page_files():
        at.switch_page(path)
        at.run()
        assert not at.exception, (path, at.exception)


def test_reruns_keep_the_shared_sidebar():
    """Every rerun goes through the router, so the sidebar (device, seed, selectors) stays."""
    at = _app()
    first = [s.label for s in at.sidebar.selectbox]
    at.run()
    assert [s.label for s in at.sidebar.selectbox] == first
    at.switch_page("pages/sobol.py")
    at.run()
    assert "Tabular model" in [s.label for s in at.sidebar.selectbox]
    assert "CNN" not in [s.label for s in at.sidebar.selectbox]  # the Sobol page is tabular only
    assert not at.exception, at.exception
