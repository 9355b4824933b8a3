"""Paper presets of local sensitivity and activation maximisation, the difference-of-norms
measure and the paper's AM step by hand, normalisation presets, any input size, CLI presets."""
import io
import json

import pytest
import torch
from torch import nn

from nnsens_core import activation_max as A
from nnsens_core import local_sensitivity as P
from nnsens_core.__main__ import main
from nnsens_core.errors import NnsensError
from nnsens_core.loading import load_model
from nnsens_core.zoo import ModelSpec, build, normalisation


def test_presets_set_exactly_the_paper_values():
    assert P.preset("paper") == P.LocalConfig(formula="norm_diff", noise="fixed", epsilon=0.1,
                                              patch=1, method="finite")
    assert P.preset("nnsens") == P.LocalConfig()
    assert P.preset("paper", patch=4).patch == 4 and P.preset("paper", patch=4).formula == "norm_diff"
    assert A.preset("paper") == A.AMConfig(rule="tv", lr=0.1, tv_weight=0.1, normalize_grad=False)
    assert A.preset("nnsens") == A.AMConfig()
    with pytest.raises(NnsensError, match="preset"):
        P.preset("cifar")
    assert "‖B(x+δ)‖₂ − ‖B(x)‖₂" in P.describe(P.preset("paper"))
    assert "raw gradient" in A.update_rule_text(A.preset("paper"))
    assert "normalised gradient" in A.update_rule_text(A.preset("nnsens"))


class _Blocks(nn.Module):
    """Two linear 'blocks' on a (1, 1, 2) image: B1 = W1 x, B2 = W2 B1."""

    def __init__(self):
        super().__init__()
        self.b1 = nn.Conv2d(1, 2, 1, bias=False)   # per pixel: (2 x 1) weights
        self.b2 = nn.Conv2d(2, 1, 1, bias=False)
        with torch.no_grad():
            self.b1.weight.copy_(torch.tensor([3.0, 4.0]).view(2, 1, 1, 1))
            self.b2.weight.copy_(torch.tensor([1.0, -2.0]).view(1, 2, 1, 1))

    def forward(self, x):
        return self.b2(self.b1(x))


@pytest.mark.parametrize("incremental", ["auto", "off"])
def test_difference_of_norms_by_hand(incremental):
    x = torch.tensor([[[1.0, 2.0]]])                          # (C=1, H=1, W=2)
    eps = 0.5
    res = P.local_sensitivity(_Blocks(), x, {"b1": "b1", "b2": "b2"},
                              P.preset("paper", epsilon=eps, incremental=incremental), device="cpu")
    # B1(x) = (3x, 4x) per pixel: ||B1(x)|| = 5 ||x||; B2(x) = (3 - 8) x = -5x: ||B2(x)|| = 5 ||x||
    n0 = 5 * (1 + 4) ** 0.5
    want = [5 * ((1 + eps) ** 2 + 4) ** 0.5 - n0, 5 * (1 + (2 + eps) ** 2) ** 0.5 - n0]
    for q in range(2):
        torch.testing.assert_close(res.maps[q, 0, 0], torch.tensor(want), rtol=1e-5, atol=1e-6)
    # the nnsens measure on the same perturbation: ||B(x + d) - B(x)|| = 5 eps for either pixel
    res2 = P.local_sensitivity(_Blocks(), x, ["b1", "b2"], P.preset("nnsens", epsilon=eps,
                                                                      incremental=incremental))
    torch.testing.assert_close(res2.maps[:, 0, 0], torch.full((2, 2), 5 * eps), rtol=1e-5, atol=1e-6)


def test_compare_formulas_reuses_a_done_run_and_reports_decay():
    x = torch.tensor([[[1.0, 2.0]]])[None]
    model = _Blocks()
    done = P.local_sensitivity_many(model, x, ["b1", "b2"], P.preset("nnsens", epsilon=0.5))
    calls = []
    cmp = P.compare_formulas(model, x, ["b1", "b2"], P.preset("nnsens", epsilon=0.5),
                             progress=lambda d, t, stage="": calls.append(t),
                             done={"diff_norm": done})
    assert set(cmp.batches) == {"diff_norm", "norm_diff"} and cmp.batches["diff_norm"].results == tuple(done)
    assert calls and set(calls) == {P.count_forwards((1, 1, 2), P.LocalConfig(), 1, 2)}
    means = cmp.block_means()
    assert means["diff_norm"] == pytest.approx([2.5, 2.5], rel=1e-5)    # equal blocks: no decay
    assert cmp.decays() == {"diff_norm": False, "norm_diff": False}
    assert list(cmp.to_frame().index) == ["b1", "b2"]
    doc = cmp.to_dict()
    assert doc["decays_with_depth"] == {"diff_norm": False, "norm_diff": False}
    assert P.decays_with_depth([3, 2, 1]) and not P.decays_with_depth([3, 3, 1])


