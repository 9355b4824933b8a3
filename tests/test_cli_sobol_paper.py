"""``nnsens sobol --preset paper`` and the paper studies (hidden step, convergence, feature
reduction, PCA) written as JSON and CSV, in-process through ``nnsens_core.__main__.main``."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch

from nnsens_core import sobol as S
from nnsens_core.__main__ import main
from nnsens_core.data import load_csv
from nnsens_core.zoo import PaperMLP


def _model(tmp_path, n_inputs=8):
    torch.manual_seed(0)
    m = PaperMLP(n_inputs, 10, True).eval()
    path = tmp_path / "mlp.pt"
    torch.save(m.state_dict(), path)
    return path, m


def test_cli_paper_preset_and_every_study(tmp_path, pima_path, capsys):
    model_path, m = _model(tmp_path)
    out, csvs = tmp_path / "paper.json", tmp_path / "csv"
    rc = main(["sobol", "--preset", "paper", "--data", str(pima_path), "--model", str(model_path),
               "--arch", "paper-mlp", "--resamples", "20", "--device", "cpu",
               "--convergence", "64:256", "--reduce", "4", "--seeds", "1", "--epochs", "3",
               "--full-batch", "--pca", "--out", str(out), "--csv-dir", str(csvs)])
    assert rc == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    assert doc["preset"]["train_rows"] == "0:500" and doc["rows"] == "0:700" and doc["N"] == 1024
    assert doc["config"]["layer"] == "act1" and doc["S2"] is not None and "Jansen" in doc["estimators"]
    # the +1 % measure equals the core's on the bounds rows
    rows = load_csv(pima_path).rows("0:700")
    step = S.step_sensitivity(m, rows.X, rows.feature_names, "act1", 0.01, "cpu")
    np.testing.assert_allclose(doc["hidden_step"]["values"], step.values, rtol=1e-9)
    assert doc["convergence"]["N"] == [64, 128, 256]
    fr = doc["feature_reduction"]
    assert fr["training"]["full_batch"] is True and fr["training"]["epochs"] == 3
    assert fr["training"]["lr"] == 0.01 and fr["training"]["weight_decay"] == 1e-3
    assert len(fr["losses"]["top-4"][0]) == 3
    pca = doc["pca"]
    assert pca["config"]["class_value"] == 1.0 and pca["config"]["importance"] == "abs_loading"
    n_pos = int((rows.y == 1).sum())
    assert pca["n_rows"] == n_pos
    for name in ("indices", "second_order", "act1_summary", "hidden_step", "convergence",
                 "feature_reduction", "pca_ranking", "pca_loadings"):
        assert (csvs / f"sobol_{name}.csv").is_file(), name
    summary = pd.read_csv(csvs / "sobol_act1_summary.csv", index_col=0)
    assert list(summary.columns[:2]) == ["S1_mean", "S1_std"]


def test_cli_warns_when_the_true_target_became_an_input(tmp_path, pima_path, capsys):
    model_path, _ = _model(tmp_path)
    rc = main(["sobol", "--data", str(pima_path), "--target", "Age", "--model", str(model_path),
               "--arch", "paper-mlp", "--n", "64", "--resamples", "10", "--device", "cpu",
               "--out", str(tmp_path / "age.json")])
    err = capsys.readouterr().err
    assert rc == 0 and "warning: The target column 'Age'" in err and "'Outcome'" in err
    # retraining a sigmoid/BCE model on it is refused with one line, never a RuntimeError
    rc = main(["sobol", "--data", str(pima_path), "--target", "Age", "--model", str(model_path),
               "--arch", "paper-mlp", "--n", "64", "--resamples", "10", "--device", "cpu",
               "--reduce", "2", "--seeds", "1", "--epochs", "1", "--out", str(tmp_path / "a.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "not 0/1" in err and "Traceback" not in err
