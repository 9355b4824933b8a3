"""nnsens_core.sobol: SALib equivalence, Ishigami, hooks/targets, batching, studies, bad input."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from nnsens_core import sobol as S
from nnsens_core._hooks import hook_count
from nnsens_core.data import TabularData
from nnsens_core.errors import NnsensError
from nnsens_core.training import TrainConfig
from nnsens_core.zoo import PaperMLP

salib_sample = pytest.importorskip("SALib.sample.sobol")
salib_analyze = pytest.importorskip("SALib.analyze.sobol")
from SALib.test_functions import Ishigami  # noqa: E402

ISHIGAMI = S.SobolProblem(("x1", "x2", "x3"), ((-np.pi, np.pi),) * 3)


def _salib(problem, Y, second_order, seed, resamples=100, conf=0.95):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return salib_analyze.analyze(problem.to_salib(), np.asarray(Y, float).copy(),
                                     calc_second_order=second_order, num_resamples=resamples,
                                     conf_level=conf, seed=seed)


def _mlp(d=4, hidden=6, seed=0) -> PaperMLP:
    torch.manual_seed(seed)
    m = PaperMLP(d, hidden)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for bn in (m.bn1, m.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return m.eval()


# --------------------------------------------------------------------------- sampling

@pytest.mark.parametrize("second_order", [True, False])
def test_sample_equals_salib_exactly(second_order):
    problem = S.SobolProblem(("a", "b", "c", "d"), ((0, 1), (-2, 5), (10, 11), (0.5, 0.75)))
    ours = S.sample(problem, 32, second_order, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = salib_sample.sample(problem.to_salib(), 32, calc_second_order=second_order, seed=5)
    assert ours.shape == ((2 * 4 + 2 if second_order else 4 + 2) * 32, 4)
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("n,bounds,second_order,seed", [
    (1, ((0, 1),), True, 0),
    (2, ((-1e6, 1e6), (3, 3.5)), False, 1),
    (16, ((-3, -1), (0, 1e-3), (5, 50)), True, 123),
    (64, tuple((-i, 2.0 ** i) for i in range(8)), True, 2**31 - 1),
    (256, tuple((0.1 * i, 1 + i) for i in range(8)), False, 99),
    (1024, tuple((i, i + 0.5) for i in range(5)), True, 7),
])
def test_sample_equals_salib_over_cases(n, bounds, second_order, seed):
    """Base sequence, scramble and seed, the A / AB_j / BA_j / B row order and the scaling equal
    SALib 1.6's sampler (to 1e-12; in fact bit for bit) for several N, D, orders, seeds, bounds."""
    problem = S.SobolProblem(tuple(f"x{i}" for i in range(len(bounds))), bounds)
    ours = S.sample(problem, n, second_order, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = salib_sample.sample(problem.to_salib(), n, calc_second_order=second_order, seed=seed)
    assert ours.shape == ref.shape == (S.rows_per_sample(problem.D, second_order) * n, problem.D)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(ours, ref)


def test_sample_seed_changes_the_points():
    a, b = (S.sample(ISHIGAMI, 8, True, seed=s) for s in (1, 2))
    assert not np.allclose(a, b)


def test_sample_prefix_is_smaller_sample():
    big = S.sample(ISHIGAMI, 64, False, seed=2)
    small = S.sample(ISHIGAMI, 16, False, seed=2)
    np.testing.assert_array_equal(big[: len(small)], small)


# --------------------------------------------------------------------------- estimators vs SALib

@pytest.mark.parametrize("second_order", [True, False])
def test_point_estimates_and_cis_equal_salib_same_seed(second_order):
    X = S.sample(ISHIGAMI, 512, second_order, seed=1)
    y1 = Ishigami.evaluate(X)
    y2 = np.tanh(X[:, 0] * X[:, 2]) + 0.3 * X[:, 1] ** 2 + 5.0  # non-centred second output
    ours = S.analyze(ISHIGAMI, np.stack([y1, y2], 1), second_order=second_order,
                     num_resamples=60, seed=7)
    for m, y in enumerate((y1, y2)):
        ref = _salib(ISHIGAMI, y, second_order, seed=7, resamples=60)
        for k in ("S1", "ST"):
            np.testing.assert_allclose(getattr(ours, k)[m], ref[k], rtol=0, atol=1e-9)
            np.testing.assert_allclose(getattr(ours, k + "_conf")[m], ref[k + "_conf"], rtol=1e-8)
        if second_order:
            np.testing.assert_allclose(ours.S2[m], ref["S2"], rtol=0, atol=1e-9)  # NaN where SALib has NaN
            np.testing.assert_allclose(ours.S2_conf[m], ref["S2_conf"], rtol=1e-8)
        else:
            assert ours.S2 is None


def test_cis_statistically_match_salib_other_seeds():
    X = S.sample(ISHIGAMI, 1024, True, seed=3)
    y = Ishigami.evaluate(X)
    # the CI is a bootstrap std: with R=1000 two independent draws agree to a few percent
    ref = _salib(ISHIGAMI, y, True, seed=11, resamples=1000)
    ours = S.analyze(ISHIGAMI, y, second_order=True, num_resamples=1000, seed=12)
    for k in ("S1_conf", "ST_conf"):
        np.testing.assert_allclose(getattr(ours, k)[0], ref[k], rtol=0.1)
    assert not np.allclose(ours.S1_conf[0], ref["S1_conf"], rtol=1e-6)  # really other draws


def test_conf_level_scales_ci():
    X = S.sample(ISHIGAMI, 256, False, seed=0)
    y = Ishigami.evaluate(X)
    a = S.analyze(ISHIGAMI, y, second_order=False, num_resamples=50, seed=4, conf_level=0.95)
    b = S.analyze(ISHIGAMI, y, second_order=False, num_resamples=50, seed=4, conf_level=0.68)
    ratio = S.z_value(0.95) / S.z_value(0.68)
    np.testing.assert_allclose(a.S1_conf / b.S1_conf, ratio, rtol=1e-10)
    np.testing.assert_allclose(a.S1, b.S1)


def test_ishigami_analytic_values():
    X = S.sample(ISHIGAMI, 2**13, True, seed=0)
    ind = S.analyze(ISHIGAMI, Ishigami.evaluate(X), second_order=True, num_resamples=50, seed=1)
    np.testing.assert_allclose(ind.S1[0], [0.314, 0.442, 0.0], atol=0.02)
    np.testing.assert_allclose(ind.ST[0], [0.558, 0.442, 0.244], atol=0.02)
    assert ind.S2[0, 0, 2] == pytest.approx(0.244, abs=0.03)  # x1-x3 interaction
    assert abs(ind.S2[0, 0, 1]) < 0.03 and abs(ind.S2[0, 1, 2]) < 0.03
    assert (ind.S1_conf[0] > 0).all() and (ind.S1_conf[0] < 0.05).all()


def test_row_chunking_never_changes_results():
    X = S.sample(ISHIGAMI, 256, True, seed=0)
    y = Ishigami.evaluate(X)
    a = S.analyze(ISHIGAMI, y, num_resamples=30, seed=2)
    b = S.analyze(ISHIGAMI, y, num_resamples=30, seed=2, chunk_bytes=4096)  # many row chunks
    for k in ("S1", "S1_conf", "ST", "ST_conf", "S2", "S2_conf"):
        np.testing.assert_allclose(getattr(a, k), getattr(b, k), atol=1e-12, rtol=1e-10)


def test_constant_output_gives_zero_not_nan():
    X = S.sample(ISHIGAMI, 64, True, seed=0)
    Y = np.stack([Ishigami.evaluate(X), np.full(len(X), 3.0)], 1)
    ind = S.analyze(ISHIGAMI, Y, num_resamples=20, seed=1)
    assert ind.constant.tolist() == [False, True]
    for k in ("S1", "S1_conf", "ST", "ST_conf"):
        assert np.all(getattr(ind, k)[1] == 0)
    assert np.all(np.nan_to_num(ind.S2[1]) == 0) and np.isfinite(ind.S1).all()


def test_analyze_rejects_wrong_layout_and_bad_values():
    X = S.sample(ISHIGAMI, 16, True, seed=0)
    y = Ishigami.evaluate(X)
    with pytest.raises(NnsensError, match="second_order"):
        S.analyze(ISHIGAMI, y[:-1], second_order=True)
    with pytest.raises(NnsensError, match="second_order"):
        S.analyze(ISHIGAMI, y, second_order=False)  # 16*8 rows is not a multiple of 5
    with pytest.raises(NnsensError, match="NaN"):
        S.analyze(ISHIGAMI, np.where(np.arange(len(y)) == 3, np.nan, y))
    with pytest.raises(NnsensError, match="num_resamples"):
        S.analyze(ISHIGAMI, y, num_resamples=1)
    with pytest.raises(NnsensError, match="needs about"):
        S.analyze(ISHIGAMI, y, memory_limit=1000)


# --------------------------------------------------------------------------- config & problem

def test_config_validation():
    with pytest.raises(NnsensError, match="power of two; use 64 or 128"):
        S.SobolConfig(n=100)
    with pytest.raises(NnsensError, match="conf_level"):
        S.SobolConfig(conf_level=1.0)
    with pytest.raises(NnsensError, match="num_resamples"):
        S.SobolConfig(num_resamples=1)
    with pytest.raises(NnsensError, match="layer"):
        S.SobolConfig(layer="")
    cfg = S.SobolConfig(n=256, layer="act1")
    assert cfg.targets == ("output", "act1") and hash(cfg) == hash(S.SobolConfig(n=256, layer="act1"))


def test_problem_bounds_errors():
    with pytest.raises(NnsensError, match="'b'.*min must be < max"):
        S.SobolProblem(("a", "b"), ((0, 1), (2, 2)))
    with pytest.raises(NnsensError, match="'a'.*min must be < max"):
        S.SobolProblem(("a", "b"), ((3, 1), (0, 1)))
    with pytest.raises(NnsensError, match="one \\(min, max\\) pair per feature"):
        S.SobolProblem(("a", "b"), ((0, 1),))
    data = TabularData(np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]]), np.zeros(3), ("u", "k"), "y")
    with pytest.raises(NnsensError, match="feature 'k' is constant"):
        S.SobolProblem.from_data(data)
    ok = TabularData(np.array([[1.0, 5.0], [2.0, 6.0]]), np.zeros(2), ("u", "k"), "y")
    assert S.SobolProblem.from_data(ok).bounds == ((1.0, 2.0), (5.0, 6.0))


