"""AppTest of the Saliency comparison page's Dataset view (no masks needed) and of Cancel."""
import numpy as np

from app_pages import open_page

PAGE = "pages/saliency.py"


def test_dataset_view_shows_accuracy_confusion_and_class_means():
    at = open_page(PAGE, timeout=240)
    at.multiselect(key="sal_methods").set_value(["gradcam", "eigencam"])
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    labels = [m.label for m in at.metric]
    assert "Accuracy" in labels and "Balanced accuracy" in labels
    assert not any("at chance" in w.value for w in at.warning)  # the demo CNN is trained
    at.selectbox(key="sal_view_method").set_value("gradcam")
    at.button(key="sal_view_run").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    (means,) = at.session_state["saliency"]["class_means"].values()
    assert means and all(m.shape == (64, 64) and n >= 1 for m, n in means.values())


def test_cancel_keeps_finished_maps_and_computes_no_more():
    at = open_page(PAGE, timeout=240)
    at.multiselect(key="sal_methods").set_value(["gradcam"])
    at.run()
    first = dict(at.session_state["sal_current_maps"][2])
    assert list(first) == ["gradcam"]
    # the click on Cancel arrives (here: between runs) while the gradient map is still to compute
    at.multiselect(key="sal_methods").set_value(["gradcam", "gradient"])
    at.button(key="sal_cancel").click()
    at.run()
    assert not at.exception, at.exception
    _, _, maps = at.session_state["sal_current_maps"]
    assert list(maps) == ["gradcam"]
    np.testing.assert_array_equal(maps["gradcam"], first["gradcam"])
    assert any("Cancelled after 1 of 2 methods" in i.value for i in at.info)
    # further reruns stay cancelled until asked to go on
    at.run()
    assert list(at.session_state["sal_current_maps"][2]) == ["gradcam"]
    at.button(key="sal_resume").click()
    at.run()
    assert not at.exception, at.exception
    assert list(at.session_state["sal_current_maps"][2]) == ["gradcam", "gradient"]
