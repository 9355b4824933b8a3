"""AppTests of the Robustness page (issue 12): 2-D default renders; on the 3-D demo a group mask
runs and exports (NIfTI loads back), a tiny λ grid gives symmetric tables, a bad λ list gives one
error line, and a tiny runs & folds study completes with the paper's table."""
import json

import numpy as np
from app_pages import open_page

from nnsens_core import volumes
from ui import state

PAGE = "pages/robustness.py"


def _errors(at):
    return [e.value for e in at.error]


def _three_d(at):
    """Pick the brain volumes, then the 3-D CNN (one at a time, as a user does: in between, the 2-D
    CNN does not fit the volumes and the page stops before its settings)."""
    at.sidebar.selectbox(key="sel_image_data").set_value(state.DEMO_BRAIN)
    at.run()
    assert not any((w.key or "").startswith("rb_steps|") for w in at.number_input)
    at.sidebar.selectbox(key="sel_image_model").set_value("Demo: cnn3d-brain")
    at.run()
    assert not at.exception, at.exception
    assert not _errors(at), _errors(at)
    # the settings came back with the quick-look preset (not the widgets' minimum values)
    assert _w(at.number_input, "rb_steps").value == 30
    assert _w(at.number_input, "rb_l1").value == 0.005 and _w(at.number_input, "rb_res").value == 8


def _w(widgets, prefix):
    """The settings widget whose key starts with ``prefix|`` (keys carry the preset's version)."""
    return next(w for w in widgets if w.key.startswith(prefix + "|"))


def _group_size(at, n):
    next(w for w in at.number_input if w.key.startswith("rb_n|")).set_value(n)


def test_page_renders_on_2d_and_masks_one_image():
    at = open_page(PAGE, timeout=240)
    assert at.title[0].value.startswith("Robustness")
    assert not _errors(at), _errors(at)
    assert any("min_m mean_i p_y" in c.value for c in at.code)  # the group formula is shown
    at.radio(key="rb_scope").set_value("one")
    _w(at.number_input, "rb_steps").set_value(2)
    at.run()
    assert any(c.value.startswith("min_m p_y(X')") for c in at.code)
    at.button(key="rb_mask_run").click()
    at.run()
    assert not at.exception, at.exception
    assert not _errors(at), _errors(at)
    (res,) = at.session_state["robustness"]["mask"].values()
    assert res.mask.shape == (64, 64) and len(res.score_before) == 1 and len(res.history) == 2
    assert [m.label for m in at.metric][2].startswith("Deleted fraction")


def test_3d_group_mask_viewer_and_exports():
    at = open_page(PAGE, timeout=240)
    _three_d(at)
    at.button(key="rb_preset_paper").click()
    at.run()
    assert _w(at.number_input, "rb_steps").value == 200 and _w(at.selectbox, "rb_ref").value == "max"
    _w(at.number_input, "rb_steps").set_value(3)
    _group_size(at, 6)
    at.run()
    at.button(key="rb_mask_run").click()
    at.run()
    assert not at.exception, at.exception
    assert not _errors(at), _errors(at)
    (res,) = at.session_state["robustness"]["mask"].values()
    assert res.mask.shape == (48, 48, 48) and len(res.score_before) == 6
    assert np.mean(res.score_after) < np.mean(res.score_before)
    # the viewer: three slice sliders, the voxel readout names an atlas region or the background
    for ax in ("axial", "coronal", "sagittal"):
        assert at.slider(key=f"rb_view_{ax}").value == 24
    at.slider(key="rb_view_axial").set_value(20)
    at.checkbox(key="rb_view_atlas").check()
    at.run()
    assert not at.exception, at.exception
    assert any(c.value.startswith("voxel (d=20, h=24, w=24)") for c in at.caption)
    top = next(df.value for df in at.dataframe if "density" in df.value.columns)
    assert len(top) == 5
    # exports: JSON like the CLI's, NIfTI of the deletion map that loads back
    doc = json.loads(at.session_state["exports"]["rb_mask_json"])
    assert doc["n_inputs"] == 6 and doc["explained_class"] == "AD" and len(doc["history"]) == 3
    back = volumes.load_nifti(at.session_state["exports"]["rb_mask_nifti"], scale=False)
    np.testing.assert_allclose(back[0], res.saliency, atol=1e-6)


def test_3d_lambda_grid_tables_are_symmetric_and_bad_lists_say_so():
    at = open_page(PAGE, timeout=240)
    _three_d(at)
    _w(at.number_input, "rb_steps").set_value(2)
    _group_size(at, 4)
    at.text_input(key="rb_grid_l1").set_value("0.001, 0.01")
    at.text_input(key="rb_grid_l2").set_value("0.01 0.1")
    at.run()
    at.button(key="rb_grid_run").click()
    at.run()
    assert not at.exception, at.exception
    assert not _errors(at), _errors(at)
    (g,) = at.session_state["robustness"]["grid"].values()
    assert g.masks.shape == (2, 2, 48, 48, 48)
    assert "roi_cosine" in g.tables  # the demo has an atlas
    for by in g.tables.values():
        for t in by.values():
            assert t.shape == (2, 2, 2)
            np.testing.assert_allclose(t, np.swapaxes(t, 1, 2), equal_nan=True)
    assert len(at.session_state["robustness"]["grid"]) == 1
    # a bad list: one error line, naming the value
    for bad in ("abc", "-1"):
        at.text_input(key="rb_grid_l1").set_value(bad)
        at.run()
        assert not at.exception, at.exception
        errors = _errors(at)
        assert len(errors) == 1 and bad in errors[0], errors


def test_3d_runs_and_folds_study_completes():
    at = open_page(PAGE, timeout=300)
    _three_d(at)
    _w(at.number_input, "rb_steps").set_value(2)
    at.number_input(key="rb_runs_epochs").set_value(1)
    next(w for w in at.number_input if w.key.startswith("rb_runs_inputs")).set_value(8)
    at.run()
    assert any("3 trainings of cnn3d-small" in c.value for c in at.caption)
    at.button(key="rb_runs_run").click()
    at.run()
    assert not at.exception, at.exception
    assert not _errors(at), _errors(at)
    (r,) = at.session_state["robustness"]["runs"].values()
    assert len(r.units) == 3 and r.masks.shape == (3, 48, 48, 48)
    table = next(df.value for df in at.dataframe if "prob_CNN" in df.value.columns)
    assert list(table.index) == ["inter-run", "inter-fold"]
    assert {"prob_CNN", "ROI cosine", "pixel cosine"} <= set(table.columns)
    assert all("±" in v for v in table["prob_CNN"])
    units = next(df.value for df in at.dataframe if "balanced_accuracy" in df.value.columns)
    assert len(units) == 3 and units["balanced_accuracy"].between(0, 1).all()
    assert "all" in r.agreement and len(r.agreement["all"]) >= 5
