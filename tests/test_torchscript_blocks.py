"""TorchScript models in local sensitivity and layer-target activation maximisation: block outputs
read without hooks, stage by stage along the scripted forward chain (nnsens_core._script_chain)."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from torch import nn

from nnsens_core import activation_max as A
from nnsens_core import local_sensitivity as P
from nnsens_core.__main__ import main
from nnsens_core._blocks import resolve_blocks
from nnsens_core._script_chain import ScriptChain
from nnsens_core.errors import NnsensError
from nnsens_core.loading import load_model
from nnsens_core.zoo import VGG16Small, image_blocks

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated
TOL = 1e-5


def _script_bytes(model: nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(model), buf)
    return buf.getvalue()


def _load(model: nn.Module, shape) -> nn.Module:
    """Script, save to bytes and load the way the CLI does (load_model, code allowed)."""
    return load_model(_script_bytes(model), input_shape=shape, allow_code=True).module


def _trained_looking(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BatchNorm statistics, so the eval model is not the identity on them."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def vgg():
    eager = _trained_looking(VGG16Small(num_classes=3, width=0.0625), 0)
    return eager, _load(eager, (3, 32, 32))


class Block(nn.Module):
    """Not a Sequential: its inner layers are not stages of the chain."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.conv(x))


def _seq_cnn():
    torch.manual_seed(1)
    return _trained_looking(nn.Sequential(
        Block(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 4)), 1)


class Residual(nn.Module):
    """Top-level residual add: the forward is not a chain of its children."""

    def __init__(self, size: int = 16):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, 2))

    def forward(self, x):
        return self.head(x + self.body(x))


def _close(a: torch.Tensor, b: torch.Tensor):
    assert a.shape == b.shape
    assert float((a - b).abs().max()) <= TOL * max(1.0, float(b.abs().max())), float((a - b).abs().max())


# --------------------------------------------------------------------------- local sensitivity

@pytest.mark.parametrize("method,formula", [("finite", "diff_norm"), ("finite", "norm_diff"),
                                            ("gradient", "norm_diff")])
def test_scripted_vgg_local_sensitivity_equals_the_eager_model(vgg, method, formula):
    eager, scripted = vgg
    assert resolve_blocks(scripted, None) == image_blocks(eager)   # same detected blocks
    x = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(2))
    cfg = P.LocalConfig(patch=4, method=method, formula=formula)
    a = P.local_sensitivity(eager, x, None, cfg, "cpu")
    b = P.local_sensitivity(scripted, x, None, cfg, "cpu")
    assert b.labels == a.labels and b.modules == a.modules
    assert float(a.maps.abs().max()) > 1e-3            # not a trivial all-zero comparison
    _close(b.maps, a.maps)
    _close(b.base_norms, a.base_norms)
    if method == "finite":   # the incremental engine needs eager layers: full passes, said so
        assert a.extra["engine"] == "incremental" and b.extra["engine"] == "full"
        assert "TorchScript" in b.extra["engine_reason"]


def test_scripted_vgg_blocks_anywhere_on_the_chain_and_the_output(vgg):
    eager, scripted = vgg
    x = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(3))
    blocks = {"conv": "features.3", "features": "features", "pool": "avgpool", "logits": "classifier",
              "out": "output"}
    cfg = P.LocalConfig(patch=8, incremental="off")
    a = P.local_sensitivity(eager, x, blocks, cfg, "cpu")
    b = P.local_sensitivity(scripted, x, blocks, cfg, "cpu")
    assert b.modules[-1] == "" and a.modules == b.modules
    _close(b.maps, a.maps)
    np.testing.assert_array_equal(b.maps[3].numpy(), b.maps[4].numpy())   # classifier = output


def test_scripted_sequential_cnn_equals_eager():
    eager = _seq_cnn()
    scripted = _load(eager, (3, 16, 16))
    x = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(4))
    blocks = ["0", "1", "4", "5", "7"]
    for cfg in (P.LocalConfig(patch=2), P.LocalConfig(patch=2, method="gradient", n_probes=4)):
        a = P.local_sensitivity(eager, x, blocks, cfg, "cpu")
        b = P.local_sensitivity(scripted, x, blocks, cfg, "cpu")
        assert float(a.maps.abs().max()) > 1e-3
        _close(b.maps, a.maps)
    # inside a non-Sequential child there is no stage to read: the error lists what can be read
    with pytest.raises(NnsensError, match=r"'0.conv' cannot be read .* one of: 0, 1, 2"):
        P.local_sensitivity(scripted, x, ["0.conv"], P.LocalConfig(patch=8), "cpu")
    with pytest.raises(NnsensError, match="does not exist"):
        P.local_sensitivity(scripted, x, ["nope"], P.LocalConfig(patch=8), "cpu")


