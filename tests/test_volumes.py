"""Volumes in the data layer: NIfTI / .npy / ZIP loaders, atlases, limits and errors."""
import gzip

import nibabel as nib
import numpy as np
import pytest
import torch

from nnsens_core import data as nd
from nnsens_core import volumes as nv
from nnsens_core.errors import NnsensError
from tests.uploads import npz_bytes, zip_bytes


def _vol(seed=0, shape=(6, 7, 5)):
    return np.random.default_rng(seed).uniform(-3.0, 40.0, shape).astype(np.float32)


def _nii(a, gz=False) -> bytes:
    raw = nib.Nifti1Image(np.asarray(a), np.eye(4)).to_bytes()
    return gzip.compress(raw) if gz else raw


def test_nifti_round_trip_bytes_and_gz_path(tmp_path):
    v = _vol()
    raw = nv.save_nifti(v)
    np.testing.assert_array_equal(nv.load_nifti(raw, scale=False)[0], v)
    path = tmp_path / "map.nii.gz"
    blob = nv.save_nifti(torch.as_tensor(v)[None], path)
    assert blob[:2] == b"\x1f\x8b" and path.read_bytes() == blob
    got = nv.load_nifti(path)
    assert got.shape == (1, 6, 7, 5) and got.dtype == np.float32
    np.testing.assert_allclose(got[0], (v - v.min()) / (v.max() - v.min()), atol=1e-6)
    assert got.min() == 0.0 and got.max() == 1.0
    mask = np.zeros((4, 4, 4), bool)
    mask[1, 2, 3] = True
    back = nv.load_nifti(nv.save_nifti(mask), scale=False)[0]
    np.testing.assert_array_equal(back, mask.astype(np.float32))


def test_4d_nifti_is_refused_unless_its_4th_dim_is_one():
    with pytest.raises(NnsensError, match=r"4-D NIfTI of shape \(4, 4, 4, 3\).*series of 3"):
        nv.load_nifti(_nii(np.zeros((4, 4, 4, 3), np.float32)))
    one = nv.load_nifti(_nii(_vol(shape=(4, 5, 6, 1))))
    assert one.shape == (1, 4, 5, 6)
    with pytest.raises(NnsensError, match="3 spatial dimensions"):
        nv.load_nifti(_nii(np.zeros((4, 4), np.float32)))


def test_nifti_limits_and_broken_files(monkeypatch):
    monkeypatch.setattr(nv, "MAX_VOLUME_VOXELS", 100)
    with pytest.raises(NnsensError, match="limit per volume"):
        nv.load_nifti(_nii(np.zeros((5, 5, 5), np.float32), gz=True))
    monkeypatch.undo()
    with pytest.raises(NnsensError, match="not a NIfTI"):
        nv.load_nifti(b"hello world, not a scan" * 40)
    with pytest.raises(NnsensError, match="truncated"):
        nv.load_nifti(_nii(_vol())[:-50])
    with pytest.raises(NnsensError, match="NaN"):
        nv.load_nifti(_nii(np.full((3, 3, 3), np.nan, np.float32)))
    budget = [2 * 6 * 7 * 5 - 1]
    nv.load_nifti(_nii(_vol()), budget=budget)
    with pytest.raises(NnsensError, match="together"):
        nv.load_nifti(_nii(_vol()), budget=budget)


