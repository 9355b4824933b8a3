"""Metrics restricted to a region of interest (``within=``): hand-computed cases, a rectangle ROI
checked against the whole-image metric on the cropped arrays, and ``within`` = everything equal to
``within=None`` bit for bit; ``evaluate_dataset(roi=)`` on a toy detector with a bright text box
outside the ROI."""
import numpy as np
import pytest

from nnsens_core.data import ImageData
from nnsens_core.errors import NnsensError
from nnsens_core.saliency import compare as CP
from nnsens_core.saliency import metrics as mt
from nnsens_core.saliency.cam import CamConfig
from nnsens_core.zoo import ModelSpec
from tests.test_compare import BrightDetector  # logit_0 counts bright pixels


def _text_box_case():
    """4 x 6 maps: inside the ROI (columns 0-3) A = B = 0..15 row-major; outside (columns 4-5, a
    burned-in text box) A = 100 and B = 0."""
    a = np.zeros((4, 6))
    a[:, :4] = np.arange(16).reshape(4, 4)
    b = a.copy()
    a[:, 4:] = 100.0
    roi = np.zeros((4, 6), bool)
    roi[:, :4] = True
    return a[None], b[None], roi


def test_a_peak_in_a_text_box_outside_the_roi_is_ignored():
    a, b, roi = _text_box_case()
    # whole image: A's top 25 % (quantile 0.75 of 24 values) is the 8 text pixels; B's is 10..15
    # (quantile 0.75 of nine 0s and 1..15 is 9.25): no overlap
    assert mt.top_p_iou(a, b, 0.25)[0] == 0.0
    # inside the ROI both maps are 0..15: the top 25 % of the 16 pixels is 12..15 in both
    assert mt.top_p_iou(a, b, 0.25, within=roi)[0] == 1.0
    region = mt.top_region(a, 0.25, within=roi)[0]
    np.testing.assert_array_equal(np.sort(a[0][region]), [12, 13, 14, 15])
    assert not region[:, 4:].any()
    assert mt.spearman(a, b, within=roi)[0] == pytest.approx(1.0, abs=1e-12)
    assert mt.spearman(a, b)[0] < 0.9
    assert mt.cosine(a, b, within=roi)[0] == pytest.approx(1.0, abs=1e-12)
    # one (H, W) ROI serves every image; a (N, H, W) one per image works alike
    two_a, two_b = np.concatenate([a, a]), np.concatenate([b, b])
    np.testing.assert_array_equal(mt.top_p_iou(two_a, two_b, 0.25, roi),
                                  mt.top_p_iou(two_a, two_b, 0.25, np.stack([roi, roi])))


def test_localisation_inside_the_roi_by_hand():
    a, _, roi = _text_box_case()
    mask = np.zeros((1, 4, 6), bool)
    mask[0, 3, 3] = True  # the pixel whose value is 15
    # whole image: the maximum is in the text box, the top-1 pixel too
    assert mt.pointing_game(a, mask)[0] == 0.0
    assert mt.gt_iou(a, mask)[0] == 0.0
    assert mt.relevance_mass(a, mask)[0] == pytest.approx(15 / (120 + 800))
    # inside the ROI: the maximum is 15, the mask's pixel; mass 15 / (0 + 1 + ... + 15)
    assert mt.pointing_game(a, mask, within=roi)[0] == 1.0
    assert mt.gt_iou(a, mask, within=roi)[0] == 1.0
    assert mt.relevance_mass(a, mask, within=roi)[0] == pytest.approx(15 / 120)
    # top-p (p = 25 % of the 16 inside = 12..15) against the mask {15}: IoU 1/4
    assert mt.gt_iou(a, mask, p=0.25, within=roi)[0] == pytest.approx(0.25)
    # a mask entirely outside the ROI: nothing to find inside -> NaN
    out = np.zeros((1, 4, 6), bool)
    out[0, 0, 5] = True
    loc = mt.localization(a, out, within=roi)
    assert all(np.isnan(v[0]) for v in loc.values())
    # an image with no pixel inside: NaN agreement, not an error
    empty = np.zeros((4, 6), bool)
    assert np.isnan(mt.top_p_iou(a, a, 0.1, empty)[0]) and np.isnan(mt.spearman(a, a, empty)[0])


