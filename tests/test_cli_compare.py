"""``python -m nnsens_core compare`` end to end on a few phantom images (small random CNN)."""
import json

import numpy as np

from nnsens_core.__main__ import main


def _args(weights, out, *extra):
    return ["compare", "--model", weights, "--arch", "vgg16-small", "--arch-kwargs",
            '{"width": 0.0625}', "--n", "6", "--out", str(out), "--device", "cpu", *extra]


def test_cli_writes_metrics_and_maps(tiny_vgg_weights, tmp_path, capsys):
    rc = main(_args(tiny_vgg_weights, tmp_path, "--methods", "gradcam,occlusion,mask", "--mask-steps", "3",
                    "--occlusion-window", "16", "--occlusion-stride", "16"))
    assert rc == 0
    info = json.loads((tmp_path / "metrics.json").read_text())
    assert set(info["methods"]) == {"gradcam", "occlusion", "mask"}
    for m, e in info["methods"].items():
        assert 0 <= e["iou"] <= 1 and 0 <= e["pointing"] <= 1, m
        assert set(e["per_class"]) <= {"regular", "covid", "pneumonia"}
    assert info["n_images"] == 6
    maps = np.load(tmp_path / "maps.npz")
    assert maps["map_gradcam"].shape == (6, 64, 64) and maps["masks"].shape == (6, 64, 64)
    assert (tmp_path / "summary.csv").is_file() and (tmp_path / "records.csv").is_file()
    table = (tmp_path / "table.md").read_text().splitlines()
    assert table[0].startswith("| method | B-lines (covid): IoU / pointing") and len(table) == 2 + 3
    assert "pointing" in capsys.readouterr().out


def test_cli_bad_inputs_give_clear_errors(tiny_vgg_weights, tmp_path, capsys):
    assert main(_args(tiny_vgg_weights, tmp_path, "--methods", "gradcam,deconvnet")) == 2
    assert "deconvnet" in capsys.readouterr().err
    assert main(_args(tiny_vgg_weights, tmp_path, "--methods", "gradcam", "--target-layer",
                      "classifier.2")) == 2
    assert "not a convolutional" in capsys.readouterr().err
    bad = tmp_path / "masks.npy"
    np.save(bad, np.zeros((6, 32, 32), bool))
    assert main(_args(tiny_vgg_weights, tmp_path, "--methods", "gradcam", "--masks", str(bad))) == 2
    assert "expected (6, 64, 64)" in capsys.readouterr().err


def test_cli_reports_the_error_of_approximate_occlusion(tiny_vgg_weights, tmp_path, capsys):
    from nnsens_core._approx import describe_error
    rc = main(_args(tiny_vgg_weights, tmp_path, "--methods", "occlusion,sensitivity",
                    "--occlusion-window", "16", "--occlusion-stride", "8", "--occlusion-tau", "0.05",
                    "--occlusion-drill", "0.5", "--batch-size", "4"))
    assert rc == 0
    out = capsys.readouterr().out
    info = json.loads((tmp_path / "metrics.json").read_text())
    rep = info["methods"]["occlusion"]["approx"]
    assert "approx" not in info["methods"]["sensitivity"]
    assert rep["tau"] == 0.05 and rep["drill_top"] == 0.5 and rep["parts"] == 2  # 6 images, 4 a batch
    # each batch samples min(32, half its positions): 4 x 49 and 2 x 49 positions
    assert rep["sample"] == 32 + 32 and 0 <= rep["rel_l2"] and -1 <= rep["spearman"] <= 1
    line = f"occlusion: {describe_error(rep)}; the worst over 2 batch(es)"
    assert line in out.splitlines()
    maps = np.load(tmp_path / "maps.npz")
    np.testing.assert_allclose(maps["approx_occlusion"], [rep["rel_l2"], rep["spearman"], 64, 2])
    # exact occlusion: no line, no report
    rc = main(_args(tiny_vgg_weights, tmp_path / "exact", "--methods", "occlusion",
                    "--occlusion-window", "16", "--occlusion-stride", "8"))
    assert rc == 0 and "approximate" not in capsys.readouterr().out
    exact = json.loads((tmp_path / "exact" / "metrics.json").read_text())
    assert "approx" not in exact["methods"]["occlusion"]
