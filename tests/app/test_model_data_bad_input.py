"""Bad uploads on the Model & data page: a clear message, no exception, previous state kept."""

import numpy as np
from streamlit.testing.v1 import AppTest

from app_pages import APP
from nnsens_core.data import demo_tabular
from nnsens_core.zoo import PaperMLP
from tests.uploads import TouchOnUnpickle, png_bytes, torch_bytes, zip_bytes


def _app():
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception
    return at


def _errors(at):
    return " ".join(e.value for e in at.error)


def _upload(at, key, name, blob, mime="application/octet-stream"):
    at.file_uploader(key=key).set_value((name, blob, mime))
    at.run()


def test_csv_with_text_column_keeps_the_previous_dataset():
    at = _app()
    good = b"a,b,label\n1,2,0\n2,3,1\n3,1,0\n4,4,1\n5,0,0\n6,2,1\n"
    _upload(at, "up_tab_data", "good.csv", good, "text/csv")
    at.button(key="btn_tab_data").click().run()
    assert at.session_state["sel_tabular_data"] == "good.csv"
    _upload(at, "up_tab_data", "bad.csv", b"a,b,label\n1,x,0\n2,y,1\n", "text/csv")
    at.button(key="btn_tab_data").click().run()
    assert not at.exception
    assert "column 'b' is not numeric" in _errors(at)
    assert at.session_state["sel_tabular_data"] == "good.csv"


def test_malicious_pickle_model_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    at = _app()
    at.radio(key="tab_model_mode").set_value("Upload weights").run()
    _upload(at, "up_tab_model", "evil.pt", torch_bytes({"fc1.weight": TouchOnUnpickle(marker)}))
    at.button(key="btn_tab_model").click().run()
    assert not at.exception
    assert "pickled code is refused" in _errors(at)
    assert not marker.exists()
    assert at.session_state["sel_tabular_model"].startswith("Demo")


def test_renamed_state_dict_loads_and_reports_the_mapping():
    width = demo_tabular().n_features  # the demo data's width (Pima: 8)
    net = PaperMLP(width, 10)
    renamed = {f"layer{i}": v for i, v in enumerate(net.state_dict().values())}
    at = _app()
    at.radio(key="tab_model_mode").set_value("Upload weights").run()
    at.number_input(key="mlp_up_in").set_value(width)
    _upload(at, "up_tab_model", "renamed.pt", torch_bytes(renamed))
    at.button(key="btn_tab_model").click().run()
    assert not at.exception and not at.error, _errors(at)
    assert at.session_state["sel_tabular_model"] == "renamed.pt"
    assert any("layer0 -> fc1.weight" in c.value for c in at.code)


def _png():
    return png_bytes(np.zeros((8, 8, 3), np.uint8))


def test_one_class_image_zip_and_corrupt_cnn_give_messages():
    at = _app()
    _upload(at, "up_img", "one.zip", zip_bytes({"cats/a.png": _png(), "cats/b.png": _png()}))
    at.button(key="btn_img").click().run()
    assert not at.exception
    assert "at least two class" in _errors(at)
    assert at.session_state["sel_image_data"].startswith("Demo")
    _upload(at, "up_cnn", "broken.pt", b"\x00\x01garbage")
    at.button(key="btn_cnn").click().run()
    assert not at.exception
    assert "not a safe weights file" in _errors(at)
