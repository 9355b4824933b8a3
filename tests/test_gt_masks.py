"""Ground-truth mask uploads (compare.read_gt_masks) and the saliency page's pure helpers."""
import io

import numpy as np
import pytest

from nnsens_core.saliency.io import read_gt_masks
from nnsens_core.errors import NnsensError
from tests.uploads import npz_bytes, png_bytes


def test_npz_npy_and_png_masks_are_read():
    m = np.zeros((5, 8, 8), bool)
    m[:, 2:4, 3:6] = True
    got = read_gt_masks(npz_bytes(masks=m.astype(np.uint8)), "m.npz", 5, (8, 8))
    assert got.dtype == bool and np.array_equal(got, m)
    # the only array of an .npz, whatever its name; a single (H, W) mask
    assert np.array_equal(read_gt_masks(npz_bytes(gt=m[0]), "one.npz", 5, (8, 8)), m[:1])
    buf = io.BytesIO()
    np.save(buf, m)
    assert np.array_equal(read_gt_masks(buf.getvalue(), "m.npy", 5, (8, 8)), m)
    png = read_gt_masks(png_bytes((m[0] * 255).astype(np.uint8)), "mask.png", 5, (8, 8))
    assert png.shape == (1, 8, 8) and np.array_equal(png[0], m[0])


def test_wrong_size_and_bad_files_say_what_to_fix():
    m = np.zeros((5, 8, 8), bool)
    with pytest.raises(NnsensError, match=r"is 7x8 .* images are 8x8"):
        read_gt_masks(npz_bytes(masks=np.zeros((5, 7, 8), bool)), "m.npz", 5, (8, 8))
    with pytest.raises(NnsensError, match=r"is 16x16 .* images are 8x8"):
        read_gt_masks(png_bytes(np.zeros((16, 16), np.uint8)), "m.png", 5, (8, 8))
    with pytest.raises(NnsensError, match="holds 3 masks for 5 images"):
        read_gt_masks(npz_bytes(masks=m[:3]), "m.npz", 5, (8, 8))
    with pytest.raises(NnsensError, match="binary"):
        read_gt_masks(npz_bytes(masks=m.astype(np.float32) + 0.5), "m.npz", 5, (8, 8))
    with pytest.raises(NnsensError, match="name the masks array 'masks'"):
        read_gt_masks(npz_bytes(a=m, b=m), "m.npz", 5, (8, 8))
    with pytest.raises(NnsensError, match="not a readable image"):
        read_gt_masks(b"this is a text file, not a picture", "notes.png", 5, (8, 8))
    with pytest.raises(NnsensError, match="not a readable .npz"):
        read_gt_masks(b"garbage", "m.npz", 5, (8, 8))
    with pytest.raises(NnsensError, match=r"\.npz, \.npy or \.png"):
        read_gt_masks(b"x", "m.csv", 5, (8, 8))


def test_page_helpers_filter_subset_outline_and_tables():
    from ui import saliency_views as V
    labels = np.array([0, 1, 2, 0, 1, 2, 0])
    preds = np.array([0, 1, 0, 0, 2, 2, 1])
    assert V.filtered_indices(labels, preds, [0, 1], "all").tolist() == [0, 1, 3, 4, 6]
    assert V.filtered_indices(labels, preds, [0, 1, 2], "incorrect").tolist() == [2, 4, 6]
    assert V.filtered_indices(labels, preds, [0], "correct").tolist() == [0, 3]
    assert V.per_class_subset(np.arange(7), labels, 2).tolist() == [0, 1, 2, 3, 4, 5]
    mask = np.zeros((5, 5), bool)
    mask[1:4, 1:4] = True
    out = V.outline(np.zeros((5, 5, 3), np.uint8), mask)
    painted = out[..., 1] == 255
    assert painted.sum() == 8 and not painted[2, 2] and not painted[0, 0]  # ring, not the centre
    # a map equal to the mask: IoU 1, pointing 1, all mass inside; its inverse: IoU 0, mass 0
    maps = {"same": mask.astype(float), "inverse": 1.0 - mask}
    t = V.localization_table(maps, mask, None, 0.0)
    assert t.loc["same"].tolist() == [1.0, 1.0, 1.0]
    assert t.loc["inverse", "GT IoU"] == 0.0 and t.loc["inverse", "relevance mass"] == 0.0
    pairs = V.pairwise_table({"a": mask[None].astype(float), "b": mask[None].astype(float),
                              "c": 1.0 - mask[None]}, 0.36)
    assert len(pairs) == 3
    ab = pairs[(pairs["method A"] == "a") & (pairs["method B"] == "b")].iloc[0]
    assert ab["Spearman ρ"] == pytest.approx(1.0) and ab["cosine"] == pytest.approx(1.0)
    ac = pairs[(pairs["method A"] == "a") & (pairs["method B"] == "c")].iloc[0]
    assert ac["Spearman ρ"] == pytest.approx(-1.0) and ac["cosine"] == 0.0
