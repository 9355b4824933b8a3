"""AppTest smoke test of the Saliency comparison page: renders, browses, compares, evaluates a tiny
subset and runs a tiny sanity check, with no exception and tables on screen."""

from dataclasses import dataclass

import numpy as np
import pytest

from app_pages import open_page
from ui.saliency_views import approx_caption

PAGE = "pages/saliency.py"


def test_saliency_page_browse_compare_and_evaluate():
    at = open_page(PAGE, timeout=240)
    assert at.title[0].value.startswith("Saliency comparison")
    assert not at.error, [e.value for e in at.error]
    # cheap methods only: three CAMs and a coarse occlusion, approximate (drill-down)
    at.multiselect(key="sal_methods").set_value(["gradcam", "layercam", "eigencam", "occlusion"])
    at.number_input(key="sal_occ_window").set_value(16)
    at.number_input(key="sal_occ_stride").set_value(16)
    at.number_input(key="sal_occ_drill").set_value(0.5)
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    first, cls, maps = at.session_state["sal_current_maps"]
    assert set(maps) == {"gradcam", "layercam", "eigencam", "occlusion"}
    assert all(m.shape == (64, 64) and 0 <= m.min() and m.max() <= 1 for m in maps.values())
    # the approximate occlusion map says its measured error (16 positions: 8 sampled), the CAMs none
    (err,) = at.session_state["sal_current_approx"].values()
    assert list(at.session_state["sal_current_approx"]) == ["occlusion"]
    assert err["sample"] == 8 and err["drill_top"] == 0.5
    shown = [c.value for c in at.caption if "approximate (measured on" in c.value]
    assert shown == ["⚠ " + approx_caption("occlusion", err)] * 2  # Browse and Agreement tabs
    # the per-image ground-truth table and the pairwise agreement table are on screen
    assert any(df.value.shape == (4, 6) and "GT IoU chance" in df.value.columns for df in at.dataframe)
    assert any(df.value.shape[0] == 6 and "Spearman ρ" in df.value.columns
               and "Spearman ρ chance" in df.value.columns for df in at.dataframe)
    # next image, then filter to one class: the walk stays inside the filter
    at.button(key="sal_next").click()
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["sal_current"] != first
    # dataset table on 1 image per class, kept across reruns
    at.number_input(key="sal_ds_per").set_value(1)
    at.button(key="sal_eval_run").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    (ev,) = at.session_state["saliency"]["eval"].values()
    assert len(ev.indices) == 3 and set(ev.records["method"]) == set(maps)
    # 3 images in one batch: 24 of their 48 positions sampled; the table's caption says so
    assert list(ev.approx) == ["occlusion"] and ev.approx["occlusion"]["sample"] == 24
    assert "⚠ " + approx_caption("occlusion", ev.approx["occlusion"]) in [c.value for c in at.caption]
    summary = next(df.value for df in at.dataframe if "n" in df.value.columns)
    assert len(summary) == 4 * 4  # 4 methods x (3 classes + all)
    assert all("±" in s for s in summary["GT IoU"])
    # sanity check over the top 2 layers, 1 image: curves start at 1
    at.number_input(key="sal_san_n").set_value(1)
    next(w for w in at.number_input if w.key.startswith("sal_san_layers")).set_value(2)
    at.button(key="sal_san_run").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    (res,) = at.session_state["saliency"]["sanity"].values()
    assert len(res.steps) == 3 and all(abs(v[0] - 1) < 1e-9 for v in res.mean.values())
    # a filter that matches nothing (the demo CNN makes no mistake on these images) warns, no error
    at.radio(key="sal_correct").set_value("incorrect")
    at.run()
    assert not at.exception, at.exception
    assert any("No image matches" in w.value for w in at.warning)
    assert at.session_state["sal_current"] is None