# --------------------------------------------------------------------------- evaluate / hooks

def test_hidden_layers_of_paper_mlp():
    m = _mlp(4, 6)
    layers = S.hidden_layers(m, 4)
    assert layers == {"fc1": 6, "bn1": 6, "act1": 6, "fc2": 1, "bn2": 1, "out": 1}
    assert S.default_layer(m, 4) == "act1"
    assert hook_count(m) == 0


def test_evaluate_one_pass_matches_manual_forward_and_batch_size():
    m = _mlp(4, 6)
    problem = S.SobolProblem(tuple("abcd"), ((0, 1), (-1, 1), (0, 10), (2, 3)))
    X = S.sample(problem, 16, False, seed=0)
    calls = []
    h = m.register_forward_hook(lambda *_: calls.append(1))
    out = S.evaluate(m, X, ("output", "act1", "bn2"), "cpu", batch_size=1000)
    h.remove()
    assert len(calls) == 1  # one forward pass for all targets
    xt = torch.as_tensor(X, dtype=torch.float32)
    with torch.no_grad():
        act = m.act1(m.bn1(m.fc1(xt)))
        bn2 = m.bn2(m.fc2(act))
        y = m(xt)
    np.testing.assert_allclose(out["act1"], act.double().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out["bn2"], bn2.double().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out["output"][:, 0], y.double().numpy(), rtol=1e-6, atol=1e-7)
    assert out["output"].dtype == np.float64 and out["act1"].shape == (len(X), 6)
    for bs in (1, 7, 33):
        other = S.evaluate(m, X, ("output", "act1"), "cpu", batch_size=bs)
        np.testing.assert_allclose(other["act1"], out["act1"], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(other["output"], out["output"], rtol=1e-6, atol=1e-7)
    assert hook_count(m) == 0


def test_evaluate_does_not_touch_a_model_in_train_mode():
    m = _mlp(4, 6).train()
    before = {k: t.clone() for k, t in m.state_dict().items()}
    S.evaluate(m, np.random.default_rng(0).normal(size=(20, 4)), ("output",), "cpu")
    assert m.training
    for k, t in m.state_dict().items():
        assert torch.equal(t, before[k]), k


def test_evaluate_errors():
    m = _mlp(4, 6)
    with pytest.raises(NnsensError, match="takes 4 inputs but the data has 3"):
        S.evaluate(m, np.zeros((5, 3)), ("output",), "cpu")
    with pytest.raises(NnsensError, match="does not exist"):
        S.evaluate(m, np.zeros((5, 4)), ("output", "nope"), "cpu")
    conv = nn.Sequential(nn.Linear(4, 12), nn.Unflatten(1, (3, 4)), nn.Flatten())
    with pytest.raises(NnsensError, match="2-D"):
        S.evaluate(conv, np.zeros((5, 4)), ("1",), "cpu")
    assert hook_count(m) == 0 and hook_count(conv) == 0


# --------------------------------------------------------------------------- run

def _linear_model(weights):
    lin = nn.Linear(len(weights), 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([weights], dtype=torch.float32))
        lin.bias.zero_()
    return lin.eval()


def test_run_linear_model_hand_computed_indices():
    # y = 1*x1 + 2*x2 + 0*x3, x ~ U(0, 1): V_i = w_i^2 / 12 -> S1 = ST = w^2 / sum(w^2)
    model = _linear_model([1.0, 2.0, 0.0])
    problem = S.SobolProblem(("a", "b", "c"), ((0, 1),) * 3)
    res = S.run(model, problem, S.SobolConfig(n=2048, num_resamples=20), "cpu")
    out = res.output()
    np.testing.assert_allclose(out.S1[0], [0.2, 0.8, 0.0], atol=0.01)
    np.testing.assert_allclose(out.ST[0], [0.2, 0.8, 0.0], atol=0.01)
    np.testing.assert_allclose(np.nan_to_num(out.S2[0]), 0.0, atol=0.02)


def test_run_with_layer_and_exports():
    m = _mlp(4, 6)
    problem = S.SobolProblem(tuple("abcd"), ((0, 1), (-1, 1), (0, 10), (2, 3)))
    seen = []
    res = S.run(m, problem, S.SobolConfig(n=128, layer="act1", num_resamples=20), "cpu",
                batch_size=97, progress=lambda d, t, stage="": seen.append(stage))
    assert res.targets[0] == "output" and res.targets[1:] == tuple(f"act1[{i}]" for i in range(6))
    assert res.group("act1").S1.shape == (6, 4)
    assert {"sampling", "evaluation", "analysis"} <= set(seen)
    # the layer's indices equal analysing its evaluated outputs directly
    X = S.sample(problem, 128, True, 0)
    Y = S.evaluate(m, X, ("act1",), "cpu")["act1"]
    direct = S.analyze(problem, Y, num_resamples=20, seed=0)
    np.testing.assert_allclose(res.group("act1").ST, direct.ST, atol=1e-9)
    doc = json.loads(json.dumps(res.to_dict()))
    assert doc["names"] == list("abcd") and doc["N"] == 128 and len(doc["S2"]) == 4
    assert doc["S2"][0][0] is None and isinstance(doc["S2"][0][1], float)
    assert set(doc["targets"]) == set(res.targets)
    frames = res.to_frames()
    assert list(frames["indices"].columns) == ["S1", "S1_conf", "ST", "ST_conf"]
    assert frames["act1 ST"].shape == (6, 4) and len(frames["second_order"]) == 6
    assert len(frames["all targets"]) == 7 * 4
    assert hook_count(m) == 0


def test_run_refuses_too_much_memory_and_unknown_layer():
    m = _mlp(4, 6)
    problem = S.SobolProblem(tuple("abcd"), ((0, 1),) * 4)
    with pytest.raises(NnsensError, match="needs about .* GiB"):
        S.run(m, problem, S.SobolConfig(n=2**20), "cpu", memory_limit=2**28)
    with pytest.raises(NnsensError, match="choose one of"):
        S.run(m, problem, S.SobolConfig(n=16, layer="nope"), "cpu")
    with pytest.raises(NnsensError, match="takes 4 inputs but the data has 3"):
        S.run(m, S.SobolProblem(tuple("abc"), ((0, 1),) * 3), S.SobolConfig(n=16), "cpu")


# --------------------------------------------------------------------------- studies

def test_convergence_matches_independent_runs():
    model = _linear_model([1.0, 2.0, 0.5])
    problem = S.SobolProblem(("a", "b", "c"), ((0, 1),) * 3)
    cfg = S.SobolConfig(num_resamples=20, seed=3)
    conv = S.convergence(model, problem, S.powers_of_two(32, 256), cfg, "cpu")
    assert conv.ns == (32, 64, 128, 256) and conv.S1.shape == (4, 3)
    X = S.sample(problem, 64, False, 3)
    y = S.evaluate(model, X, ("output",), "cpu")["output"]
    ref = S.analyze(problem, y, second_order=False, num_resamples=20, seed=3)
    np.testing.assert_allclose(conv.ST[1], ref.ST[0], atol=1e-9)
    np.testing.assert_allclose(conv.ST_conf[1], ref.ST_conf[0], atol=1e-9)
    assert conv.ST_conf[-1].mean() < conv.ST_conf[0].mean()  # CIs shrink with N
    assert len(conv.to_frame()) == 12
    with pytest.raises(NnsensError, match="power of two"):
        S.powers_of_two(30, 256)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny networks train faster on one thread (and the test CPU is shared)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _toy_data(n=240, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5)) * [1, 1, 1, 1, 1] + [0, 5, 0, 0, 0]
    y = (X[:, 0] + 0.8 * X[:, 2] > 0).astype(float)
    return TabularData(X, y, tuple(f"f{i}" for i in range(5)), "y")


