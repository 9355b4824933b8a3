"""Hand-computed checks of the saliency metrics on tiny arrays."""
import numpy as np
import pytest
import torch
from torch import nn

from nnsens_core.saliency import metrics as M
from nnsens_core.errors import NnsensError

A = np.array([[0.0, 1.0, 2.0],
              [3.0, 4.0, 5.0],
              [6.0, 7.0, 8.0]])


def test_top_region_quantile_and_ties():
    # 9 values 0..8: the 0.7 quantile (linear) is 5.6, so 6, 7, 8 are selected
    r = M.top_region(A, 1 / 3)[0]
    assert r.sum() == 3 and r[2].all()
    # a constant map selects every pixel (ties at the threshold included)
    assert M.top_region(np.ones((3, 3)), 0.1).all()
    with pytest.raises(NnsensError, match="p=0"):
        M.top_region(A, 0)


def test_topk_region_breaks_ties_in_row_major_order():
    r = M.topk_region(np.ones((1, 2, 2)), 3)[0]
    assert r.tolist() == [[True, True], [True, False]]
    r = M.topk_region(A, 2)[0]
    assert r.sum() == 2 and r[2, 1] and r[2, 2]


def test_iou_by_hand():
    a = np.array([[[1, 1], [0, 0]]], bool)
    b = np.array([[[0, 1], [1, 0]]], bool)
    assert M.iou(a, b)[0] == pytest.approx(1 / 3)
    assert np.isnan(M.iou(np.zeros_like(a), np.zeros_like(b))[0])


def test_top_p_iou_between_maps():
    b = A.copy()
    b[0, 0] = 9.0  # top-3 of b: 9 (0,0), 8, 7 -> shares 8, 7 with A's top-3 (6, 7, 8)
    assert M.top_p_iou(A, b, 1 / 3)[0] == pytest.approx(2 / 4)
    assert M.top_p_iou(A, A, 0.2)[0] == 1.0


def test_spearman_and_cosine_by_hand():
    a = np.array([[[1.0, 2.0], [3.0, 4.0]]])
    assert M.spearman(a, a ** 3)[0] == pytest.approx(1.0)  # monotone transform
    assert M.spearman(a, -a)[0] == pytest.approx(-1.0)
    # ranks of [1, 1, 2, 3] are [1.5, 1.5, 3, 4]; against [1, 2, 3, 4]:
    b = np.array([[[1.0, 1.0], [2.0, 3.0]]])
    ra, rb = np.array([1, 2, 3, 4.0]), np.array([1.5, 1.5, 3, 4])
    expect = np.corrcoef(ra, rb)[0, 1]
    assert M.spearman(a, b)[0] == pytest.approx(expect)
    assert np.isnan(M.spearman(a, np.ones_like(a))[0])
    c = np.array([[[1.0, 0.0], [0.0, 0.0]]])
    d = np.array([[[1.0, 1.0], [0.0, 0.0]]])
    assert M.cosine(c, d)[0] == pytest.approx(1 / np.sqrt(2))
    assert np.isnan(M.cosine(c, np.zeros_like(c))[0])


def test_gt_iou_uses_mask_area_or_p():
    mask = np.zeros((3, 3), bool)
    mask[2, :] = True  # area 3 = exactly A's top-3 pixels
    assert M.gt_iou(A, mask)[0] == 1.0
    mask2 = np.zeros((3, 3), bool)
    mask2[:, 2] = True  # {2, 5, 8}; top-3 of A is {6, 7, 8}: IoU 1/5
    assert M.gt_iou(A, mask2)[0] == pytest.approx(1 / 5)
    # with p = 2/9: quantile 7/9 of 0..8 is 6.22 -> {7, 8}; vs {2,5,8}: 1/4
    assert M.gt_iou(A, mask2, p=2 / 9)[0] == pytest.approx(1 / 4)
    assert np.isnan(M.gt_iou(A, np.zeros((3, 3), bool))[0])


def test_pointing_game_hits_tolerance_and_empty():
    mask = np.zeros((3, 3), bool)
    mask[2, 2] = True
    assert M.pointing_game(A, mask)[0] == 1.0  # max of A at (2, 2)
    mask = np.zeros((3, 3), bool)
    mask[0, 2] = True  # distance from (2, 2) is 2
    assert M.pointing_game(A, mask)[0] == 0.0
    assert M.pointing_game(A, mask, tolerance=1.9)[0] == 0.0
    assert M.pointing_game(A, mask, tolerance=2.0)[0] == 1.0
    assert np.isnan(M.pointing_game(A, np.zeros((3, 3), bool))[0])
    # ties: first maximum in row-major order, (0, 0)
    tie = np.zeros((3, 3)); tie[0, 0] = tie[2, 2] = 1
    m = np.zeros((3, 3), bool); m[2, 2] = True
    assert M.pointing_game(tie, m)[0] == 0.0


def test_relevance_mass_by_hand():
    mask = np.zeros((3, 3), bool)
    mask[2, :] = True
    assert M.relevance_mass(A, mask)[0] == pytest.approx(21 / 36)
    neg = A - 4  # clipped at 0: 1+2+3+4 = 10 of which 2+3+4 = 9 inside the last row
    assert M.relevance_mass(neg, mask)[0] == pytest.approx(9 / 10)
    assert np.isnan(M.relevance_mass(np.zeros((3, 3)), mask)[0])


