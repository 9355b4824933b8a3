"""``python -m nnsens_core train`` end to end on a small ZIP of grouped phantom frames."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch

from nnsens_core.__main__ import main
from nnsens_core.loading import load_model
from nnsens_core.model_manifest import spec_from_manifest
from nnsens_core.phantom import make_phantom


@pytest.fixture(scope="module")
def zip_path(tmp_path_factory):
    """36 phantom images (48 px) as class/clipK_fNNN.png, three frames of one class per clip."""
    from PIL import Image
    d = make_phantom(36, size=48, seed=0, channels=1)
    path = tmp_path_factory.mktemp("train") / "frames.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for c, name in enumerate(d.class_names):
            for j, i in enumerate(np.flatnonzero(d.labels == c)):
                buf = io.BytesIO()
                Image.fromarray((d.images[i, 0] * 255).round().astype(np.uint8)).save(buf, "PNG")
                zf.writestr(f"{name}/{name}clip{j // 3}_f{j % 3:03d}.png", buf.getvalue())
    return path


def test_train_writes_model_manifest_and_report_without_group_leaks(zip_path, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", str(zip_path), "--arch", "resnet18-small", "--width", "0.05",
               "--size", "32x40", "--channels", "1", "--resize", "letterbox", "--groups", "names",
               "--balance", "weights", "--augment", "--epochs", "2", "--batch-size", "8",
               "--test-fraction", "0.25", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "groups from the file-name stems" in text and "confusion matrix" in text
    assert {p.name for p in out.iterdir()} == {"model.pt", "model.json", "report.json"}
    manifest = json.loads((out / "model.json").read_text())
    (entry,) = manifest.values()
    assert entry["resize"] == "letterbox" and entry["input_shape"] == [1, 32, 40]
    assert entry["class_names"] == ["covid", "pneumonia", "regular"]
    assert entry["balance"] == "weights" and entry["augment"] is True
    assert 0 <= entry["test_balanced_accuracy"] <= 1
    report = json.loads((out / "report.json").read_text())
    cm = np.asarray(report["confusion"]["counts"])
    assert cm.shape == (3, 3) and cm.sum() == report["n_test"] > 0
    assert len(report["history"]["train_loss"]) == report["epochs_run"] <= 2
    # groups (clips) never straddle train / validation / test
    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(zf.namelist(), key=lambda n: (n.split("/")[0], n.split("/")[1]))
    clip = np.asarray([n.split("/")[1].split("_f")[0] for n in names])
    parts = [set(clip[report[k]]) for k in ("train_idx", "val_idx", "test_idx")]
    assert all(parts) and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    # the files reload as the same model
    spec = spec_from_manifest((out / "model.json").read_bytes(), file_name="model.pt")
    lm = load_model(str(out / "model.pt"), arch=spec.arch, arch_kwargs=spec.arch_kwargs, spec=spec)
    assert lm.spec.class_names == ("covid", "pneumonia", "regular")
    with torch.no_grad():
        assert lm.module(torch.zeros(1, 1, 32, 40)).shape == (1, 3)


def test_train_bad_settings_are_one_line_errors(zip_path, tmp_path, capsys):
    base = ["train", str(zip_path), "--out", str(tmp_path / "x"), "--epochs", "1"]
    assert main(base + ["--size", "16x16", "--arch", "vgg16-small"]) == 2
    assert "needs at least 32" in capsys.readouterr().err
    assert main(base + ["--groups", "nowhere.csv"]) == 2
    assert "neither 'names', 'none' nor a CSV" in capsys.readouterr().err
    assert main(base + ["--hflip"]) == 2
    assert "--augment" in capsys.readouterr().err
    assert main(base + ["--arch", "resnet18-small", "--imagenet", str(zip_path)]) == 2
    assert "error:" in capsys.readouterr().err
