"""``python -m nnsens_core local`` and ``am`` end to end on a small VGG saved as a state_dict."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nnsens_core import zoo
from nnsens_core.__main__ import main

KW = '{"width": 0.0625}'


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cnn")
    torch.manual_seed(0)
    torch.save(zoo.build("vgg16-small", width=0.0625).state_dict(), d / "vgg.pt")
    rng = np.random.default_rng(0)
    np.savez(d / "rgb.npz", images=rng.random((4, 3, 64, 64), dtype=np.float32),
             labels=np.array([0, 1, 1, 2]), class_names=np.array(["a", "b", "c"]))
    np.savez(d / "gray.npz", images=rng.random((2, 1, 64, 64), dtype=np.float32),
             labels=np.array([0, 1]))
    np.savez(d / "small.npz", images=rng.random((2, 3, 32, 32), dtype=np.float32),
             labels=np.array([0, 1]))
    return d


def _model_args(d):
    return ["--model", str(d / "vgg.pt"), "--arch", "vgg16-small", "--arch-kwargs", KW]


def test_local_writes_maps_and_summary(files, tmp_path):
    out = tmp_path / "local"
    rc = main(["local", *_model_args(files), "--data", str(files / "rgb.npz"), "--class", "b",
               "--count", "2", "--patch", "8", "--out", str(out), "--device", "cpu"])
    assert rc == 0
    z = np.load(out / "maps.npz")
    assert z["maps"].shape == (5, 3, 64, 64)
    assert z["maps_all"].shape == (2, 5, 3, 64, 64)
    assert list(z["image_indices"]) == [1, 2]
    np.testing.assert_allclose(z["maps"], z["maps_all"].mean(0), rtol=1e-6)
    s = json.loads((out / "summary.json").read_text())
    assert list(s["blocks"]) == [f"block{i}" for i in range(1, 6)]
    assert s["forward_passes"] == 2 * (3 * 8 * 8 + 1)
    assert s["blocks"]["block1"]["max"] == pytest.approx(float(z["maps"][0].max()), rel=1e-6)
    assert s["engine"] == "incremental" and s["engine_reason"] is None
    # --incremental off: full forward passes, the same maps up to float rounding
    rc = main(["local", *_model_args(files), "--data", str(files / "rgb.npz"), "--class", "b",
               "--count", "2", "--patch", "8", "--incremental", "off", "--out", str(tmp_path / "off"),
               "--device", "cpu"])
    assert rc == 0
    assert json.loads((tmp_path / "off" / "summary.json").read_text())["engine"] == "full"
    np.testing.assert_allclose(np.load(tmp_path / "off" / "maps.npz")["maps_all"], z["maps_all"],
                               rtol=1e-4, atol=1e-6)


def test_am_writes_pngs_and_activations(files, tmp_path):
    out = tmp_path / "am"
    rc = main(["am", *_model_args(files), "--classes", "0,2", "--steps", "3", "--out", str(out),
               "--device", "cpu"])
    assert rc == 0
    s = json.loads((out / "activations.json").read_text())
    assert len(s["final_activations"]) == 2 and len(s["files"]) == 2
    for f in s["files"]:
        assert (out / f).is_file()
    out2 = tmp_path / "am2"
    rc = main(["am", *_model_args(files), "--classes", "all", "--steps", "2", "--rule", "blur",
               "--data", str(files / "rgb.npz"), "--index", "1", "--out", str(out2), "--device", "cpu"])
    assert rc == 0
    assert np.load(out2 / "difference.npz")["difference"].shape == (3, 64, 64)


@pytest.mark.parametrize("extra,message", [
    (["local", "--data", "gray.npz", "--patch", "16"], "grayscale"),
    (["local", "--data", "small.npz", "--patch", "16"], "expects 64x64"),
    (["local", "--data", "rgb.npz", "--epsilon", "0"], "epsilon=0.0 must be > 0"),
    (["local", "--data", "rgb.npz", "--blocks", "features.99"], "does not exist"),
    (["local", "--data", "rgb.npz", "--index", "9"], "out of range"),
    (["am", "--layer", "nope", "--steps", "1"], "does not exist"),
    (["am", "--classes", "zebra", "--steps", "1"], "unknown"),
])
def test_bad_input_gives_clear_errors(files, tmp_path, capsys, extra, message):
    cmd, *rest = extra
    rest = [str(files / a) if a.endswith(".npz") else a for a in rest]
    rc = main([cmd, *_model_args(files), *rest, "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_model_and_data_default_to_the_demo_vgg_and_phantom(tmp_path):
    from nnsens_core.demos import demo_cnn_names
    assert "vgg16-phantom" in demo_cnn_names(), "the demo VGG-16 ships with nnsens (models/)"
    rc = main(["local", "--patch", "32", "--out", str(tmp_path / "l"), "--device", "cpu"])
    assert rc == 0
    s = json.loads((tmp_path / "l" / "summary.json").read_text())
    assert s["model"] == "vgg16-phantom" and s["maps_shape"] == [5, 3, 64, 64]
    assert s["forward_passes"] == 3 * 2 * 2 + 1
    rc = main(["am", "--steps", "1", "--out", str(tmp_path / "a"), "--device", "cpu"])
    assert rc == 0
    a = json.loads((tmp_path / "a" / "activations.json").read_text())
    assert a["model"] == "vgg16-phantom" and len(a["final_activations"]) == 3
