"""Local sensitivity and activation maximisation pages on a TorchScript CNN (code models allowed):
the VGG blocks are detected and read stage by stage, layer targets list the chain's stages."""
import io

import pytest
import torch
from app_pages import open_page

from nnsens_core.loading import load_model
from nnsens_core.zoo import build

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def _state():
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(build("vgg16-small", num_classes=3).eval()), buf)
    lm = load_model(buf.getvalue(), input_shape=(3, 64, 64), class_names=("regular", "covid", "pneumonia"),
                    allow_code=True)
    return {"uploads": {"tabular_data": {}, "tabular_model": {}, "image_data": {},
                        "image_model": {"ts.pt": lm}},
            "sel_image_model": "ts.pt"}


def test_local_page_on_a_torchscript_vgg():
    at = open_page("pages/local_sensitivity.py", timeout=120, state=_state())
    assert not at.error, [e.value for e in at.error]
    assert any("TorchScript model" in c.value for c in at.caption)
    assert any("Blocks detected (VGG" in c.value for c in at.caption)
    at.number_input(key="ls_patch").set_value(32)
    at.run()
    at.button(key="ls_run").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    (run,) = at.session_state["local_sens"]["runs"].values()
    res = run["results"][0]
    assert res.labels == tuple(f"block{i}" for i in range(1, 6)) and res.extra["engine"] == "full"
    assert any("TorchScript model: the incremental engine" in c.value for c in at.caption)


def test_am_page_lists_the_stages_of_a_torchscript_vgg():
    at = open_page("pages/activation_max.py", timeout=120, state=_state())
    at.radio(key="am_kind").set_value("layer")
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    opts = at.selectbox(key="am_layer").options
    assert any(o.startswith("features.6 ") for o in opts) and any(o.startswith("avgpool") for o in opts)
