"""Streamlit-free helpers behind the maps on the analysis pages: maps carried to the original
resolution (NaN outside the region of interest), pooled tiles back on the grid, one block's
pictures with one colour scale, and the grey-data test of the AM page."""
import numpy as np

from nnsens_core import preprocess, render
from nnsens_core.data import ImageData, Originals
from ui import cnn_views as CV
from ui import saliency_views as SV


def test_on_original_resizes_through_the_placement_and_blanks_outside_the_roi():
    recipe = preprocess.Recipe(size=(8, 8), channels=1)
    _, place = preprocess.to_model(np.zeros((1, 4, 16), np.float32), recipe)   # letterboxed
    m = np.arange(64, dtype=np.float32).reshape(8, 8)
    out = SV.on_original(m, place)
    assert out.shape == (4, 16)
    np.testing.assert_array_equal(out, preprocess.map_to_original(m, place))
    roi = np.zeros((4, 16), bool)
    roi[:, :8] = True
    cut = SV.on_original(m, place, roi)
    assert np.isnan(cut[:, 8:]).all() and np.array_equal(cut[:, :8], out[:, :8])
    # drawn: transparent (the image unchanged) where NaN
    base = np.full((1, 4, 16), 0.5, np.float32)
    pic = render.overlay(base, cut, 0.7)
    assert (pic[:, 8:] == 128).all() and (pic[:, :8] != 128).any()
    np.testing.assert_array_equal(SV.on_original(m), m)  # no placement: the images are the originals
    assert "inside the region of interest: 42 %" in SV.roi_caption(0.42)


def test_tiles_to_grid_repeats_each_tile_and_crops():
    pooled = np.array([[1.0, 2.0], [3.0, 4.0]])
    out = CV.tiles_to_grid(pooled, 3, (5, 4))
    assert out.shape == (5, 4)
    np.testing.assert_array_equal(out[:3, :3], 1) and np.testing.assert_array_equal(out[3:, 3:], 4)
    np.testing.assert_array_equal(CV.tiles_to_grid(pooled, 1, (2, 2)), pooled)


def test_block_pictures_share_one_scale_and_go_diverging_for_negative_maps():
    maps = np.stack([np.linspace(0, 1, 16).reshape(4, 4), np.linspace(0, 3, 16).reshape(4, 4)])
    base = np.zeros((1, 4, 4), np.float32)
    pics, (lo, hi), signed = CV.block_pictures(maps, base, over=False)
    assert (lo, hi) == (0.0, 3.0) and not signed and len(pics) == 2
    # the same value gets the same colour in both channels: one scale for the block
    assert (pics[0][0, 0] == pics[1][0, 0]).all()
    assert (pics[1][-1, -1] == render.lut("inferno")[255]).all()
    _, (lo, hi), signed = CV.block_pictures(maps - 1.0, base, over=True, alpha=1.0)
    assert signed and lo == -hi == -2.0
    assert "diverging" in CV.scale_text(lo, hi, signed, True)


def test_is_grey_reads_originals_shapes_or_equal_channels():
    rgb = np.random.default_rng(0).random((2, 3, 4, 4)).astype(np.float32)
    grey3 = np.repeat(rgb[:, :1], 3, axis=1)
    lab = np.zeros(2, np.int64)
    assert ImageData(grey3, lab, ("a",)).is_grey()
    assert not ImageData(rgb, lab, ("a",)).is_grey()
    ones = Originals.of([np.zeros((1, 5, 7), np.float32), np.zeros((1, 3, 3), np.float32)])
    assert ImageData(rgb, lab, ("a",), originals=ones).is_grey()
    mixed = Originals.of([np.zeros((1, 5, 7), np.float32), np.zeros((3, 3, 3), np.float32)])
    assert not ImageData(grey3, lab, ("a",), originals=mixed).is_grey()


def test_approx_caption_and_shared_maps_keep_the_report():
    from nnsens_core._approx import describe_error
    rep = {"tau": 0.05, "drill_top": 0.5, "sample": 16, "rel_l2": 0.0123, "spearman": 0.987,
           "parts": 2}
    text = SV.approx_caption("occlusion", rep)
    assert text == ("Occlusion (τ = 0.05, drill-down on the top 50% of positions): "
                    + describe_error(rep) + ", the worst over 2 batches of images.")
    assert "1.23%" in text and "0.9870" in text and "16 exactly computed" in text
    one = SV.approx_caption("occlusion", {**rep, "tau": 0.0, "drill_top": 1.0, "parts": 1})
    assert one == "Occlusion: " + describe_error(rep) + "."
    assert SV.approx_caption("occlusion", None) == "" == SV.approx_caption("gradcam", {})
    cache = SV.SharedMaps(max_bytes=2 * 64 * 4)
    cache.put("a", np.zeros((8, 8), np.float32), {"approx": rep})
    cache.put("b", np.zeros((8, 8), np.float32))
    assert cache.info("a") == {"approx": rep} and cache.info("b") is None
    cache.put("c", np.zeros((8, 8), np.float32))          # over the bytes: "a" goes, with its report
    assert cache.get("a") is None and cache.info("a") is None and len(cache) == 2