def test_not_a_chain_refuses_blocks_but_the_output_block_works():
    eager = Residual().eval()
    scripted = _load(eager, (3, 16, 16))
    x = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(5))
    with pytest.raises(NnsensError, match="not a plain chain.*only the model output"):
        P.local_sensitivity(scripted, x, ["body"], P.LocalConfig(patch=4), "cpu")
    with pytest.raises(NnsensError, match="not a plain chain"):
        ScriptChain(scripted).verify(x[None])
    # no VGG/ResNet structure: auto = the model output, the same maps as the eager model's output
    b = P.local_sensitivity(scripted, x, None, P.LocalConfig(patch=4), "cpu")
    a = P.local_sensitivity(eager, x, ["output"], P.LocalConfig(patch=4), "cpu")
    assert b.labels == ("output",) and b.modules == ("",) and a.modules == ("",)
    assert float(a.maps.abs().max()) > 1e-4
    _close(b.maps, a.maps)
    # the eager model without detected blocks still asks for them
    with pytest.raises(NnsensError, match="none detected"):
        resolve_blocks(eager, None)


# --------------------------------------------------------------------------- activation max

def test_scripted_layer_targets_am_equals_eager(vgg):
    eager, scripted = vgg
    from nnsens_core.zoo import ModelSpec
    spec = ModelSpec(name="t", arch="torchscript", task="image", input_shape=(3, 32, 32),
                     class_names=("a", "b", "c"))
    targets = [A.AMTarget(1, "features.10"), A.AMTarget(0), A.AMTarget(2, "features.13", (1, 1)),
               A.AMTarget(1, "classifier")]
    cfg = A.AMConfig(steps=4, seed=3)
    a = A.maximize(eager, spec, targets, cfg, "cpu")
    b = A.maximize(scripted, spec, targets, cfg, "cpu")
    assert float((a.images - a.start).abs().max()) > 1e-3
    _close(b.images, a.images)
    _close(b.activations, a.activations)
    _close(b.history, a.history)


def test_am_layer_on_a_non_chain_is_refused_class_logits_work():
    scripted = _load(Residual().eval(), (3, 16, 16))
    from nnsens_core.zoo import ModelSpec
    spec = ModelSpec(name="t", arch="torchscript", task="image", input_shape=(3, 16, 16),
                     class_names=("a", "b"))
    with pytest.raises(NnsensError, match="not a plain chain"):
        A.maximize(scripted, spec, [A.AMTarget(0, "body")], A.AMConfig(steps=1), "cpu")
    res = A.maximize(scripted, spec, [0, 1], A.AMConfig(steps=2), "cpu")
    assert res.images.shape == (2, 3, 16, 16)


# --------------------------------------------------------------------------- CLI

@pytest.mark.slow
def test_cli_local_and_am_layer_on_a_scripted_vgg(vgg, tmp_path, capsys):
    eager, _ = vgg
    path = tmp_path / "scripted.pt"
    path.write_bytes(_script_bytes(eager))
    out = tmp_path / "loc"
    assert main(["local", "--model", str(path), "--input-shape", "3,32,32", "--patch", "8",
                 "--out", str(out)]) == 0
    doc = json.loads((out / "summary.json").read_text())
    assert doc["maps_shape"] == [5, 3, 32, 32] and doc["engine"] == "full"
    assert "TorchScript" in doc["engine_reason"]
    with np.load(out / "maps.npz") as z:
        assert z["maps"].shape[-4:] == (5, 3, 32, 32) and float(np.abs(z["maps"]).max()) > 0
    am = tmp_path / "am"
    assert main(["am", "--model", str(path), "--input-shape", "3,32,32", "--layer", "features.10",
                 "--channels", "0,1", "--steps", "2", "--out", str(am)]) == 0
    doc = json.loads((am / "activations.json").read_text())
    assert doc["targets"] == ["features.10[0]", "features.10[1]"]
    assert len(list(am.glob("am_*.png"))) == 2
    capsys.readouterr()
    # a layer that is not a stage of the chain: exit 2, one line naming what can be read
    assert main(["am", "--model", str(path), "--input-shape", "3,32,32", "--layer", "nope",
                 "--steps", "1", "--out", str(am)]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_local_output_block_on_a_non_chain(tmp_path, capsys):
    path = tmp_path / "res.pt"
    path.write_bytes(_script_bytes(Residual(32).eval()))
    out = tmp_path / "loc"
    args = ["local", "--model", str(path), "--input-shape", "3,32,32", "--patch", "8",
            "--out", str(out)]
    assert main([*args, "--blocks", "body"]) == 2
    assert "not a plain chain" in capsys.readouterr().err
    assert main([*args, "--blocks", "output"]) == 0
    assert "output = the model output" in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["maps_shape"] == [1, 3, 32, 32]
