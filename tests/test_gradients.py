"""Gradient saliency: a linear model with hand-computed maps, Integrated Gradients' completeness
on a nonlinear CNN, batch-size invariance, one class per image, the compare registry, bad input."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from nnsens_core.saliency import compare as C
from nnsens_core.errors import NnsensError
from nnsens_core.saliency.gradients import METHODS, GradientConfig, gradient_maps
from nnsens_core.zoo import ModelSpec

C_, H, W = 2, 4, 5


def linear_model() -> nn.Module:
    """Two classes, f_k(x) = <w_k, x> + b_k."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(C_ * H * W, 2)).eval()


def small_cnn() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(C_, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 4, 3, padding=1),
                         nn.Softplus(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()


def test_linear_model_hand_computed():
    model = linear_model()
    w = model[1].weight.detach().view(2, C_, H, W)
    x = torch.randn(3, C_, H, W, generator=torch.Generator().manual_seed(2))
    cls = [1, 0, 1]
    cfg = GradientConfig(steps=3)  # reference: black = 0 without a spec
    g = gradient_maps(model, x, cls, "gradient", cfg, "cpu")
    gx = gradient_maps(model, x, cls, "gradxinput", cfg, "cpu")
    ig = gradient_maps(model, x, cls, "ig", cfg, "cpu")
    for i, k in enumerate(cls):
        torch.testing.assert_close(g[i], w[k].abs().amax(0))
        torch.testing.assert_close(gx[i], (x[i] * w[k]).sum(0))
    torch.testing.assert_close(ig, gx)  # the gradient is constant along the path


def test_smoothgrad_of_a_linear_model_is_the_mean_over_its_documented_noise():
    model = linear_model()
    w = model[1].weight.detach().view(2, C_, H, W)
    x = torch.rand(2, C_, H, W, generator=torch.Generator().manual_seed(3))
    spec = ModelSpec("t", "t", "image", (C_, H, W), mean=(0.5, 0.2), std=(0.25, 0.5))
    xn = spec.normalize(x)
    cfg = GradientConfig(samples=5, sigma=0.1, seed=7)
    got = gradient_maps(model, xn, [0, 1], "smoothgrad", cfg, "cpu", spec=spec)
    noise = torch.randn((2, 5, C_, H, W), generator=torch.Generator().manual_seed(7))
    noise = noise * (0.1 / torch.tensor([0.25, 0.5])).view(1, 1, C_, 1, 1)  # 0.1 x range 1/std
    ref = spec.normalize(torch.zeros(C_, H, W))
    for i, k in enumerate([0, 1]):
        want = ((xn[i] + noise[i] - ref) * w[k]).sum(1).mean(0)
        torch.testing.assert_close(got[i], want, rtol=1e-5, atol=1e-6)


def test_integrated_gradients_completeness_on_a_nonlinear_cnn():
    model = small_cnn()
    x = torch.randn(2, C_, H, W, generator=torch.Generator().manual_seed(4))
    ig = gradient_maps(model, x, [2, 0], "ig", GradientConfig(steps=200), "cpu")
    with torch.no_grad():
        fx, f0 = model(x), model(torch.zeros_like(x))
    want = torch.stack([fx[0, 2] - f0[0, 2], fx[1, 0] - f0[1, 0]])
    torch.testing.assert_close(ig.sum((1, 2)), want, rtol=1e-3, atol=1e-5)
    # few steps: the Riemann sum is off, so the test above can fail
    coarse = gradient_maps(model, x, [2, 0], "ig", GradientConfig(steps=1), "cpu")
    assert not torch.allclose(coarse.sum((1, 2)), want, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_batch_size_never_changes_a_map(method):
    model = small_cnn()
    x = torch.randn(3, C_, H, W, generator=torch.Generator().manual_seed(5))
    maps = [gradient_maps(model, x, [0, 1, 2], method, GradientConfig(samples=4, steps=5, batch_size=b),
                          "cpu") for b in (1, 7, 64)]
    for m in maps[1:]:
        torch.testing.assert_close(m, maps[0], rtol=1e-5, atol=1e-6)


def test_each_image_explains_its_own_class():
    model = small_cnn()
    x1 = torch.randn(1, C_, H, W, generator=torch.Generator().manual_seed(6))
    both = gradient_maps(model, x1.repeat(2, 1, 1, 1), [0, 2], "ig", GradientConfig(steps=4), "cpu")
    for row, k in enumerate([0, 2]):
        torch.testing.assert_close(both[row], gradient_maps(model, x1, [k], "ig",
                                                            GradientConfig(steps=4), "cpu")[0])
    assert not torch.allclose(both[0], both[1])


def test_probability_score_and_blur_reference_run():
    model = small_cnn()
    x = torch.randn(2, C_, H, W, generator=torch.Generator().manual_seed(8))
    cfg = GradientConfig(score="prob", reference="blur", blur_sigma=1.0, steps=4)
    m = gradient_maps(model, x, 1, "ig", cfg, "cpu")
    assert m.shape == (2, H, W) and torch.isfinite(m).all()


def test_compare_registry_runs_the_gradient_methods():
    model = small_cnn()
    x = torch.randn(2, C_, H, W, generator=torch.Generator().manual_seed(9))
    assert C.parse_methods("saliency,integrated-gradients,smoothgrad,inputxgradient") == \
        ["gradient", "ig", "smoothgrad", "gradxinput"]
    shared = GradientConfig(samples=3, steps=3)
    assert C.config_for("smoothgrad", {"gradients": shared}) is shared
    maps = C.explain(model, None, x, [0, 1], list(METHODS), {"gradients": shared}, device="cpu")
    for m in maps.values():
        assert m.shape == (2, H, W) and m.min() >= 0 and m.max() <= 1
    raw = gradient_maps(model, x, [0, 1], "ig", shared, "cpu")
    torch.testing.assert_close(maps["ig"], C.normalize_maps(raw, clip_negative=True))


@pytest.mark.parametrize("kwargs, fragment", [
    ({"samples": 0}, "samples=0 must be > 0"),
    ({"sigma": -0.1}, "sigma=-0.1 must be > 0"),
    ({"steps": 2.5}, "steps=2.5 must be a whole number"),
    ({"reference": "grey"}, "reference='grey' is not allowed"),
    ({"score": "softmax"}, "score='softmax' is not allowed"),
    ({"constant": 2.0}, "constant=2.0 must lie in [0.0, 1.0]"),
])
def test_bad_config_is_named(kwargs, fragment):
    with pytest.raises(NnsensError, match=fragment.replace("[", r"\[").replace("(", r"\(")):
        GradientConfig(**kwargs)


def test_bad_input_is_named():
    model = small_cnn()
    with pytest.raises(NnsensError, match="method='hessian' is not allowed"):
        gradient_maps(model, torch.zeros(1, C_, H, W), [0], "hessian")
    with pytest.raises(NnsensError, match=r"\(N, C, H, W\)"):
        gradient_maps(model, torch.zeros(C_, H, W), [0], "ig")
    with pytest.raises(NnsensError, match="2 classes given for 1 images"):
        gradient_maps(model, torch.zeros(1, C_, H, W), [0, 1], "ig")


def test_config_of_keeps_only_what_the_method_reads():
    from nnsens_core.saliency.gradients import config_of
    a, b = GradientConfig(samples=4, steps=8), GradientConfig(samples=9, steps=8, sigma=0.3)
    assert config_of("ig", a) == config_of("ig", b) and hash(config_of("ig", a)) == hash(config_of("ig", b))
    assert config_of("smoothgrad", a) != config_of("smoothgrad", b)
    assert config_of("gradient", GradientConfig(reference="blur", steps=3)) == GradientConfig()
    # the fields a method does not read do not change its map
    model, x = small_cnn(), torch.randn(1, C_, H, W, generator=torch.Generator().manual_seed(3))
    for m in METHODS:
        cfg = GradientConfig(samples=3, sigma=0.2, steps=5, seed=4, reference="blur", blur_sigma=1.0)
        torch.testing.assert_close(gradient_maps(model, x, 0, m, cfg, "cpu"),
                                   gradient_maps(model, x, 0, m, config_of(m, cfg), "cpu"))
