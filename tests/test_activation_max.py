"""Activation maximisation: hand-computed steps on linear models, regularisers, batching,
targets, clamping and bad input."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from nnsens_core._hooks import hook_count
from nnsens_core._filters import gaussian_blur
from nnsens_core.activation_max import (AMConfig, AMTarget, difference_map, maximize, total_variation,
                                        tv_grad)
from nnsens_core.errors import NnsensError
from nnsens_core.zoo import ModelSpec

SPEC = ModelSpec("toy", "toy", "image", (1, 4, 4), class_names=("a", "b"), mean=(0.5,), std=(0.5,))


class Linear(nn.Module):
    """logit_k = <W_k, x>: the gradient is W_k everywhere."""

    def __init__(self, c=1, h=4, w=4):
        super().__init__()
        self.conv = nn.Conv2d(c, 2, 1, bias=False)
        self.fc = nn.Linear(c * h * w, 2, bias=False)
        torch.manual_seed(0)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(2, c * h * w))

    def forward(self, x):
        self.conv(x)
        return self.fc(x.flatten(1))


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


SPEC3 = ModelSpec("cnn", "cnn", "image", (3, 16, 16), class_names=("x", "y", "z"),
                  mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))


def test_one_plain_step_is_hand_computed():
    model = Linear()
    x0 = torch.zeros(1, 4, 4)
    cfg = AMConfig(steps=1, rule="none", lr=0.1, normalize_grad=False)
    r = maximize(model, SPEC, [1], cfg, "cpu", start=x0)
    w = model.fc.weight[1].detach().view(1, 4, 4)
    torch.testing.assert_close(r.images[0], (x0 + 0.1 * w).clamp(-1, 1))
    assert r.start_activations.item() == pytest.approx(0.0)
    assert r.activations.item() == pytest.approx((w * r.images[0]).sum().item(), rel=1e-5)
    assert r.history.shape == (1, 1)


def test_tv_step_and_blur_step_hand_computed():
    model = Linear()
    torch.manual_seed(2)
    x0 = torch.rand(1, 4, 4) - 0.5
    w = model.fc.weight[0].detach().view(1, 1, 4, 4)
    r = maximize(model, SPEC, [0], AMConfig(steps=1, rule="tv", lr=0.05, tv_weight=0.02,
                                            normalize_grad=False), "cpu", start=x0)
    want = x0[None] + 0.05 * w - 0.02 * tv_grad(x0[None])
    torch.testing.assert_close(r.images, want.clamp(-1, 1))
    g = w / w.abs().mean()
    r = maximize(model, SPEC, [0], AMConfig(steps=1, rule="blur", lr=0.05, blur_sigma=0.7), "cpu",
                 start=x0)
    torch.testing.assert_close(r.images, (gaussian_blur(x0[None], 0.7) + 0.05 * g).clamp(-1, 1))


def test_regularisers():
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64, requires_grad=True)
    total_variation(x).sum().backward()
    torch.testing.assert_close(tv_grad(x.detach()), x.grad)
    const = torch.full((1, 2, 9, 9), 0.3)
    torch.testing.assert_close(gaussian_blur(const, 1.2), const)
    noisy = torch.randn(1, 1, 32, 32)
    assert gaussian_blur(noisy, 1.0).std() < noisy.std() * 0.6
    assert total_variation(gaussian_blur(noisy, 1.0)).item() < total_variation(noisy).item()


@pytest.mark.parametrize("rule", ["tv", "blur", "none"])
def test_activation_rises_and_stays_in_range(rule):
    model = SmallCNN().eval()
    r = maximize(model, SPEC3, "all", AMConfig(steps=25, rule=rule, lr=0.05, jitter=1), "cpu")
    assert (r.activations > r.start_activations).all()
    lo, hi = SPEC3.input_range(r.images)
    assert (r.images >= lo - 1e-6).all() and (r.images <= hi + 1e-6).all()
    assert r.labels == ("x", "y", "z")
    assert hook_count(model) == 0


def test_targets_are_optimised_independently_in_one_batch():
    model = SmallCNN().eval()
    cfg = AMConfig(steps=5, rule="tv", jitter=0)
    both = maximize(model, SPEC3, [0, 2], cfg, "cpu")
    one = maximize(model, SPEC3, [2], cfg, "cpu", start=both.start[1])
    torch.testing.assert_close(both.images[1:], one.images, atol=1e-5, rtol=1e-5)
    a = maximize(model, SPEC3, [0, 2], AMConfig(steps=3, jitter=2, seed=4), "cpu")
    b = maximize(model, SPEC3, [0, 2], AMConfig(steps=3, jitter=2, seed=4), "cpu")
    torch.testing.assert_close(a.images, b.images)


def test_cross_class_grid_layer_targets_preview_and_difference():
    model = SmallCNN().eval()
    torch.manual_seed(0)
    start = SPEC3.normalize(torch.rand(3, 16, 16))
    seen = []
    r = maximize(model, SPEC3, [0, 1, 2], AMConfig(steps=6, preview_every=3), "cpu", start=start,
                 preview=lambda s, imgs, acts: seen.append((s, tuple(imgs.shape), tuple(acts.shape))))
    assert seen == [(3, (3, 3, 16, 16), (3,)), (6, (3, 3, 16, 16), (3,))]
    torch.testing.assert_close(r.start, start[None].expand(3, -1, -1, -1))
    tg = [AMTarget(2, "features.1"), AMTarget(5, "features.3", (4, 7))]
    r = maximize(model, SPEC3, tg, AMConfig(steps=15), "cpu")
    assert (r.activations > r.start_activations).all()
    assert r.labels == ("features.1[2]", "features.3[5] @(4, 7)")
    xs = torch.stack([start, -start])
    d = difference_map(model, SPEC3, xs, [1, 0], AMConfig(steps=4), "cpu")
    full = maximize(model, SPEC3, [1, 0], AMConfig(steps=4), "cpu", start=xs)
    assert d.shape == (2, 16, 16)
    torch.testing.assert_close(d, (full.images - xs).abs().mean(1))


def test_bad_input_errors():
    model = SmallCNN().eval()
    with pytest.raises(NnsensError, match="does not exist"):
        maximize(model, SPEC3, [AMTarget(0, "nope")], AMConfig(steps=1), "cpu")
    with pytest.raises(NnsensError, match="out of range"):
        maximize(model, SPEC3, [7], AMConfig(steps=1), "cpu")
    with pytest.raises(NnsensError, match="out of range"):
        maximize(model, SPEC3, [AMTarget(99, "features.1")], AMConfig(steps=1), "cpu")
    with pytest.raises(NnsensError, match="grayscale"):
        maximize(model, SPEC3, [0], AMConfig(steps=1), "cpu", start=torch.zeros(1, 16, 16))
    with pytest.raises(NnsensError, match="resize"):
        maximize(model, SPEC3, [0], AMConfig(steps=1), "cpu", start=torch.zeros(3, 8, 8))
    with pytest.raises(NnsensError, match="steps"):
        AMConfig(steps=0)
    with pytest.raises(NnsensError, match="lr"):
        AMConfig(lr=-0.1)
    with pytest.raises(NnsensError, match="rule"):
        AMConfig(rule="adam")
    with pytest.raises(NnsensError, match="one class per image"):
        difference_map(model, SPEC3, torch.zeros(2, 3, 16, 16), [0], AMConfig(steps=1), "cpu")
    assert hook_count(model) == 0


@pytest.mark.parametrize("jitter", [0, 3])
def test_start_and_final_activations_are_the_model_outputs(jitter):
    """start_activations are the logits at x0 (read from the unshifted first step, or an extra
    pass when the first step is shifted) and activations the logits at the final images."""
    model = SmallCNN().eval()
    x0 = SPEC3.normalize(torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(3)))
    r = maximize(model, SPEC3, [0, 1, 2], AMConfig(steps=3, jitter=jitter, seed=5), "cpu", start=x0)
    with torch.no_grad():
        at_start = model(x0[None])[0]
        at_end = model(r.images)
    torch.testing.assert_close(r.start_activations, at_start, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(r.activations, at_end[[0, 1, 2], [0, 1, 2]], rtol=1e-5, atol=1e-6)
    if not jitter:
        torch.testing.assert_close(r.history[0], at_start, rtol=1e-5, atol=1e-6)


def test_grey_am_keeps_every_channel_equal_in_image_space():
    import torch
    from nnsens_core import activation_max as A
    from nnsens_core import demos
    lm = demos.load_demo_cnn("vgg16-phantom")
    cfg = A.AMConfig(steps=3, grey=True, preview_every=0)
    res = A.maximize(lm.module, lm.spec, [0, 1], cfg, "cpu")
    img01 = lm.spec.denormalize(res.images)
    assert img01.shape[1] == 3
    torch.testing.assert_close(img01[:, 0], img01[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(img01[:, 0], img01[:, 2], atol=1e-5, rtol=0)
    colour = A.maximize(lm.module, lm.spec, [0, 1], A.AMConfig(steps=3, preview_every=0), "cpu")
    c01 = lm.spec.denormalize(colour.images)
    assert (c01[:, 0] - c01[:, 1]).abs().max() > 1e-3  # without grey=True the channels differ
    with pytest.raises(NnsensError):
        A.AMConfig(grey=1)