def test_feature_reduction_top_beats_bottom_and_keeps_model():
    data = _toy_data()
    train, test = data.rows("0:160"), data.rows("160:240")
    model = _mlp(5, 8)
    before = {k: t.clone() for k, t in model.state_dict().items()}
    st = np.array([0.6, 0.0, 0.4, 0.01, 0.02])
    cfg = S.FeatureReductionConfig(k=2, seeds=(0, 1), train=TrainConfig(epochs=12, lr=0.1))
    calls = []
    res = S.feature_reduction(model, train, test, st, cfg, "cpu", progress=lambda d, t, stage="": calls.append(d))
    assert res.subsets["top-2"] == ("f0", "f2") and res.subsets["bottom-2"] == ("f1", "f3")
    frame = res.to_frame()
    assert frame.loc["top-2", "acc_mean"] > frame.loc["bottom-2", "acc_mean"] + 0.15
    assert frame.loc["top-2", "acc_mean"] > 0.8
    # progress advances per epoch (issue 13): 3 subsets x 2 seeds x 12 epochs
    assert calls == list(range(1, 73)) and len(res.accuracy["all 5"]) == 2
    for k, t in model.state_dict().items():
        assert torch.equal(t, before[k]), k
    with pytest.raises(NnsensError, match="k=5"):
        S.feature_reduction(model, train, test, st, S.FeatureReductionConfig(k=5), "cpu")


