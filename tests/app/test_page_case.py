"""AppTest smoke test of the "Read a case" page: the demo data and CNN, cheap maps of one image,
the sanity badge, the report downloads; an uploaded 37×91 PNG is read at its own size and its
report shows it at its aspect ratio."""
import base64
import io
import re

import numpy as np
from PIL import Image

from app_pages import open_page

PAGE = "pages/case.py"
DOWNLOADS = {"Case report (PDF)", "Case report (HTML)"}


def test_case_page_explains_one_dataset_image_and_offers_the_report():
    at = open_page(PAGE, timeout=240)
    assert at.title[0].value == "Read a case"
    assert not at.error, [e.value for e in at.error]
    assert any("Sanity check" in i.value and "not run" in i.value for i in at.info)
    at.multiselect(key="case_methods").set_value(["gradcam", "occlusion", "gradient"])
    at.number_input(key="case_occ_window").set_value(16)
    at.number_input(key="case_occ_stride").set_value(16)
    at.run()
    assert not at.exception, at.exception
    assert any("Estimated cost" in c.value for c in at.caption)
    at.button(key="case_run").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    store = at.session_state["case"]
    (run,) = store["runs"].values()
    assert set(run) == {"gradcam", "occlusion", "gradient"}
    assert all(m.shape == (64, 64) for m in run.values())
    assert any("Spearman ρ" in df.value.columns for df in at.dataframe)
    assert any("What this shows" in c.value for c in at.caption)
    pdf, page = next(iter(store["reports"].values()))
    assert pdf.startswith(b"%PDF") and "<h2>Explanations</h2>" in page
    assert DOWNLOADS <= {d.label for d in at.get("download_button")}
    # a rerun keeps the maps; the contour view draws them without recomputing
    at.radio(key="case_view").set_value("contours")
    at.run()
    assert not at.exception, at.exception
    assert len(at.session_state["case"]["runs"]) == 1
    assert not any(b.key == "case_run" for b in at.button)  # nothing left to compute
    # the sanity badge, run once for the model and these methods
    at.button(key="case_sanity_run").click()
    at.run()
    assert not at.exception, at.exception
    (san,) = at.session_state["case"]["sanity"].values()
    assert set(san.final) == {"gradcam", "occlusion", "gradient"}
    assert any("Sanity check: **" in m.value for m in [*at.success, *at.error])


def test_case_page_upload_keeps_the_aspect_ratio():
    at = open_page(PAGE, timeout=240)
    at.radio(key="case_source").set_value("upload")
    at.multiselect(key="case_methods").set_value(["gradient"])
    at.run()
    assert not at.exception, at.exception
    yy, xx = np.mgrid[:91, :37]
    png = io.BytesIO()
    Image.fromarray((127 + 100 * np.sin(xx / 3.0) * np.cos(yy / 5.0)).astype(np.uint8)).save(png, "PNG")
    at.file_uploader(key="case_upload").set_value(("odd <1>.png", png.getvalue(), "image/png"))
    at.run()
    assert not at.exception, at.exception
    assert any("37×91 px" in im.proto.imgs[0].caption for im in at.image)
    at.button(key="case_run").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    (run,) = at.session_state["case"]["runs"].values()
    assert run["gradient"].shape == (91, 37)  # the map is back on the original's pixels
    _, page = next(iter(at.session_state["case"]["reports"].values()))
    first = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
    pic = Image.open(io.BytesIO(base64.b64decode(first)))
    assert abs(pic.width / pic.height - 37 / 91) < 0.03
    assert "odd &lt;1&gt;" not in page  # the file name (often a patient's name) stays out
    assert DOWNLOADS <= {d.label for d in at.get("download_button")}


def test_case_page_explains_a_cine_loop_frame_by_frame():
    from nnsens_core.sequences import export_loop, phantom_cine
    seq, _ = phantom_cine(n_frames=4, size=(48, 64))
    gif = export_loop(seq, None, "gif")
    at = open_page(PAGE, timeout=240)
    at.radio(key="case_source").set_value("upload")
    at.run()
    at.file_uploader(key="case_upload").set_value(("DOE_JANE.gif", gif, "image/gif"))
    at.run()
    assert not at.exception, at.exception
    at.selectbox(key="case_loop_method").set_value("gradient")
    at.run()
    at.button(key="case_loop_run").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    (fm,) = at.session_state["case"]["loops"].values()
    h, w = fm.maps_original.shape[1:]  # the exported GIF is upscaled; the aspect ratio stays
    assert fm.maps.shape[0] == 4 and w * 48 == h * 64
    labels = {d.label for d in at.get("download_button")}
    assert {"Case report (PDF)", "Loop MP4", "Loop GIF"} <= labels
