"""render: colour maps, overlays, contours and colour bars."""
import numpy as np
import pytest

from nnsens_core import render as R
from nnsens_core.errors import NnsensError


def test_lut_ends_and_monotone_lightness():
    inferno = R.lut("inferno").astype(float)
    assert tuple(inferno[0]) == (0, 0, 4) and tuple(inferno[-1]) == (252, 255, 164)
    lum = inferno @ [0.299, 0.587, 0.114]
    assert (np.diff(lum) >= -0.5).all()          # gets lighter from low to high: readable in grey
    rdbu = R.lut("rdbu")
    assert tuple(rdbu[128]) == pytest.approx((247, 247, 247), abs=3)   # 0 is near white


def test_signed_maps_centre_zero_and_nan_is_transparent():
    m = np.array([[-2.0, 0.0], [1.0, np.nan]])
    assert R.scale_of(m, signed=True) == (-2.0, 2.0)
    rgba = R.colorize(m, signed=True)
    assert rgba[1, 1, 3] == 0 and rgba[0, 0, 3] == 255
    assert abs(int(rgba[0, 1, 0]) - 247) <= 3          # 0 -> the middle (white) colour
    assert rgba[0, 0, 2] > rgba[0, 0, 0]                # negative -> blue


def test_overlay_keeps_the_image_where_the_map_is_nan():
    base = np.full((1, 2, 2), 0.5, np.float32)
    m = np.array([[np.nan, 1.0], [0.0, 0.5]])
    out = R.overlay(base, m, alpha=0.6)
    assert tuple(out[0, 0]) == (128, 128, 128)
    assert tuple(out[0, 1]) != (128, 128, 128)
    with pytest.raises(NnsensError, match="map_to_original"):
        R.overlay(base, np.zeros((3, 3)))


def test_contours_outline_the_top_percent():
    m = np.zeros((20, 20))
    m[5:10, 5:10] = 1.0                                 # 25 of 400 pixels: the top 6.25 %
    top = R.top_region(m, 5)
    assert top.sum() == 25
    out = R.contours(np.zeros((1, 20, 20)), m, percents=(5,))
    edge = (out == 255).all(-1)
    assert edge[5, 5:10].all() and not edge[7, 7] and edge.sum() == 16


def test_colorbar_has_a_ramp_and_text():
    bar = R.colorbar(0.0, 1.0, "relevance", length=100)
    assert bar.shape[1] == 140 and bar.dtype == np.uint8
    assert (bar[:16, 20:120] != 255).any()
    assert R.side_by_side([bar, bar]).shape[1] == 2 * 140 + 6
