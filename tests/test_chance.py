"""Chance levels of the agreement / localization metrics (random maps of the same smoothness)."""
import numpy as np
import pytest
import torch

from nnsens_core._filters import gaussian_blur
from nnsens_core.errors import NnsensError
from nnsens_core.saliency import metrics as mt


def smooth_noise(n, size, sigma, seed):
    g = torch.Generator().manual_seed(seed)
    return gaussian_blur(torch.randn((n, 1, size, size), generator=g), sigma)[:, 0].numpy()


@pytest.mark.parametrize("sigma", [2.0, 4.0])
def test_smoothness_recovers_the_blur_width(sigma):
    est = mt.smoothness(smooth_noise(4, 96, sigma, 0))
    assert np.all(np.abs(est - sigma) < 0.15 * sigma), est
    assert mt.smoothness(np.ones((1, 8, 8)))[0] == 0.0


def test_random_maps_keep_values_and_smoothness():
    m = smooth_noise(1, 64, 3.0, 1) ** 2  # skewed values
    r = mt.random_like(m, n=5, seed=0)
    assert r.shape == (5, 1, 64, 64)
    for k in range(5):  # same values, other places
        np.testing.assert_allclose(np.sort(r[k, 0].ravel()), np.sort(m.ravel()))
        assert not np.allclose(r[k, 0], m[0])
    own = mt.smoothness(m)[0]  # squaring shortens the correlation: about 3 / sqrt(2)
    assert 1.7 < own < 2.6
    assert np.all(np.abs(mt.smoothness(r[:, 0]) - own) < 0.3 * own)
    np.testing.assert_array_equal(r, mt.random_like(m, n=5, seed=0))  # seeded


def test_identical_maps_beat_chance_and_unrelated_maps_sit_inside_it():
    a = smooth_noise(3, 64, 3.0, 2)
    for metric in ("spearman", "top_p_iou", "cosine"):
        ch = mt.chance_level(metric, a, a, n=30, seed=0, p=0.1)
        same = np.nanmean(mt.SIMILARITIES[metric](a, a))
        assert ch.beaten_by(same), (metric, ch)
    # unrelated maps of the same smoothness: inside the 95 % interval for most pairs
    inside = 0
    for k in range(10):
        x, y = smooth_noise(1, 64, 3.0, 100 + k), smooth_noise(1, 64, 3.0, 200 + k)
        ch = mt.chance_level("spearman", x, y, n=40, seed=k)
        inside += ch.low <= mt.spearman(x, y)[0] <= ch.high
    assert inside >= 8
    # rougher maps have a narrower chance interval
    wide = mt.chance_level("spearman", a, a, n=30, seed=0)
    narrow = mt.chance_level("spearman", smooth_noise(3, 64, 0.5, 3), smooth_noise(3, 64, 0.5, 4),
                             n=30, seed=0)
    assert narrow.high - narrow.low < wide.high - wide.low


def test_chance_against_ground_truth():
    a = smooth_noise(2, 48, 2.0, 5)
    masks = np.zeros((2, 48, 48), bool)
    masks[:, 10:20, 10:30] = True
    peak = np.where(masks, 1.0, 0.0) + 0.01 * a  # a map that finds the mask
    ch = mt.chance_level("iou", peak, masks=masks, n=30)
    assert ch.beaten_by(np.nanmean(mt.gt_iou(peak, masks)))
    assert 0 <= ch.low <= ch.mean <= ch.high <= 1
    ch_p = mt.chance_level("pointing", a, masks=masks, n=30)
    assert 0 <= ch_p.mean <= 1
    with pytest.raises(NnsensError, match="masks="):
        mt.chance_level("iou", a)
    with pytest.raises(NnsensError, match="unknown"):
        mt.chance_level("nope", a, a)


def test_random_maps_follow_the_field_ranks():
    # each random map puts the map's r-th smallest value where the blurred noise has its r-th smallest
    m = smooth_noise(2, 24, 2.0, 5) ** 2
    r = mt.random_like(m, n=3, seed=7)
    rng = np.random.default_rng(7)  # the draws random_like makes, image by image
    sig = mt.smoothness(m)
    for i in range(2):
        noise = torch.as_tensor(rng.standard_normal((3, 1, 24, 24)), dtype=torch.float32)
        field = gaussian_blur(noise, float(sig[i]))[:, 0].numpy().reshape(3, -1)
        ranks = np.argsort(np.argsort(field, axis=1, kind="stable"), axis=1, kind="stable")
        np.testing.assert_array_equal(r[:, i].reshape(3, -1), np.sort(m[i].ravel())[ranks])


def test_chance_levels_share_the_draws_as_separate_calls_would_make_them():
    from nnsens_core.saliency.compare import CHANCE_DRAWS, chance_levels
    maps = {"a": smooth_noise(3, 32, 2.0, 1) ** 2, "b": np.abs(smooth_noise(3, 32, 4.0, 2))}
    masks = np.zeros((3, 32, 32), bool)
    masks[:, 8:16, 10:20] = True
    within = np.zeros((3, 32, 32), bool)
    within[:, 2:30, 4:28] = True
    for w in (None, within):
        got = chance_levels(maps, masks, 0.2, 1.0, w)
        for name, v in maps.items():
            for metric in ("iou", "pointing", "mass"):
                alone = mt.chance_level(metric, v, masks=masks, n=CHANCE_DRAWS, seed=0, p=0.2,
                                        tolerance=1.0, within=w)
                assert got[name][metric] == alone, (name, metric, w is None)
