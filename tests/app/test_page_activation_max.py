"""AppTest smoke test of the Activation maximization page: noise start for all classes, an
image-started cross-class run that stores the AM difference map, a layer target, bad input."""

import numpy as np

from app_pages import open_page
from tests.uploads import png_bytes

PAGE = "pages/activation_max.py"


def _page():
    return open_page(PAGE, timeout=120)


def test_am_page_noise_then_image_start():
    at = _page()
    assert at.title[0].value.startswith("Activation maximization")
    assert not at.error, [e.value for e in at.error]
    at.number_input(key="am_steps").set_value(3)
    at.number_input(key="am_preview").set_value(2)
    at.button(key="am_run").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    (run,) = at.session_state["am"]["runs"].values()
    res = run["res"]
    assert res.images.shape == (3, 3, 64, 64) and res.history.shape == (3, 3)
    assert [t.index for t in res.targets] == [0, 1, 2]
    assert "am_difference" not in at.session_state  # noise start: no difference map
    assert len(at.dataframe) >= 1 and len(at.get("plotly_chart")) >= 1
    # from a dataset image: the same start pushed toward every class, difference map stored
    at.radio(key="am_start").set_value("dataset")
    at.run()
    at.number_input(key="am_index").set_value(2)
    at.radio(key="am_rule").set_value("blur")
    at.run()
    at.button(key="am_run").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    d = at.session_state["am_difference"]
    assert d.map.shape == (3, 64, 64) and d.index == 2 and d.classes == (0, 1, 2)
    assert np.all(d.map >= 0) and d.map.max() > 0
    assert len(at.session_state["am"]["runs"]) == 2
    assert len(at.get("plotly_chart")) >= 2  # difference maps + history


def test_am_page_layer_target_and_bad_input():
    at = _page()
    at.number_input(key="am_lr").set_value(0.0)
    at.run()
    assert not at.exception, at.exception
    assert any("lr=0.0 must be > 0" in e.value for e in at.error), [e.value for e in at.error]
    at.number_input(key="am_lr").set_value(0.05)
    at.radio(key="am_kind").set_value("layer")
    at.run()
    assert not at.exception, at.exception
    at.text_input(key="am_layer_typed").set_value("no.such.layer")
    at.run()
    assert any("does not exist" in e.value for e in at.error), [e.value for e in at.error]
    at.text_input(key="am_layer_typed").set_value("")
    at.run()
    at.number_input(key="am_steps").set_value(2)
    at.run()
    at.button(key="am_run").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    (run,) = at.session_state["am"]["runs"].values()
    assert all(t.layer is not None for t in run["res"].targets) and len(run["res"].targets) == 3



def test_am_page_upload_start_is_checked():
    at = _page()
    at.radio(key="am_start").set_value("upload")
    at.run()
    gray = png_bytes(np.full((64, 64), 128, np.uint8))
    at.file_uploader(key="am_upload").set_value(("gray.png", gray, "image/png"))
    at.run()
    assert not at.exception, at.exception
    assert any("grayscale" in e.value for e in at.error), [e.value for e in at.error]
    at.checkbox(key="am_fit").check()
    at.run()
    at.number_input(key="am_steps").set_value(2)
    at.run()
    at.button(key="am_run").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    d = at.session_state["am_difference"]
    assert d.index is None and d.key.startswith("upload:gray.png") and d.map.shape == (3, 64, 64)


def test_am_page_paper_preset_sets_the_paper_rule():
    from nnsens_core import activation_max as A
    at = _page()
    at.button(key="am_preset_paper").click()
    at.run()
    assert not at.exception, at.exception
    assert at.radio(key="am_rule").value == "tv"
    assert at.number_input(key="am_lr").value == 0.1 and at.number_input(key="am_tv").value == 0.1
    assert at.checkbox(key="am_normgrad").value is False
    assert any("raw gradient" in c.value and "x ← x + 0.1·g − 0.1·∂TV/∂x" in c.value
               for c in at.caption), [c.value for c in at.caption]
    at.number_input(key="am_steps").set_value(2)
    at.button(key="am_run").click()
    at.run()
    assert not at.exception, at.exception
    (run,) = at.session_state["am"]["runs"].values()
    assert run["res"].config == A.preset("paper", steps=2, preview_every=10)
    assert any(c.value.startswith("Update rule used:") and "raw gradient" in c.value for c in at.caption)
    at.button(key="am_preset_nnsens").click()
    at.run()
    assert at.checkbox(key="am_normgrad").value is True and at.number_input(key="am_lr").value == 0.05
    assert any("normalised gradient" in c.value for c in at.caption)