def test_saliency_page_reuses_the_am_page_difference_map():
    at = open_page("pages/activation_max.py", timeout=240)
    at.number_input(key="am_steps").set_value(3)
    at.radio(key="am_start").set_value("dataset")
    at.run()
    at.number_input(key="am_index").set_value(2)
    at.run()
    at.button(key="am_run").click()
    at.run()
    assert not at.exception, at.exception
    am_map = at.session_state["am_difference"].map
    at.switch_page(PAGE)
    at.run()
    at.multiselect(key="sal_methods").set_value(["am", "eigencam"])
    at.number_input(key="sal_am_steps").set_value(2)
    at.number_input(key="sal_pos").set_value(3)  # no filter: position 3 is dataset image 2
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    index, cls, maps = at.session_state["sal_current_maps"]
    assert index == 2 and list(maps) == ["am", "eigencam"]
    assert at.session_state["sal_am_from_page"][:2] == (2, cls)
    row = am_map[cls]
    expected = (row - row.min()) / (row.max() - row.min())
    np.testing.assert_allclose(maps["am"], expected, atol=1e-6)
    assert any("Activation maximization page's run" in c.value for c in at.caption)
    # opting out computes the map here (2 steps): a different map, no notice
    at.checkbox(key="sal_am_reuse").uncheck()
    at.run()
    assert not at.exception, at.exception
    _, _, maps2 = at.session_state["sal_current_maps"]
    assert at.session_state["sal_am_from_page"] is None
    assert not np.allclose(maps2["am"], expected)
    # another image never uses the AM page's run
    at.checkbox(key="sal_am_reuse").check()
    at.button(key="sal_next").click()
    at.run()
    assert at.session_state["sal_current_maps"][0] == 3
    assert at.session_state["sal_am_from_page"] is None


def test_saliency_page_gradient_methods_follow_their_settings():
    at = open_page(PAGE, timeout=240)
    at.multiselect(key="sal_methods").set_value(["gradient", "gradxinput", "ig", "smoothgrad"])
    at.number_input(key="sal_grad_samples").set_value(4)
    at.number_input(key="sal_grad_steps").set_value(4)
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    _, _, maps = at.session_state["sal_current_maps"]
    assert list(maps) == ["gradient", "gradxinput", "ig", "smoothgrad"]
    assert all(m.shape == (64, 64) and m.min() == 0 and m.max() == 1 for m in maps.values())
    # a blurred reference changes the maps that use the reference, not the plain gradient
    at.selectbox(key="sal_grad_ref").set_value("blur")
    at.run()
    assert not at.exception, at.exception
    _, _, blurred = at.session_state["sal_current_maps"]
    np.testing.assert_array_equal(blurred["gradient"], maps["gradient"])
    assert not np.allclose(blurred["ig"], maps["ig"])


@dataclass(frozen=True)
class BrightnessConfig:
    scale: float = 1.0


def _brightness(model, x, targets, cfg, *, spec=None, device="auto", progress=None):
    return cfg.scale * x.mean(1)


@pytest.fixture
def brightness():
    from nnsens_core.saliency import registry as R
    m = R.register(R.Method("brightness", "Brightness (toy)", _brightness, BrightnessConfig,
                            description="channel mean of the input"))
    yield m
    R.unregister("brightness")


def test_saliency_page_offers_and_runs_a_registered_method(brightness):
    at = open_page(PAGE, timeout=240)
    ms = at.multiselect(key="sal_methods")
    assert "Brightness (toy)" in ms.options and "Grad-CAM" in ms.options
    ms.set_value(["brightness", "eigencam"])
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    index, _, maps = at.session_state["sal_current_maps"]
    assert list(maps) == ["brightness", "eigencam"]
    from nnsens_core.phantom import demo_images
    from ui.state import PHANTOM_TEST_N
    img = demo_images("test", n=PHANTOM_TEST_N).images[index]  # the page's default data
    mean = img.mean(0)  # the demo VGG normalises every channel alike, so the scaled maps agree
    np.testing.assert_allclose(maps["brightness"], (mean - mean.min()) / (mean.max() - mean.min()),
                               atol=1e-5)


def test_paper_settings_button_sets_am_vs_gradcam():
    from nnsens_core import activation_max as A
    at = open_page(PAGE, timeout=300)
    at.button(key="sal_preset_paper").click().run()
    assert not at.exception, at.exception
    assert at.multiselect(key="sal_methods").value == ["gradcam", "am"]
    assert at.radio(key="sal_am_preset").value == "paper"
    assert any(A.update_rule_text(A.preset("paper")) in c.value for c in at.caption)
