"""The saliency-method registry: its entries, names and configs; every registered method leaves a
model in training mode untouched and matches its eval-mode maps; mismatched images are NnsensErrors
(core and CLI); a method registered by a test is seen by explain and by the CLI."""
import dataclasses
import json
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from nnsens_core import zoo
from nnsens_core.__main__ import main
from nnsens_core.activation_max import AMConfig
from nnsens_core.errors import NnsensError
from nnsens_core.local_sensitivity import LocalConfig
from nnsens_core.saliency import compare as CP
from nnsens_core.saliency import registry as R
from nnsens_core.saliency.cam import CamConfig
from nnsens_core.saliency.gradients import GradientConfig
from nnsens_core.saliency.meaningful_mask import MaskConfig
from nnsens_core.saliency.occlusion import OcclusionConfig
from nnsens_core.saliency.sensitivity import SensitivityConfig

BUILTIN = ("gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "eigencam", "scorecam", "am",
           "occlusion", "sensitivity", "mask", "gradient", "gradxinput", "ig", "smoothgrad")
S = 16


# --------------------------------------------------------------------------- the entries

def test_builtin_entries_in_display_order():
    assert R.names()[:len(BUILTIN)] == BUILTIN
    ms = {m.name: m for m in R.methods()}
    assert {n for n in BUILTIN if ms[n].signed} == {"am", "occlusion", "gradxinput", "ig", "smoothgrad"}
    assert {n for n in BUILTIN if ms[n].class_agnostic} == {"eigencam", "sensitivity"}
    assert ms["gradcam"].label == "Grad-CAM" and ms["sensitivity"].label == "Local sensitivity"
    assert all(ms[n].description and ms[n].label for n in BUILTIN)
    types = {"gradcam": CamConfig, "scorecam": CamConfig, "occlusion": OcclusionConfig,
             "mask": MaskConfig, "am": AMConfig, "sensitivity": SensitivityConfig,
             "ig": GradientConfig, "smoothgrad": GradientConfig}
    for n, t in types.items():
        assert ms[n].config_type is t and isinstance(R.default_config(n), t), n
    assert R.default_config("layercam") == CamConfig("layercam")
    assert R.default_config("mask") == MaskConfig()


