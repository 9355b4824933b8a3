import json
import shutil

import numpy as np
import pytest
import torch

from nnsens_core.resources import models_dir
from nnsens_core import demos
from nnsens_core.errors import NnsensError
from nnsens_core.phantom import CLASSES, make_phantom
from nnsens_core.training import class_accuracy

NAMES = ("resnet18-phantom", "vgg16-phantom")
KEYS = {"file", "arch", "arch_kwargs", "input_shape", "class_names", "mean", "std", "sha256",
        "test_accuracy", "train_seed", "epochs", "script"}


@pytest.fixture(scope="module")
def fresh():
    """60 phantom images from a seed used by neither training, validation nor the test split."""
    return make_phantom(60, seed=12345)


def test_manifest_entries_complete():
    man = demos.manifest()
    assert set(NAMES) <= set(demos.demo_cnn_names())
    assert demos.demo_cnn_names()[0] == "vgg16-phantom"  # the default of the sidebar and the CLI
    for name in NAMES:
        e = man[name]
        assert KEYS <= set(e), KEYS - set(e)
        assert e["input_shape"] == [3, 64, 64] and tuple(e["class_names"]) == CLASSES
        assert e["mean"] == [0.5] * 3 and e["std"] == [0.25] * 3
        assert e["sha256"] == demos.sha256_file(models_dir() / e["file"])
        assert (models_dir() / e["file"]).stat().st_size < 4 * 2**20
        assert e["test_accuracy"] >= 0.95


@pytest.mark.parametrize("name", NAMES)
def test_demo_cnn_loads_in_eval_mode_and_classifies_fresh_images(name, fresh):
    m = demos.load_demo_cnn(name)
    assert not m.module.training and not any(mod.training for mod in m.module.modules())
    assert m.spec.class_names == CLASSES and m.spec.input_shape == (3, 64, 64)
    x = m.spec.normalize(torch.as_tensor(fresh.images))
    assert class_accuracy(m.module, x, fresh.labels, "cpu") >= 0.9
    # reloading gives exactly the same network
    again = demos.load_demo_cnn(name)
    with torch.no_grad():
        assert torch.equal(m.module(x[:8]), again.module(x[:8]))
    for (k, a), b in zip(m.module.state_dict().items(), again.module.state_dict().values()):
        assert torch.equal(a, b), k


def test_sha256_mismatch_is_refused(tmp_path, monkeypatch):
    man = demos.manifest()
    e = man["vgg16-phantom"]
    shutil.copy(models_dir() / e["file"], tmp_path / e["file"])
    raw = bytearray((tmp_path / e["file"]).read_bytes())
    raw[-100] ^= 0xFF
    (tmp_path / e["file"]).write_bytes(bytes(raw))
    (tmp_path / "manifest.json").write_text(json.dumps({"vgg16-phantom": e}))
    monkeypatch.setenv("NNSENS_MODELS_DIR", str(tmp_path))
    with pytest.raises(NnsensError, match="sha256"):
        demos.load_demo_cnn("vgg16-phantom")
    with pytest.raises(NnsensError, match="not shipped"):
        demos.load_demo_cnn("resnet18-phantom")


def test_predictions_follow_the_features(fresh):
    """Erasing the class feature (mask pixels set to the surrounding lung grey) changes covid
    predictions: the network looks at the B-lines, not at the rest of the image."""
    m = demos.load_demo_cnn("vgg16-phantom")
    cov = np.where(fresh.labels == 1)[0]
    imgs = fresh.images[cov].copy()
    for k, i in enumerate(cov):
        lung = imgs[k][:, ~fresh.masks[i] & (fresh.images[i].max(0) > 0)]
        imgs[k][:, fresh.masks[i]] = np.median(lung)
    x0 = m.spec.normalize(torch.as_tensor(fresh.images[cov]))
    x1 = m.spec.normalize(torch.as_tensor(imgs))
    with torch.no_grad():
        p0 = m.module(x0).softmax(1)[:, 1]
        p1 = m.module(x1).softmax(1)[:, 1]
    assert p0.mean() > 0.9 and p1.mean() < 0.5 * p0.mean()


# --------------------------------------------------------------------------- 3-D demo CNN

BRAIN = "cnn3d-brain"


def test_brain_cnn_manifest_entry():
    from nnsens_core.brain_phantom import CLASSES as BRAIN_CLASSES
    e = demos.manifest()[BRAIN]
    assert KEYS | {"test_balanced_accuracy", "val_balanced_accuracy"} <= set(e)
    assert e["arch"] == "cnn3d-small" and e["input_shape"] == [1, 48, 48, 48]
    assert tuple(e["class_names"]) == BRAIN_CLASSES
    assert e["sha256"] == demos.sha256_file(models_dir() / e["file"])
    assert (models_dir() / e["file"]).stat().st_size < 2 * 2**20
    assert e["test_balanced_accuracy"] >= 0.9
    assert BRAIN in demos.demo_cnn_names(3) and BRAIN in demos.demo_cnn_names(None)
    assert BRAIN not in demos.demo_cnn_names()  # the 2-D pages and CLI list 2-D models only


def test_brain_cnn_classifies_fresh_volumes():
    """32 volumes from a seed used by neither training, validation nor the test split."""
    from nnsens_core.brain_phantom import make_brain_phantom
    from nnsens_core.training import balanced_accuracy, predict
    fresh = make_brain_phantom(32, seed=12345)
    m = demos.load_demo_cnn(BRAIN)
    assert not m.module.training and m.spec.input_shape == (1, 48, 48, 48)
    assert m.spec.ndim_spatial == 3
    pred = predict(m.module, m.spec.normalize(torch.as_tensor(fresh.images)), "cpu", 16)
    assert balanced_accuracy(fresh.labels, pred.argmax(1).numpy()) >= 0.85


def test_shipped_demo_mlp_is_the_seed_0_training():
    """The dashboard's first page loads models/paper-mlp-pima.pt instead of training; it must be
    the model a seed-0 training gives here (same outputs), and other seeds still train."""
    import numpy as np
    import torch

    from nnsens_core.data import demo_tabular
    from nnsens_core.demos import demo_tabular_model, train_paper_mlp
    from nnsens_core.training import TrainConfig

    data, shipped, info = demo_tabular_model(0)
    assert shipped.report.startswith("shipped weights")
    trained, tinfo = train_paper_mlp(demo_tabular(), cfg=TrainConfig(epochs=100, seed=0))
    x = torch.as_tensor(data.X[500:700], dtype=torch.float32)
    with torch.no_grad():
        a, b = shipped.module(x).numpy(), trained.module(x).numpy()
    assert np.allclose(a, b, atol=1e-5)
    assert info["test_acc"] == tinfo["test_acc"] and np.allclose(info["loss"], tinfo["loss"], atol=1e-6)
    _, other, _ = demo_tabular_model(1)
    assert other.report == "trained here"
