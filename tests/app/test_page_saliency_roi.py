"""AppTest of the Saliency comparison page's reading screen: maps at the original resolution with a
colour bar, a stated scale and a "what this shows" line per method, contour mode, a region of
interest (maps transparent outside it, every number inside it, said in one caption) and the
dataset report download."""
import numpy as np

from app_pages import open_page

PAGE = "pages/saliency.py"
DATA_ID = "demo:phantom:test:90"          # ui.state's default image data
LEFT = "0,0; 40,0; 40,63; 0,63"            # the left part of the 64x64 phantom (x <= 40)


def _captions(at):
    return [c.value for c in at.caption]


def test_maps_have_colour_bars_scales_and_descriptions():
    from nnsens_core.saliency import registry as R
    at = open_page(PAGE, timeout=240)
    at.multiselect(key="sal_methods").set_value(["gradcam", "occlusion"])
    at.number_input(key="sal_occ_window").set_value(16)
    at.number_input(key="sal_occ_stride").set_value(16)
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    caps = _captions(at)
    scales = [c for c in caps if "**Scale:**" in c]
    assert len(scales) == 2, caps
    assert any(R.get("gradcam").description in c for c in scales)
    # occlusion is signed: its raw map is drawn diverging around 0 when it has negative values,
    # else on inferno; either way the scale is stated with its end values
    assert all("raw values" in c and "per-image scale" in c for c in scales)
    # one original per row, one map and one colour bar per method, no 4x pixelated copies
    imgs = [i for el in at.image for i in el.proto.imgs]
    assert len(imgs) >= 1 + 1 + 2 * 2
    assert not any("ROI" in c or "region of interest" in c for c in caps)
    shown = at.session_state["sal_shown_maps"]
    assert set(shown) == {"gradcam", "occlusion"} and all(np.isfinite(m).all() for m in shown.values())
    # the [0, 1] scale as compared, and contours instead of a colour wash
    at.radio(key="sal_scale").set_value("scaled")
    at.radio(key="sal_view").set_value("contours")
    at.run()
    assert not at.exception, at.exception
    assert any("min-max scaled per image" in c for c in _captions(at))
    assert any("top 5 % (white)" in c for c in _captions(at))
    shown = at.session_state["sal_shown_maps"]
    _, _, maps = at.session_state["sal_current_maps"]
    np.testing.assert_array_equal(shown["gradcam"], maps["gradcam"])  # 64 px originals


def test_region_of_interest_masks_maps_and_numbers_and_the_dataset_report():
    at = open_page(PAGE, timeout=300,
                   state={"roi": {DATA_ID: {"mode": "polygon", "polygon": LEFT}}})
    at.multiselect(key="sal_methods").set_value(["gradcam", "eigencam"])
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    caps = _captions(at)
    roi_caps = [c for c in caps if c.startswith("Maps and numbers inside the region of interest")]
    assert roi_caps, caps
    share = float(roi_caps[0].split(": ")[1].split(" %")[0])
    assert 55 <= share <= 70  # x <= 40 of 64 columns
    shown = at.session_state["sal_shown_maps"]
    for m in shown.values():
        assert np.isnan(m[:, 45:]).all() and np.isfinite(m[:, :38]).all()
    # the agreement numbers are computed inside: equal to the metric on the left columns
    from nnsens_core.saliency import metrics as mt
    index, _, maps = at.session_state["sal_current_maps"]
    table = next(df.value for df in at.dataframe if "Spearman ρ" in df.value.columns
                 and "method B" in df.value.columns)
    a, b = maps["gradcam"][None], maps["eigencam"][None]
    from nnsens_core.roi import parse_polygon, polygon_mask
    roi = polygon_mask(parse_polygon(LEFT), (64, 64))
    assert abs(table["Spearman ρ"].iloc[0] - mt.spearman(a, b, within=roi)[0]) < 1e-12
    assert abs(table["Spearman ρ"].iloc[0] - mt.spearman(a, b)[0]) > 1e-9
    # dataset table inside the ROI, then the dataset report on the Dataset view tab
    at.number_input(key="sal_ds_per").set_value(1)
    at.button(key="sal_eval_run").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    (ev,) = at.session_state["saliency"]["eval"].values()
    assert ev.roi_share is not None and 0.5 < ev.roi_share < 0.75
    at.run()
    labels = {d.label for d in at.get("download_button")}
    assert {"Dataset report (PDF)", "Dataset report (HTML)"} <= labels
    (files,) = at.session_state["saliency"]["reports"].values()
    assert files[0][:5] == b"%PDF-" and "Comparison table" in files[1]


def test_dataset_view_and_sanity_check_respect_the_region_of_interest():
    """Class-mean maps are transparent outside every image's ROI; the sanity check compares maps
    inside the ROI only and says so."""
    at = open_page(PAGE, timeout=240, state={"roi": {DATA_ID: {"mode": "polygon", "polygon": LEFT}}})
    at.multiselect(key="sal_methods").set_value(["gradcam"])
    at.run()
    at.selectbox(key="sal_view_method").set_value("gradcam")
    at.button(key="sal_view_run").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any(c.startswith("Transparent: outside the region of interest") for c in _captions(at))
    next(n for n in at.number_input if (n.key or "").startswith("sal_san_layers|")).set_value(1)
    at.button(key="sal_san_run").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    (res,) = at.session_state["saliency"]["sanity"].values()
    from nnsens_core.roi import parse_polygon, polygon_mask
    assert abs(res.config.roi_share - polygon_mask(parse_polygon(LEFT), (64, 64)).mean()) < 1e-9
    assert any(c.startswith("Similarities inside the region of interest") for c in _captions(at))