def test_feature_reduction_generic_model_masks_columns():
    data = _toy_data()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    cfg = S.FeatureReductionConfig(k=2, seeds=(0,), train=TrainConfig(epochs=10, lr=0.1))
    res = S.feature_reduction(model, data.rows("0:160"), data.rows("160:240"),
                              [0.6, 0.0, 0.4, 0.01, 0.02], cfg, "cpu")
    assert res.accuracy["top-2"][0] > res.accuracy["bottom-2"][0]


def test_pca_comparison_hand_made():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(400, 1))
    X = np.hstack([base * 3, base * 3 + 0.01 * rng.normal(size=(400, 1)), rng.normal(size=(400, 1)) * 0.1])
    pca = S.pca_comparison(X, ("a", "b", "c"), [0.5, 0.4, 0.1], share=0.6, standardize=False)
    assert pca.n_components == 1 and pca.explained[0] > 0.99
    np.testing.assert_allclose(pca.loadings[0], [2 ** -0.5, 2 ** -0.5, 0], atol=0.01)
    assert pca.importance[2] < 0.01 and pca.to_frame().loc["c", "pca_rank"] == 3
    # standardised: a and b share one component (2/3 of the variance), c is the second one
    std = S.pca_comparison(X, ("a", "b", "c"), [0.1, 0.2, 0.9], share=0.6, standardize=True)
    assert std.n_components == 1 and std.explained[0] == pytest.approx(2 / 3, abs=0.01)
    assert std.spearman < 0 and std.importance[2] < 0.01
    assert S.pca_comparison(X, ("a", "b", "c"), [0.1, 0.2, 0.9], share=0.9).n_components == 2
    assert list(std.to_frame().columns) == ["sobol", "sobol_rank", "pca_importance", "pca_rank"]
    with pytest.raises(NnsensError, match="share"):
        S.pca_comparison(X, ("a", "b", "c"), [0.1, 0.4, 0.5], share=0.0)