def test_mask_shape_and_values_errors():
    with pytest.raises(NnsensError, match="mask has shape"):
        M.gt_iou(A, np.zeros((4, 4), bool))
    with pytest.raises(NnsensError, match="binary"):
        M.pointing_game(A, np.full((3, 3), 0.5))
    with pytest.raises(NnsensError, match="same shape"):
        M.spearman(A, np.zeros((2, 2)))


def test_batched_metrics_are_per_image_and_accept_torch():
    maps = torch.tensor(np.stack([A, A[::-1].copy()]))
    mask = np.zeros((2, 3, 3), bool)
    mask[:, 2, 2] = True
    assert M.pointing_game(maps, mask).tolist() == [1.0, 0.0]
    single = [M.gt_iou(maps[i:i + 1], mask[i:i + 1])[0] for i in range(2)]
    assert M.gt_iou(maps, mask).tolist() == single


def test_agreement_matrix():
    maps = {"a": np.stack([A, A]), "b": np.stack([A, -A])}
    ag = M.pairwise_agreement(maps, p=1 / 3)
    assert ag["spearman"][0, 1] == pytest.approx(0.0)  # mean of +1 and -1
    assert ag["spearman"][1, 0] == ag["spearman"][0, 1]
    assert ag["cosine"][0, 0] == pytest.approx(1.0)


def test_summarize_mean_std_and_all_row():
    import pandas as pd
    rec = pd.DataFrame({"method": ["g", "g", "g", "o"], "class": ["x", "x", "y", "x"],
                        "iou": [0.2, 0.4, np.nan, 1.0], "pointing": [1, 0, 1, 1.0],
                        "mass": [0.5, 0.5, 0.5, 0.5]})
    t = M.summarize(rec)
    assert t.loc[("g", "x"), "iou_mean"] == pytest.approx(0.3)
    assert t.loc[("g", "x"), "iou_std"] == pytest.approx(0.1)
    assert t.loc[("g", "y"), "iou_n"] == 0
    assert t.loc[("g", "all"), "pointing_mean"] == pytest.approx(2 / 3)
    assert t.loc[("o", "all"), "iou_n"] == 1
    assert list(t.index.get_level_values(0)) == ["g", "g", "g", "o", "o"]


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def test_cascading_randomization_copies_model_and_falls():
    torch.manual_seed(0)
    model = _Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 1, 6, 6)

    def explain(m):  # input-gradient saliency of class 0
        xi = x.clone().requires_grad_(True)
        m(xi)[:, 0].sum().backward()
        return {"grad": xi.grad.abs()[:, 0], "const_input": x[:, 0].abs()}

    res = M.cascading_randomization(model, explain, seed=3)
    assert res.steps == ["original", "fc", "conv"]
    for k, v in before.items():
        assert torch.equal(model.state_dict()[k], v)  # caller's model untouched
    assert res.mean["grad"][0] == 1.0
    assert res.mean["grad"][-1] < 0.9  # the gradient map changes with the weights
    assert np.allclose(res.mean["const_input"], 1.0)  # a model-independent map does not fall
    assert res.to_frame().shape == (3, 4)
    with pytest.raises(NnsensError, match="metric"):
        M.cascading_randomization(model, explain, metric="ssim")
    with pytest.raises(NnsensError, match="does not exist"):
        M.cascading_randomization(model, explain, layers=["nope"])


def test_topk_region_equals_a_stable_sort_on_ties_signed_zeros_and_nan():
    # topk_region avoids sorting indices; it must pick exactly the pixels a stable sort of -map picks
    rng = np.random.default_rng(3)
    for trial in range(200):
        n, h = int(rng.integers(1, 5)), int(rng.integers(1, 8))
        a = rng.integers(-2, 3, size=(n, h, h)).astype(float) if trial % 2 else rng.standard_normal((n, h, h))
        a[a == 0] = -0.0 if trial % 4 == 1 else 0.0
        if trial % 10 == 0:
            a[0, 0, 0] = np.nan
        k = rng.integers(0, h * h + 1, size=n)
        order = np.argsort(-a.reshape(n, -1), axis=1, kind="stable")
        want = np.zeros((n, h * h), bool)
        for i in range(n):
            want[i, order[i, :k[i]]] = True
        np.testing.assert_array_equal(M.topk_region(a, k), want.reshape(a.shape), err_msg=f"trial {trial}")


def test_stable_order_equals_numpy_stable_argsort():
    rng = np.random.default_rng(4)
    for trial in range(100):
        x = rng.standard_normal((4, 37)).astype(np.float32)
        if trial % 2:
            x = np.round(x, 1).astype(np.float32)  # many ties
        x[x == 0] = -0.0 if trial % 4 == 1 else 0.0
        np.testing.assert_array_equal(M._stable_order(x), np.argsort(x, axis=1, kind="stable"))
    x = np.array([[1.0, np.nan, 0.0]], np.float32)  # not finite: numpy's own sort
    np.testing.assert_array_equal(M._stable_order(x), np.argsort(x, axis=1, kind="stable"))
