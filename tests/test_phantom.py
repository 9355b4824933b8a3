import json

import numpy as np
import pytest
from PIL import Image

from nnsens_core.__main__ import main
from nnsens_core.data import load_npz
from nnsens_core.errors import NnsensError
from nnsens_core.phantom import CLASSES, PhantomConfig, demo_images, make_phantom, sector_of


@pytest.fixture(scope="module")
def data():
    return make_phantom(90, seed=7)


def test_shapes_dtypes_ranges(data):
    assert data.images.shape == (90, 3, 64, 64) and data.images.dtype == np.float32
    assert data.masks.shape == (90, 64, 64) and data.masks.dtype == bool
    assert data.labels.dtype == np.int64 and data.class_names == CLASSES
    assert 0.0 <= data.images.min() and data.images.max() <= 1.0
    assert (data.images[:, 0] == data.images[:, 1]).all() and (data.images[:, 0] == data.images[:, 2]).all()
    assert np.bincount(data.labels, minlength=3).tolist() == [30, 30, 30]
    assert data.images.max() > 0.9  # bright lines are really bright


def test_deterministic_by_seed_and_prefix_stable():
    a, b, c = make_phantom(40, seed=3), make_phantom(40, seed=3), make_phantom(40, seed=4)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
    assert np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, c.images)
    # the first k images do not depend on how many are generated
    big = make_phantom(75, seed=3)
    assert np.array_equal(big.images[:40], a.images) and np.array_equal(big.labels[:40], a.labels)


def test_masks_non_empty_and_inside_sector(data):
    sector = data.meta["sector"]
    assert np.array_equal(sector, sector_of(data.images))
    assert data.masks.reshape(90, -1).any(axis=1).all()
    assert not (data.masks & ~sector).any()
    # outside the sector is black, inside never is
    assert (data.images.max(axis=1)[~sector] == 0).all()
    frac = sector.mean(axis=(1, 2))
    assert (frac > 0.4).all() and (frac < 0.9).all()
    # the pleural line lies at 25-35 % of the sector depth
    assert ((data.meta["pleura_depth"] >= 0.25) & (data.meta["pleura_depth"] <= 0.35)).all()


def test_each_mask_marks_a_bright_class_feature(data):
    """The feature of class c is brighter in class-c images than the same region in other images."""
    img = data.images[:, 0]
    for c in range(3):
        own = np.where(data.labels == c)[0]
        for other in (o for o in range(3) if o != c):
            oth = np.where(data.labels == other)[0]
            inside = np.mean([img[i][data.masks[i]].mean() for i in own])
            elsewhere = np.mean([img[j][data.masks[i]].mean() for i, j in zip(own, oth)])
            assert inside > 1.25 * elsewhere, (CLASSES[c], CLASSES[other], inside, elsewhere)


def _vertical_structure(img, sector):
    """Max minus median of the column means over the deep half of the sector (central columns)."""
    rows = slice(36, 58)
    cols = slice(18, 46)
    g, s = img[rows, cols], sector[rows, cols]
    col = (g * s).sum(0) / np.maximum(s.sum(0), 1)
    return col.max() - np.median(col)


def test_covid_has_vertical_structure_and_regular_horizontal(data):
    img, sec = data.images[:, 0], data.meta["sector"]
    vs = np.array([_vertical_structure(img[i], sec[i]) for i in range(len(data))])
    reg, cov = vs[data.labels == 0], vs[data.labels == 1]
    assert np.median(cov) > 3 * np.median(reg)
    # regular images have bright horizontal arcs: their row profile varies more than covid's
    rowvar = np.array([np.std((img[i] * sec[i]).sum(1)[30:60] / np.maximum(sec[i].sum(1)[30:60], 1))
                       for i in range(len(data))])
    assert np.median(rowvar[data.labels == 0]) > 1.5 * np.median(rowvar[data.labels == 1])


def test_features_vary_between_images(data):
    cov = data.masks[data.labels == 1]
    assert len({m.sum() for m in cov}) > 20  # B-line count/width/position vary
    depth = data.meta["pleura_depth"]
    assert depth.std() > 0.02


def test_options_channels_size_classes():
    one = make_phantom(6, size=32, seed=1, channels=1)
    assert one.images.shape == (6, 1, 32, 32)
    big = make_phantom(4, size=96, seed=1)
    assert big.images.shape == (4, 3, 96, 96) and big.masks.reshape(4, -1).any(1).all()
    two = make_phantom(10, seed=1, classes=("covid", "pneumonia"))
    assert two.class_names == ("covid", "pneumonia")
    assert sorted(np.bincount(two.labels).tolist()) == [5, 5]


def test_demo_images_splits():
    tr, te, va = demo_images("train", 9), demo_images("test", 9), demo_images("val", 9)
    assert tr.images.shape == (9, 3, 64, 64)
    assert np.array_equal(tr.images, make_phantom(9, seed=0).images)
    assert np.array_equal(te.images, make_phantom(9, seed=1).images)
    assert np.array_equal(va.images, make_phantom(9, seed=2).images)
    with pytest.raises(NnsensError, match="split"):
        demo_images("holdout")


@pytest.mark.parametrize("kwargs, match", [
    ({"n": 0}, "n=0"), ({"n": 4, "size": 16}, "size=16"), ({"n": 4, "channels": 2}, "channels=2"),
    ({"n": 4, "classes": ("regular", "flu")}, "flu"), ({"n": 4, "classes": ()}, "classes"),
    ({"n": 4, "classes": ("covid", "covid")}, "twice"), ({"n": 4, "seed": -1}, "seed=-1"),
    ({"n": 2.5}, "n=2.5"),
])
def test_bad_config_raises(kwargs, match):
    with pytest.raises(NnsensError, match=match):
        PhantomConfig(**kwargs)
    with pytest.raises(NnsensError):
        make_phantom(**kwargs)


def test_cli_writes_files(tmp_path, capsys):
    out = tmp_path / "ph"
    assert main(["phantom", "--n", "6", "--out", str(out), "--seed", "5"]) == 0
    ref = make_phantom(6, seed=5)
    info = json.loads((out / "labels.json").read_text())
    assert [r["class"] for r in info["images"]] == [CLASSES[k] for k in ref.labels]
    for r in info["images"]:
        assert r["image"] == f"images/{r['index']}_{r['class']}.png"
        img = np.asarray(Image.open(out / r["image"]), dtype=np.float32) / 255
        assert img.shape == (64, 64, 3)
        assert np.abs(img[..., 0] - ref.images[r["index"], 0]).max() <= 0.5 / 255 + 1e-6
        mask = np.asarray(Image.open(out / r["mask"])) > 127
        assert np.array_equal(mask, ref.masks[r["index"]])
    npz = load_npz(out / "phantom.npz")
    assert np.array_equal(npz.images, ref.images) and np.array_equal(npz.masks, ref.masks)
    assert npz.class_names == CLASSES and np.array_equal(npz.labels, ref.labels)


def test_cli_bad_size_is_an_error(tmp_path, capsys):
    assert main(["phantom", "--n", "2", "--out", str(tmp_path), "--size", "8"]) == 2
    assert "size=8" in capsys.readouterr().err