# --------------------------------------------------------------------------- hidden-layer targets

def _toy_two_layer() -> nn.Sequential:
    """h = ReLU(W1 x + b1) with h0 = x1 + 2 x2, h1 = x3, h2 = ReLU(-1) = 0 (dead) on x in [0, 1]^3;
    y = h0 + h1 = x1 + 2 x2 + x3."""
    net = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]))
        net[0].bias.copy_(torch.tensor([0.0, 0.0, -1.0]))
        net[2].weight.copy_(torch.tensor([[1.0, 1.0, 0.0]]))
        net[2].bias.zero_()
    return net.eval()


def test_hidden_layer_neurons_hand_computed():
    # linear in independent U(0,1) inputs: S1 = ST = w_i^2 / sum(w^2), S2 = 0
    net = _toy_two_layer()
    assert S.hidden_layers(net, 3) == {"0": 3, "1": 3, "2": 1}
    assert S.default_layer(net, 3) == "1"  # the first activation with more than one neuron
    problem = S.SobolProblem(("x1", "x2", "x3"), ((0, 1),) * 3)
    res = S.run(net, problem, S.SobolConfig(n=2048, layer="1", num_resamples=20), "cpu")
    assert res.targets == ("output", "1[0]", "1[1]", "1[2]")
    layer = res.group("1")
    expected = np.array([[0.2, 0.8, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(layer.S1, expected, atol=0.01)
    np.testing.assert_allclose(layer.ST, expected, atol=0.01)
    np.testing.assert_allclose(np.nan_to_num(layer.S2[:2]), 0.0, atol=0.02)
    assert layer.constant.tolist() == [False, False, True]  # the dead neuron: zeros, not NaN
    np.testing.assert_allclose(res.output().S1[0], [1 / 6, 4 / 6, 1 / 6], atol=0.01)
    np.testing.assert_allclose(res.output().ST[0], [1 / 6, 4 / 6, 1 / 6], atol=0.01)
    frame = res.to_frames()["1 ST"]  # the neuron x feature table behind the heatmap
    assert frame.shape == (3, 3) and list(frame.index) == ["1[0]", "1[1]", "1[2]"]
    assert hook_count(net) == 0


def test_run_batch_size_never_changes_indices():
    m = _mlp(4, 6)
    problem = S.SobolProblem(tuple("abcd"), ((0, 1), (-1, 1), (0, 10), (2, 3)))
    cfg = S.SobolConfig(n=128, layer="act1", num_resamples=20, seed=2)
    ref = S.run(m, problem, cfg, "cpu", batch_size=100_000)
    for bs in (1, 13, 500):
        other = S.run(m, problem, cfg, "cpu", batch_size=bs)
        for k in ("S1", "S1_conf", "ST", "ST_conf", "S2", "S2_conf"):
            # float32 outputs of a 1-row GEMM may differ in the last bit from a 100,000-row one
            # (other kernels on some CPUs), which a near-constant neuron's CI magnifies to ~2e-6
            # relative: rtol 1e-5 allows that, a wrong or repeated row moves indices far more
            np.testing.assert_allclose(getattr(other.indices, k), getattr(ref.indices, k),
                                       rtol=1e-5, atol=1e-6, err_msg=f"{k} at batch size {bs}")


def test_problem_rejects_non_finite_bounds_and_bad_config():
    with pytest.raises(NnsensError, match="'b'.*finite"):
        S.SobolProblem(("a", "b"), ((0, 1), (0, float("nan"))))  # a cleared cell of the bounds table
    with pytest.raises(NnsensError, match="n=3 is not a power of two"):
        S.SobolConfig(n=3)
    with pytest.raises(NnsensError, match="n=0"):
        S.convergence(nn.Linear(2, 1), S.SobolProblem(("a", "b"), ((0, 1),) * 2), (0, 64), device="cpu")


def test_memory_refusal_names_the_estimate():
    problem = S.SobolProblem(tuple("abcdefgh"), ((0, 1),) * 8)
    cfg = S.SobolConfig(n=2**17, layer="act1")
    need = S.estimate_bytes(problem, cfg, 11)
    with pytest.raises(NnsensError) as err:
        S.run(_mlp(8, 10), problem, cfg, "cpu", memory_limit=need / 2)
    msg = str(err.value)
    assert f"needs about {need / 2**30:.2f} GiB" in msg and f"{need / 2 / 2**30:.2f} GiB allowed" in msg
    with pytest.raises(NnsensError, match="convergence study up to N=131072 needs about"):
        S.convergence(_mlp(8, 10), problem, (2**10, 2**17), cfg, "cpu", memory_limit=2**20)


# --------------------------------------------------------------------------- paper reference case

def test_pima_paper_mlp_reference_case(pima_path):
    """Paper setting: Pima, MLP 8-10-1 with BatchNorm, SGD lr 0.01 wd 1e-3, raw features, train
    0:500, test 500:700, bounds = min/max of rows 0:700; equal to SALib on the same samples."""
    from nnsens_core.data import load_csv
    from nnsens_core.demos import train_paper_mlp
    data = load_csv(pima_path, "Outcome")
    torch.manual_seed(0)  # train_paper_mlp builds the MLP before it seeds: fix its initial weights
    model, _ = train_paper_mlp(data, "0:500", cfg=TrainConfig(), device="cpu")  # paper defaults
    te = data.rows("500:700")
    acc = float(((S.evaluate(model, te.X, device="cpu")["output"][:, 0] >= 0.5) == te.y).mean())
    assert acc > 0.7
    problem = S.SobolProblem.from_data(data.rows("0:700"))
    assert problem.bounds[1] == (0.0, 199.0)  # Glucose
    X = S.sample(problem, 512, True, seed=4)
    Y = S.evaluate(model, X, device="cpu")["output"][:, 0]
    ours = S.analyze(problem, Y, second_order=True, num_resamples=100, seed=4)
    ref = _salib(problem, Y, True, seed=4)
    for k in ("S1", "ST", "S2"):
        np.testing.assert_allclose(getattr(ours, k)[0], ref[k], rtol=0, atol=1e-9)
    for k in ("S1_conf", "ST_conf", "S2_conf"):
        np.testing.assert_allclose(getattr(ours, k)[0], ref[k], rtol=0.1)
    assert problem.names[int(np.argmax(ours.ST[0]))] == "Glucose"


@pytest.mark.parametrize("N", [2, 4, 64, 2**10, 3, 100])
@pytest.mark.parametrize("R", [2, 7, 100])
@pytest.mark.parametrize("seed", [1, 12345])
def test_transposed_draws_equal_salibs_stream(N, R, seed):
    # power-of-two N takes the raw-bits shortcut (odd N * R cannot happen there); the rest falls back
    got = S.estimators.bootstrap_indices_T(N, R, seed)
    ref = np.random.default_rng(seed).integers(N, size=(N, R))  # SALib 1.6's draw
    assert got.shape == (R, N) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, ref.T)
