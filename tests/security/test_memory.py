"""Memory returns after sessions close (issue 11): uploads live in a session's state and in
bounded shared caches only. 40 dashboard sessions each upload their own tabular model and CNN under
the same names and open the pages that use them; after the sessions end, at most ``max_entries``
of the uploaded models are still held (by ``ui.cache.model_on``, dropped after ``CACHE_TTL``), and
none once that cache expires: nothing else keeps a closed session's upload alive."""
import gc
import weakref

import pytest

from tests.security.test_load import _cnn, _one_server_runtime
from tests.uploads import uploaded_paper_mlp

pytestmark = pytest.mark.slow
SESSIONS = 40


def test_uploads_are_freed_when_sessions_end(monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.app.app_pages import APP
    from ui import cache
    from ui._streamlit_internals import keep_router_in_apptest

    keep_router_in_apptest(monkeypatch)
    _one_server_runtime(monkeypatch)  # one runtime and cache storage for all sessions, as a server
    refs, held = [], []
    for i in range(SESSIONS):
        tab, cnn = uploaded_paper_mlp(1000 + i), _cnn(1000 + i)
        refs += [weakref.ref(tab.module), weakref.ref(cnn.module)]
        at = AppTest.from_file(APP, default_timeout=170)
        at.session_state["uploads"] = {"tabular_data": {}, "tabular_model": {"model.pt": tab},
                                       "image_data": {}, "image_model": {"cnn.pt": cnn}}
        at.session_state["sel_tabular_model"] = "model.pt"
        at.session_state["sel_image_model"] = "cnn.pt"
        for page in ("pages/sobol.py", "pages/saliency.py"):
            at.switch_page(page)
            at.run()
            assert not at.exception, at.exception
        del at, tab, cnn  # the session ends
        if i % 5 == 4:  # the collector runs now and then in a server too
            gc.collect()
            held.append(sum(r() is not None for r in refs))
    bound = 16  # ui.cache.model_on(max_entries=16): the one shared cache that holds uploaded models
    assert max(held) <= bound, f"uploaded models still held after their sessions ended: {held} of {len(refs)}"
    assert held[-1] == bound  # ... and it is full (the test reaches the bound)
    cache.model_on.clear()  # what the TTL does an hour later
    gc.collect()
    assert sum(r() is not None for r in refs) == 0, "a closed session's upload is held outside the caches"
