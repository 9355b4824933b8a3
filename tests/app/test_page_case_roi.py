"""AppTest of the "Read a case" page with a region of interest: the maps are transparent outside
it, the agreement is measured inside it, and one caption says so."""
import numpy as np

from app_pages import open_page

PAGE = "pages/case.py"
DATA_ID = "demo:phantom:test:90"
LEFT = "0,0; 40,0; 40,63; 0,63"


def test_case_maps_and_agreement_inside_the_region_of_interest():
    at = open_page(PAGE, timeout=240, state={"roi": {DATA_ID: {"mode": "polygon", "polygon": LEFT}}})
    at.multiselect(key="case_methods").set_value(["gradcam", "gradient"])
    at.run()
    at.button(key="case_run").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    caps = [c.value for c in at.caption]
    assert any(c.startswith("Maps and numbers inside the region of interest: ") for c in caps), caps
    assert any("inside the region of interest only" in c for c in caps)
    shown = at.session_state["case_shown_maps"]
    assert set(shown) == {"gradcam", "gradient"}
    for m in shown.values():
        assert np.isnan(m[:, 45:]).all() and np.isfinite(m[:, :38]).all()
    # the agreement table: Spearman over the pixels inside (report.agreement over finite pixels)
    from nnsens_core.roi import parse_polygon, polygon_mask
    from nnsens_core.saliency import metrics as mt
    roi = polygon_mask(parse_polygon(LEFT), (64, 64))
    (run,) = at.session_state["case"]["runs"].values()
    table = next(df.value for df in at.dataframe if "Spearman ρ" in df.value.columns)
    a, b = run["gradcam"][None], np.clip(run["gradient"], 0, None)[None]
    assert abs(table["Spearman ρ"].iloc[0] - round(mt.spearman(a, b, within=roi)[0], 3)) < 1e-9
    # the report blacks out everything outside the region (burned-in names sit there), and says
    # "image #N" unless the file name is asked for
    import base64
    import io
    import re

    from PIL import Image
    _, page = next(iter(at.session_state["case"]["reports"].values()))
    first = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
    pic = np.asarray(Image.open(io.BytesIO(base64.b64decode(first))).convert("L"), float)
    w = pic.shape[1]
    assert pic[:, int(w * 0.75):].max() == 0 and pic[:, : int(w * 0.5)].max() > 0
    assert "image #0 of" in page
    at.checkbox(key="case_blackout").uncheck()
    at.run()
    assert not at.exception, at.exception
    assert len(at.session_state["case"]["reports"]) == 2


def test_an_uploaded_image_gets_the_selected_region_of_interest():
    """The selected data's ROI choice is found on an uploaded image too (here the polygon, on the
    upload's own pixels); a polygon outside the upload says so and the maps are whole."""
    import io

    from PIL import Image
    png = io.BytesIO()
    yy, xx = np.mgrid[:64, :80]
    Image.fromarray((127 + 100 * np.sin(xx / 3.0) * np.cos(yy / 5.0)).astype(np.uint8)).save(png, "PNG")
    for polygon, inside in ((LEFT, True), ("100,100; 120,100; 120,120", False)):
        at = open_page(PAGE, timeout=240, state={"roi": {DATA_ID: {"mode": "polygon",
                                                                   "polygon": polygon}}})
        at.radio(key="case_source").set_value("upload")
        at.multiselect(key="case_methods").set_value(["gradient"])
        at.run()
        at.file_uploader(key="case_upload").set_value(("scan.png", png.getvalue(), "image/png"))
        at.run()
        at.button(key="case_run").click()
        at.run()
        assert not at.exception, at.exception
        assert not at.error, [e.value for e in at.error]
        shown = at.session_state["case_shown_maps"]["gradient"]
        assert shown.shape == (64, 80)
        caps = [c.value for c in at.caption]
        if inside:
            assert np.isnan(shown[:, 45:]).all() and np.isfinite(shown[:, :38]).all()
            assert any(c.startswith("Maps and numbers inside the region of interest") for c in caps)
        else:
            assert np.isfinite(shown).all()
            assert any(c.startswith("No region of interest on this image: the polygon lies outside")
                       for c in caps), caps
