"""Approximate incremental inference (projective-field thresholding, adaptive drill-down) and its
measured-error report: tau = 0 / tiny tau is exact, a hand-computed truncated propagation, caps
shrink as tau grows, drill-down with every position equals full occlusion, configs refuse bad
values."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nnsens_core import _approx, _incremental
from nnsens_core.errors import NnsensError
from nnsens_core.local_sensitivity import (
    LocalConfig,
    _perturbations,
    engine_agreement,
    local_sensitivity,
)
from nnsens_core.saliency import occlusion as O
from tests.test_incremental_occlusion import _vgg  # vgg16-small, BatchNorm gains 1.5-2.5


def _small_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(6, 6, 3, padding=1), nn.MaxPool2d(2)).eval()


BLOCKS = {"b1": "4", "b2": "8"}


def test_tiny_tau_equals_exact_and_reports_error_fields():
    model = _small_cnn()
    x = torch.randn(2, 16, 16, generator=torch.Generator().manual_seed(1))
    exact = local_sensitivity(model, x, BLOCKS, LocalConfig(), "cpu")
    tiny = local_sensitivity(model, x, BLOCKS, LocalConfig(tau=1e-9), "cpu")
    assert exact.extra["engine"] == tiny.extra["engine"] == "incremental"
    assert "approx" not in exact.extra
    torch.testing.assert_close(tiny.maps, exact.maps, rtol=1e-6, atol=1e-7)
    rep = tiny.extra["approx"]
    assert rep["tau"] == 1e-9 and rep["sample"] == 32 and rep["exact_runs"] == 64
    assert rep["rel_l2"] < 1e-6 and rep["spearman"] > 0.9999
    assert set(rep["maps"]) == set(BLOCKS)
    assert tiny.to_dict()["approx"]["sample"] == 32


def test_caps_shrink_and_error_grows_with_tau():
    model = _small_cnn(3)
    x = torch.randn(2, 16, 16, generator=torch.Generator().manual_seed(2))
    exact = local_sensitivity(model, x, BLOCKS, LocalConfig(), "cpu")
    idx, delta, _ = _perturbations(tuple(x.shape), LocalConfig())
    cal = _approx.samples(len(idx), 32)[0]
    errors, prev = [], None
    for tau in (0.01, 0.3, 0.6, 0.95):
        engine, _ = _incremental.prepare(model, x, BLOCKS, 1, approx=True)
        caps = engine.calibrate(tau, *engine.tile_patches(cal, idx[cal], delta[cal]))
        if prev is not None:            # a higher threshold never needs a larger box
            assert all(c[d] <= prev[i][d] for i, c in caps.items() for d in range(2))
        prev = caps
        res = local_sensitivity(model, x, BLOCKS, LocalConfig(tau=tau), "cpu")
        errors.append(max(a["rel_error"] for a in engine_agreement(res, exact).values()))
    assert errors[0] < 1e-3 < errors[-1]
    assert all(b >= a - 0.02 for a, b in zip(errors, errors[1:]))   # monotone up to noise


def test_reported_error_is_the_error_at_the_sampled_perturbations():
    model = _small_cnn(4)
    x = torch.randn(2, 16, 16, generator=torch.Generator().manual_seed(5))
    exact = local_sensitivity(model, x, BLOCKS, LocalConfig(), "cpu")
    cfg = LocalConfig(tau=0.7, approx_sample=16, seed=3)
    res = local_sensitivity(model, x, BLOCKS, cfg, "cpu")
    _, chk = _approx.samples(x.numel(), 16, seed=3)
    a, e = res.maps.reshape(2, -1)[:, chk], exact.maps.reshape(2, -1)[:, chk]
    for q, lb in enumerate(BLOCKS):
        rel = float((a[q] - e[q]).norm() / e[q].norm())
        assert res.extra["approx"]["maps"][lb]["rel_l2"] == pytest.approx(rel, rel=1e-4, abs=1e-6)


def test_truncated_propagation_by_hand():
    """conv1 keeps 1 at the centre and 0.01 around it: with tau = 0.05 a pixel's change counts
    only at its own position after conv1 (cap 1), so conv2 sees the centre change alone: the
    approximate maps equal that truncated propagation, computed here directly."""
    conv1, conv2 = nn.Conv2d(1, 1, 3, padding=1, bias=False), nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv1.weight.fill_(0.01)
        conv1.weight[0, 0, 1, 1] = 1.0
        conv2.weight.copy_(torch.tensor([[[[1.0, 2.0, 1.0], [0.5, 3.0, -1.0], [1.5, 1.0, 2.0]]]]))
    model = nn.Sequential(conv1, conv2).eval()
    x = torch.rand(1, 9, 9, generator=torch.Generator().manual_seed(0))
    eps = 0.1
    res = local_sensitivity(model, x, {"c1": "0", "c2": "1"}, LocalConfig(epsilon=eps, tau=0.05), "cpu")
    exact = local_sensitivity(model, x, {"c1": "0", "c2": "1"}, LocalConfig(epsilon=eps), "cpu")
    want1 = torch.full((1, 9, 9), eps)                      # |eps * w_centre|, nothing around it
    want2 = torch.zeros(1, 9, 9)
    for r in range(9):
        for c in range(9):
            d = torch.zeros(1, 1, 9, 9)
            d[0, 0, r, c] = eps                            # conv1's change, truncated to the centre
            want2[0, r, c] = conv2(d).norm()
    torch.testing.assert_close(res.maps[0], want1, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(res.maps[1], want2, rtol=1e-5, atol=1e-7)
    assert (exact.maps[0] - want1).abs().min() > 1e-5      # the exact maps differ: sqrt(1.0008) eps
    assert (exact.maps[1] - want2).abs().max() > 1e-4
    assert res.extra["approx"]["rel_l2"] > 0


def test_drill_down_with_every_position_equals_full_occlusion_and_reports():
    model = _vgg()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    kw = dict(window=4, stride=2, score="logit", reference="constant", constant=0.3)
    full = O.occlusion(model, x, [1, 2], O.OcclusionConfig(incremental="off", **kw), "cpu")
    drill, det = O.occlusion(model, x, [1, 2], O.OcclusionConfig(coarse_stride=4, approx_sample=8, **kw),
                             "cpu", return_details=True)
    exact = O.occlusion(model, x, [1, 2], O.OcclusionConfig(**kw), "cpu")
    torch.testing.assert_close(drill, exact, rtol=1e-6, atol=1e-7)   # float32 logit rounding
    torch.testing.assert_close(drill, full, rtol=1e-4, atol=1e-4 * float(full.abs().max()))
    assert det["drill_down"]["computed"] == 2 * 15 * 15
    assert det["approx"]["sample"] == 8 and det["approx"]["rel_l2"] < 1e-3
    _, det = O.occlusion(model, x, [1, 2], O.OcclusionConfig(drill_top=0.2, **kw), "cpu",
                            return_details=True)
    assert det["drill_down"]["computed_fraction"] < 0.5
    assert {"rel_l2", "spearman", "sample", "drill_top"} <= set(det["approx"])
    thr, det = O.occlusion(model, x, [1, 2], O.OcclusionConfig(tau=1e-9, **kw), "cpu", return_details=True)
    torch.testing.assert_close(thr, full, rtol=1e-4, atol=1e-4 * float(full.abs().max()))
    assert set(det["approx"]["caps"]) == {0, 1}


def test_drill_down_interpolates_a_linear_map_exactly():
    """Interpolation weights: a linear function of the coarse coordinates is reproduced."""
    fine, coarse = [0, 2, 4, 6, 8, 10, 11], [0, 4, 8, 11]
    m = O._interp_matrix(fine, coarse, "cpu")
    vals = torch.tensor([3.0 * c - 1 for c in coarse], dtype=torch.float64)
    torch.testing.assert_close(m @ vals, torch.tensor([3.0 * f - 1 for f in fine], dtype=torch.float64))


@pytest.mark.parametrize("bad", [
    dict(tau=-0.1), dict(tau=1.0), dict(tau=math.nan), dict(tau=True), dict(tau="0.1"),
    dict(approx_sample=2), dict(approx_sample=4.5),
    dict(tau=0.1, method="gradient"), dict(tau=0.1, incremental="off"),
])
def test_local_config_refuses(bad):
    with pytest.raises(NnsensError, match=next(iter(bad))):
        LocalConfig(**bad)


@pytest.mark.parametrize("bad, name", [
    (dict(tau=1.5), "tau"), (dict(drill_top=0), "drill_top"), (dict(drill_top=1.2), "drill_top"),
    (dict(stride=2, coarse_stride=3), "coarse_stride"), (dict(stride=2, coarse_stride=2), "coarse_stride"),
    (dict(coarse_stride=0), "coarse_stride"), (dict(tau=0.2, incremental="off"), "tau"),
    (dict(approx_sample=1), "approx_sample"),
])
def test_occlusion_config_refuses(bad, name):
    with pytest.raises(NnsensError, match=name):
        O.OcclusionConfig(**bad)


def test_combine_takes_the_worst_and_is_associative():
    nan = float("nan")
    a = {"tau": 0.05, "sample": 8, "rel_l2": 0.01, "spearman": 0.99, "caps": {0: {}}}
    b = {"tau": 0.05, "sample": 4, "rel_l2": 0.03, "spearman": 0.995}
    c = {"tau": 0.05, "sample": 2, "rel_l2": 0.02, "spearman": nan}   # no ranks: ignored
    d = {"tau": 0.05, "sample": 8, "rel_l2": 0.005, "spearman": 0.97}
    whole = _approx.combine([a, b, c, d])
    assert whole == {"tau": 0.05, "sample": 22, "rel_l2": 0.03, "spearman": 0.97, "parts": 4}
    assert _approx.combine([_approx.combine([a, b]), _approx.combine([None, c, d])]) == whole
    assert _approx.combine([None, {}]) is None
    only_nan = _approx.combine([c])
    assert math.isnan(only_nan["spearman"]) and only_nan["parts"] == 1
    assert "approximate (measured on 22" in _approx.describe_error(whole)


def test_the_error_line_says_when_tau_was_not_applied():
    rep = {"tau": 0.2, "sample": 8, "rel_l2": 0.0, "spearman": 1.0,
           "tau_ignored": "the incremental engine does not apply to this model"}
    line = _approx.describe_error(_approx.combine([rep, dict(rep)]))
    assert line.endswith("; tau not applied: the incremental engine does not apply to this model")
    assert "tau not applied" not in _approx.describe_error({k: v for k, v in rep.items()
                                                           if k != "tau_ignored"})
