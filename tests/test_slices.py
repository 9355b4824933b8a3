"""ui.slices.middle_slice: the middle slice of a (C, D, H, W) volume as an RGB uint8 image."""
import numpy as np
import pytest

from ui.slices import middle_slice, slice_index


def _vol():
    v = np.zeros((1, 5, 6, 7), np.float32)
    v[0, 2, :, :] = 0.5     # the middle D slice (5 // 2 = 2)
    v[0, :, 3, :] += 0.25   # the middle H slice (6 // 2 = 3)
    v[0, :, :, 3] += 0.125  # the middle W slice (7 // 2 = 3)
    return v


@pytest.mark.parametrize("axis, shape", [(0, (6, 7, 3)), (1, (5, 7, 3)), (2, (5, 6, 3))])
def test_shape_dtype_and_which_slice(axis, shape):
    v = _vol()
    img = middle_slice(v, axis)
    assert img.shape == shape and img.dtype == np.uint8
    ref = np.take(v[0], slice_index(v, axis), axis=axis)
    if axis:  # coronal and sagittal pictures show D upwards (as the Robustness viewer)
        ref = ref[::-1]
    np.testing.assert_array_equal(img[..., 0], np.rint(ref * 255).astype(np.uint8))
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()  # grey


def test_middle_index_and_three_channels_as_rgb():
    assert [slice_index(_vol(), a) for a in range(3)] == [2, 3, 3]
    v = np.zeros((3, 4, 4, 4), np.float32)
    v[0], v[2] = 1.0, 0.5
    img = middle_slice(v, 0)
    assert (img[..., 0] == 255).all() and (img[..., 1] == 0).all() and (img[..., 2] == 128).all()
    assert middle_slice(v[0], 1).shape == (4, 4, 3)  # (D, H, W) without a channel axis


def test_mask_tints_only_masked_voxels():
    v = np.full((1, 4, 4, 4), 0.5, np.float32)
    m = np.zeros((4, 4, 4), bool)
    m[2, 1, 1] = True   # in the middle D slice
    m[0, 0, 0] = True   # not in it
    img = middle_slice(v, 0, m, alpha=0.5)
    assert tuple(img[1, 1]) == (np.rint(0.5 * 128 + 0.5 * 255), 64, 64)  # on the grey byte 128
    rest = np.ones((4, 4), bool)
    rest[1, 1] = False
    assert (img[rest] == 128).all()


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="axis"):
        middle_slice(_vol(), 3)
    with pytest.raises(ValueError, match="mask"):
        middle_slice(_vol(), 0, np.zeros((5, 6, 6)))
    with pytest.raises(ValueError, match="volume"):
        middle_slice(np.zeros((4, 4)), 0)
