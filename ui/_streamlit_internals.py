"""Every use of Streamlit internals, in one place (pinned: streamlit==1.67.0).

``tests/test_adapters.py`` checks each on the installed version:

* ``PagesManager.uses_pages_directory`` (``streamlit.runtime.pages_manager``): a class-wide flag,
  ``None`` until the first ``PagesManager`` is built, which then sets it to whether a ``pages/``
  folder sits next to the main script. While it is True, Streamlit serves ``pages/x.py`` by
  itself (its legacy multipage path); ``st.navigation`` turns it False. :func:`leave_pages_directory_mode`
  turns it off for the router; :func:`keep_router_in_apptest` does so for AppTest runs.
* ``ScriptControlException`` (``streamlit.runtime.scriptrunner_utils.exceptions``): the base class of
  what ``st.stop()`` and ``st.rerun()`` raise to end a script run; error guards must let it through.
"""
from __future__ import annotations

from streamlit.runtime.pages_manager import PagesManager
from streamlit.runtime.scriptrunner_utils.exceptions import ScriptControlException

PINNED = "streamlit==1.67.0"
"""The version whose internals this module was written against (requirements.txt)."""

__all__ = ["PINNED", "ScriptControlException", "leave_pages_directory_mode", "keep_router_in_apptest"]


def leave_pages_directory_mode() -> bool:
    """Switch Streamlit's legacy ``pages/`` folder mode off for the process; True when it was on
    (the current run then executed a page file alone and should rerun through the router)."""
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        return True
    return False


def keep_router_in_apptest(monkeypatch) -> None:
    """Make every ``PagesManager`` AppTest builds leave the legacy ``pages/`` mode off, as the
    server does once ``st.navigation`` has run (AppTest resets the flag before every run)."""
    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)
