"""AppTest set-up shared by every page test."""
import pytest
from streamlit.runtime.pages_manager import PagesManager


@pytest.fixture(autouse=True)
def _reruns_run_the_router(monkeypatch):
    """Make AppTest reruns execute app.py like the real server does.

    AppTest resets ``PagesManager.uses_pages_directory`` before every run; because the router sits
    next to a ``pages/`` folder the flag then turns True and the *second* run executes the page file
    alone (Streamlit's legacy multipage path), skipping app.py and so the shared sidebar. The server
    keeps the flag False once ``st.navigation`` has run, so the tests pin it to False as well.
    """
    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)
