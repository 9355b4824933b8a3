"""Model & data, *Add a CNN*: any input size the architecture allows, the paper's 0.5/0.5
normalisation preset, and a too-small size named with its minimum."""

from streamlit.testing.v1 import AppTest

from app_pages import APP
from nnsens_core.zoo import build
from tests.uploads import torch_bytes


def test_vgg16_small_at_128_with_the_paper_normalisation_and_a_too_small_size():
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception
    weights = torch_bytes(build("vgg16-small", num_classes=3).state_dict())
    at.file_uploader(key="up_cnn").set_value(("vgg128.pt", weights, "application/octet-stream"))
    at.selectbox(key="cnn_arch").set_value("vgg16-small")
    at.number_input(key="cnn_size").set_value(16)
    at.selectbox(key="cnn_norm").set_value("paper")
    at.run()
    at.button(key="btn_cnn").click().run()
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert "16x16 is too small for vgg16-small" in errors and "at least 32 pixels" in errors, errors
    at.number_input(key="cnn_size").set_value(128)
    at.run()
    at.button(key="btn_cnn").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.session_state["sel_image_model"] == "vgg128.pt"
    lm = at.session_state["uploads"]["image_model"]["vgg128.pt"]
    assert lm.spec.input_shape == (3, 128, 128)
    assert lm.spec.mean == (0.5,) * 3 and lm.spec.std == (0.5,) * 3