def test_npy_volumes_kept_in_unit_range_else_scaled_and_pickles_refused():
    a = np.random.default_rng(1).uniform(0.1, 0.9, (3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(nv.load_volume(nv.npy_bytes(a))[0], a)
    b = nv.load_volume(nv.npy_bytes(a * 100))
    assert b.min() == 0 and b.max() == 1
    with pytest.raises(NnsensError, match="pickled"):
        import io
        buf = io.BytesIO()
        np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
        nv.load_npy(buf.getvalue())


def _zip_of_volumes(top="scans/"):
    files = {}
    for i in range(3):
        files[f"{top}AD/s{i}.nii.gz"] = _nii(_vol(i), gz=True)
        files[f"{top}CN/s{i}.npy"] = nv.npy_bytes(_vol(10 + i))
    files[f"{top}CN/.hidden.npy"] = b"junk"
    files[f"{top}readme.txt"] = b"notes"
    return files


def test_zip_of_class_folders_of_volumes_loads_with_folder_class_names():
    d = nv.load_volume_zip(zip_bytes(_zip_of_volumes()))
    assert d.class_names == ("AD", "CN") and d.ndim_spatial == 3
    assert d.images.shape == (6, 1, 6, 7, 5) and d.shape == (1, 6, 7, 5)
    assert d.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert d.images.min() >= 0 and d.images.max() <= 1 and d.images.dtype == np.float32
    np.testing.assert_allclose(d.images[0, 0], nv.minmax(_vol(0)), atol=1e-6)
    sub = d.subset([1, 4])
    assert sub.labels.tolist() == [0, 1] and sub.shape == d.shape


def test_volume_folder(tmp_path):
    for c, k in (("a", 0), ("b", 1)):
        (tmp_path / c).mkdir()
        nv.save_nifti(_vol(k), tmp_path / c / "x.nii")
    d = nv.load_volume_folder(tmp_path)
    assert d.class_names == ("a", "b") and d.images.shape == (2, 1, 6, 7, 5)


def test_volume_zip_errors():
    one = {f"CN/s{i}.nii": _nii(_vol(i)) for i in range(3)}
    with pytest.raises(NnsensError, match=r"1 class folder\(s\).*at least two class"):
        nv.load_volume_zip(zip_bytes(one))
    mixed = {"AD/a.nii": _nii(_vol(0)), "CN/b.nii": _nii(_vol(1, shape=(6, 7, 6)))}
    with pytest.raises(NnsensError, match=r"\(1, 6, 7, 6\).*\(1, 6, 7, 5\).*share one grid"):
        nv.load_volume_zip(zip_bytes(mixed))
    with pytest.raises(NnsensError, match="not a ZIP"):
        nv.load_volume_zip(b"plain bytes")


def test_atlas_shape_must_match_the_volumes():
    atlas = nv.Atlas(np.ones((6, 7, 4), np.int32), {1: "whole"})
    with pytest.raises(NnsensError, match=r"atlas has shape \(6, 7, 4\).*spatial shape \(6, 7, 5\)"):
        nd.ImageData(np.zeros((2, 1, 6, 7, 5), np.float32), np.array([0, 1]), ("a", "b"),
                     atlas=atlas)
    with pytest.raises(NnsensError, match="3-D volumes"):
        nd.ImageData(np.zeros((2, 1, 7, 4), np.float32), np.array([0, 1]), ("a", "b"),
                     atlas=atlas)
    with pytest.raises(NnsensError, match=r"atlas has shape"):
        nv.load_volume_zip(zip_bytes(_zip_of_volumes()), atlas=atlas)


def test_atlas_loader_nifti_with_csv_names_and_non_integer_refused(tmp_path):
    lab = np.zeros((6, 7, 5), np.int16)
    lab[:3], lab[3:, :2] = 1, 7
    (tmp_path / "names.csv").write_text("label,name\n1,left hippocampus\n7,cerebellum\n9,absent\n")
    atlas = nv.load_atlas(nv.save_nifti(lab.astype(np.float32)), tmp_path / "names.csv")
    assert atlas.labels.dtype == np.int32 and atlas.region_ids == (1, 7)
    assert atlas.region_names == {1: "left hippocampus", 7: "cerebellum"}
    np.testing.assert_array_equal(atlas.mask("cerebellum"), lab == 7)
    d = nv.load_volume_zip(zip_bytes(_zip_of_volumes()), atlas=atlas)
    assert d.atlas is atlas and d.subset([0, 5]).atlas is atlas
    npy_atlas = nv.load_atlas(nv.npy_bytes(lab), b"1,a\n7,b\n")
    assert npy_atlas.region_names == {1: "a", 7: "b"}
    bad = lab.astype(np.float32)
    bad[0, 0, 0] = 0.5
    with pytest.raises(NnsensError, match="non-integer labels.*0.5 at voxel \\(0, 0, 0\\)"):
        nv.load_atlas(nv.save_nifti(bad))
    with pytest.raises(NnsensError, match="whole number"):
        nv.load_atlas(nv.npy_bytes(lab), b"label,name\nx,a\n")
    with pytest.raises(NnsensError, match="dtype float"):
        nv.Atlas(bad)
    with pytest.raises(NnsensError, match="not in the atlas"):
        atlas.mask("amygdala")


def test_region_means_match_a_direct_computation():
    lab = np.zeros((4, 4, 4), np.int32)
    lab[:2], lab[2:, :1] = 2, 5
    atlas = nv.Atlas(lab, {2: "a"})
    maps = np.random.default_rng(0).random((3, 4, 4, 4))
    got = atlas.region_means(maps)
    assert got.shape == (3, 2) and atlas.name_of(5) == "region 5"
    np.testing.assert_allclose(got[:, 0], maps[:, lab == 2].mean(1))
    np.testing.assert_allclose(got[:, 1], maps[:, lab == 5].mean(1))


def test_npz_volumes_with_atlas_and_2d_images_unchanged():
    vols = np.random.default_rng(0).uniform(0, 1, (4, 1, 5, 6, 7)).astype(np.float32)
    lab = np.zeros((5, 6, 7), np.int32)
    lab[1:4, 1:4, 1:4] = 3
    d = nd.load_npz(npz_bytes(images=vols, labels=np.array([0, 1, 0, 1]),
                              masks=np.zeros((4, 5, 6, 7), bool), atlas=lab,
                              region_labels=np.array([3]), region_names=np.array(["core"])))
    assert d.ndim_spatial == 3 and d.shape == (1, 5, 6, 7) and d.masks.shape == (4, 5, 6, 7)
    np.testing.assert_array_equal(d.images, vols)
    assert d.atlas.region_names == {3: "core"}
    scaled = nd.load_npz(npz_bytes(images=vols * 1000, labels=np.array([0, 1, 0, 1])))
    assert scaled.images.max() == 1.0 and scaled.images.min() == 0.0
    img = nd.ImageData(np.zeros((2, 3, 8, 8), np.float32), np.array([0, 1]), ("a", "b"))
    assert img.ndim_spatial == 2 and img.shape == (3, 8, 8)
    with pytest.raises(NnsensError, match=r"\(N, C, D, H, W\)"):
        nd.ImageData(np.zeros((2, 1, 2, 3, 4, 5), np.float32), np.array([0, 1]), ("a", "b"))
    with pytest.raises(NnsensError, match="masks have shape"):
        nd.ImageData(vols, np.array([0, 1, 0, 1]), ("a", "b"), masks=np.zeros((4, 5, 6), bool))
