"""Mask-similarity metrics of nnsens_core.robustness: hand-computed cases."""
import numpy as np
import pytest
import torch
from torch import nn

from nnsens_core.errors import NnsensError
from nnsens_core.robustness import metrics as rm
from nnsens_core.saliency import metrics as smt


class MeanModel(nn.Module):
    """logit_1 = a * mean(x), logit_0 = 0: p(class 1) = sigmoid(a * mean(x))."""

    def __init__(self, a: float = 4.0):
        super().__init__()
        self.a = a
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        l1 = self.a * x.flatten(1).mean(1) + 0 * self.dummy
        return torch.stack([torch.zeros_like(l1), l1], 1)


def _boxes():
    a = np.ones((4, 4, 4))
    a[:2, :2, :2] = 0  # deletes box A
    b = np.ones((4, 4, 4))
    b[:2] = 0  # deletes the whole top half (contains A)
    c = np.ones((4, 4, 4))
    c[2:, 2:, 2:] = 0  # deletes box C, disjoint from A
    return a, b, c


def test_prob_cnn_by_hand():
    torch.manual_seed(0)
    x = torch.rand(3, 1, 4, 4, 4)
    model = MeanModel()
    a, b, c = _boxes()

    def p(xx):  # the true class is 1: p = sigmoid(a * mean)
        return torch.sigmoid(4.0 * xx.flatten(1).mean(1)).double().numpy()

    x_a = x.clone()
    x_a[:, :, :2, :2, :2] = 0  # black reference on the common deletion of a and b: box A
    got = rm.prob_cnn(model, x, 1, a, b, reference="black", device="cpu")
    assert got == pytest.approx(p(x_a).mean(), rel=1e-6)
    # disjoint deletions: nothing is deleted by both, the inputs stay as they are
    assert rm.prob_cnn(model, x, 1, a, c, reference="black", device="cpu") == \
        pytest.approx(p(x).mean(), rel=1e-6)
    # a mask with itself: its own residual probability
    assert rm.prob_cnn(model, x, [1, 1, 1], a, a, reference="black", device="cpu") == \
        pytest.approx(rm.masked_probability(model, x, 1, a, reference="black", device="cpu").mean())
    # "max" reference: the deleted voxels become 1
    x_max = x.clone()
    x_max[:, :, :2, :2, :2] = 1
    assert rm.prob_cnn(model, x, 1, a, b, device="cpu") == pytest.approx(p(x_max).mean(), rel=1e-6)
    # two networks: the mean of their probabilities for the same combined mask
    other = MeanModel(a=-2.0)
    q = torch.sigmoid(-2.0 * x_a.flatten(1).mean(1)).double().numpy()
    assert rm.prob_cnn(model, x, 1, a, b, model_b=other, reference="black", device="cpu") == \
        pytest.approx((p(x_a).mean() + q.mean()) / 2, rel=1e-6)
    # a coarse grid mask is upsampled like the optimiser does
    coarse = np.ones((2, 2, 2))
    assert rm.masked_probability(model, x, 1, coarse, device="cpu") == pytest.approx(p(x))


def test_combine_masks():
    ma = np.array([[0.0, 0.5], [1.0, 0.2]])
    mb = np.array([[0.0, 1.0], [0.4, 0.5]])
    np.testing.assert_allclose(rm.combine_masks(ma, mb), [[0.0, 1.0], [1.0, 0.5]])
    np.testing.assert_allclose(rm.combine_masks(ma, mb, "product"), [[0.0, 1.0], [1.0, 0.6]])
    a, b, _ = _boxes()
    np.testing.assert_array_equal(rm.combine_masks(a, b), rm.combine_masks(a, b, "product"))
    with pytest.raises(NnsensError, match="combine"):
        rm.combine_masks(ma, mb, "min")
    with pytest.raises(NnsensError, match="same shape"):
        rm.combine_masks(ma, np.ones((3, 3)))
    with pytest.raises(NnsensError, match=r"\[0, 1\]"):
        rm.combine_masks(ma, mb + 1)


