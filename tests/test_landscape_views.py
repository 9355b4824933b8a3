"""Figures and tables of the Loss-landscape page (ui/landscape_views.py): shapes and values."""
from __future__ import annotations

import numpy as np
import pytest

from nnsens_core import landscape as L
from ui import landscape_views as V


@pytest.fixture(scope="module")
def res():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    y = (X[:, 0] - X[:, 2] > 0).astype(float)
    return L.run_landscape(X, y, L.LandscapeConfig(epochs=10, retrains=2, lr=0.2),
                           feature_names=("a", "b", "c"), device="cpu")


def test_tables_match_the_result(res):
    tf = V.trend_frame(res, 1)
    assert list(tf.index) == ["a", "b", "c"]
    assert list(tf["trend"]) == list(res.trends[1].label)
    assert list(tf["spearman_sign"]) == [1 if s > 0 else -1 for s in res.spearman]
    assert set(tf["agrees"]) <= {"yes", "no", "n/a"}
    cf = V.consistency_frame(res)
    assert list(cf["run1(seed 1)"]) == list(res.trends[1].label)
    hf = V.history_frame(res)
    assert len(hf) == 2 * 11 * 3
    row = hf[(hf.run == 1) & (hf.epoch == 4) & (hf.feature == "c")].iloc[0]
    assert row.mean_d2 == res.history.mean[2][1, 4, 2] and row.loss == res.history.loss[1, 4]


def test_figures_build(res):
    fig = V.derivative_histories(res, 0, [0, 2], band_feature=2)
    names = {t.name for t in fig.data if t.name}
    assert names == {"a", "c"}
    assert len(fig.data) == 3 * (2 + 2)  # per panel: 2 bands + 2 lines
    assert len(V.loss_curve(res.history).data) == 2
    assert list(V.spearman_bars(res.feature_names, res.spearman).data[0].x) == list(res.spearman)


def test_agreement_views(res):
    af = V.agreement_frame(res)
    assert len(af) == 12 and af["reading_label"].iloc[0] == "input-diagonal"
    fig = V.agreement_heatmap(res)
    z = np.asarray(fig.data[0].z, float)
    np.testing.assert_array_equal(np.isnan(z), np.isnan(res.agreement_matrix()))
    assert list(fig.data[0].y) == [L.READING_LABELS[r] for r in L.READINGS]
    tf = V.trend_frame(res, 0)
    assert list(tf["direction"]) == list(res.trends[0].direction)


def test_runs_of_a_mask():
    x = np.arange(8.0)
    mask = np.array([False, True, True, False, False, True, False, True])
    assert V._runs(x, mask) == [(0.0, 2.0), (4.0, 5.0), (6.0, 7.0)]
    assert V._runs(x, np.zeros(8, bool)) == []


def test_mask_overlay_tints_only_the_mask():
    img = np.zeros((8, 8))
    img[2, 3] = 1.0
    mask = np.zeros((8, 8), bool)
    mask[0, 0] = True
    out = V.mask_overlay(img, mask, scale=4)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert tuple(out[0, 0]) == (102, 16, 16)  # 0.4 * (255, 40, 40) over black
    assert tuple(out[9, 13]) == (255, 255, 255)  # the inked pixel, untouched
    assert tuple(out[31, 31]) == (0, 0, 0)


def test_surface_frame_and_figures():
    s = L.LossSurface(np.array([-1.0, 0.0, 1.0]), np.array([-1.0, 0.0, 1.0]),
                      np.arange(9.0).reshape(3, 3), 4.0, "mse")
    df = V.surface_frame(s)
    assert df[(df.alpha == 1.0) & (df.beta == -1.0)].loss.item() == 6.0
    surf, cont = V.surface_figures(s)
    np.testing.assert_array_equal(np.asarray(surf.data[0].z), s.loss.T)
