"""``python -m nnsens_core sobol``: JSON document, paper-MLP state_dicts with any key names, errors."""
from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from nnsens_core import sobol as S
from nnsens_core.__main__ import main
from nnsens_core.data import load_csv
from nnsens_core.zoo import PaperMLP

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def csv_path(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 10, size=(120, 8))
    y = (X[:, 1] + 0.5 * X[:, 4] > 7).astype(int)
    df = pd.DataFrame(X, columns=[f"c{i}" for i in range(8)])
    df["label"] = y
    path = tmp_path / "data.csv"
    df.to_csv(path, index=False)
    return path


def _paper_state(tmp_path, n_inputs=8, hidden=10, renamed=True) -> tuple[Path, PaperMLP]:
    torch.manual_seed(1)
    m = PaperMLP(n_inputs, hidden).eval()
    with torch.no_grad():
        m.bn1.running_mean.uniform_(-1, 1)
        m.bn1.running_var.uniform_(0.5, 2)
    state = m.state_dict()
    if renamed:  # as another codebase would name them
        state = collections.OrderedDict((f"net.{i}.{k.split('.')[-1]}", t) for i, (k, t) in enumerate(state.items()))
    path = tmp_path / "mlp.pt"
    torch.save(state, path)
    return path, m


def test_cli_writes_indices_equal_to_core(tmp_path, csv_path, capsys):
    model_path, m = _paper_state(tmp_path)
    out = tmp_path / "res.json"
    rc = main(["sobol", "--data", str(csv_path), "--target", "label", "--model", str(model_path),
               "--arch", "paper-mlp", "--rows", "0:100", "--n", "256", "--second-order",
               "--seed", "3", "--resamples", "30", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    for key in ("names", "S1", "S1_conf", "ST", "ST_conf", "S2", "N"):
        assert key in doc
    assert doc["names"] == [f"c{i}" for i in range(8)] and doc["N"] == 256
    assert len(doc["S2"]) == 8 and all(len(r) == 8 for r in doc["S2"])
    for key in ("S1", "S1_conf", "ST", "ST_conf"):  # the schema: one float per feature
        assert len(doc[key]) == 8 and all(isinstance(x, float) for x in doc[key]), key
    assert isinstance(doc["N"], int)
    for i in range(8):  # S2: the upper triangle holds floats; diagonal and below are null (NaN in SALib)
        assert all(doc["S2"][i][j] is None for j in range(i + 1))
        assert all(isinstance(doc["S2"][i][j], float) for j in range(i + 1, 8))
    data = load_csv(csv_path, "label").rows("0:100")
    res = S.run(m, S.SobolProblem.from_data(data),
                S.SobolConfig(n=256, seed=3, num_resamples=30), "cpu")
    np.testing.assert_allclose(doc["ST"], res.output().ST[0], atol=1e-9)
    np.testing.assert_allclose(doc["S1_conf"], res.output().S1_conf[0], atol=1e-9)
    j, k = np.triu_indices(8, 1)
    np.testing.assert_allclose(np.array(doc["S2"], dtype=float)[j, k], res.output().S2[0][j, k], atol=1e-9)
    assert "c1" in capsys.readouterr().out


def test_cli_first_order_only_and_layer(tmp_path, csv_path):
    model_path, _ = _paper_state(tmp_path, renamed=False)
    out = tmp_path / "res.json"
    rc = main(["sobol", "--data", str(csv_path), "--model", str(model_path), "--arch", "paper-mlp",
               "--n", "128", "--layer", "act1", "--resamples", "20", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["S2"] is None and len(doc["S1"]) == 8
    assert "act1[9]" in doc["targets"] and len(doc["targets"]["act1[0]"]["ST"]) == 8


@pytest.mark.parametrize("extra, message", [
    (["--n", "1000"], "not a power of two"),
    (["--rows", "0:1"], "constant"),
    (["--n", str(2**24), "--second-order"], "GiB allowed"),  # refused up front with the estimate
])
def test_cli_bad_input(tmp_path, csv_path, capsys, extra, message):
    model_path, _ = _paper_state(tmp_path)
    rc = main(["sobol", "--data", str(csv_path), "--target", "label", "--model", str(model_path),
               "--arch", "paper-mlp", "--device", "cpu", "--out", str(tmp_path / "x.json"), *extra])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_cli_width_mismatch(tmp_path, csv_path, capsys):
    model_path, _ = _paper_state(tmp_path, n_inputs=5)
    rc = main(["sobol", "--data", str(csv_path), "--target", "label", "--model", str(model_path),
               "--arch", "paper-mlp", "--n", "64", "--device", "cpu", "--out", str(tmp_path / "x.json")])
    assert rc == 2
    assert "takes 5 inputs but the data has 8 features" in capsys.readouterr().err


@pytest.mark.slow  # runs `python -m nnsens_core` in a subprocess
def test_cli_module_entry_point_on_pima(tmp_path, pima_path):
    model_path, _ = _paper_state(tmp_path)
    out = tmp_path / "pima.json"
    proc = subprocess.run([sys.executable, "-m", "nnsens_core", "sobol", "--data", str(pima_path),
                           "--target", "Outcome", "--model", str(model_path), "--arch", "paper-mlp",
                           "--rows", "0:700", "--n", "128", "--second-order", "--seed", "0",
                           "--resamples", "20", "--device", "cpu", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["names"][1] == "Glucose" and doc["N"] == 128
    assert all(np.isfinite(doc["ST"]))
