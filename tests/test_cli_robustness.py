"""``python -m nnsens_core robustness mask|grid|retrain`` in-process on tiny settings: the demo
3-D CNN on a few brain-phantom volumes, a tiny 3-D CNN on 24^3 volumes for retraining."""
import json

import numpy as np
import pytest
import torch

from nnsens_core import brain_phantom, volumes, zoo
from nnsens_core.__main__ import main


def _run(*args) -> int:
    return main(["robustness", *args, "--device", "cpu"])


@pytest.mark.slow  # the first 3-D pass of the demo CNN pays a ~10 s one-time kernel setup
def test_mask_on_brain_volumes_writes_json_npz_nifti(tmp_path, capsys):
    rc = _run("mask", "--data", "brain", "--n", "2", "--steps", "2", "--out", str(tmp_path))
    assert rc == 0
    doc = json.loads((tmp_path / "mask.json").read_text())
    assert doc["model"] == "cnn3d-brain" and doc["class"] == "AD"
    labels = brain_phantom.demo_volumes("test", 2).labels
    assert doc["n_inputs"] == int((labels == 1).sum()) > 0
    assert len(doc["history"]) == 2 and "||grad m||_3" in doc["formula"]
    assert 0 <= doc["ground_truth"]["deletion_in_gt"] <= 1
    assert len(doc["top_regions"]) == 5
    assert {r["name"] for r in doc["top_regions"]} <= set(brain_phantom.REGIONS.values())
    arrays = np.load(tmp_path / "masks.npz")
    assert arrays["mask"].shape == (48, 48, 48) and arrays["m"].shape == (8, 8, 8)
    nii = volumes.load_nifti(tmp_path / "mask.nii.gz", scale=False)
    assert nii.shape == (1, 48, 48, 48)
    np.testing.assert_allclose(nii[0], arrays["mask"], atol=1e-6)
    assert (tmp_path / "scores.csv").is_file() and (tmp_path / "top_regions.csv").is_file()
    out = capsys.readouterr().out
    assert "objective: min_m mean_i p_y" in out and "estimate:" in out


@pytest.mark.slow
def test_grid_two_by_two_tables_symmetric(tmp_path, capsys):
    rc = _run("grid", "--data", "brain", "--n", "2", "--steps", "2", "--lambda1s", "0.001,0.01",
              "--lambda2s", "0.01,0.1", "--out", str(tmp_path))
    assert rc == 0
    doc = json.loads((tmp_path / "grid.json").read_text())
    assert doc["lambda1s"] == [0.001, 0.01] and doc["lambda2s"] == [0.01, 0.1]
    for metric in ("prob_cnn", "roi_cosine", "pixel_cosine"):
        for across in ("lambda1", "lambda2"):
            t = np.array(doc["tables"][metric][across], dtype=float)
            assert t.shape == (2, 2, 2)
            np.testing.assert_allclose(t, np.swapaxes(t, 1, 2))
    assert set(doc["cells"]) == {"0,0", "0,1", "1,0", "1,1"}
    masks = np.load(tmp_path / "masks.npz")["masks"]
    assert masks.shape == (2, 2, 48, 48, 48)
    for a, b in ((0.001, 0.01), (0.01, 0.1)):
        assert volumes.load_nifti(tmp_path / f"mask_l1={a:g}_l2={b:g}.nii.gz").shape == (1, 48, 48, 48)
    import pandas as pd
    long = pd.read_csv(tmp_path / "tables.csv")
    assert len(long) == len(doc["tables"]) * 2 * 2 * 4
    out = capsys.readouterr().out
    assert "prob_cnn across lambda1 (lambda2 = 0.01)" in out


def test_phantom_mask_uses_ground_truth_regions(tmp_path):
    rc = _run("mask", "--data", "phantom", "--n", "6", "--steps", "2", "--resolution", "4",
              "--out", str(tmp_path))
    assert rc == 0
    doc = json.loads((tmp_path / "mask.json").read_text())
    assert doc["model"] == "vgg16-phantom" and doc["class"] == "pneumonia"
    assert {r["name"] for r in doc["top_regions"]} == {"ground truth", "rest"}
    assert not list(tmp_path.glob("*.nii.gz"))  # images: no NIfTI
    assert np.load(tmp_path / "masks.npz")["mask"].shape == (64, 64)