def test_a_rectangle_roi_equals_the_metric_on_the_crop():
    rng = np.random.default_rng(3)
    a, b = rng.random((3, 10, 12)), rng.random((3, 10, 12))
    masks = rng.random((3, 10, 12)) > 0.8
    roi = np.zeros((10, 12), bool)
    roi[2:9, 3:11] = True
    crop = (slice(None), slice(2, 9), slice(3, 11))
    for p in (0.1, 0.3):
        np.testing.assert_allclose(mt.top_p_iou(a, b, p, roi), mt.top_p_iou(a[crop], b[crop], p),
                                   rtol=0, atol=1e-12)
        np.testing.assert_allclose(mt.gt_iou(a, masks, p, roi), mt.gt_iou(a[crop], masks[crop], p),
                                   rtol=0, atol=1e-12)
    np.testing.assert_allclose(mt.spearman(a, b, roi), mt.spearman(a[crop], b[crop]), atol=1e-12)
    np.testing.assert_allclose(mt.cosine(a, b, roi), mt.cosine(a[crop], b[crop]), atol=1e-12)
    np.testing.assert_allclose(mt.gt_iou(a, masks, None, roi), mt.gt_iou(a[crop], masks[crop]),
                               atol=1e-12)
    np.testing.assert_allclose(mt.relevance_mass(a, masks, roi),
                               mt.relevance_mass(a[crop], masks[crop]), atol=1e-12)
    for tol in (0.0, 2.0):
        np.testing.assert_array_equal(mt.pointing_game(a, masks, tol, roi),
                                      mt.pointing_game(a[crop], masks[crop], tol))
    np.testing.assert_allclose(mt.smoothness(a, roi), mt.smoothness(a[crop]), atol=1e-12)


def test_within_everything_equals_within_none_bit_for_bit():
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 9, 7)), rng.random((2, 9, 7))
    masks = rng.random((2, 9, 7)) > 0.7
    everything = np.ones((2, 9, 7), bool)
    for p in (0.05, 0.2):
        np.testing.assert_array_equal(mt.top_p_iou(a, b, p), mt.top_p_iou(a, b, p, everything))
        np.testing.assert_array_equal(mt.gt_iou(a, masks, p), mt.gt_iou(a, masks, p, everything))
    np.testing.assert_array_equal(mt.gt_iou(a, masks), mt.gt_iou(a, masks, None, everything))
    np.testing.assert_array_equal(mt.spearman(a, b), mt.spearman(a, b, everything))
    np.testing.assert_array_equal(mt.pointing_game(a, masks, 1.0),
                                  mt.pointing_game(a, masks, 1.0, everything))
    np.testing.assert_allclose(mt.relevance_mass(a, masks), mt.relevance_mass(a, masks, everything),
                               rtol=1e-15)
    ref = mt.chance_level("spearman", a, b, n=8, seed=1)
    got = mt.chance_level("spearman", a, b, n=8, seed=1, within=everything)
    assert (got.mean, got.low, got.high) == pytest.approx((ref.mean, ref.low, ref.high), abs=1e-12)


def test_chance_inside_the_roi_shuffles_only_inside():
    a, b, roi = _text_box_case()
    r = mt.random_like(a, n=5, seed=0, within=roi)
    assert (r[:, 0][:, :, 4:] == 100).all()                      # outside: the map's own values
    np.testing.assert_array_equal(np.sort(r[:, 0][:, :, :4].reshape(5, -1), 1),
                                  np.tile(np.arange(16.0), (5, 1)))  # inside: the same values
    ch = mt.chance_level("top_p_iou", a, b, p=0.25, n=20, within=roi)
    assert 0 <= ch.low <= ch.mean <= ch.high < 1
    with pytest.raises(NnsensError, match="within"):
        mt.chance_level(lambda x, y: mt.spearman(x, y), a, b, n=2, within=roi)
    with pytest.raises(NnsensError, match="region of interest"):
        mt.top_p_iou(a, b, 0.1, within=np.ones((3, 3), bool))


# --------------------------------------------------------------------------- evaluate_dataset

