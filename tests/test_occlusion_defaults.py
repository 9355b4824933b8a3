"""Occlusion's default window / stride scale with the image side; explicit pixels are kept."""
import pytest
import torch

from nnsens_core import budget as B
from nnsens_core.saliency import registry as R
from nnsens_core.saliency._common import scaled_steps
from nnsens_core.saliency.occlusion import OcclusionConfig, occlusion_positions


@pytest.mark.parametrize("side, window, stride", [(64, 8, 4), (128, 16, 8), (224, 28, 14),
                                                  (32, 4, 2), (8, 1, 1)])
def test_default_window_and_stride_are_fractions_of_the_side(side, window, stride):
    cfg = OcclusionConfig().sized((side, side + 40))  # the shorter side counts
    assert (cfg.window, cfg.stride) == (window, stride)
    rows = occlusion_positions((3, side, side), OcclusionConfig())
    assert len({t for t, _ in rows}) == len(range(0, side - window + 1, stride)) + \
        ((side - window) % stride != 0)


def test_explicit_pixels_are_kept_and_validated():
    cfg = OcclusionConfig(window=5, stride=3)
    assert cfg.sized((224, 224)) == cfg
    assert len(occlusion_positions((3, 224, 224), cfg)) == len(range(0, 220, 3)) ** 2  # 219 is flush
    with pytest.raises(Exception):
        OcclusionConfig(window=0)


def test_defaults_for_a_size_follow_the_image():
    assert R.default_config("occlusion", (224, 224)).window == 28
    assert R.default_config("mask", (64, 64)).steps == 150 == R.default_config("mask").steps
    assert R.default_config("mask", (224, 224)).steps == 32
    assert R.default_config("am", (64, 64)).steps == 200
    assert R.default_config("am", (224, 224)).steps == scaled_steps(200, (224, 224)) == 32
    assert scaled_steps(150, (8, 64, 64)) == 150  # volumes keep their steps
    # an explicit config is never resized
    from nnsens_core.saliency.meaningful_mask import MaskConfig
    assert R.config_for("mask", {"mask": MaskConfig(steps=150)}, (224, 224)).steps == 150


def test_cost_estimate_follows_the_new_defaults():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 3))
    new = B.occlusion(net, (3, 224, 224), OcclusionConfig())
    old = B.occlusion(net, (3, 224, 224), OcclusionConfig(window=8, stride=4))
    assert "226 positions" in new.what and "3026 positions" in old.what
    assert old.gflop / new.gflop == pytest.approx(3026 / 226)


def _wide(width: int) -> torch.nn.Module:
    """One 3x3 convolution of ``width`` channels: 2*3*9*width FLOP a pixel (cheap to build)."""
    return torch.nn.Sequential(torch.nn.Conv2d(3, width, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(width, 3))


def test_steps_also_follow_the_model_cost(monkeypatch):
    from nnsens_core.saliency._common import MIN_COST_STEPS, STEP_WORK_GFLOP, forward_gflop
    # the pixel rule alone: 32 at 224 px; the work rule caps heavy models, never below the floor
    assert scaled_steps(200, (224, 224), gflop=3.6) == 32      # ResNet-18 at 224: unchanged
    assert scaled_steps(200, (224, 224), gflop=31.0) == MIN_COST_STEPS == 12  # VGG-16 at 224
    assert scaled_steps(200, (224, 224), gflop=6.0) == int(STEP_WORK_GFLOP / 6.0) == 20
    assert scaled_steps(200, (64, 64), gflop=31.0) == 200     # 64x64 defaults never change
    assert scaled_steps(150, (8, 64, 64), gflop=31.0) == 150  # volumes keep their steps
    assert scaled_steps(10, (224, 224), gflop=0.1) == 10      # never more than asked
    heavy = _wide(2000)                                       # ~5.4 GFLOP a pass at 224 px
    g = forward_gflop(heavy, (224, 224))
    assert g == pytest.approx(B.forward_flop(heavy, (3, 224, 224)) / 1e9) and 5 < g < 6
    assert R.default_config("mask", (224, 224), heavy).steps == int(STEP_WORK_GFLOP / g) == 22
    assert R.config_for("am", None, (224, 224), heavy).steps == 22
    assert R.default_config("am", (224, 224), _wide(4)).steps == 32
    assert R.default_config("am", (224, 224)).steps == 32     # no model: the pixel rule only
    # a run without a config takes the default for its model and size
    import dataclasses

    from nnsens_core.saliency import compare as C
    from nnsens_core.zoo import ModelSpec
    light = _wide(4)
    monkeypatch.setattr(B, "forward_flop", lambda model, shape=None: 31e9)  # as heavy as VGG-16
    seen = {}

    def spy(model, x, targets, cfg, **kw):
        seen["steps"] = cfg.steps
        return torch.zeros(len(x), *x.shape[2:])

    monkeypatch.setitem(R._METHODS, "mask", dataclasses.replace(R.get("mask"), fn=spy))
    spec = ModelSpec("wide", "wide", "image", (3, 224, 224), ("a", "b", "c"))
    C.explain(light, spec, torch.zeros(1, 3, 224, 224), [0], ["mask"], None, "cpu")
    assert seen["steps"] == MIN_COST_STEPS
