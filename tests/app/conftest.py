"""AppTest set-up shared by every page test (all of them are slow: a page run takes seconds)."""
from pathlib import Path

import pytest

from ui._streamlit_internals import keep_router_in_apptest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    """Mark every test in this folder ``slow`` (``-m "not slow"`` leaves them out)."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _reruns_run_the_router(monkeypatch):
    """Make AppTest reruns execute app.py like the real server does.

    AppTest resets ``PagesManager.uses_pages_directory`` before every run; because the router sits
    next to a ``pages/`` folder the flag then turns True and the *second* run executes the page file
    alone (Streamlit's legacy multipage path), skipping app.py and so the shared sidebar. The server
    keeps the flag False once ``st.navigation`` has run, so the tests pin it to False as well.
    """
    keep_router_in_apptest(monkeypatch)