S = 12


def test_evaluate_dataset_inside_the_roi_ignores_a_bright_text_box():
    """A bright 3x3 'text box' in the top-left corner (outside the ROI) and the 4x4 feature
    square (the mask) inside: Grad-CAM lights both equally (1 on bright pixels, 0 elsewhere)."""
    n = 2
    imgs = np.full((n, 1, S, S), 0.2, np.float32)
    masks = np.zeros((n, S, S), bool)
    for i, (t, l) in enumerate(((5, 5), (7, 4))):
        imgs[i, 0, t:t + 4, l:l + 4] = 0.9
        masks[i, t:t + 4, l:l + 4] = True
    imgs[:, 0, :3, :3] = 0.9
    roi = np.ones((n, S, S), bool)
    roi[:, :4, :4] = False
    data = ImageData(imgs, np.zeros(n, np.int64), ("bright", "other"), masks, name="boxes", roi=roi)
    spec = ModelSpec("toy", "toy", "image", (1, S, S), ("bright", "other"))
    cfg = {"cam": CamConfig("gradcam", "conv")}
    model = BrightDetector().eval()
    whole = CP.evaluate_dataset(model, spec, data, ["gradcam"], cfg, device="cpu")
    inside = CP.evaluate_dataset(model, spec, data, ["gradcam"], cfg, device="cpu", roi=data.roi)
    # whole image: the top-16 pixels (ties in C order) start with the 9 text pixels -> IoU 7/25;
    # the first maximum is in the text box; mass 16 of 25 bright pixels
    np.testing.assert_allclose(whole.records["iou"], 7 / 25)
    np.testing.assert_array_equal(whole.records["pointing"], 0.0)
    np.testing.assert_allclose(whole.records["mass"], 16 / 25)
    # inside the ROI the text box is not there
    np.testing.assert_allclose(inside.records["iou"], 1.0)
    np.testing.assert_array_equal(inside.records["pointing"], 1.0)
    np.testing.assert_allclose(inside.records["mass"], 1.0)
    assert whole.roi_share is None and inside.roi_share == pytest.approx(1 - 16 / S ** 2)
    doc = inside.to_dict()
    assert doc["roi"]["share"] == pytest.approx(1 - 16 / S ** 2) and "roi" in doc["definitions"]
    assert "roi" not in whole.to_dict()
    # roi=None is the default; a ROI that holds every pixel changes no number
    every = CP.evaluate_dataset(model, spec, data, ["gradcam"], cfg, device="cpu",
                                roi=np.ones((n, S, S), bool))
    for k in ("iou", "pointing", "mass"):
        np.testing.assert_array_equal(every.records[k], whole.records[k])
    with pytest.raises(NnsensError, match="roi has shape"):
        CP.evaluate_dataset(model, spec, data, ["gradcam"], cfg, device="cpu", roi=roi[:1])


def test_cascading_randomization_compares_inside_the_region_of_interest():
    """With ``within`` the similarity of each round counts only the pixels inside (the black frame
    that every map leaves dark would otherwise look like agreement)."""
    import torch
    from torch import nn

    from nnsens_core.saliency import metrics as mt

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 1, 3, padding=1))
    x = torch.rand(2, 1, 12, 12)
    roi = np.zeros((2, 12, 12), bool)
    roi[:, 2:10, 3:11] = True
    seen = []

    def explain(m):
        with torch.no_grad():
            maps = m(x)[:, 0].numpy().copy()
        maps[~roi] = 0.0  # the frame: dark in every map
        seen.append(maps)
        return {"act": maps}

    res = mt.cascading_randomization(net, explain, ["2", "0"], "spearman", seed=3, within=roi)
    assert res.config.roi_share == pytest.approx(roi.mean())
    for step in (1, 2):
        want = np.nan_to_num(mt.spearman(seen[0], seen[step], within=roi), nan=0.0).mean()
        assert res.mean["act"][step] == pytest.approx(want)
    whole = mt.cascading_randomization(net, explain, ["2", "0"], "spearman", seed=3)
    assert whole.config.roi_share is None
    assert not np.allclose(whole.mean["act"][1:], res.mean["act"][1:])
