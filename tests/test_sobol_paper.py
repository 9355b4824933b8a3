"""Issue 13, tabular paper: the preset, the authors' +1 % hidden-layer measure, the PCA options,
the retraining record and the checks that stop tabular mistakes from passing silently."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from nnsens_core import sobol as S
from nnsens_core.data import TabularData, load_csv
from nnsens_core.errors import NnsensError
from nnsens_core.loading import read_state_dict
from nnsens_core.training import TrainConfig
from nnsens_core.zoo import PaperMLP


def _toy_net() -> nn.Sequential:
    lin = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    return nn.Sequential(lin, nn.ReLU()).eval()


def test_step_sensitivity_hand_computed():
    net = _toy_net()
    X = np.array([[1.0, 1.0], [2.0, 0.0]])
    # layer "0" (linear, no bias): h(x + e) - h(x) = W[:, d] * 0.01 * x_d
    res = S.step_sensitivity(net, X, ("a", "b"), layer="0", step=0.01, device="cpu")
    np.testing.assert_allclose(res.values, [0.01 * 1.5 * math.sqrt(10), 0.01 * 0.5 * math.sqrt(20)],
                               rtol=1e-4)  # float32 model
    np.testing.assert_allclose(res.zero_share, [0.0, 0.5])
    # after the ReLU, a row whose pre-activation is negative does not change: x = (-1, 0.25)
    # gives W x = (-0.5, -2) -> both neurons off, so only row 0 counts for the output ReLU
    X2 = np.array([[1.0, 1.0], [-1.0, 0.25]])
    out = S.step_sensitivity(net, X2, ("a", "b"), layer="output", step=0.01, device="cpu")
    np.testing.assert_allclose(out.values, [0.01 * math.sqrt(10) / 2, 0.01 * math.sqrt(20) / 2],
                               rtol=1e-4)  # float32 model
    assert list(out.to_frame().columns) == ["mean_norm_change", "std", "share_of_zero_rows"]
    with pytest.raises(NnsensError, match="step"):
        S.step_sensitivity(net, X, ("a", "b"), step=0.0)
    with pytest.raises(NnsensError, match="nope"):
        S.step_sensitivity(net, X, ("a", "b"), layer="nope")


def test_layer_summary_means_over_live_neurons():
    torch.manual_seed(0)
    model = PaperMLP(3, 4, True).eval()
    prob = S.SobolProblem(("a", "b", "c"), ((0, 1), (0, 1), (0, 1)))
    res = S.run(model, prob, S.SobolConfig(n=64, second_order=False, num_resamples=10, layer="act1"),
                "cpu")
    df = res.layer_summary()
    layer = res.group("act1")
    live = ~layer.constant
    np.testing.assert_allclose(df["ST_mean"], layer.ST[live].mean(0))
    np.testing.assert_allclose(df["S1_mean"], layer.S1[live].mean(0))
    assert df.attrs["neurons"] == int(live.sum())


def _pca_case() -> np.ndarray:
    """Rows t (1, 1, 0)/sqrt2 for t = +-2 and s (0, 0, 1) for s = +-1: PC1 = (1, 1, 0)/sqrt2 with
    8/10 of the variance, PC2 = (0, 0, 1) with 2/10."""
    r = 2 ** -0.5
    return np.array([[2 * r, 2 * r, 0], [-2 * r, -2 * r, 0], [0, 0, 1], [0, 0, -1.0]])


def test_pca_formulas_and_fixed_components_hand_computed():
    X = _pca_case()
    var = S.pca_comparison(X, "abc", [3, 2, 1], standardize=False, n_components=2)
    np.testing.assert_allclose(var.explained[:2], [0.8, 0.2], atol=1e-12)
    np.testing.assert_allclose(var.importance, [0.4, 0.4, 0.2], atol=1e-12)
    ab = S.pca_comparison(X, "abc", [3, 2, 1], standardize=False, n_components=2,
                          importance="abs_loading")
    r = 2 ** -0.5
    np.testing.assert_allclose(ab.importance, np.array([r, r, 1]) / (2 * r + 1), atol=1e-12)
    assert ab.to_frame().loc["c", "pca_rank"] == 1  # the authors' formula ranks c first
    one = S.pca_comparison(X, "abc", [3, 2, 1], standardize=False, n_components=1,
                           importance="abs_loading")
    np.testing.assert_allclose(one.importance, [0.5, 0.5, 0], atol=1e-12)
    doc = one.to_dict()
    assert doc["config"]["importance"] == "abs_loading" and doc["config"]["n_components"] == 1
    assert doc["formula"].startswith("sum_c |loading_cd|")
    with pytest.raises(NnsensError, match="n_components=4"):
        S.pca_comparison(X, "abc", [3, 2, 1], n_components=4)
    with pytest.raises(NnsensError, match="importance"):
        S.pca_comparison(X, "abc", [3, 2, 1], importance="bogus")


def test_pca_rows_filter_by_class_independent_of_bounds():
    X = np.arange(20, dtype=float).reshape(10, 2)
    X[:, 1] = X[:, 1] ** 2
    y = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 0], float)
    data = TabularData(X, y, ("a", "b"), "Outcome")
    sub = S.pca_rows(data, "2:9", 1.0)
    np.testing.assert_array_equal(sub.X, X[[2, 4, 7, 8]])
    assert (sub.y == 1).all()
    with pytest.raises(NnsensError, match="Outcome = 5"):
        S.pca_rows(data, None, 5.0)


def test_target_warnings_on_pima_with_age_as_target(pima_path):
    age = load_csv(pima_path, target="Age")
    model = PaperMLP(8, 10, True).eval()
    warns = S.target_warnings(age, model)
    assert len(warns) == 2 and "not 0/1" in warns[0] and "'Outcome'" in warns[1]
    ok = load_csv(pima_path)  # Outcome, the paper's target
    assert S.target_warnings(ok, model) == []


def test_feature_reduction_refuses_non_binary_target_and_records_training():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 4))
    y = (X[:, 0] > 0).astype(float)
    data = TabularData(X, y, tuple("abcd"), "y")
    torch.manual_seed(0)
    model = PaperMLP(4, 6, True).eval()
    cfg = S.FeatureReductionConfig(k=2, seeds=(0, 1), train=TrainConfig(epochs=7, lr=0.1),
                                   full_batch=True)
    calls = []
    res = S.feature_reduction(model, data.rows("0:80"), data.rows("80:120"), [0.9, 0.1, 0.0, 0.0],
                              cfg, "cpu", progress=lambda d, t, stage="": calls.append((d, t)))
    assert calls == [(i, 42) for i in range(1, 43)]  # per epoch: 3 subsets x 2 seeds x 7 epochs
    assert all(len(run) == 7 for runs in res.losses.values() for run in runs)
    assert set(res.train_accuracy) == set(res.accuracy) and res.original_train_accuracy is not None
    doc = res.to_dict()
    assert doc["training"]["full_batch"] is True and doc["training"]["epochs"] == 7
    assert "train_acc_mean" in res.to_frame().columns
    bad = TabularData(X, np.round(np.abs(X[:, 1]) * 10), tuple("abcd"), "Age")
    with pytest.raises(NnsensError, match="'Age'.*not 0/1"):
        S.feature_reduction(model, bad.rows("0:80"), bad.rows("80:120"), [1, 2, 3, 4], cfg, "cpu")


def test_paper_preset_values():
    d = S.PAPER.as_dict()
    assert (d["train_rows"], d["test_rows"], d["bounds_rows"]) == ("0:500", "500:700", "0:700")
    assert (d["lr"], d["weight_decay"], d["second_order"], d["layer"]) == (0.01, 1e-3, True, "act1")
    assert "Jansen" in d["estimators"] and set(d["source"]) >= {"n", "train_rows", "step"}


def test_non_numeric_cell_is_quoted_with_its_row():
    csv = b"a,b,y\n1,2,0\n3,4,1\n5,x7,0\n"
    with pytest.raises(NnsensError, match=r"column 'b' is not numeric: data row 3 \(CSV line 4\) holds 'x7'"):
        load_csv(csv)


def test_whole_model_pickle_message_is_clean_and_names_the_fix():
    buf = io.BytesIO()
    torch.save(nn.Linear(2, 2), buf)
    with pytest.raises(NnsensError) as err:
        read_state_dict(buf.getvalue())
    msg = str(err.value)
    assert "\x1b" not in msg and "weights_only" not in msg and "WeightsUnpickler" not in msg
    assert "torch.save(model.state_dict(), path)" in msg and "TorchScript" in msg
    assert "torch.nn.modules.linear.Linear" in msg and msg.endswith(".")


def test_plots_palette_and_signed_heatmap():
    from ui import plots
    names = [f"feature {i}" for i in range(10)]
    fig = plots.palette_lines([1, 2], {n: (np.ones(2), np.zeros(2)) for n in names})
    colours = [t.line.color for t in fig.data if t.mode == "lines+markers"]
    assert len(set(colours)) == 10 and fig.layout.yaxis.automargin
    hm = plots.signed_heatmap(np.array([[np.nan, -0.2], [0.3, np.nan]]), "ab", "ab",
                              clip_negative=True)
    assert hm.data[0].zmid == 0 and hm.data[0].text[0][1] == "0.000" and hm.data[0].text[1][0] == "0.300"
