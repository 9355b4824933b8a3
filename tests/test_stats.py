"""nnsens_core.stats: ranks and Spearman equal to scipy (ties, rows, constant input), and the
Sobol/PCA comparison built on them."""
import numpy as np
import pytest
import torch
from scipy.stats import rankdata, spearmanr

from nnsens_core import stats
from nnsens_core import sobol as S


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_rank_equals_scipy(ties, axis):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 4, (6, 9)).astype(float) if ties else rng.normal(size=(6, 9))
    np.testing.assert_array_equal(stats.rank(a, axis), rankdata(a, method="average", axis=axis))


def test_rank_by_hand_and_on_tensors():
    np.testing.assert_array_equal(stats.rank([10, 30, 20, 30]), [1, 3.5, 2, 3.5])
    np.testing.assert_array_equal(stats.rank(torch.tensor([[2.0, 2.0, 2.0], [3.0, 1.0, 2.0]])),
                                  [[2, 2, 2], [3, 1, 2]])
    np.testing.assert_array_equal(stats.rank(np.ones((2, 3, 4)), axis=1), np.full((2, 3, 4), 2.0))
    assert np.isnan(stats.rank([1.0, np.nan, 2.0])).all()  # like scipy's default nan_policy


@pytest.mark.parametrize("ties", [False, True])
def test_spearman_rows_equal_scipy(ties):
    rng = np.random.default_rng(2)
    shape = (7, 40)
    a = rng.integers(0, 5, shape).astype(float) if ties else rng.normal(size=shape)
    b = (a + rng.integers(0, 5, shape)) if ties else a + rng.normal(size=shape)
    got = stats.spearman(a, b)
    want = [spearmanr(a[i], b[i]).statistic for i in range(shape[0])]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    # along axis 0, and one column against many (broadcasting after ranking)
    np.testing.assert_allclose(stats.spearman(a.T, b.T, axis=0), want, rtol=0, atol=1e-12)
    y = b[0]
    cols = stats.spearman(a.T, y[:, None], axis=0)
    np.testing.assert_allclose(cols, [spearmanr(a[i], y).statistic for i in range(shape[0])],
                               rtol=0, atol=1e-12)


def test_spearman_1d_constant_and_by_hand():
    assert isinstance(stats.spearman([1, 2, 3], [3, 1, 2]), float)
    assert stats.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert stats.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks (1.5, 1.5, 3, 4) vs (1, 2, 3, 4): sum d_c e_c = 4.5, |d_c|^2 = 4.5, |e_c|^2 = 5
    assert stats.spearman([5, 5, 7, 9], [1, 2, 3, 4]) == pytest.approx(4.5 / np.sqrt(4.5 * 5))
    assert np.isnan(stats.spearman([2, 2, 2], [1, 2, 3]))
    assert np.isnan(stats.spearman([1, 2, 3], [0, 0, 0]))
    rows = stats.spearman(np.array([[1.0, 2, 3], [4, 4, 4]]), np.array([[1.0, 3, 2], [1, 2, 3]]))
    assert rows[0] == pytest.approx(0.5) and np.isnan(rows[1])
    with pytest.raises(ValueError, match="same length"):
        stats.spearman([1, 2, 3], [1, 2])


def test_pca_comparison_with_ties_is_scipy_whatever_the_column_order():
    # all components kept: importance_d = var_d / total variance, so importance ranks the columns
    # by their spread (4 > 3 > 2 > 1); the Sobol values tie the two leading features
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 4))
    X = (X - X.mean(0)) / X.std(0) * np.array([4.0, 3.0, 2.0, 1.0])
    sobol = np.array([0.4, 0.4, 0.2, 0.1])
    want = spearmanr(sobol, [4, 3, 2, 1]).statistic
    assert want == pytest.approx(0.9487, abs=1e-4)
    got = []
    for perm in ([0, 1, 2, 3], [1, 0, 2, 3], [3, 2, 1, 0], [2, 1, 0, 3]):
        names = tuple("abcd"[i] for i in perm)
        pca = S.pca_comparison(X[:, perm], names, sobol[perm], share=1.0, standardize=False)
        assert pca.n_components == 4
        assert pca.spearman == pytest.approx(spearmanr(pca.sobol, pca.importance).statistic, abs=1e-12)
        got.append(pca.spearman)
        frame = pca.to_frame()
        # tied Sobol values share the average rank, whatever their column order
        assert frame.loc["a", "sobol_rank"] == frame.loc["b", "sobol_rank"] == 1.5
        assert frame.loc["a", "pca_rank"] == 1 and frame.loc["d", "pca_rank"] == 4
    # the textbook 1 - 6 sum d^2 / (n (n^2 - 1)) on tie-broken ranks gave 1.0 and 0.8 here
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
