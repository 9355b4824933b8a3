"""Uploads are identified by their content, never by their name (issue 11).

The dashboard's caches (``st.cache_resource`` / ``st.cache_data``) are shared by every session. Two
sessions that each upload a *different* model under the *same* file name must each get their own
model and their own Sobol indices; with name-based keys the second session got the first one's.
"""
import numpy as np
import torch
from streamlit.testing.v1 import AppTest

from app_pages import APP
from nnsens_core import sobol as S
from nnsens_core.data import demo_tabular
from nnsens_core.zoo import LoadedModel
from tests.uploads import uploaded_paper_mlp

DEMO = demo_tabular()


def _session_with_upload(model: LoadedModel) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["uploads"] = {"tabular_data": {}, "tabular_model": {"model.pt": model},
                                   "image_data": {}, "image_model": {}}
    at.session_state["sel_tabular_model"] = "model.pt"
    at.switch_page("pages/sobol.py")
    at.run()
    assert not at.exception, at.exception
    at.select_slider(key="sobol_n").set_value(128)
    at.checkbox(key="sobol_so").uncheck()
    at.selectbox(key="sobol_layer").set_value("(model output only)")
    at.button(key="sobol_run").click()
    at.run()
    assert not at.exception, at.exception
    return at


def test_two_sessions_with_same_named_uploads_each_get_their_own_results():
    a, b = uploaded_paper_mlp(1), uploaded_paper_mlp(2)
    assert not torch.equal(a.module.fc1.weight, b.module.fc1.weight)
    results = []
    for model in (a, b):
        at = _session_with_upload(model)
        (result,) = at.session_state["sobol"]["runs"].values()
        want = S.run(model, result.problem, result.config, device="cpu")
        np.testing.assert_allclose(result.output().S1, want.output().S1, rtol=1e-9, atol=1e-12)
        results.append(result)
    assert not np.allclose(results[0].output().S1, results[1].output().S1)