def test_roi_density_and_cosine():
    atlas = np.zeros((4, 4, 4), dtype=np.int64)
    atlas[:2] = 1
    atlas[2:, :2] = 2
    atlas[2:, 2:] = 3
    a, b, c = _boxes()
    regs, rho = rm.roi_density(a, atlas)
    # box A = 8 voxels, all inside region 1 (32 voxels)
    np.testing.assert_array_equal(regs, [1, 2, 3])
    np.testing.assert_allclose(rho, [8 / 32, 0, 0])
    _, rho_c = rm.roi_density(c, atlas)  # box C: 8 voxels of region 3 (16 voxels)
    np.testing.assert_allclose(rho_c, [0, 0, 0.5])
    assert rm.roi_cosine(a, a, atlas) == pytest.approx(1.0)
    assert rm.roi_cosine(a, b, atlas) == pytest.approx(1.0)  # both only in region 1
    assert rm.roi_cosine(a, c, atlas) == pytest.approx(0.0)  # disjoint regions
    half = np.ones((4, 4, 4))
    half[2:, :2, :2] = 0  # region 2: 8 of 16 voxels
    mix = np.minimum(a, half)  # rho = (1/4, 1/2, 0)
    assert rm.roi_cosine(mix, a, atlas) == pytest.approx(0.25 / np.sqrt(0.25 ** 2 + 0.5 ** 2))
    assert np.isnan(rm.roi_cosine(np.ones((4, 4, 4)), a, atlas))  # nothing deleted
    with pytest.raises(NnsensError, match="atlas has shape"):
        rm.roi_cosine(a, b, atlas[:2])
    with pytest.raises(NnsensError, match="integer"):
        rm.roi_density(a, atlas + 0.5)
    with pytest.raises(NnsensError, match="no region"):
        rm.roi_density(a, np.zeros((4, 4, 4), dtype=int))
    with pytest.raises(NnsensError, match="negative"):
        rm.roi_density(a, atlas - 2)


def test_top_regions_and_agreement():
    atlas = np.repeat(np.arange(1, 5), 4).reshape(4, 4)  # row r is region r + 1
    m1 = np.ones((4, 4))
    m1[0] = 0.0  # region 1 fully deleted
    m1[1, :2] = 0.0  # region 2 half
    m2 = np.ones((4, 4))
    m2[3] = 0.2  # region 4: 0.8
    m2[1, :1] = 0.0  # region 2: 0.25
    names = {1: "one", 2: "two", 3: "three", 4: "four"}
    top = rm.top_regions(m1, atlas, 2, names)
    assert top["region"].tolist() == [1, 2] and top["name"].tolist() == ["one", "two"]
    np.testing.assert_allclose(top["density"], [1.0, 0.5])
    assert top["rank"].tolist() == [1, 2]
    ag = rm.region_agreement([m1, m2], atlas, 2, names)
    rows = {r: (c, s, d) for r, c, s, d in zip(ag["region"], ag["count"], ag["share"], ag["mean_density"])}
    assert rows[2][:2] == (2, 1.0) and rows[2][2] == pytest.approx(0.375)
    assert rows[1][:2] == (1, 0.5) and rows[4][:2] == (1, 0.5) and 3 not in rows
    assert ag["region"].iloc[0] == 2  # the region every mask has in its top-2 first
    with pytest.raises(NnsensError, match="n=0"):
        rm.top_regions(m1, atlas, 0)
    with pytest.raises(NnsensError, match="empty"):
        rm.region_agreement([], atlas)


def test_pixel_similarities_match_the_saliency_metrics():
    rng = np.random.default_rng(0)
    ma, mb = rng.random((5, 6, 7)), rng.random((5, 6, 7))
    da, db = (1 - ma).reshape(1, 5, 42), (1 - mb).reshape(1, 5, 42)
    assert rm.pixel_cosine(ma, mb) == pytest.approx(smt.cosine(da, db)[0])
    assert rm.pixel_spearman(ma, mb) == pytest.approx(smt.spearman(da, db)[0])
    assert rm.top_p_iou(ma, mb, 0.2) == pytest.approx(smt.top_p_iou(da, db, 0.2)[0])
    assert rm.pixel_cosine(ma, ma) == pytest.approx(1.0)
    a, _, c = _boxes()
    assert rm.pixel_cosine(a, c) == 0.0 and rm.top_p_iou(a, a, 0.125) == 1.0
    sims = rm.mask_similarity(ma, mb, atlas=np.ones((5, 6, 7), dtype=int))
    assert set(sims) == {"pixel_cosine", "spearman", "top_p_iou", "roi_cosine"}


@pytest.mark.filterwarnings("ignore:y_pred contains classes")
def test_balanced_accuracy_matches_sklearn():
    from sklearn.metrics import balanced_accuracy_score
    rng = np.random.default_rng(1)
    for _ in range(5):
        t = rng.integers(0, 3, 40)
        p = rng.integers(0, 4, 40)  # class 3 is never true
        assert rm.balanced_accuracy(t, p) == pytest.approx(balanced_accuracy_score(t, p))
    assert rm.balanced_accuracy([0, 0, 0, 1], [0, 0, 0, 0]) == pytest.approx(0.5)
    with pytest.raises(NnsensError, match="as many predictions as labels"):
        rm.balanced_accuracy([0, 1], [0])
