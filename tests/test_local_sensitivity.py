"""Local pixel-perturbation sensitivity: toy networks with hand-computed answers, batching,
hooks, gradient estimators and bad input."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nnsens_core import zoo
from nnsens_core._hooks import forward_with_outputs, hook_count
from nnsens_core.errors import NnsensError
from nnsens_core.local_sensitivity import (LocalConfig, engine_agreement, count_forwards, local_sensitivity,
                                      local_sensitivity_many, mean_std, order_of_magnitude, pool_tiles,
                                      sensitivity_map)


class Toy(nn.Module):
    """block a: 1x1 conv (C -> 2, fixed weights), block b: identity of the input, then a head."""

    def __init__(self, c=1, inplace=False):
        super().__init__()
        self.a = nn.Conv2d(c, 2, 1, bias=False)
        with torch.no_grad():
            self.a.weight.copy_(torch.arange(1.0, 2 * c + 1).view(2, c, 1, 1))
        self.relu = nn.ReLU(inplace=inplace)
        self.b = nn.Identity()
        self.head = nn.Linear(1, 3)

    def forward(self, x):
        y = self.relu(self.a(self.b(x)))
        return self.head(y.mean((1, 2, 3))[:, None])


BLOCKS = {"A": "a", "B": "b"}


def test_identity_and_linear_block_hand_computed():
    torch.manual_seed(0)
    x = torch.randn(1, 5, 6)
    eps = 0.3
    r = local_sensitivity(Toy(), x, BLOCKS, LocalConfig(epsilon=eps), "cpu")
    assert r.maps.shape == (2, 1, 5, 6)
    # identity block: ||x + eps e - x|| = eps; 1x1 conv with weights (1, 2): eps * sqrt(1 + 4)
    torch.testing.assert_close(r.maps[1], torch.full((1, 5, 6), eps), atol=1e-6, rtol=0)
    torch.testing.assert_close(r.maps[0], torch.full((1, 5, 6), eps * math.sqrt(5)), atol=1e-5, rtol=0)
    assert r.n_forward == 31 == count_forwards((1, 5, 6), LocalConfig())


def test_norm_diff_formula_hand_computed():
    x = torch.tensor([[[1.0, 2.0], [3.0, -1.0]]])
    eps = 0.5
    r = local_sensitivity(Toy(), x, {"B": "b"}, LocalConfig(epsilon=eps, formula="norm_diff"), "cpu")
    n0 = x.norm()
    for i in range(2):
        for j in range(2):
            xp = x.clone()
            xp[0, i, j] += eps
            assert r.maps[0, 0, i, j].item() == pytest.approx((xp.norm() - n0).item(), abs=1e-6)


def test_patch_perturbation_counts_valid_pixels():
    x = torch.zeros(1, 5, 5)
    r = local_sensitivity(Toy(), x, {"B": "b"}, LocalConfig(epsilon=1.0, patch=2), "cpu")
    # 3x3 tiles; interior tiles hold 4 pixels (norm 2), edge tiles 2 (sqrt 2), the corner 1
    expect = torch.tensor([[2, 2, 2, 2, math.sqrt(2)]] * 4 + [[math.sqrt(2)] * 4 + [1.0]])
    torch.testing.assert_close(r.maps[0, 0], expect, atol=1e-6, rtol=0)
    assert r.n_forward == 10


@pytest.mark.parametrize("bs", [1, 7, 64])
def test_batch_size_does_not_change_results(bs):
    torch.manual_seed(1)
    model = zoo.build("vgg16-small", width=0.0625).eval()
    x = torch.randn(3, 32, 32)
    ref = local_sensitivity(model, x, None, LocalConfig(patch=4, noise="gaussian", seed=3,
                                                         batch_size=200), "cpu")
    r = local_sensitivity(model, x, None, LocalConfig(patch=4, noise="gaussian", seed=3,
                                                       batch_size=bs), "cpu")
    torch.testing.assert_close(r.maps, ref.maps, atol=1e-7, rtol=1e-5)
    assert hook_count(model) == 0


def test_vgg_matches_one_perturbation_at_a_time():
    torch.manual_seed(2)
    model = zoo.build("vgg16-small", width=0.0625).eval()
    blocks = zoo.image_blocks(model)
    assert list(blocks) == [f"block{i}" for i in range(1, 6)]
    x = torch.randn(3, 32, 32)
    cfg = LocalConfig(epsilon=0.5, patch=4)
    r = local_sensitivity(model, x, blocks, cfg, "cpu")
    names = list(blocks.values())
    with torch.no_grad():
        _, base = forward_with_outputs(model, x[None], names)
        base = {k: t.clone() for k, t in base.items()}
        for c, ti, tj in [(0, 0, 0), (1, 3, 5), (2, 7, 7)]:
            xp = x.clone()
            xp[c, ti * 4:ti * 4 + 4, tj * 4:tj * 4 + 4] += 0.5
            _, out = forward_with_outputs(model, xp[None], names)
            for q, n in enumerate(names):
                want = (out[n] - base[n]).norm().item()
                assert r.maps[q, c, ti * 4 + 1, tj * 4 + 2].item() == pytest.approx(want, rel=1e-3, abs=1e-7)


def test_inplace_relu_after_block_is_handled():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 4)
    a = local_sensitivity(Toy(inplace=False), x, {"A": "a"}, LocalConfig(epsilon=0.2), "cpu")
    b = local_sensitivity(Toy(inplace=True), x, {"A": "a"}, LocalConfig(epsilon=0.2), "cpu")
    torch.testing.assert_close(a.maps, b.maps)
    g = local_sensitivity(Toy(inplace=True), x, {"A": "a"},
                          LocalConfig(epsilon=0.2, method="gradient", formula="norm_diff"), "cpu")
    assert torch.isfinite(g.maps).all()


def test_gradient_norm_diff_is_first_order_exact():
    torch.manual_seed(0)
    x = torch.randn(1, 6, 6)
    cfg = dict(epsilon=1e-3, formula="norm_diff")
    fd = local_sensitivity(Toy(), x, BLOCKS, LocalConfig(**cfg), "cpu")
    gr = local_sensitivity(Toy(), x, BLOCKS, LocalConfig(method="gradient", **cfg), "cpu")
    # analytic: eps * w^2 x_p / ||w x|| summed over output channels = eps * x_p / ||x|| for identity
    torch.testing.assert_close(gr.maps[1, 0], 1e-3 * x[0] / x.norm(), atol=1e-7, rtol=1e-4)
    ag = engine_agreement(gr, fd)
    assert ag["A"]["spearman"] > 0.99 and ag["A"]["rel_error"] < 1e-2
    assert gr.n_forward == 3


def test_gradient_diff_norm_estimates_jacobian_column_norms():
    torch.manual_seed(0)
    x = torch.randn(1, 6, 6)
    gr = local_sensitivity(Toy(), x, {"A": "a"}, LocalConfig(epsilon=0.2, method="gradient",
                                                             n_probes=400), "cpu")
    want = 0.2 * math.sqrt(5)   # column norm of the 1x1 conv (1, 2) times epsilon
    assert abs(gr.maps.mean().item() - want) / want < 0.1
    torch.manual_seed(3)
    model = zoo.build("vgg16-small", width=0.0625).eval()
    x = torch.randn(3, 32, 32)
    fd = local_sensitivity(model, x, {"b2": "features.13"}, LocalConfig(epsilon=1e-3, patch=2), "cpu")
    ge = local_sensitivity(model, x, {"b2": "features.13"},
                           LocalConfig(epsilon=1e-3, patch=2, method="gradient", n_probes=64), "cpu")
    assert engine_agreement(ge, fd)["b2"]["spearman"] > 0.8


def test_gaussian_noise_seeded_and_scaled():
    x = torch.zeros(1, 40, 40)
    cfg = LocalConfig(noise="gaussian", sigma=0.2, seed=5)
    a = local_sensitivity(Toy(), x, {"B": "b"}, cfg, "cpu").maps
    b = local_sensitivity(Toy(), x, {"B": "b"}, cfg, "cpu").maps
    c = local_sensitivity(Toy(), x, {"B": "b"}, LocalConfig(noise="gaussian", sigma=0.2, seed=6), "cpu").maps
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    # |delta| with delta ~ N(0, 0.2^2) has mean 0.2 * sqrt(2 / pi)
    assert a.mean().item() == pytest.approx(0.2 * math.sqrt(2 / math.pi), rel=0.08)


def test_views_tiles_mean_std_order_and_sensitivity_map():
    m = torch.arange(16.0).view(1, 1, 4, 4)
    torch.testing.assert_close(pool_tiles(m, 2), torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    torch.testing.assert_close(pool_tiles(m, 3, "max"), torch.tensor([[[[10.0, 11.0], [14.0, 15.0]]]]))
    torch.testing.assert_close(pool_tiles(m, 3)[0, 0, 1, 1], torch.tensor(15.0))
    assert order_of_magnitude(torch.tensor([3e-4, -2e-3])) == -3
    assert order_of_magnitude(torch.zeros(3)) == 0
    torch.manual_seed(0)
    xs = torch.randn(2, 1, 4, 4)
    calls = []
    res = local_sensitivity_many(Toy(), xs, BLOCKS, LocalConfig(epsilon=0.1, formula="norm_diff"),
                                 "cpu", progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (34, 34) and all(t == 34 for _, t in calls)
    mean, std = mean_std(res)
    torch.testing.assert_close(mean, (res[0].maps + res[1].maps) / 2)
    assert std.shape == (2, 1, 4, 4) and std.max() > 0
    sm = sensitivity_map(Toy(), xs, "a", LocalConfig(epsilon=0.1), "cpu")
    assert sm.shape == (2, 4, 4)
    torch.testing.assert_close(sm, torch.full((2, 4, 4), 0.1 * math.sqrt(5)), atol=1e-6, rtol=0)


def test_bad_input_errors():
    model = Toy(c=3)
    with pytest.raises(NnsensError, match="epsilon"):
        LocalConfig(epsilon=0)
    with pytest.raises(NnsensError, match="epsilon"):
        LocalConfig(epsilon=-1.0)
    with pytest.raises(NnsensError, match="grayscale"):
        local_sensitivity(model, torch.zeros(1, 8, 8), BLOCKS, LocalConfig(), "cpu")
    with pytest.raises(NnsensError, match="expects 8x8"):
        local_sensitivity(model, torch.zeros(3, 4, 4), BLOCKS, LocalConfig(), "cpu",
                          expected_shape=(3, 8, 8))
    with pytest.raises(NnsensError, match="does not exist"):
        local_sensitivity(model, torch.zeros(3, 4, 4), {"x": "nope"}, LocalConfig(), "cpu")
    with pytest.raises(NnsensError, match="none detected"):
        local_sensitivity(model, torch.zeros(3, 4, 4), None, LocalConfig(), "cpu")
    with pytest.raises(NnsensError, match="formula"):
        LocalConfig(formula="bogus")
    with pytest.raises(NnsensError, match=r"\(C, H, W\)"):
        local_sensitivity(model, torch.zeros(2, 3, 4, 4), BLOCKS, LocalConfig(), "cpu")
    assert hook_count(model) == 0
