"""Every use of Streamlit internals, in one place (pinned: streamlit==1.67.0).

``tests/test_adapters.py`` checks each on the installed version:

* ``PagesManager.uses_pages_directory`` (``streamlit.runtime.pages_manager``): a class-wide flag,
  ``None`` until the first ``PagesManager`` is built, which then sets it to whether a ``pages/``
  folder sits next to the main script. While it is True, Streamlit serves ``pages/x.py`` by
  itself (its legacy multipage path); ``st.navigation`` turns it False. :func:`leave_pages_directory_mode`
  turns it off for the router; :func:`keep_router_in_apptest` does so for AppTest runs.
* ``get_script_run_ctx().shared.widget_ids_this_run.snapshot()`` (the widgets the current run
  drew) and
  ``get_session_state()._state`` (``streamlit.runtime.state.session_state_proxy``: the
  ``SessionState`` behind ``st.session_state``), its ``_key_id_mapper.id_key_mapping`` and
  ``_new_widget_state.widget_metadata[id].value_type``
  (``streamlit.runtime.state.session_state``): which user keys belong to widgets and what kind of
  value each holds; :func:`keep_widget_values` uses them to keep the settings of pages that are not
  shown (Streamlit drops the state of widgets a run does not draw).
* ``ScriptControlException`` (``streamlit.runtime.scriptrunner_utils.exceptions``): the base class of
  what ``st.stop()`` and ``st.rerun()`` raise to end a script run; error guards must let it through.
"""
from __future__ import annotations

from streamlit.runtime.pages_manager import PagesManager
from streamlit.runtime.scriptrunner_utils.exceptions import ScriptControlException

PINNED = "streamlit==1.67.0"
"""The version whose internals this module was written against (requirements.txt)."""

__all__ = ["PINNED", "ScriptControlException", "keep_router_in_apptest", "keep_widget_values",
           "leave_pages_directory_mode"]

_SETTING_TYPES = {"bool_value", "int_value", "double_value", "string_value", "int_array_value",
                  "double_array_value", "string_array_value"}
"""Value kinds of ordinary settings widgets (checkbox, number, text, select, slider...). Buttons,
uploaders and chart selections (trigger / file / JSON values) are never written back: Streamlit
refuses values set for them."""


def _plain_value(v) -> bool:
    if isinstance(v, (list, tuple)):
        return all(_plain_value(x) for x in v)
    return v is None or isinstance(v, (bool, int, float, str))


def keep_widget_values(session_state) -> int:
    """Call at the end of a script run (also when it stopped): write the value of every settings
    widget that this run did not draw back into ``session_state`` under its key, so that a page's
    settings survive while another page is shown (Streamlit forgets a widget's state after a run
    that does not draw it, unless the value was set through Session State). Widgets drawn in this
    run are left alone (setting them would push the server's value back into a widget the user may
    be changing). Only plain values (numbers, text, booleans, lists of them) of settings widgets
    are kept: a data editor's or a chart selection's value (a dict) and buttons / uploaders are
    left alone. Returns how many values were kept."""
    from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx
    from streamlit.runtime.state.session_state_proxy import get_session_state
    inner = get_session_state()._state  # the session's SessionState behind st.session_state
    ctx = get_script_run_ctx()
    drawn = set(ctx.shared.widget_ids_this_run.snapshot()) if ctx is not None else set()
    meta = inner._new_widget_state.widget_metadata
    kept = 0
    for wid, key in list(inner._key_id_mapper.id_key_mapping.items()):
        m = meta.get(wid)
        if wid in drawn or m is None or m.value_type not in _SETTING_TYPES or key not in session_state:
            continue
        value = session_state[key]
        if _plain_value(value):
            session_state[key] = value
            kept += 1
    return kept


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
