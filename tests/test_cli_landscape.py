"""``python -m nnsens_core landscape``: JSON equal to the core, demo data, histories, bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nnsens_core import landscape as L
from nnsens_core.__main__ import main
from nnsens_core.data import demo_tabular, load_csv

ROOT = Path(__file__).resolve().parent.parent


def _frame(n=90, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = (X[:, 0] - X[:, 2] + 0.3 * rng.normal(size=n) > 0).astype(int)
    df = pd.DataFrame(X, columns=["up", "noise", "down"])
    df["label"] = y
    return df


@pytest.fixture
def csv_path(tmp_path) -> Path:
    path = tmp_path / "data.csv"
    _frame().to_csv(path, index=False)
    return path


def test_cli_json_equals_core(tmp_path, csv_path, capsys):
    out = tmp_path / "res.json"
    rc = main(["landscape", "--data", str(csv_path), "--target", "label", "--epochs", "25",
               "--retrains", "3", "--lr", "0.1", "--seed", "2", "--device", "cpu", "--rows", "all",
               "--out", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert [f["feature"] for f in doc["features"]] == ["up", "noise", "down"]
    assert doc["target"] == "label" and doc["seeds"] == [2, 3, 4] and doc["n_rows"] == 90
    data = load_csv(csv_path, "label")
    res = L.run_landscape(data.X, data.y, L.LandscapeConfig(epochs=25, retrains=3, lr=0.1, seed=2),
                          feature_names=data.feature_names, device="cpu")
    for f, j in zip(doc["features"], range(3)):
        assert f["spearman"] == pytest.approx(res.spearman[j], abs=1e-12)
        assert f["trend"] == res.trends[0].label[j]
        assert f["trend_per_run"] == [t.label[j] for t in res.trends]
        assert f["agrees"] == res.agree[0, j]
        assert f["consistency"] == pytest.approx(res.consistency()[j]["consistency"])
    assert doc["features"][0]["spearman"] > 0.3 and doc["features"][2]["spearman"] < -0.3
    assert doc["agreement_rate_all_runs"] == res.agreement_rate()
    assert "histories" not in doc
    printed = capsys.readouterr().out
    assert "agreement with the Spearman sign" in printed and "down" in printed


def test_cli_histories_rows_and_options(tmp_path, csv_path):
    out = tmp_path / "h.json"
    rc = main(["landscape", "--data", str(csv_path), "--rows", "0:60", "--epochs", "12",
               "--retrains", "2", "--record-every", "4", "--optimizer", "adam", "--lr", "0.02",
               "--target-scaling", "minmax", "--descent-share", "0.9", "--histories", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    h = doc["histories"]
    assert h["epochs"] == [0, 4, 8, 12] and doc["n_rows"] == 60
    assert np.asarray(h["loss"]).shape == (2, 4)
    assert np.asarray(h["mean_d2"]).shape == (2, 4, 3)
    assert doc["config"]["optimizer"] == "adam" and doc["scaling"]["target_scaling"] == "minmax"
    assert doc["config"]["descent_share"] == 0.9


def test_cli_demo_data_without_data(tmp_path):
    out = tmp_path / "demo.json"
    rc = main(["landscape", "--epochs", "4", "--retrains", "1", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    demo = demo_tabular()
    doc = json.loads(out.read_text())
    assert [f["feature"] for f in doc["features"]] == list(demo.feature_names)
    assert doc["target"] == demo.target_name
    # by default the train rows the other pages and commands use (Pima: 0:500)
    assert doc["rows"] == "0:500" and doc["n_rows"] == 500


def test_cli_readings_orders_csv_and_paper_preset(tmp_path, csv_path, capsys):
    out, table = tmp_path / "r.json", tmp_path / "agreement.csv"
    rc = main(["landscape", "--data", str(csv_path), "--target", "label", "--epochs", "15",
               "--retrains", "2", "--lr", "0.1", "--device", "cpu", "--preset", "paper",
               "--orders", "2,3", "--csv", str(table), "--out", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["reading"] == "weight_diagonal" and doc["config"]["reading"] == "weight_diagonal"
    assert doc["rows"] == "0:58" and doc["n_rows"] == 58  # ~65 % of the 90 rows: the train rows
    assert {a["order"] for a in doc["agreement_by_reading"]} == {2, 3}
    assert len(doc["agreement_by_reading"]) == 2 * len(L.READINGS)
    sources = {r["setting"]: r["source"] for r in doc["preset"]["settings"]}
    assert sources["reading"].startswith("paper") and "not stated" in sources["epochs"]
    df = pd.read_csv(table)
    assert list(df["reading"]) == [r for r in L.READINGS for _ in (2, 3)]
    assert list(df["order"]) == [2, 3] * len(L.READINGS)
    data = load_csv(csv_path, "label").rows("0:58")
    res = L.run_landscape(data.X, data.y, L.LandscapeConfig(epochs=15, retrains=2, lr=0.1,
                                                            reading="weight_diagonal"),
                          device="cpu")
    ref = res.agreement_table().set_index(["reading", "order"])
    for _, row in df.iterrows():
        want = ref.loc[(row["reading"], row["order"]), "rate"]
        assert (np.isnan(row["rate"]) and (want is None or np.isnan(want))) or \
            row["rate"] == pytest.approx(want)
    printed = capsys.readouterr().out
    assert "preset paper" in printed and "not stated in the paper" in printed
    assert "weight-diagonal reading" in printed and "hessian_first_column" in printed
    # --reading overrides the preset's reading
    assert main(["landscape", "--data", str(csv_path), "--target", "label", "--epochs", "5",
                 "--retrains", "1", "--device", "cpu", "--preset", "paper", "--reading",
                 "hessian_row_sums", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["reading"] == "hessian_row_sums"


def test_cli_pima(tmp_path, pima_path):
    out = tmp_path / "pima.json"
    rc = main(["landscape", "--data", str(pima_path), "--target", "Outcome", "--epochs", "20",
               "--retrains", "2", "--device", "cpu", "--rows", "all", "--out", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert len(doc["features"]) == 8
    glucose = next(f for f in doc["features"] if f["feature"] == "Glucose")
    assert glucose["spearman"] == pytest.approx(0.4757, abs=2e-3)  # scipy.stats.spearmanr on Pima
    assert all(lo > hi for lo, hi in zip(doc["initial_loss_per_run"], doc["final_loss_per_run"]))


# ---------------------------------------------------------------- bad input

def _bad_csv(tmp_path, kind) -> Path:
    df = _frame(30)
    if kind == "constant":
        df["noise"] = 7.0
    elif kind == "text_target":
        df["label"] = np.where(df["label"] == 1, "yes", "no")
    path = tmp_path / f"{kind}.csv"
    df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("kind, extra, message", [
    ("constant", [], r"feature 'noise' is constant.*drop it"),
    ("text_target", [], r"column 'label' is not numeric.*encode"),
    ("ok", ["--epochs", "0"], r"epochs=0"),
    ("ok", ["--epochs", "-5"], r"epochs=-5"),
    ("ok", ["--retrains", "0"], r"retrains=0"),
    ("ok", ["--descent-share", "0"], r"descent_share=0"),
    ("ok", ["--target", "nope"], r"'nope' is not in the CSV"),
    ("ok", ["--rows", "0:500"], r"rows='0:500' is outside"),
    ("ok", ["--orders", "2,4"], r"--orders '2,4'"),
    ("ok", ["--orders", "x"], r"--orders 'x'"),
])
def test_cli_bad_input(tmp_path, capsys, kind, extra, message):
    path = _bad_csv(tmp_path, kind)
    argv = ["landscape", "--data", str(path), "--epochs", "3", "--retrains", "1", "--device", "cpu",
            "--out", str(tmp_path / "x.json"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    import re
    assert re.search(message, err), err
    assert not (tmp_path / "x.json").exists()


@pytest.mark.slow  # runs `python -m nnsens_core` in a subprocess
def test_cli_bad_input_subprocess_has_no_traceback(tmp_path):
    path = _bad_csv(tmp_path, "constant")
    proc = subprocess.run([sys.executable, "-m", "nnsens_core", "landscape", "--data", str(path),
                           "--epochs", "0", "--out", str(tmp_path / "x.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "epochs=0" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "nnsens_core", "landscape", "--data", str(path),
                           "--epochs", "abc", "--out", str(tmp_path / "x.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--epochs" in proc.stderr
