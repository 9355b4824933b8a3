"""Tests of nnsens_core.landscape: closed-form derivatives, stacked retrains, trends, surfaces."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from nnsens_core import landscape as L
from nnsens_core.data import TabularData
from nnsens_core.errors import NnsensError
from nnsens_core.zoo import PaperMLP


def closed_form(X, w, b, y):
    """Hand-derived derivatives of L = (tanh(z) - y)^2, z = w.x + b, in x_j.

    With t = tanh z, s = 1 - t^2 (= dt/dz), r = t - y and ds/dz = -2ts:
      dL/dz   = 2 r s
      d2L/dz2 = 2 (s^2 - 2 r t s)
      d3L/dz3 = 2 (-6 t s^2 - 2 r s^2 + 4 r t^2 s)
    and d^k L / dx_j^k = w_j^k d^k L / dz^k.
    """
    z = X @ w + b
    t = np.tanh(z)
    s = 1 - t ** 2
    r = t - y
    g1 = 2 * r * s
    g2 = 2 * (s ** 2 - 2 * r * t * s)
    g3 = 2 * (-6 * t * s ** 2 - 2 * r * s ** 2 + 4 * r * t ** 2 * s)
    return g1[:, None] * w, g2[:, None] * w ** 2, g3[:, None] * w ** 3


def _toy(n=40, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = (X[:, 0] - 0.5 * X[:, 1] + 0.3 * rng.normal(size=n) > 0).astype(float)
    return X, y


def test_derivatives_match_closed_form_float64():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(25, 4)), rng.uniform(-1, 1, 25)
    w, b = rng.normal(size=4), 0.3
    got = L.diagonal_derivatives(L.tanh_unit_loss, torch.tensor(X), torch.tensor(w),
                                 torch.tensor(b, dtype=torch.float64), torch.tensor(y))
    for g, c in zip(got, closed_form(X, w, b, y)):
        np.testing.assert_allclose(g.numpy(), c, rtol=1e-10, atol=1e-12)


def test_derivatives_match_finite_differences():
    """Independent of the formula above: central differences of the loss in x_j."""
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(6, 3)), rng.uniform(0, 1, 6)
    w, b = rng.normal(size=3), -0.2
    loss = lambda Z: (np.tanh(Z @ w + b) - y) ** 2  # noqa: E731
    d1, d2, d3 = (t.numpy() for t in L.diagonal_derivatives(
        L.tanh_unit_loss, torch.tensor(X), torch.tensor(w), torch.tensor(b, dtype=torch.float64), torch.tensor(y)))
    for j in range(3):
        def f(k, h):
            e = np.zeros(3)
            e[j] = k * h
            return loss(X + e)
        h1, h2, h3 = 1e-5, 1e-4, 1e-3  # step per order: truncation vs round-off
        np.testing.assert_allclose(d1[:, j], (f(1, h1) - f(-1, h1)) / (2 * h1), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(d2[:, j], (f(1, h2) - 2 * f(0, h2) + f(-1, h2)) / h2 ** 2,
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(d3[:, j], (f(2, h3) - 2 * f(1, h3) + 2 * f(-1, h3) - f(-2, h3))
                                   / (2 * h3 ** 3), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_loss_input_derivatives_stacked_and_batch_invariant(batch_size):
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(23, 3)), rng.uniform(-1, 1, 23)
    W, b = rng.normal(size=(4, 3)), rng.normal(size=4)
    out = L.loss_input_derivatives(torch.tensor(W), torch.tensor(b), torch.tensor(X),
                                   torch.tensor(y), batch_size)
    for k in range(4):
        for got, c in zip(out, closed_form(X, W[k], b[k], y)):
            np.testing.assert_allclose(got[k].numpy(), c, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("chunk", [1, 4, 100])
def test_derivative_histories_mean_and_quantiles(chunk):
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(30, 2)), rng.uniform(-1, 1, 30)
    W, b = rng.normal(size=(9, 2)), rng.normal(size=9)
    mean, quant = L.derivative_histories(torch.tensor(W), torch.tensor(b), torch.tensor(X),
                                         torch.tensor(y), chunk)
    for p in range(9):
        cf = closed_form(X, W[p], b[p], y)
        for k in (1, 2, 3):
            np.testing.assert_allclose(mean[k][p].numpy(), cf[k - 1].mean(0), rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(quant[k][p].numpy(),
                                       np.quantile(cf[k - 1], L.QUANTILES, axis=0), rtol=1e-9,
                                       atol=1e-12)


def test_xavier_normal_std_and_seed():
    w = L.xavier_normal(20000, 5, torch.float64)
    assert abs(w.std().item() - np.sqrt(2 / 20001)) < 0.03 * np.sqrt(2 / 20001)
    assert torch.equal(L.xavier_normal(7, 3), L.xavier_normal(7, 3))
    assert not torch.equal(L.xavier_normal(7, 3), L.xavier_normal(7, 4))


@pytest.mark.parametrize("opt,bs", [("sgd", None), ("adam", None), ("sgd", 16)])
def test_stacked_retrains_equal_lone_runs(opt, bs):
    X, y = _toy()
    cfg = L.LandscapeConfig(epochs=15, retrains=3, seed=4, optimizer=opt, lr=0.05, batch_size=bs)
    together = L.train_tanh_units(X, y, cfg, "cpu")
    for k in range(3):
        lone = L.train_tanh_units(X, y, L.LandscapeConfig(epochs=15, retrains=1, seed=4 + k,
                                                          optimizer=opt, lr=0.05, batch_size=bs), "cpu")
        np.testing.assert_allclose(together.weights[k], lone.weights[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(together.mean[2][k], lone.mean[2][0], rtol=1e-4, atol=1e-6)
    assert not np.allclose(together.weights[0, -1], together.weights[1, -1])


def test_training_reduces_loss_and_records_history():
    X, y = _toy(60, 3)
    Xs, ys, _ = L.prepare_xy(X, y, L.LandscapeConfig())
    cfg = L.LandscapeConfig(epochs=40, retrains=2, lr=0.1, record_every=3)
    calls = []
    h = L.train_tanh_units(Xs, ys, cfg, "cpu", progress=lambda d, t, stage="": calls.append((d, t)))
    assert list(h.epochs) == list(range(0, 40, 3)) + [40]
    T = len(h.epochs)
    assert h.loss.shape == (2, T) and h.weights.shape == (2, T, 3)
    assert h.mean[3].shape == (2, T, 3) and h.quantiles[1].shape == (2, T, len(L.QUANTILES), 3)
    assert h.final[2].shape == (2, 60, 3)
    assert (h.loss[:, -1] < h.loss[:, 0]).all()
    # the loss history is the MSE of the recorded weights
    z = Xs @ h.weights[1, 5] + h.bias[1, 5]
    np.testing.assert_allclose(h.loss[1, 5], ((np.tanh(z) - ys) ** 2).mean(), rtol=1e-5)
    # the last derivatives are the closed form at the final weights
    np.testing.assert_allclose(h.final[2][0], closed_form(Xs, h.weights[0, -1], h.bias[0, -1], ys)[1],
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(h.mean[2][0, -1], h.final[2][0].mean(0), rtol=1e-4, atol=1e-7)
    assert calls[-1][0] == calls[-1][1] and calls[0] == (1, calls[0][1])


def test_spearman_matches_scipy():
    from scipy.stats import spearmanr
    rng = np.random.default_rng(5)
    X = rng.integers(0, 4, size=(50, 3)).astype(float)  # ties
    y = rng.normal(size=50)
    got = L.spearman_columns(X, y)
    for j in range(3):
        assert got[j] == pytest.approx(spearmanr(X[:, j], y).statistic, abs=1e-12)


def test_classify_trend_on_hand_made_histories():
    T = 30
    e = np.arange(T, dtype=float)
    loss = np.r_[np.linspace(1, 0.2, 20), np.linspace(0.2, 0.5, 10)]  # falls for 19 epochs, then rises
    up_then_down = np.r_[e[:20], 100 - e[20:] * 10]  # increases while the loss falls
    hist = np.stack([up_then_down, -e, np.ones(T), np.sin(e)], 1)
    tr = L.classify_trend(hist, loss, flat_tol=0.05)
    assert tr.n_epochs == 19
    assert list(tr.label[:3]) == ["increasing", "decreasing", "flat"]
    assert list(tr.direction[:3]) == ["increasing", "decreasing", "flat"]
    assert tr.label[3] == "fluctuates"  # sin over 19 epochs: three turns
    assert tr.rho[0] == pytest.approx(1.0) and tr.slope[0] == pytest.approx(1.0)
    assert tr.slope[1] == pytest.approx(-1.0)
    never_falls = L.classify_trend(hist, np.arange(T, dtype=float))
    assert set(never_falls.label) == {"undetermined"} and never_falls.n_epochs == 0


def test_trend_agreement_rules():
    labels = np.array(["increasing", "increasing", "decreasing", "flat", "decreasing"], dtype=object)
    sp = np.array([0.3, -0.2, -0.1, 0.5, 0.0])
    assert list(L.trend_agreement(labels, sp)) == [True, False, True, None, None]


def test_run_landscape_end_to_end_and_summary():
    X, y = _toy(80, 3, seed=7)
    res = L.run_landscape(X, y, L.LandscapeConfig(epochs=30, retrains=3, lr=0.1),
                          feature_names=("a", "b", "c"), target_name="t", device="cpu")
    assert res.spearman[0] > 0.3 and res.spearman[1] < -0.1
    s = res.to_dict()
    assert [f["feature"] for f in s["features"]] == ["a", "b", "c"]
    f0 = s["features"][0]
    assert f0["trend"] in L.TRENDS and len(f0["trend_per_run"]) == 3
    assert f0["trend"] == res.trends[0].label[0]
    cons = res.consistency()
    for row, j in zip(cons, range(3)):
        labs = res.labels()[:, j]
        assert row["consistency"] == pytest.approx(max((labs == t).mean() for t in L.TRENDS))
        det = [a for a in res.agree[:, j] if a is not None]
        assert row["runs_determined"] == len(det)
    import json
    json.dumps(s)  # serialisable as is


def test_standardize_option_changes_inputs_only():
    X, y = _toy(50, 2)
    X = X * [100, 0.01] + [5, -3]
    Xs, ys, info = L.prepare_xy(X, y, L.LandscapeConfig())
    np.testing.assert_allclose(Xs.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(Xs.std(0), 1, atol=1e-12)
    np.testing.assert_array_equal(ys, y)
    Xr, _, info_r = L.prepare_xy(X, y, L.LandscapeConfig(standardize=False))
    np.testing.assert_array_equal(Xr, X)
    assert info["standardize"] and not info_r["standardize"]
    _, ym, _ = L.prepare_xy(X, y * 5 + 2, L.LandscapeConfig(target_scaling="minmax"))
    assert ym.min() == -1 and ym.max() == 1


def test_run_landscape_tabular_rows():
    X, y = _toy(60, 2)
    data = TabularData(X, y, ("p", "q"), "y")
    res = L.run_landscape_tabular(data, L.LandscapeConfig(epochs=5, retrains=1), rows="0:40",
                                  device="cpu")
    assert res.history.final[1].shape == (1, 40, 2)


# ---------------------------------------------------------------- bad input

def test_constant_feature_is_named():
    X, y = _toy(20, 3)
    X[:, 1] = 4.0
    with pytest.raises(NnsensError, match="'b'.*constant"):
        L.run_landscape(X, y, L.LandscapeConfig(epochs=2), feature_names=("a", "b", "c"))


def test_non_numeric_or_nan_target():
    X, _ = _toy(20, 2)
    with pytest.raises(NnsensError, match="not numeric"):
        L.validate_xy(X, np.array(["yes", "no"] * 10))
    y = np.ones(20)
    y[:10] = 0
    y[3] = np.nan
    with pytest.raises(NnsensError, match="NaN"):
        L.validate_xy(X, y)
    with pytest.raises(NnsensError, match="target is constant"):
        L.validate_xy(X, np.zeros(20))


@pytest.mark.parametrize("kwargs,match", [
    ({"epochs": 0}, "epochs=0"), ({"epochs": -3}, "epochs=-3"), ({"lr": 0}, "lr=0"),
    ({"optimizer": "rmsprop"}, "optimizer"), ({"retrains": 0}, "retrains=0"),
    ({"target_scaling": "log"}, "target_scaling"), ({"min_falling_epochs": 2}, "min_falling_epochs"),
    ({"batch_size": 0}, "batch_size=0")])
def test_config_errors(kwargs, match):
    with pytest.raises(NnsensError, match=match):
        L.LandscapeConfig(**kwargs)


def test_surface_config_errors():
    with pytest.raises(NnsensError, match="grid"):
        L.SurfaceConfig(grid=2)
    with pytest.raises(NnsensError, match="loss"):
        L.SurfaceConfig(loss="hinge")


# ---------------------------------------------------------------- image variant

def test_digits_landscape_small():
    dg = L.digits_landscape(3, L.LandscapeConfig(epochs=8, retrains=2, lr=0.1), n=120, device="cpu")
    assert dg.increasing_mask.shape == (8, 8) and dg.increasing_mask.dtype == bool
    keep = dg.pixel_index
    X = dg.images.reshape(len(dg.images), -1)
    assert (np.ptp(X[:, keep], 0) > 0).all()
    dropped = np.setdiff1d(np.arange(64), keep)
    assert len(dropped) > 0 and not dg.increasing_mask.reshape(-1)[dropped].any()
    assert np.isnan(dg.spearman_map.reshape(-1)[dropped]).all()
    dirs0 = dg.result.trends[0].direction  # the mask marks the net direction (labels are shapes)
    np.testing.assert_array_equal(dg.increasing_mask.reshape(-1)[keep], dirs0 == "increasing")
    shares = dg.increasing_share.reshape(-1)[keep]
    assert ((shares >= 0) & (shares <= 1)).all()
    with pytest.raises(NnsensError, match="digit"):
        L.digits_landscape(10)


# ---------------------------------------------------------------- any loaded model

class Lin(nn.Module):
    def __init__(self, w, b=0.0, act=None):
        super().__init__()
        self.fc = nn.Linear(len(w), 1)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([w], dtype=torch.float32))
            self.fc.bias.fill_(b)
        self.act = act

    def forward(self, x):
        z = self.fc(x).squeeze(-1)
        return self.act(z) if self.act is not None else z


def test_input_gradient_summary_of_linear_and_sigmoid():
    rng = np.random.default_rng(8)
    X = rng.normal(size=(40, 3))
    s = L.input_gradient_summary(Lin([1.0, -2.0, 0.5]), X, device="cpu")
    np.testing.assert_allclose(s["mean"], [1, -2, 0.5], rtol=1e-6)
    np.testing.assert_allclose(s["std"], 0, atol=1e-6)
    np.testing.assert_allclose(s["rms"], [1, 2, 0.5], rtol=1e-6)
    m = Lin([1.0, -2.0, 0.5], 0.1, torch.sigmoid)
    g = L.input_gradients(m, X, device="cpu", batch_size=7)
    p = 1 / (1 + np.exp(-(X @ [1.0, -2.0, 0.5] + 0.1)))
    np.testing.assert_allclose(g, (p * (1 - p))[:, None] * [1.0, -2.0, 0.5], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(L.input_gradients(m, X, device="cpu", batch_size=1000), g, rtol=1e-6)
    s2 = L.input_gradient_summary(m, X, device="cpu")
    np.testing.assert_allclose(s2["rms"], np.sqrt((g ** 2).mean(0)), rtol=1e-6)
    np.testing.assert_allclose(s2["std"], g.std(0, ddof=1), rtol=1e-5)


def test_input_gradients_of_paper_mlp_and_output_errors():
    torch.manual_seed(0)
    model = PaperMLP(4, 5).eval()
    X = np.random.default_rng(0).normal(size=(10, 4))
    g = L.input_gradients(model, X, device="cpu")
    x = torch.tensor(X, dtype=torch.float32, requires_grad=True)
    ref = torch.autograd.grad(model(x).sum(), x)[0].numpy()
    np.testing.assert_allclose(g, ref, rtol=1e-4, atol=1e-6)
    assert not model.training
    with pytest.raises(NnsensError, match="output=1"):
        L.input_gradients(model, X, output=1, device="cpu")


def test_filter_normalized_direction():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    params = dict(m.named_parameters())
    d = L.filter_normalized_direction(params, torch.Generator().manual_seed(0))
    for k, p in params.items():
        if p.dim() == 1:
            assert torch.count_nonzero(d[k]) == 0
        else:
            np.testing.assert_allclose(d[k].norm(dim=1).numpy(), p.detach().norm(dim=1).numpy(),
                                       rtol=1e-5)
    d2 = L.filter_normalized_direction(params, torch.Generator().manual_seed(0), ignore_biasbn=False)
    assert torch.equal(d2["0.bias"], params["0.bias"].detach())


@pytest.mark.parametrize("batch_size", [1, 10, 1000])
def test_loss_surface_matches_direct_evaluation(batch_size):
    torch.manual_seed(1)
    model = PaperMLP(3, 4).eval()
    before = copy.deepcopy(model.state_dict())
    rng = np.random.default_rng(9)
    X = rng.normal(size=(30, 3))
    y = (rng.uniform(size=30) > 0.5).astype(float)
    cfg = L.SurfaceConfig(grid=5, span=0.5, seed=2)
    surf = L.loss_surface(model, X, y, cfg, device="cpu", batch_size=batch_size)
    assert surf.loss_kind == "bce" and surf.loss.shape == (5, 5)
    # the centre of the grid is the trained model's loss
    assert surf.loss[2, 2] == pytest.approx(surf.center, rel=1e-5)
    # one grid point recomputed by hand on a copy with moved weights
    params = {k: p.detach() for k, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(2)
    d1 = L.filter_normalized_direction(params, gen)
    d2 = L.filter_normalized_direction(params, gen)
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for k, p in moved.named_parameters():
            p.add_(-0.5 * d1[k] + 0.25 * d2[k])
        out = moved(torch.tensor(X, dtype=torch.float32)).clamp(1e-7, 1 - 1e-7)
    ref = nn.functional.binary_cross_entropy(out, torch.tensor(y, dtype=torch.float32)).item()
    assert surf.loss[0, 3] == pytest.approx(ref, rel=1e-4)
    for k, v_ in model.state_dict().items():  # the caller's model is untouched
        assert torch.equal(v_, before[k])


def test_loss_surface_mse_and_torchscript_fallback():
    torch.manual_seed(2)
    m = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))
    X = np.random.default_rng(1).normal(size=(12, 2))
    y = X[:, 0] * 3.0
    cfg = L.SurfaceConfig(grid=3, span=0.3)
    a = L.loss_surface(m, X, y, cfg, device="cpu")
    assert a.loss_kind == "mse"
    b = L.loss_surface(torch.jit.script(m), X, y, cfg, device="cpu")
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-5)
    with pytest.raises(NnsensError, match="bce"):
        L.loss_surface(m, X, y, L.SurfaceConfig(grid=3, loss="bce"), device="cpu")


def test_chain_rule_fast_path_equals_generic_input_derivatives():
    """The O(n d) path (derivatives in z times w^k) equals nested jvp directly in the inputs."""
    rng = np.random.default_rng(11)
    X, y = torch.tensor(rng.normal(size=(17, 5))), torch.tensor(rng.uniform(-1, 1, 17))
    w, b = torch.tensor(rng.normal(size=5)), torch.tensor(0.4, dtype=torch.float64)
    fast = L.tanh_unit_input_derivatives(X, w, b, y)
    generic = L.diagonal_derivatives(L.tanh_unit_loss, X, w, b, y)
    for f, g in zip(fast, generic):
        np.testing.assert_allclose(f.numpy(), g.numpy(), rtol=1e-12, atol=1e-14)


def test_descent_share_keeps_the_main_descent_only():
    loss = np.array([1.0, 0.6, 0.3, 0.2, 0.15, 0.12, 0.11, 0.105, 0.1])  # total drop 0.9
    full = L.falling_mask(loss)
    assert list(full) == [False] + [True] * 8
    # 80 % of the drop (loss <= 0.28) is first reached at entry 3 (0.2): entries 1..3 remain
    assert list(L.falling_mask(loss, 0.8)) == [False, True, True, True] + [False] * 5
    assert (L.falling_mask(loss, 1.0) == full).all()
    # a history rising during the descent and falling on the plateau: the window decides the trend
    hist = np.array([0, 1, 2, 3, 2.5, 2, 1.5, 1, 0.5])[:, None]
    full_tr = L.classify_trend(hist, loss)
    assert full_tr.direction[0] == "decreasing" and full_tr.label[0] == "rises then falls"
    tr = L.classify_trend(hist, loss, descent_share=0.8)
    assert tr.label[0] == "increasing" and tr.direction[0] == "increasing" and tr.n_epochs == 3
    with pytest.raises(NnsensError, match="descent_share=0"):
        L.LandscapeConfig(descent_share=0.0)
    with pytest.raises(NnsensError, match="descent_share=1.5"):
        L.LandscapeConfig(descent_share=1.5)


def test_final_per_sample_values_are_subsampled_on_large_data(monkeypatch):
    X, y = _toy(50, 2)
    monkeypatch.setattr(L.tanh_unit, "FINAL_ROWS", 20)
    h = L.train_tanh_units(X, y, L.LandscapeConfig(epochs=3, retrains=2), "cpu")
    rows = h.final_rows
    assert len(rows) == 20 and rows[0] == 0 and rows[-1] == 49 and (np.diff(rows) > 0).all()
    assert h.final[3].shape == (2, 20, 2)
    np.testing.assert_allclose(h.final[2][1], closed_form(X, h.weights[1, -1], h.bias[1, -1], y)[1][rows],
                               rtol=1e-4, atol=1e-6)
