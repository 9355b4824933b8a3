"""The four readings of the paper's "1st / 2nd / 3rd derivative" (against plain autograd and finite
differences), curve-shape trend labels, the agreement table per (reading, order) and the preset."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.autograd.functional import hessian, jacobian

from nnsens_core import landscape as L
from nnsens_core.errors import NnsensError


def _case(n=7, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = torch.tensor(rng.normal(size=(n, d)))
    y = torch.tensor(rng.uniform(-1, 1, n))
    w = torch.tensor(rng.normal(size=d) * 0.7)
    b = torch.tensor(0.2, dtype=torch.float64)
    return X, y, w, b


def _loss_w(x, y, b):
    return lambda w: (torch.tanh(x @ w + b) - y) ** 2


def _by_autograd(X, y, w, b, reading):
    """Per-sample (n, d) of each order, from the definitions with autograd Jacobians/Hessians."""
    n, d = X.shape
    out = {1: np.zeros((n, d)), 2: np.zeros((n, d)), 3: np.zeros((n, d))}
    for i in range(n):
        if reading == "input_diagonal":
            f = lambda x: (torch.tanh(x @ w + b) - y[i]) ** 2  # noqa: E731
            p = X[i].clone()
        else:
            f = _loss_w(X[i], y[i], b)
            p = w.clone()
        g = jacobian(f, p)  # (d,)
        H = hessian(f, p)  # (d, d)
        T = jacobian(lambda q: hessian(f, q, create_graph=True), p)  # (d, d, d) third derivatives
        if reading in ("input_diagonal", "weight_diagonal"):
            v1, v2, v3 = g, torch.diagonal(H), torch.einsum("jjj->j", T)
        elif reading == "hessian_row_sums":
            v1, v2, v3 = g, H.sum(1), T.sum((1, 2))
        else:  # first column of the weight Hessian: d2L/dw_j dw_1, d3L/dw_j dw_1 dw_1
            v1, v2, v3 = g, H[:, 0], T[:, 0, 0]
        for k, v in zip((1, 2, 3), (v1, v2, v3)):
            out[k][i] = v.numpy()
    return out


@pytest.mark.parametrize("reading", L.READINGS)
def test_each_reading_equals_autograd_of_its_definition(reading):
    X, y, w, b = _case()
    got = L.reading_derivatives(X, w, b, y, reading)
    want = _by_autograd(X, y, w, b, reading)
    for k in (1, 2, 3):
        np.testing.assert_allclose(got[k - 1].numpy(), want[k], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("reading", ["weight_diagonal", "hessian_row_sums", "hessian_first_column"])
def test_third_derivative_is_the_finite_difference_of_the_second(reading):
    """Independent of autograd: the 3rd derivative along a reading's direction is the central
    difference of its 2nd derivative (and the 2nd that of the 1st)."""
    X, y, w, b = _case(5, 3, seed=3)
    d = X.shape[1]
    h = 1e-5
    d1, d2, d3 = (t.numpy() for t in L.reading_derivatives(X, w, b, y, reading))
    ones = torch.ones(d, dtype=torch.float64)
    for j in range(d):
        e = torch.zeros(d, dtype=torch.float64)
        e[j] = 1
        # the direction of the extra derivative: w_j (diagonal), all weights (row sums), w_1 (column)
        u = {"weight_diagonal": e, "hessian_row_sums": ones,
             "hessian_first_column": torch.eye(d, dtype=torch.float64)[0]}[reading]
        d2p = L.reading_derivatives(X, w + h * u, b, y, reading)[1].numpy()[:, j]
        d2m = L.reading_derivatives(X, w - h * u, b, y, reading)[1].numpy()[:, j]
        np.testing.assert_allclose((d2p - d2m) / (2 * h), d3[:, j], rtol=1e-5, atol=1e-7)
        d1p = L.reading_derivatives(X, w + h * u, b, y, reading)[0].numpy()[:, j]
        d1m = L.reading_derivatives(X, w - h * u, b, y, reading)[0].numpy()[:, j]
        np.testing.assert_allclose((d1p - d1m) / (2 * h), d2[:, j], rtol=1e-5, atol=1e-7)


def test_input_reading_is_the_original_chain_rule_path():
    X, y, w, b = _case(9, 4, seed=5)
    for a, c in zip(L.reading_derivatives(X, w, b, y, "input_diagonal"),
                    L.tanh_unit_input_derivatives(X, w, b, y)):
        np.testing.assert_allclose(a.numpy(), c.numpy(), rtol=1e-12, atol=1e-14)


def test_reading_means_and_histories_equal_per_sample_means():
    X, y, _, _ = _case(11, 3, seed=6)
    rng = np.random.default_rng(0)
    W = torch.tensor(rng.normal(size=(4, 3)))
    b = torch.tensor(rng.normal(size=4))
    means = L.reading_means(X, W, b, y)
    for r in L.READINGS:
        per = L.readings_per_sample(X, W, b, y, r)
        for k in L.ORDERS:
            np.testing.assert_allclose(means[r][k].numpy(), per[k - 1].mean(1).numpy(), rtol=1e-10,
                                       atol=1e-13)
    mean, quant, all_means = L.reading_histories(W, b, X, y, batch_size=3, reading="hessian_row_sums")
    np.testing.assert_allclose(mean[2].numpy(), means["hessian_row_sums"][2].numpy(), rtol=1e-10)
    assert quant[3].shape == (4, len(L.QUANTILES), 3)
    np.testing.assert_allclose(all_means["weight_diagonal"][3].numpy(),
                               means["weight_diagonal"][3].numpy(), rtol=1e-10)


# ---------------------------------------------------------------- trend labels

@pytest.mark.parametrize("curve, label", [
    (np.linspace(0, 1, 30) ** 2, "increasing"),
    (-np.log1p(np.arange(30.0)), "decreasing"),
    (-(np.arange(30.0) - 12) ** 2, "rises then falls"),
    ((np.arange(30.0) - 20) ** 2, "falls then rises"),
    (np.full(30, 0.7), "flat"),
    (0.7 + 1e-9 * np.sin(np.arange(30.0)), "flat"),  # float noise on a constant
    (np.sin(np.arange(30.0) / 3), "fluctuates"),
    (np.arange(30.0) + 0.5 * (np.arange(30) % 2), "increasing"),  # small wiggles do not count
])
def test_curve_shape_on_synthetic_curves(curve, label):
    assert L.curve_shape(curve) == label


def test_classify_trend_shape_and_direction():
    T = 25
    loss = np.linspace(1, 0.1, T)  # falls every epoch
    e = np.arange(T, dtype=float)
    hist = np.stack([e, -e, -(e - 8) ** 2, (e - 12) ** 2, np.ones(T)], 1)
    tr = L.classify_trend(hist, loss)
    assert list(tr.label) == ["increasing", "decreasing", "rises then falls", "falls then rises", "flat"]
    assert list(tr.direction[:3]) == ["increasing", "decreasing", "decreasing"]
    assert tr.direction[4] == "flat"


# ---------------------------------------------------------------- the experiment

@pytest.fixture(scope="module")
def res():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(120, 3))
    y = (X[:, 0] - X[:, 2] + 0.3 * rng.normal(size=120) > 0).astype(float)
    return L.run_landscape(X, y, L.LandscapeConfig(epochs=25, retrains=3, lr=0.2,
                                                   reading="weight_diagonal"),
                           feature_names=("a", "b", "c"), device="cpu")


def test_every_reading_and_order_is_scored(res):
    tab = res.agreement_table()
    assert len(tab) == len(L.READINGS) * len(L.ORDERS)
    assert list(tab.columns[:3]) == ["reading", "order", "formula"]
    # the primary reading's 2nd order is what trends / agree hold
    assert res.history.reading == "weight_diagonal"
    np.testing.assert_allclose(res.history.mean[2], res.history.readings["weight_diagonal"][2],
                               rtol=1e-4, atol=1e-7)  # float32: per-sample mean vs matrix product
    assert res.agreement_rate() == res.agreement("weight_diagonal", 2)["rate"]
    for r in L.READINGS:
        for k in L.ORDERS:
            a = res.reading_agree[r][k]
            det = [x for x in a.ravel() if x is not None]
            row = tab[(tab.reading == r) & (tab.order == k)].iloc[0]
            assert row.rate == pytest.approx(np.mean(det)) if det else row.rate is None
            assert row.features_agreeing + row.features_disagreeing <= 3
    m = res.agreement_matrix()
    assert m.shape == (4, 3)
    assert m[1, 1] == pytest.approx(res.agreement("weight_diagonal", 2)["rate"])


def test_verdict_names_each_reading_and_counts(res):
    text = res.verdict()
    for r in L.READINGS:
        a = res.agreement(r, 2)
        assert f"{L.READING_LABELS[r]} reading for {a['features_agreeing']} of 3 features" in text
    doc = res.to_dict()
    assert doc["reading"] == "weight_diagonal" and doc["verdict"] == text
    assert len(doc["agreement_by_reading"]) == 12
    f = doc["features"][0]
    assert set(f["readings"]) == set(L.READINGS) and set(f["readings"]["input_diagonal"]) == {"1", "2", "3"}
    import json
    json.dumps(doc)


def test_reading_config_is_checked_and_preset():
    with pytest.raises(NnsensError, match="reading='hessian'"):
        L.LandscapeConfig(reading="hessian")
    with pytest.raises(NnsensError, match="turn_share=0"):
        L.LandscapeConfig(turn_share=0.0)
    cfg, rows = L.paper_preset()
    assert cfg.reading == "weight_diagonal"
    sources = {r["setting"]: r["source"] for r in rows}
    assert sources["reading"].startswith("paper") and sources["lr"].startswith("nnsens default")
