"""The synthetic brain phantom: determinism, balance, atlas, ground truth where the disease acts."""
import time

import numpy as np
import pytest

from nnsens_core import brain_phantom as bp
from nnsens_core.errors import NnsensError


@pytest.fixture(scope="module")
def vols():
    return bp.make_brain_phantom(64, seed=7)


def test_deterministic_prefix_stable_and_seed_dependent(vols):
    again = bp.make_brain_phantom(20, seed=7)
    np.testing.assert_array_equal(again.images, vols.images[:20])
    np.testing.assert_array_equal(again.masks, vols.masks[:20])
    np.testing.assert_array_equal(again.labels, vols.labels[:20])
    other = bp.make_brain_phantom(20, seed=8)
    assert not np.array_equal(other.images, again.images)


def test_shapes_range_and_balance_of_every_prefix(vols):
    assert vols.images.shape == (64, 1, 48, 48, 48) and vols.images.dtype == np.float32
    assert vols.ndim_spatial == 3 and vols.shape == (1, 48, 48, 48)
    assert vols.images.min() >= 0 and vols.images.max() <= 1
    assert vols.class_names == bp.CLASSES == ("control", "AD")
    counts = np.cumsum(vols.labels)
    k = np.arange(1, 65)
    assert np.all(np.abs(2 * counts - k) <= 1)  # every prefix balanced within one volume
    for i in range(len(vols)):  # zero outside the subject's (shifted) brain
        brain = np.roll(vols.meta["brain"], tuple(vols.meta["shift"][i]), axis=(0, 1, 2))
        assert vols.images[i, 0][~brain].max() == 0


def test_atlas_names_and_affected_regions():
    atlas = bp.atlas(48)
    assert atlas.region_names == bp.REGIONS and len(atlas.region_ids) == 14
    assert set(bp.AFFECTED_REGIONS) <= set(bp.REGIONS.values())
    sizes = {atlas.name_of(k): int((atlas.labels == k).sum()) for k in atlas.region_ids}
    assert min(sizes.values()) > 50  # every region holds voxels at 48^3
    assert sizes["left hippocampus"] == sizes["right hippocampus"]  # symmetric template
    assert np.array_equal(bp.affected_mask(48), atlas.mask(*bp.AFFECTED_REGIONS))


def test_ground_truth_is_the_shifted_affected_regions_of_patients_only(vols):
    aff = bp.affected_mask(48)
    for i in range(len(vols)):
        if vols.labels[i] == 0:
            assert not vols.masks[i].any() and vols.meta["severity"][i] == 0
        else:
            expect = np.roll(aff, tuple(vols.meta["shift"][i]), axis=(0, 1, 2))
            assert np.array_equal(vols.masks[i], expect)
            assert 0.18 <= vols.meta["severity"][i] <= 0.45


def test_disease_lowers_density_in_affected_regions_only(vols):
    """Per-region mean density relative to the subject's spared brain: lower in AD in every
    affected region, about equal (|diff| < 5 %) in every other region."""
    atlas = vols.atlas
    means = atlas.region_means(vols.images[:, 0])
    spared = vols.meta["brain"] & ~bp.affected_mask(48)
    rel = means / vols.images[:, 0][:, spared].mean(1, keepdims=True)
    ad, cn = rel[vols.labels == 1].mean(0), rel[vols.labels == 0].mean(0)
    for j, k in enumerate(atlas.region_ids):
        name = atlas.name_of(k)
        if name in bp.AFFECTED_REGIONS:
            assert ad[j] < 0.85 * cn[j], name
        elif name != "ventricles":  # near-zero density: a ratio of noise
            assert abs(ad[j] / cn[j] - 1) < 0.05, name


def test_not_trivially_separable_by_global_density(vols):
    """Global intensity varies: the mean density of the whole brain alone does not tell the
    classes apart (the classes' ranges overlap)."""
    g = vols.images[:, 0][:, vols.meta["brain"]].mean(1)
    ad, cn = g[vols.labels == 1], g[vols.labels == 0]
    assert ad.max() > cn.min() and cn.max() > ad.min()


def test_fast_enough():
    bp.make_brain_phantom(2, seed=0)  # the template is built once per size
    t0 = time.perf_counter()
    bp.make_brain_phantom(64, seed=99)
    assert time.perf_counter() - t0 < 3.0  # ~1 s on one free core


def test_config_validation_and_demo_splits():
    with pytest.raises(NnsensError, match="size=16"):
        bp.BrainPhantomConfig(n=4, size=16)
    with pytest.raises(NnsensError, match="n=0"):
        bp.BrainPhantomConfig(n=0)
    with pytest.raises(NnsensError, match="severity"):
        bp.BrainPhantomConfig(n=4, severity=(0.5, 0.2))
    with pytest.raises(NnsensError, match="split="):
        bp.demo_volumes("holdout")
    d = bp.demo_volumes("val", 4)
    assert d.name == "brain phantom (val)" and d.atlas is not None
    np.testing.assert_array_equal(d.images, bp.make_brain_phantom(4, seed=2).images)
