"""Model & data with real-looking images: a ZIP of mixed files loads at the originals' sizes and
says what it skipped; the same upload then serves a 64-px demo CNN, a 128-px CNN and a non-square
grey CNN (form and manifest) without re-uploading; the ROI choice reaches the context."""
import io
import json

import numpy as np
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from app_pages import APP
from nnsens_core import zoo
from nnsens_core.model_manifest import manifest_entry
from tests.uploads import png_bytes, torch_bytes, zip_bytes


def _jpeg_cmyk() -> bytes:
    buf = io.BytesIO()
    Image.new("CMYK", (90, 30), (0, 200, 200, 0)).save(buf, format="JPEG")
    return buf.getvalue()


def _zip() -> bytes:
    rng = np.random.default_rng(0)
    wide = (rng.random((40, 160, 3)) * 255).astype(np.uint8)
    tall = (rng.random((120, 50)) * 255).astype(np.uint8)
    deep = np.round(np.linspace(0, 65535, 60 * 80)).astype(np.uint16).reshape(60, 80)
    return zip_bytes({"scans/covid/p1/wide.png": png_bytes(wide),
                      "scans/covid/p1/deep16.png": png_bytes(deep),
                      "scans/regular/p2/tall.png": png_bytes(tall),
                      "scans/regular/p3/cmyk.jpg": _jpeg_cmyk(),
                      "scans/regular/notes.txt": b"hello"})


def _captions(at) -> list[str]:
    """Captions of every st.image on the page."""
    return [c for el in at.get("image") for c in el.captions]


def _cnn_on_form(at, name, arch, h, w=None, channels=3, classes="covid,regular", norm=None):
    torch.manual_seed(0)
    kwargs = {"num_classes": 2, "width": 0.0625} | ({"in_channels": 1} if channels == 1 else {})
    at.file_uploader(key="up_cnn").set_value((name, torch_bytes(zoo.build(arch, **kwargs).state_dict()),
                                              "application/octet-stream"))
    at.selectbox(key="cnn_arch").set_value(arch)
    at.number_input(key="cnn_classes").set_value(2)
    at.text_input(key="cnn_names").set_value(classes)
    at.number_input(key="cnn_width").set_value(0.0625)
    at.number_input(key="cnn_size").set_value(h)
    at.number_input(key="cnn_size_w").set_value(w)
    at.selectbox(key="cnn_channels").set_value(channels)
    if norm:
        at.selectbox(key="cnn_norm").set_value("custom").run()
        at.text_input(key="cnn_mean").set_value(norm[0])
        at.text_input(key="cnn_std").set_value(norm[1])
    at.run()
    at.button(key="btn_cnn").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_one_zip_serves_cnns_of_any_size_without_reupload():
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.file_uploader(key="up_img").set_value(("scans.zip", _zip(), "application/zip"))
    at.run()
    at.button(key="btn_img").click().run()
    assert not at.exception, at.exception
    assert at.session_state["sel_image_data"] == "scans.zip"
    text = " ".join(s.value for s in at.success) + " ".join(c.value for c in at.code)
    assert "4 images" in text and "1 file(s) skipped" in text and "16-bit" in text, text
    d = at.session_state["uploads"]["image_data"]["scans.zip"]
    assert [d.original(i).shape for i in range(4)] == [(1, 60, 80), (3, 40, 160), (1, 120, 50),
                                                       (3, 30, 90)]
    caps = " | ".join(_captions(at))
    assert "160×40 px" in caps and "50×120 px" in caps, caps          # originals, own aspect
    notes = " ".join(c.value for c in at.caption)
    assert "1 file(s) skipped" in notes and "3 groups" in notes, notes

    # the demo CNN (64 px): the images are made for it from the originals
    assert "model input 64×64 px" in " ".join(_captions(at))
    # a 128-px CNN and a non-square grey CNN: no re-upload, no shape error
    _cnn_on_form(at, "vgg128.pt", "vgg16-small", 128)
    assert "model input 128×128 px" in " ".join(_captions(at)), _captions(at)
    _cnn_on_form(at, "grey.pt", "resnet18-small", 96, 160, channels=1, norm=("0.3", "0.2"))
    lm = at.session_state["uploads"]["image_model"]["grey.pt"]
    assert lm.spec.input_shape == (1, 96, 160) and lm.spec.arch_kwargs["in_channels"] == 1
    caps = " ".join(_captions(at))
    assert "model input 160×96 px: 96×160 px, 1 channel (grey), letterbox, mean 0.3, std 0.2" \
        in caps, caps
    assert lm.spec.mean == (0.3,) and lm.spec.std == (0.2,)
    rows = " ".join(str(v) for df in at.dataframe for v in df.value.to_numpy().ravel())
    assert "covid, regular" in rows and "parameters" in rows
    assert at.session_state["sel_image_data"] == "scans.zip"

    # the region of interest: auto fan, outlined in the preview, and in the context key
    data_id = at.session_state["upload_ids"]["image_data"]["scans.zip"]
    at.radio(key=f"roi_mode|{data_id}").set_value("fan").run()
    assert not at.exception, at.exception
    assert at.session_state["roi"][data_id]["mode"] == "fan"
    assert any("% of the image inside" in c for c in _captions(at)), ([e.value for e in at.error], [w.value for w in at.warning])
    at.radio(key=f"roi_mode|{data_id}").set_value("polygon").run()
    at.text_input(key=f"roi_poly|{data_id}").set_value("0,0; 20,0; 20,20").run()
    assert not at.exception, at.exception
    assert at.session_state["roi"][data_id] == {"mode": "polygon", "polygon": "0,0; 20,0; 20,20"}


def test_a_grey_non_square_cnn_loads_from_its_manifest():
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    torch.manual_seed(0)
    kwargs = {"num_classes": 2, "width": 0.0625, "in_channels": 1}
    spec = zoo.ModelSpec("g", "vgg16-small", zoo.IMAGE, (1, 64, 96), ("covid", "regular"),
                         mean=(0.4,), std=(0.2,), arch_kwargs=kwargs, resize="crop")
    at.file_uploader(key="up_cnn").set_value(
        ("g.pt", torch_bytes(zoo.build("vgg16-small", **kwargs).state_dict()), "application/octet-stream"))
    at.file_uploader(key="up_cnn_manifest").set_value(
        ("g.json", json.dumps(manifest_entry(spec, "g.pt", balanced_accuracy=0.77)).encode(),
         "application/json"))
    at.run()
    at.button(key="btn_cnn").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    lm = at.session_state["uploads"]["image_model"]["g.pt"]
    assert lm.spec.input_shape == (1, 64, 96) and lm.spec.resize == "crop"
    assert lm.spec.mean == (0.4,)
    rows = " ".join(str(v) for df in at.dataframe for v in df.value.to_numpy().ravel())
    assert "64×96 px, 1 channel (grey), centre crop, mean 0.4, std 0.2" in rows
    assert "0.770" in rows                                    # balanced accuracy from the manifest
