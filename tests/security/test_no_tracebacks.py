"""Never a traceback (issue 11): a model with a wrong output shape or NaN outputs on the
Activation maximization and Saliency pages gives one st.error line and no exception element; the
CLI answers bad input with exit code 2 and one line, never a traceback."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

from nnsens_core.zoo import IMAGE, LoadedModel, ModelSpec, VGG16Small
from tests.app.app_pages import APP, ROOT
from ui._streamlit_internals import keep_router_in_apptest

pytestmark = pytest.mark.slow
CLASSES = ("covid", "pneumonia", "regular")


@pytest.fixture(autouse=True)
def _router(monkeypatch):
    keep_router_in_apptest(monkeypatch)


class _Bad(nn.Module):
    """The small VGG with an output the pages cannot use."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        torch.manual_seed(["5 logits", "1-D", "NaN"].index(kind))  # distinct content ids
        self.net = VGG16Small(5 if kind == "5 logits" else 3)

    def forward(self, x):
        out = self.net(x)
        if self.kind == "1-D":
            return out[:, 0]
        if self.kind == "NaN":
            return out * float("nan")
        return out


def _page(page: str, kind: str) -> AppTest:
    spec = ModelSpec(name="bad.pt", arch="vgg16-small", task=IMAGE, input_shape=(3, 64, 64),
                     class_names=CLASSES, mean=(0.5,) * 3, std=(0.25,) * 3)
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["uploads"] = {"tabular_data": {}, "tabular_model": {}, "image_data": {},
                                   "image_model": {"bad.pt": LoadedModel(_Bad(kind).eval(), spec, "")}}
    at.session_state["sel_image_model"] = "bad.pt"
    at.switch_page(page)
    at.run()
    return at


@pytest.mark.parametrize("kind", ["5 logits", "1-D", "NaN"])
@pytest.mark.parametrize("page", ["pages/activation_max.py", "pages/saliency.py"])
def test_unusable_model_gives_one_error_line(page, kind):
    at = _page(page, kind)
    if not at.exception and page.endswith("activation_max.py") and not at.error:
        at.number_input(key="am_steps").set_value(2)
        at.button(key="am_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    want = "NaN or infinite" if kind == "NaN" else "need (N, 3)"
    assert want in errors[0].replace("\\", ""), errors
    assert not any(p in errors[0] for p in ("Traceback", "site-packages", ".py", 'File "')), errors


# ----------------------------------------------------------------------------- CLI
def _cli(*args, cwd):
    proc = subprocess.run([sys.executable, "-m", "nnsens_core", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(cwd)})
    return proc.returncode, proc.stderr


def test_cli_bad_inputs_exit_2_with_one_line(tmp_path):
    csv = tmp_path / "ok.csv"
    rng = np.random.default_rng(0)
    rows = "\n".join(f"{a:.3f},{b:.3f},{int(a > b)}" for a, b in rng.random((40, 2)))
    csv.write_text("a,b,y\n" + rows + "\n")
    (tmp_path / "inf.csv").write_text("a,b,y\n1,2,0\n3,inf,1\n")
    (tmp_path / "folder").mkdir()
    cases = [
        (("sobol", "--data", tmp_path / "folder", "--model", "x", "--arch", "paper-mlp", "--out", "o.json"),
         "folder"),                                              # a directory where a file belongs
        (("local", "--data", tmp_path / "missing.zip", "--out", "out"), "missing.zip"),   # no such file
        (("sobol", "--data", tmp_path / "inf.csv", "--model", "x", "--arch", "paper-mlp", "--out", "o.json"),
         "column 'b'"),
    ]
    for args, named in cases:
        rc, err = _cli(*args, cwd=tmp_path)
        assert rc == 2, (args, rc, err)
        assert "Traceback" not in err, (args, err)
        lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and named in lines[0], (args, err)


def _main_running(monkeypatch, run):
    """``nnsens_core.__main__.main`` with a sub-command whose run function is ``run``."""
    from nnsens_core import __main__ as cli

    parser = cli.build_parser()
    args = parser.parse_args(["phantom", "--out", "x"])
    args.run = run
    monkeypatch.setattr(cli, "build_parser", lambda *a, **k: parser)
    monkeypatch.setattr(parser, "parse_args", lambda argv=None: args)
    return cli.main


def test_cli_model_rejecting_the_input_is_one_line(monkeypatch, capsys):
    """A user's model that raises inside its forward (torch raises RuntimeError) is bad input."""
    def run(args):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 8x10)\n  at line 2")

    assert _main_running(monkeypatch, run)([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: RuntimeError: mat1 and mat2 shapes cannot be multiplied"), err


def test_cli_bugs_still_surface(monkeypatch):
    """Only expected failures of user input become one line; a bug (here a TypeError) keeps its
    traceback so it gets reported."""
    def run(args):
        raise TypeError("a bug")

    with pytest.raises(TypeError, match="a bug"):
        _main_running(monkeypatch, run)([])


@pytest.mark.parametrize("page", ["pages/sobol.py", "pages/landscape.py"])
def test_unusable_tabular_model_gives_one_error_line(page):
    """A tabular model with NaN outputs: one error line on every page that uses it; the landscape
    page's tabs that do not use the loaded model still work."""
    from tests.uploads import uploaded_paper_mlp

    bad = uploaded_paper_mlp(7, "nan.pt")
    with torch.no_grad():
        bad.module.fc2.weight[0, 0] = float("nan")
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["uploads"] = {"tabular_data": {}, "tabular_model": {"nan.pt": bad},
                                   "image_data": {}, "image_model": {}}
    at.session_state["sel_tabular_model"] = "nan.pt"
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "NaN or infinite" in errors[0], errors
    if page.endswith("landscape.py"):
        assert at.button(key="ls_run") and at.button(key="ls_d_run")  # the other tabs are there
