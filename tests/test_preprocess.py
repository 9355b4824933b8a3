"""preprocess: recipes, placements and maps back on the original, checked by hand."""
import dataclasses

import numpy as np
import pytest

from nnsens_core import preprocess as P
from nnsens_core.data import ImageData
from nnsens_core.errors import NnsensError
from nnsens_core.zoo import IMAGE, ModelSpec


def test_recipe_validates_and_reads_the_spec():
    spec = ModelSpec("m", "resnet18-small", IMAGE, (1, 96, 128), ("a", "b"), mean=(0.5,),
                     std=(0.25,), resize="crop")
    r = P.Recipe.from_spec(spec)
    assert r == P.Recipe((96, 128), 1, "crop", (0.5,), (0.25,))
    assert "96×128" in r.describe() and "grey" in r.describe() and "centre crop" in r.describe()
    for bad in ({"size": (0, 4)}, {"channels": 2}, {"resize": "pad"}, {"mean": (0.1, 0.2)}):
        with pytest.raises(NnsensError):
            P.Recipe(**{"size": (8, 8), "channels": 1, **bad})
    with pytest.raises(NnsensError, match="resize"):
        dataclasses.replace(spec, resize="zoom")


def test_letterbox_places_a_wide_image_in_the_middle_and_maps_back():
    img = np.zeros((1, 30, 60), np.float32)
    img[0, :, 30:] = 1.0                          # right half white
    r = P.Recipe((20, 20), 1, "letterbox")
    x, p = P.to_model(img, r)
    assert p.box == (5, 0, 10, 20) and p.crop == (0, 0, 30, 60)
    assert x.shape == (1, 20, 20)
    assert x[0, :5].max() == 0 and x[0, 15:].max() == 0          # padding rows are black
    assert x[0, 10, 15] == pytest.approx(1.0) and x[0, 10, 4] == pytest.approx(0.0)
    m = np.zeros((20, 20), np.float32)
    m[5:15, 10:] = 2.0                             # the map lights the right half of the content
    back = P.map_to_original(m, p)
    assert back.shape == (30, 60) and np.isfinite(back).all()
    assert back[:, 35:].min() == pytest.approx(2.0) and back[:, :25].max() == pytest.approx(0.0)


def test_centre_crop_never_shows_the_sides_and_marks_them_nan():
    r = P.Recipe((10, 10), 3, "crop")
    img = np.random.default_rng(0).random((3, 20, 40)).astype(np.float32)
    x, p = P.to_model(img, r)
    assert p.crop == (0, 10, 20, 20) and p.box == (0, 0, 10, 10)
    back = P.map_to_original(np.ones((10, 10)), p)
    assert np.isnan(back[:, :10]).all() and np.isnan(back[:, 30:]).all()
    assert np.allclose(back[:, 10:30], 1.0)


def test_stretch_and_channels():
    r = P.Recipe((8, 16), 3, "stretch")
    grey = np.full((1, 4, 4), 0.25, np.float32)
    x, p = P.to_model(grey, r)
    assert x.shape == (3, 8, 16) and np.allclose(x, 0.25) and p.box == (0, 0, 8, 16)
    rgb = np.stack([np.full((4, 4), v, np.float32) for v in (1.0, 0.0, 0.0)])
    y, _ = P.to_model(rgb, P.Recipe((4, 4), 1, "stretch"))
    assert np.allclose(y, 0.299)  # luminance of pure red, as Pillow's convert("L")


def test_one_upload_serves_models_of_two_sizes_and_masks_follow():
    rng = np.random.default_rng(1)
    originals = (rng.random((1, 50, 80)).astype(np.float32), rng.random((3, 40, 40)).astype(np.float32))
    small, places = P.prepare(originals, P.Recipe((16, 16), 3))
    masks = np.zeros((2, 16, 16), bool)
    masks[:, 6:10, 6:10] = True
    d = ImageData(small, np.array([0, 1]), ("a", "b"), masks, originals=originals,
                  placements=places, files=("x.png", "y.png"), groups=("p1", "p2"))
    big = d.for_recipe(P.Recipe((64, 32), 1, "letterbox"))
    assert big.images.shape == (2, 1, 64, 32) and big.masks.shape == (2, 64, 32)
    assert big.originals is d.originals or big.originals == d.originals
    # the mask square stays around the centre of the image content
    ys, xs = np.nonzero(big.masks[1])
    assert 28 <= ys.mean() <= 36 and 12 <= xs.mean() <= 20
    sub = big.subset([1])
    assert sub.files == ("y.png",) and sub.groups == ("p2",) and sub.placements[0] == big.placements[1]
    with pytest.raises(NnsensError, match="files"):
        ImageData(small, np.array([0, 1]), ("a", "b"), files=("x.png",))


def test_map_size_mismatch_names_the_fix():
    _, p = P.to_model(np.zeros((1, 10, 10), np.float32), P.Recipe((8, 8), 1))
    with pytest.raises(NnsensError, match="model's input size"):
        P.map_to_original(np.zeros((4, 4)), p)