class _Linear(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)       # for the channel check; not used in the logit
        self.w = nn.Parameter(w)

    def forward(self, x):
        return (x.flatten(1) * self.w.flatten()).sum(1, keepdim=True).repeat(1, 2)


def test_am_paper_step_matches_a_hand_computed_step():
    torch.manual_seed(0)
    w = torch.randn(1, 3, 3)
    spec = ModelSpec("lin", "custom", "image", (1, 3, 3), ("a", "b"), mean=(0.5,), std=(0.5,))
    x0 = torch.full((1, 3, 3), 0.1) + 0.05 * torch.arange(9.0).view(1, 3, 3)
    res = A.maximize(_Linear(w), spec, [0], A.preset("paper", steps=1), device="cpu", start=x0)
    # the paper's eq.: x1 = x0 + 0.1 * da/dx - 0.1 * dTV/dx, da/dx = w (raw), inside [-1, 1]
    want = (x0 + 0.1 * w - 0.1 * A.tv_grad(x0[None])[0]).clamp(-1, 1)
    torch.testing.assert_close(res.images[0], want)
    # the nnsens preset divides the gradient by its mean |value| first
    res_n = A.maximize(_Linear(w), spec, [0], A.preset("nnsens", steps=1), device="cpu", start=x0)
    want_n = (x0 + 0.05 * w / w.abs().mean() - 0.02 * A.tv_grad(x0[None])[0]).clamp(-1, 1)
    torch.testing.assert_close(res_n.images[0], want_n)


def test_normalisation_presets():
    assert normalisation("paper", 3) == ((0.5,) * 3, (0.5,) * 3)
    assert normalisation("paper", 1) == ((0.5,), (0.5,))
    assert normalisation("none", 3) == ((), ())
    with pytest.raises(NnsensError, match="3 channels"):
        normalisation("imagenet", 1)


@pytest.mark.parametrize("arch,size", [("vgg16-small", 96), ("vgg16-small", 128),
                                       ("resnet18-small", 48), ("resnet18-small", 40)])
