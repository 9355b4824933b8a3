"""The dashboard's JSON downloads are the CLI's files: the text a page's download button offers
(recorded by ``ui.widgets.download_json`` in ``st.session_state["exports"]``) parses to the same
document as the CLI's output for the same run, wall-clock times aside."""
import json

import pytest

from app_pages import open_page
from nnsens_core.__main__ import main

pytestmark = pytest.mark.slow


def _strip(doc):
    if isinstance(doc, dict):
        return {k: _strip(v) for k, v in doc.items() if k not in ("seconds", "timings_s")}
    if isinstance(doc, list):
        return [_strip(v) for v in doc]
    return doc


def _same(a, b, path="doc"):
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (path, sorted(set(a) ^ set(b)))
        for k in a:
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-7), path
    else:
        assert a == b, (path, a, b)


def test_local_sensitivity_download_equals_cli_summary(tmp_path):
    at = open_page("pages/local_sensitivity.py", timeout=120)
    at.number_input(key="ls_index").set_value(2)
    at.number_input(key="ls_patch").set_value(32)
    at.button(key="ls_run").click()
    at.run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    page = json.loads(at.session_state["exports"]["dl_ls_json"])
    assert main(["local", "--index", "2", "--patch", "32", "--out", str(tmp_path), "--device", "cpu"]) == 0
    cli = json.loads((tmp_path / "summary.json").read_text())
    _same(_strip(page), _strip(cli))
    assert page["image_indices"] == [2] and page["forward_passes"] == 3 * 2 * 2 + 1


def test_activation_max_download_equals_cli_activations(tmp_path):
    at = open_page("pages/activation_max.py", timeout=120)
    at.number_input(key="am_steps").set_value(3)
    at.button(key="am_run").click()
    at.run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    page = json.loads(at.session_state["exports"]["dl_am_json"])
    assert main(["am", "--steps", "3", "--out", str(tmp_path), "--device", "cpu"]) == 0
    cli = json.loads((tmp_path / "activations.json").read_text())
    _same(_strip(page), _strip(cli))
    assert page["start"] == "noise" and len(page["files"]) == len(page["targets"])
