"""Incremental (Krypton-style) finite differences: equal to full forward passes on VGG and on a
Sequential exercising every supported layer geometry; batch-size invariance; fallbacks."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from nnsens_core import zoo
from nnsens_core._hooks import hook_count
from nnsens_core.errors import NnsensError
from nnsens_core.local_sensitivity import LocalConfig, local_sensitivity

pytestmark = pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")


def odd_layers() -> nn.Sequential:
    """Strides, dilation, 5x5/1x1/(3,2) kernels, 'same'/'valid' padding, pools with padding and
    ceil_mode overhangs, count_include_pad both ways, divisor_override, odd sizes."""
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1),                                  # 0
        nn.LeakyReLU(0.1),                                                        # 1
        nn.Conv2d(4, 6, 3, padding=2, dilation=2),                                # 2
        nn.BatchNorm2d(6),                                                        # 3
        nn.Conv2d(6, 5, 5, padding=2),                                            # 4
        nn.GELU(),                                                                # 5
        nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),                     # 6
        nn.Conv2d(5, 7, 1),                                                       # 7
        nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),  # 8
        nn.Conv2d(7, 6, 4, padding="same", groups=1),                             # 9
        nn.Tanh(),                                                                # 10
        nn.AvgPool2d(2, stride=1, padding=1, ceil_mode=True),                     # 11
        nn.Conv2d(6, 4, (3, 2), stride=(1, 2), padding="valid"),                  # 12
        nn.SiLU(),                                                                # 13
        nn.AvgPool2d(2, ceil_mode=True, divisor_override=3),                      # 14
    )


class OddNet(nn.Module):
    def __init__(self, feed=lambda x: x):
        super().__init__()
        self.body = odd_layers()
        self.head = nn.Linear(4, 3)
        self.feed = feed

    def forward(self, x):
        return self.head(self.body(self.feed(x)).mean((2, 3)))


ODD_BLOCKS = {"lrelu": "body.1", "gelu": "body.5", "max": "body.6", "avg": "body.8",
              "tanh": "body.10", "avg1": "body.11", "silu": "body.13", "div": "body.14"}


def _init(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def _same(model, x, blocks, **cfg):
    inc = local_sensitivity(model, x, blocks, LocalConfig(**cfg), "cpu")
    full = local_sensitivity(model, x, blocks, LocalConfig(incremental="off", **cfg), "cpu")
    assert inc.extra["engine"] == "incremental", inc.extra
    assert full.extra["engine"] == "full" and "engine_reason" not in full.extra
    torch.testing.assert_close(inc.maps, full.maps, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(inc.base_norms, full.base_norms, rtol=1e-6, atol=0)
    assert inc.n_forward == full.n_forward
    assert full.maps.abs().max() > 0
    assert hook_count(model) == 0
    return inc, full


@pytest.mark.parametrize("hw, patch, formula, noise", [
    ((32, 32), 1, "diff_norm", "fixed"),
    ((32, 32), 2, "norm_diff", "gaussian"),
    ((32, 48), 3, "diff_norm", "gaussian"),
    ((32, 48), 1, "norm_diff", "fixed"),
])
def test_vgg_incremental_equals_full(hw, patch, formula, noise):
    model = _init(zoo.build("vgg16-small", width=0.0625), 0)
    x = torch.randn(3, *hw)
    _same(model, x, None, patch=patch, formula=formula, noise=noise, epsilon=0.3, seed=4)


@pytest.mark.parametrize("patch", [1, 2, 3])
@pytest.mark.parametrize("formula", ["diff_norm", "norm_diff"])
def test_odd_geometry_incremental_equals_full(patch, formula):
    model = _init(OddNet(), 1)
    x = torch.randn(2, 29, 23)
    inc, _ = _same(model, x, ODD_BLOCKS, patch=patch, formula=formula, noise="gaussian", seed=2)
    assert inc.maps.shape == (len(ODD_BLOCKS), 2, 29, 23)


def test_plain_sequential_model_and_repeated_block():
    """S may be the model itself; two labels may name the same module."""
    model = _init(odd_layers(), 3)
    x = torch.randn(2, 17, 19)
    _same(model, x, {"a": "2", "b": "8", "b again": "8"}, patch=2, epsilon=0.5)


@pytest.mark.parametrize("patch", [2, 20])
def test_pointwise_first_grouped_conv_dilated_pool_and_patch_larger_than_image(patch):
    model = _init(nn.Sequential(
        nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1), nn.ReLU6(),
        nn.MaxPool2d(3, stride=2, padding=1, dilation=2),
        nn.Conv2d(3, 6, 3, groups=3), nn.Hardswish(),
        nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=True)), 6)
    x = torch.randn(3, 17, 14)
    _same(model, x, {"relu": "0", "pool": "3", "avg": "6"}, patch=patch, formula="norm_diff")


@pytest.mark.parametrize("bs", [1, 7, None])
def test_batch_size_does_not_change_incremental_results(bs):
    model = _init(OddNet(), 5)
    x = torch.randn(2, 15, 13)
    cfg = dict(patch=1, noise="gaussian", seed=1, formula="norm_diff")
    ref = local_sensitivity(model, x, ODD_BLOCKS, LocalConfig(batch_size=64, **cfg), "cpu")
    calls = []
    r = local_sensitivity(model, x, ODD_BLOCKS, LocalConfig(batch_size=bs, **cfg), "cpu",
                          progress=lambda d, t: calls.append((d, t)))
    assert r.extra["engine"] == "incremental"
    torch.testing.assert_close(r.maps, ref.maps, rtol=0, atol=1e-6)
    n = 2 * 15 * 13
    step = bs or r.extra["batch_size"]
    assert calls == [(1, n + 1)] + [(1 + min(d, n), n + 1) for d in range(step, n + step, step)]


def test_fallbacks_say_why():
    x = torch.randn(3, 16, 16)
    res = zoo.build("resnet18-small", width=0.0625).eval()
    r = local_sensitivity(res, x, None, LocalConfig(patch=4), "cpu")
    assert r.extra["engine"] == "full" and "Sequential" in r.extra["engine_reason"]

    vgg = zoo.build("vgg16-small", width=0.0625).train()
    r = local_sensitivity(vgg, torch.randn(3, 32, 32), {"b1": "features.6"}, LocalConfig(patch=8), "cpu")
    assert r.extra["engine"] == "full" and "training mode" in r.extra["engine_reason"]

    shifted = _init(OddNet(feed=lambda t: t * 2), 0)
    r = local_sensitivity(shifted, torch.randn(2, 9, 9), {"m": "body.6"}, LocalConfig(patch=3), "cpu")
    assert r.extra["engine"] == "full" and "input unchanged" in r.extra["engine_reason"]
    plain = local_sensitivity(_init(OddNet(), 0), torch.randn(2, 9, 9), {"m": "body.6"},
                              LocalConfig(patch=3), "cpu")
    assert plain.extra["engine"] == "incremental"

    reflect = _init(OddNet(), 0)
    reflect.body[0].padding_mode = "reflect"
    r = local_sensitivity(reflect, torch.randn(2, 9, 9), {"m": "body.6"}, LocalConfig(patch=3), "cpu")
    assert r.extra["engine"] == "full" and "padding_mode" in r.extra["engine_reason"]

    r = local_sensitivity(_init(OddNet(), 0), torch.randn(2, 9, 9), {"m": "body.6"},
                          LocalConfig(patch=3, incremental="off"), "cpu")
    assert r.extra["engine"] == "full" and "engine_reason" not in r.extra


def test_gradient_method_and_bad_value():
    with pytest.raises(NnsensError, match=r"incremental='fast'.*'auto', 'off'"):
        LocalConfig(incremental="fast")
    r = local_sensitivity(_init(OddNet(), 0), torch.randn(2, 9, 9), {"m": "body.6"},
                          LocalConfig(method="gradient", formula="norm_diff"), "cpu")
    assert "engine" not in r.extra
