"""The slice viewer's pure rendering helpers (ui/volume_views.py): slices, blending, outlines."""
import numpy as np
import pytest

from ui import volume_views as VV


def _vol(c=1, d=4, h=5, w=6):
    return np.arange(c * d * h * w, dtype=np.float32).reshape(c, d, h, w)


@pytest.mark.parametrize("axis,shape", [("axial", (1, 5, 6)), ("coronal", (1, 4, 6)),
                                        ("sagittal", (1, 4, 5))])
def test_slice_shapes_for_each_axis(axis, shape):
    v = _vol()
    s = VV.slice_of(v, axis, 2)
    assert s.shape == shape
    assert VV.slice_of(v[0], axis, 2).shape == shape[1:]  # (D, H, W) too


def test_slice_contents_and_orientation():
    v = _vol()
    np.testing.assert_array_equal(VV.slice_of(v, "axial", 1), v[:, 1])
    # coronal/sagittal: D points up, so the picture's last row is d = 0
    np.testing.assert_array_equal(VV.slice_of(v, "coronal", 3)[0, -1], v[0, 0, 3, :])
    np.testing.assert_array_equal(VV.slice_of(v, "sagittal", 5)[0, 0], v[0, -1, :, 5])
    # out-of-range indices are clipped to the axis
    np.testing.assert_array_equal(VV.slice_of(v, "axial", 99), v[:, 3])
    with pytest.raises(ValueError):
        VV.slice_of(v, "oblique", 0)


def test_blend_at_opacity_zero_and_one():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    vals = rng.random((7, 9))
    np.testing.assert_array_equal(VV.blend(base, vals, 0.0), base)
    full = VV.blend(base, vals, 1.0, "hot")
    np.testing.assert_array_equal(full, (VV.colourize(vals, "hot") * 255).round().astype(np.uint8))
    half = VV.blend(base, vals, 0.5, "hot").astype(int)
    lo, hi = np.minimum(base, full).astype(int), np.maximum(base, full).astype(int)
    assert np.all(lo - 1 <= half) and np.all(half <= hi + 1)


def test_colour_maps_span_their_ends():
    for cmap in VV.CMAPS:
        c = VV.colourize(np.array([[0.0, 1.0]]), cmap)
        assert c.shape == (1, 2, 3) and 0 <= c.min() and c.max() <= 1
        assert not np.allclose(c[0, 0], c[0, 1])
    np.testing.assert_allclose(VV.colourize(np.array([0.0, 1.0]), "hot"), [[0, 0, 0], [1, 1, 1]])


def test_atlas_outline_is_exactly_the_boundaries_of_two_regions():
    lab = np.zeros((6, 8), dtype=int)
    lab[1:5, 1:4] = 1   # region 1: rows 1-4, cols 1-3
    lab[1:5, 4:7] = 2   # region 2 touches it: rows 1-4, cols 4-6
    expected = np.zeros_like(lab, dtype=bool)
    for r in range(1, 5):
        for c in range(1, 7):
            nb = [lab[r + dr, c + dc] for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1))]
            expected[r, c] = any(n != lab[r, c] for n in nb)
    got = VV.outline_of(lab)
    np.testing.assert_array_equal(got, expected)
    # the interior of each region and the background are not outline
    assert not got[2, 2] and not got[3, 5] and not got[0].any()
    # the shared border shows on both sides
    assert got[2, 3] and got[2, 4]


def test_atlas_outline_in_3d_uses_face_neighbours():
    lab = np.ones((3, 3, 3), dtype=int)
    lab[1, 1, 1] = 2
    got = VV.outline_of(lab)
    assert got[1, 1, 1]
    assert got.sum() == 1 + 6  # the centre and its six face neighbours (no edge/corner ones)
    assert not got[0, 0, 0]


def test_render_volume_and_image():
    v = np.random.default_rng(1).random((1, 8, 10, 12)).astype(np.float32)
    m = np.zeros((8, 10, 12))
    m[2:4] = 1.0
    atlas = np.zeros((8, 10, 12), dtype=int)
    atlas[:, :5] = 1
    atlas[:, 5:] = 2
    pics = VV.render(v, m, atlas, point=(3, 4, 5), crosshair=True, alpha=1.0, target=24)
    assert set(pics) == set(VV.AXES)
    s = VV.scale_for((8, 10, 12), 24)
    assert s == 2
    assert pics["axial"].shape == (10 * s, 12 * s, 3) and pics["axial"].dtype == np.uint8
    assert pics["coronal"].shape == (8 * s, 12 * s, 3)
    assert pics["sagittal"].shape == (8 * s, 10 * s, 3)
    # the outline colour is painted where regions meet (axial: rows 4 and 5)
    assert (pics["axial"][4 * s, 0] == VV.OUTLINE_COLOUR).all()
    # a different slice with a different overlay gives a different picture
    assert not np.array_equal(VV.render_slice(v, "axial", 3, m, alpha=1.0),
                              VV.render_slice(v, "axial", 6, m, alpha=1.0))
    img = np.random.default_rng(2).random((3, 16, 16))
    pic = VV.render(img, np.ones((16, 16)), alpha=0.0, target=64)["image"]
    assert pic.shape == (64, 64, 3)
    np.testing.assert_array_equal(pic[::4, ::4], VV.gray(img))
    with pytest.raises(ValueError):
        VV.compose(img, np.ones((8, 8)))


def test_voxel_readout_names_the_region():
    from nnsens_core.volumes import Atlas
    lab = np.zeros((2, 2, 2), dtype=int)
    lab[1] = 3
    a = Atlas(lab, {3: "left hippocampus"})
    vals = np.full((2, 2, 2), 0.25)
    assert "left hippocampus" in VV.voxel_readout((1, 0, 0), vals, a)
    assert "0.250" in VV.voxel_readout((1, 0, 0), vals, a)
    assert "background" in VV.voxel_readout((0, 0, 0), None, a)