def test_importing_the_registry_loads_every_builtin_once():
    """A fresh interpreter importing only the registry module sees all built-ins, each once."""
    import subprocess
    code = ("from nnsens_core.saliency import registry as R; import collections; "
            "print(','.join(R.names())); "
            "print(max(collections.Counter(R.names()).values()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names, most = out.stdout.split()
    assert tuple(names.split(",")) == BUILTIN and most == "1"


def test_get_aliases_and_parse_methods():
    assert R.get("CAM").name == "gradcam" and R.get(" perturbation ").name == "mask"
    assert R.get("local").name == "sensitivity" and R.get("integrated-gradients").name == "ig"
    assert R.parse_methods("gradcam, cam ,grad-cam,occlusion") == ["gradcam", "occlusion"]
    assert R.parse_methods(["gradcampp", "inputxgradient"]) == ["gradcam++", "gradxinput"]
    assert R.parse_methods("mask,all") == ["mask"] + [n for n in R.names() if n != "mask"]
    with pytest.raises(NnsensError, match="'deconvnet' is unknown"):
        R.parse_methods("gradcam,deconvnet")
    with pytest.raises(NnsensError, match="no method"):
        R.parse_methods(" , ")
    with pytest.raises(NnsensError, match="unknown"):
        R.get("nope")
    with pytest.raises(NnsensError, match="comma list"):
        R.parse_methods([3])


def test_register_refuses_taken_names_and_aliases():
    fn = R.get("gradient").fn
    for name, aliases in (("gradcam", ()), ("mine", ("cam",)), ("mine", ("occlusion",)),
                          ("all", ()), ("mine", ("all",))):
        with pytest.raises(NnsensError, match="already taken"):
            R.register(R.Method(name, "Mine", fn, GradientConfig, aliases=aliases))
    assert "mine" not in R.names()
    with pytest.raises(NnsensError, match="lower-case"):
        R.Method("Mine", "Mine", fn, GradientConfig)
    with pytest.raises(NnsensError, match="dataclass"):
        R.Method("mine", "Mine", fn, dict)


def test_config_for_keeps_the_family_semantics():
    cam = CamConfig("gradcam", "features.3", batch_size=4)
    cfg = R.config_for("layercam", {"cam": cam})
    assert cfg == dataclasses.replace(cam, method="layercam")
    # a config given for the method itself wins, with its method set to the method's name
    assert R.config_for("layercam", {"cam": cam, "layercam": CamConfig("gradcam", "x")}) == \
        CamConfig("layercam", "x")
    g = GradientConfig(samples=3)
    assert R.config_for("ig", {"gradients": g}) is g
    assert R.config_for("ig", {"gradients": g, "ig": GradientConfig(steps=2)}) == GradientConfig(steps=2)
    # a family config of the wrong type is ignored; nothing given: the default
    assert R.config_for("gradcam", {"cam": g}) == CamConfig("gradcam")
    assert R.config_for("occlusion", None) == OcclusionConfig()
    with pytest.raises(NnsensError, match="must be a OcclusionConfig"):
        R.run("occlusion", nn.Conv2d(1, 1, 1), torch.zeros(1, 1, 4, 4), 0, MaskConfig())


# --------------------------------------------------------------------------- training-mode models

class _BNNet(nn.Module):
    """A small CNN with BatchNorm and Dropout (both act differently in training mode)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                                      nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8),
                                      nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(8, 3))

    def forward(self, x):
        return self.head(self.features(x))


FAST = {"cam": CamConfig("gradcam", "features.4", score_batch_size=16),
        "occlusion": OcclusionConfig(window=4, stride=4),
        "mask": MaskConfig(steps=3, resolution=4),
        "am": AMConfig(steps=2, preview_every=0),
        "sensitivity": SensitivityConfig("features.4", LocalConfig(method="gradient", n_probes=2)),
        "gradients": GradientConfig(samples=2, steps=2)}


def _bn_net():
    torch.manual_seed(0)
    model = _BNNet()
    with torch.no_grad():  # non-trivial running statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("name", BUILTIN)
def test_every_method_leaves_a_training_model_untouched_and_matches_eval(name):
    model = _bn_net().train()
    spec = zoo.ModelSpec("bn", "bn", "image", (3, S, S), ("a", "b", "c"), mean=(0.5,) * 3,
                         std=(0.25,) * 3)
    x = torch.randn(2, 3, S, S, generator=torch.Generator().manual_seed(1))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = R.config_for(name, FAST)
    got = R.run(name, model, x, [0, 2], cfg, spec=spec, device="cpu")
    assert all(m.training for m in model.modules()), "the caller's model left training mode"
    after = model.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state), "parameters or buffers changed"
    assert all(p.grad is None for p in model.parameters())
    import copy
    ref = R.run(name, copy.deepcopy(model).eval(), x, [0, 2], cfg, spec=spec, device="cpu")
    assert got.shape == (2, S, S) and torch.isfinite(got).all()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    # each method's own fn, called directly, is as careful
    direct = R.get(name).fn(model, x, [0, 2], cfg, spec=spec, device="cpu")
    assert all(m.training for m in model.modules())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    torch.testing.assert_close(torch.as_tensor(direct).float(), ref, rtol=1e-5, atol=1e-6)
    # the same through explain (scaled maps), the model still in training mode
    maps = CP.explain(model, spec, x, [0, 2], [name], FAST, "cpu")
    assert all(m.training for m in model.modules())
    torch.testing.assert_close(maps[name], CP.normalize_maps(ref, clip_negative=R.get(name).signed))


def test_a_training_model_gives_other_outputs():
    """The check above can fail: in training mode this model's outputs are random (Dropout)."""
    model = _bn_net().train()
    x = torch.randn(2, 3, S, S)
    assert not torch.allclose(model(x), model(x))


# --------------------------------------------------------------------------- mismatched images

@pytest.fixture(scope="module")
def demo_vgg():
    from nnsens_core.demos import load_demo_cnn
    return load_demo_cnn("vgg16-phantom")


@pytest.mark.parametrize("name", BUILTIN)
def test_grayscale_batch_to_the_rgb_demo_vgg_is_a_clear_error(demo_vgg, name):
    gray = torch.rand(2, 1, 64, 64)
    for model, spec in ((demo_vgg, None), (demo_vgg.module, None), (demo_vgg.module, demo_vgg.spec)):
        with pytest.raises(NnsensError, match=r"grayscale \(1 channel\) but the model expects RGB"):
            R.run(name, model, gray, 0, spec=spec, device="cpu")
    with pytest.raises(NnsensError, match="grayscale"):
        CP.explain(demo_vgg, None, gray, 0, [name], device="cpu")


def test_other_mismatches_are_clear_errors(demo_vgg):
    x = torch.rand(2, 3, 64, 64)
    cases = [(x[0], r"\(N, C, H, W\)"), (x.numpy(), r"\(N, C, H, W\)"),
             ((x * 255).to(torch.uint8), "dtype torch.uint8; expected floating-point"),
             (torch.rand(2, 3, 32, 32), "32x32 but the model expects 64x64"),
             (torch.full((1, 3, 64, 64), float("nan")), "NaN")]
    for bad, msg in cases:
        with pytest.raises(NnsensError, match=msg):
            R.run("gradient", demo_vgg, bad, 0, device="cpu")
    with pytest.raises(NnsensError, match=r"classes \[7\] must lie in 0..2"):
        R.run("gradient", demo_vgg, x, 7, device="cpu")
    with pytest.raises(NnsensError, match="grayscale"):
        CP.predict_proba(demo_vgg, torch.rand(2, 1, 64, 64), "cpu")
    with pytest.raises(NnsensError, match="grayscale"):
        CP.sanity_check(demo_vgg, None, torch.rand(1, 1, 64, 64), 0, ["gradcam"], device="cpu")
    from nnsens_core.data import ImageData
    gray = ImageData(np.random.default_rng(0).random((2, 1, 64, 64), dtype=np.float32),
                     np.zeros(2, np.int64), ("regular", "covid", "pneumonia"),
                     np.ones((2, 64, 64), bool))
    with pytest.raises(NnsensError, match="grayscale"):
        CP.evaluate_dataset(demo_vgg, None, gray, ["gradcam"], device="cpu")
    # a model whose layers refuse the size (no spec to say so): the model's own error, wrapped
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    with pytest.raises(NnsensError, match="does not accept images of shape"):
        R.run("gradient", mlp, torch.rand(1, 3, 9, 9), 0, device="cpu")


@pytest.fixture
def gray_npz(tmp_path):
    path = tmp_path / "gray.npz"
    rng = np.random.default_rng(0)
    np.savez(path, images=rng.random((3, 1, 64, 64), dtype=np.float32), labels=np.array([0, 1, 2]),
             masks=np.ones((3, 64, 64), bool), class_names=np.array(["regular", "covid", "pneumonia"]))
    return str(path)


@pytest.mark.parametrize("argv", [
    ["compare", "--methods", "gradcam"],
    ["am", "--steps", "2"],
    ["local", "--method", "gradient", "--probes", "2"],
])
def test_cli_commands_refuse_grayscale_images_with_one_error_line(gray_npz, tmp_path, capsys, argv):
    rc = main([*argv, "--model", "vgg16-phantom", "--data", gray_npz, "--out", str(tmp_path / "o"),
               "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error:"), err
    assert "grayscale" in err[0] or "(1, 64, 64)" in err[0], err


# --------------------------------------------------------------------------- a toy method

@dataclass(frozen=True)
class BrightnessConfig:
    scale: float = 1.0


def _brightness(model, x, targets, cfg, *, spec=None, device="auto", progress=None):
    if progress is not None:
        progress(1, 1)
    return cfg.scale * x.mean(1)


@pytest.fixture
def brightness():
    m = R.register(R.Method("brightness", "Brightness (toy)", _brightness, BrightnessConfig,
                            aliases=("bright",), description="channel mean of the input"))
    yield m
    R.unregister("brightness")
    assert "brightness" not in R.names() and "bright" not in R.parse_methods("all")


def test_a_registered_method_is_run_by_explain(brightness):
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    assert R.names()[-1] == "brightness" and R.label("bright") == "Brightness (toy)"
    assert R.default_config("brightness") == BrightnessConfig()
    maps = CP.explain(model, None, x, 0, "gradcam,bright", {"cam": CamConfig("gradcam", "0")}, "cpu")
    assert list(maps) == ["gradcam", "brightness"]
    mean = x.numpy().mean(1)
    lo, hi = mean.min((1, 2), keepdims=True), mean.max((1, 2), keepdims=True)
    np.testing.assert_allclose(maps["brightness"].numpy(), (mean - lo) / (hi - lo), atol=1e-6)
    # its config is looked up by name; a wrong type is refused
    raw = R.run("brightness", model, x, 0, BrightnessConfig(scale=-2.0))
    torch.testing.assert_close(raw, -2.0 * x.mean(1))
    with pytest.raises(NnsensError, match="BrightnessConfig"):
        CP.explain(model, None, x, 0, ["brightness"], {"brightness": CamConfig()}, "cpu")


def test_a_registered_method_is_offered_and_run_by_the_cli(brightness, tiny_vgg_weights, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    assert "brightness (Brightness (toy); also bright)" in " ".join(capsys.readouterr().out.split())
    rc = main(["compare", "--model", tiny_vgg_weights, "--arch", "vgg16-small", "--arch-kwargs",
               '{"width": 0.0625}', "--n", "3", "--out", str(tmp_path), "--device", "cpu",
               "--methods", "brightness"])
    assert rc == 0
    info = json.loads((tmp_path / "metrics.json").read_text())
    assert list(info["methods"]) == ["brightness"]
    assert info["config"]["configs"]["brightness"] == {"scale": 1.0}
    from nnsens_core.phantom import demo_images
    data = demo_images("test", n=3)
    mean = data.images.mean(1)  # the spec's normalisation is per-channel affine with one std
    lo, hi = mean.min((1, 2), keepdims=True), mean.max((1, 2), keepdims=True)
    maps = np.load(tmp_path / "maps.npz")
    np.testing.assert_allclose(maps["map_brightness"].astype(np.float32), (mean - lo) / (hi - lo),
                               atol=2e-3)  # maps.npz stores float16
    assert "Brightness (toy)" in (tmp_path / "table.md").read_text()


# --------------------------------------------------------------------------- details

def _reporting(model, x, targets, cfg, *, spec=None, device="auto", progress=None, details=None):
    if details is not None:
        details["approx"] = {"sample": len(targets), "rel_l2": cfg.scale, "spearman": 1.0}
    return cfg.scale * x.mean(1)


def test_details_reach_only_the_methods_that_report(brightness):
    """A method registered with reports=True gets the caller's details dict (and None when the
    caller wants none); a method that does not report is called without the keyword (its fn has
    none: passing it would raise TypeError) and leaves the dict empty."""
    rep = R.register(R.Method("reporting", "Reporting (toy)", _reporting, BrightnessConfig,
                              reports=True))
    try:
        model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
        got: dict = {}
        maps = R.run("reporting", model, x, [0, 1], BrightnessConfig(scale=0.5), details=got)
        torch.testing.assert_close(maps, 0.5 * x.mean(1))
        assert got == {"approx": {"sample": 2, "rel_l2": 0.5, "spearman": 1.0}}
        none: dict = {}
        R.run("brightness", model, x, 0, details=none)
        assert none == {} and not brightness.reports and rep.reports
        R.run("reporting", model, x, 0)                         # details=None reaches fn as None
        # explain collects them per method, only for the methods that report
        per: dict = {}
        CP.explain(model, None, x, 0, ["brightness", "reporting"], None, "cpu", details=per)
        assert list(per) == ["reporting"] and per["reporting"]["approx"]["rel_l2"] == 1.0
        assert CP.approximation_errors(per) == {"reporting": per["reporting"]["approx"]}
        with pytest.raises(NnsensError, match="details must be a dict"):
            R.run("reporting", model, x, 0, details=[])
        with pytest.raises(NnsensError, match="details must be a dict"):
            CP.explain(model, None, x, 0, ["reporting"], None, "cpu", details="yes")
    finally:
        R.unregister("reporting")
    with pytest.raises(NnsensError, match="reports"):
        R.Method("bad", "Bad", _reporting, BrightnessConfig, reports="yes")


def test_occlusion_reports_its_approximation_through_the_registry():
    """Through the registry, occlusion fills details with what occlusion(return_details=True)
    gives: an approximate config adds approx (the same report), an exact one only the engine."""
    from nnsens_core.saliency.occlusion import occlusion
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(3, 2)).eval()
    x = torch.randn(2, 1, S, S, generator=torch.Generator().manual_seed(1))
    approx = OcclusionConfig(window=4, stride=2, drill_top=0.3, approx_sample=8)
    got: dict = {}
    maps = R.run("occlusion", model, x, [0, 1], approx, device="cpu", details=got)
    want_maps, want = occlusion(model, x, [0, 1], approx, "cpu", return_details=True)
    torch.testing.assert_close(maps, want_maps)
    assert got["approx"] == want["approx"] and got["approx"]["sample"] == 8
    assert got["engine"] == want["engine"] and got["drill_down"] == want["drill_down"]
    exact: dict = {}
    R.run("occlusion", model, x, [0, 1], OcclusionConfig(window=4, stride=2), device="cpu",
          details=exact)
    assert "engine" in exact and "approx" not in exact