def test_built_ins_accept_any_size_they_allow(arch, size):
    buf = io.BytesIO()
    torch.save(build(arch, num_classes=3).state_dict(), buf)
    lm = load_model(buf.getvalue(), arch=arch, arch_kwargs={"num_classes": 3},
                    input_shape=(3, size, size))
    assert lm.spec.input_shape == (3, size, size)
    res = P.local_sensitivity(lm.module, torch.rand(3, size, size), None, P.LocalConfig(patch=size // 2))
    assert res.maps.shape[-2:] == (size, size)


def test_too_small_input_names_the_minimum():
    buf = io.BytesIO()
    torch.save(build("vgg16-small", num_classes=3).state_dict(), buf)
    with pytest.raises(NnsensError, match="at least 32 pixels"):
        load_model(buf.getvalue(), arch="vgg16-small", arch_kwargs={"num_classes": 3},
                   input_shape=(3, 24, 24))


def test_cli_presets_print_and_flags_override(tmp_path, capsys):
    out = tmp_path / "loc"
    assert main(["local", "--preset", "paper", "--patch", "32", "--out", str(out), "--yes"]) == 0
    text = capsys.readouterr().out
    assert "local preset 'paper': formula=norm_diff, noise=fixed, epsilon=0.1, patch=1" in text
    assert "overridden by flags: patch=32" in text
    cfg = json.loads((out / "summary.json").read_text())["config"]
    assert cfg["formula"] == "norm_diff" and cfg["patch"] == 32 and cfg["epsilon"] == 0.1
    out = tmp_path / "am"
    assert main(["am", "--preset", "paper", "--steps", "1", "--classes", "0", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "am preset 'paper': rule=tv, lr=0.1, tv_weight=0.1, normalize_grad=False" in text
    assert "raw gradient" in text
    cfg = json.loads((out / "activations.json").read_text())["config"]
    assert (cfg["lr"], cfg["tv_weight"], cfg["normalize_grad"]) == (0.1, 0.1, False)
    assert main(["am", "--preset", "paper", "--normalize-grad", "--steps", "1", "--classes", "0",
                 "--out", str(out)]) == 0
    assert "overridden by flags: normalize_grad=True" in capsys.readouterr().out
    assert json.loads((out / "activations.json").read_text())["config"]["normalize_grad"] is True


def _torchscript_file(tmp_path):
    ts = torch.jit.script(build("vgg16-small", num_classes=3).eval())
    path = tmp_path / "vgg.pt"
    torch.jit.save(ts, str(path))
    return path


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_cli_torchscript_needs_input_shape_and_am_runs_on_it(tmp_path, capsys):
    path = _torchscript_file(tmp_path)
    out = tmp_path / "am"
    assert main(["am", "--model", str(path), "--classes", "0,2", "--steps", "1",
                 "--out", str(out)]) == 2
    assert "--input-shape C,H,W" in capsys.readouterr().err
    assert main(["am", "--model", str(path), "--input-shape", "3,48,48", "--norm", "paper",
                 "--classes", "0,2", "--steps", "1", "--out", str(out)]) == 0
    doc = json.loads((out / "activations.json").read_text())
    assert doc["targets"] == ["class 0", "class 2"]
    # local sensitivity reads the blocks stage by stage (no hooks): see test_torchscript_blocks.py
    assert main(["local", "--model", str(path), "--input-shape", "3,48,48", "--patch", "24",
                 "--out", str(tmp_path / "loc")]) == 0
    assert json.loads((tmp_path / "loc" / "summary.json").read_text())["maps_shape"] == [5, 3, 48, 48]


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_loads_for_the_pages_only_when_allowed(tmp_path, monkeypatch):
    data = _torchscript_file(tmp_path).read_bytes()
    monkeypatch.delenv("NNSENS_ALLOW_CODE_MODELS", raising=False)
    with pytest.raises(NnsensError, match="does not run uploaded code"):
        load_model(data, input_shape=(3, 48, 48), class_names=("a", "b", "c"))
    monkeypatch.setenv("NNSENS_ALLOW_CODE_MODELS", "1")
    lm = load_model(data, input_shape=(3, 48, 48), class_names=("a", "b", "c"))
    res = A.maximize(lm.module, lm.spec, [1], A.preset("paper", steps=1), device="cpu")
    assert res.images.shape == (1, 3, 48, 48)


def test_cli_local_runs_a_vgg16_small_state_dict_at_128(tmp_path, capsys):
    path = tmp_path / "vgg.pt"
    torch.save(build("vgg16-small", num_classes=3).state_dict(), path)
    out = tmp_path / "loc"
    assert main(["local", "--model", str(path), "--arch", "vgg16-small", "--arch-kwargs",
                 '{"num_classes": 3}', "--input-shape", "3,128,128", "--norm", "paper",
                 "--patch", "64", "--out", str(out)]) == 0
    doc = json.loads((out / "summary.json").read_text())
    assert doc["maps_shape"] == [5, 3, 128, 128]
    assert main(["local", "--model", str(path), "--arch", "vgg16-small", "--arch-kwargs",
                 '{"num_classes": 3}', "--input-shape", "3,16,16", "--out", str(out)]) == 2
    assert "at least 32 pixels" in capsys.readouterr().err


def test_compare_paper_preset_sets_methods_and_the_paper_am_rule(monkeypatch, tmp_path, capsys):
    """`nnsens compare --preset paper`: Grad-CAM and AM difference, AM with the paper's update rule
    (the AM vs Grad-CAM figures); an explicit --methods still wins."""
    import nnsens_core.saliency.compare as cmd  # the command calls it through compare_fn
    from nnsens_core import activation_max as AM
    from nnsens_core.__main__ import main as cli
    from nnsens_core.saliency import registry

    seen = {}

    class Stop(Exception):
        pass

    def fake(model, spec, data, methods, cfgs, **kw):
        seen["methods"], seen["am"] = list(methods), registry.config_for("am", cfgs)
        raise Stop

    monkeypatch.setattr(cmd, "evaluate_dataset", fake)
    for extra, want in (([], ["gradcam", "am"]), (["--methods", "am"], ["am"])):
        with pytest.raises(Stop):
            cli(["compare", "--preset", "paper", "--n", "3", "--device", "cpu", "--yes",
                 "--out", str(tmp_path), *extra])
        assert seen["methods"] == want
        am = seen["am"]
        assert (am.lr, am.tv_weight, am.normalize_grad, am.rule) == (0.1, 0.1, False, "tv")
        assert am == AM.preset("paper", steps=AM.AMConfig().steps, seed=0, preview_every=0)
    assert "preset paper: methods" in capsys.readouterr().out
    with pytest.raises(Stop):
        cli(["compare", "--n", "3", "--device", "cpu", "--yes", "--out", str(tmp_path), "--methods", "am"])
    assert seen["am"].normalize_grad is AM.AMConfig().normalize_grad  # no preset: nnsens defaults