@pytest.fixture(scope="module")
def tiny_volumes(tmp_path_factory):
    """12 brain-phantom volumes at 24^3 with their atlas (.npz) and a tiny cnn3d-small state_dict."""
    d = tmp_path_factory.mktemp("vol")
    data = brain_phantom.make_brain_phantom(12, size=24, seed=3)
    np.savez(d / "vols.npz", images=data.images, labels=data.labels,
             class_names=np.array(data.class_names), atlas=data.atlas.labels,
             region_labels=np.array(sorted(data.atlas.names)),
             region_names=np.array([data.atlas.names[k] for k in sorted(data.atlas.names)]))
    torch.manual_seed(0)
    torch.save(zoo.build("cnn3d-small", width=2, blocks=2).state_dict(), d / "cnn.pt")
    one = data.labels == data.labels[0]
    np.savez(d / "one_class.npz", images=data.images[one], labels=np.zeros(int(one.sum()), int),
             class_names=np.array(["control", "AD"]))
    return d


def _tiny(d, *extra):
    return ("--data", str(d / "vols.npz"), "--model", str(d / "cnn.pt"), "--arch", "cnn3d-small",
            "--arch-kwargs", '{"width": 2, "blocks": 2}', "--resolution", "4", *extra)


def test_retrain_runs_folds_writes_tables(tiny_volumes, tmp_path, capsys):
    rc = _run("retrain", *_tiny(tiny_volumes, "--runs", "2", "--folds", "2", "--epochs", "1",
                                "--steps", "2", "--top", "2", "--val-fraction", "0.5",
                                "--out", str(tmp_path)))
    assert rc == 0, capsys.readouterr().err
    doc = json.loads((tmp_path / "retrain.json").read_text())
    units = doc["units"]
    assert [(u["run"], u["fold"]) for u in units] == [(0, 0), (1, 0), (0, 1)]  # cross design
    assert {p["kind"] for p in doc["pairs"]} == {"inter_run", "inter_fold"}
    assert doc["summary"]["inter_run"]["prob_cnn"]["n"] == 1
    assert 0 <= doc["summary"]["inter_fold"]["prob_cnn"]["mean"] <= 1
    assert "roi_cosine" in doc["summary"]["inter_run"]  # the .npz's atlas
    assert np.load(tmp_path / "masks.npz")["masks"].shape == (3, 24, 24, 24)
    for r, f in ((0, 0), (1, 0), (0, 1)):
        assert volumes.load_nifti(tmp_path / f"mask_run{r}_fold{f}.nii.gz").shape == (1, 24, 24, 24)
    for name in ("summary.csv", "pairs.csv", "units.csv", "agreement_all.csv"):
        assert (tmp_path / name).is_file(), name
    assert "inter_run: prob_cnn" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (("mask", "--atlas", "BAD"), "the atlas has shape (10, 10, 10) but the inputs are (24, 24, 24)"),
    (("grid", "--lambda1s", "0.1,x"), "--lambda1s='0.1,x' must be a comma list of numbers"),
    (("grid", "--lambda1s", "0.1,-1"), "every lambda must be a finite number >= 0"),
    (("grid", "--lambda2s", "0.1,0.1"), "lists a value twice"),
    (("mask", "--class", "MCI"), "--class 'MCI' is not a class"),
    (("retrain", "--data", "ONE"), "one class only"),
    (("mask", "--model", "no-such-model"), "is neither a demo"),
])
def test_bad_inputs_exit_2_with_one_line(tiny_volumes, tmp_path, capsys, extra, message):
    bad = tmp_path / "atlas.npy"
    np.save(bad, np.ones((10, 10, 10), np.int16))
    study, *rest = extra
    rest = [str(bad) if a == "BAD" else str(tiny_volumes / "one_class.npz") if a == "ONE" else a
            for a in rest]
    args = list(_tiny(tiny_volumes, "--steps", "1", "--out", str(tmp_path / "o")))
    for flag in ("--data", "--model"):
        if flag in rest:  # the case's own value replaces the default
            i = args.index(flag)
            del args[i:i + 2]
    assert _run(study, *args, *rest) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_readme_and_docs_commands_parse():
    """Every ``nnsens robustness ...`` line of the README and docs/robustness.md is a valid call."""
    import re
    import shlex
    from pathlib import Path

    from nnsens_core.__main__ import build_parser
    root = Path(__file__).resolve().parent.parent
    lines = []
    for doc in ("README.md", "docs/robustness.md"):
        text = (root / doc).read_text()
        lines += re.findall(r"(?:nnsens|python -m nnsens_core) (robustness [^`\n]*)", text)
    assert len(lines) >= 5
    for line in lines:
        args = build_parser().parse_args(shlex.split(line))
        assert args.study in ("mask", "grid", "retrain") and args.out
