"""Regions of interest: the auto-detected ultrasound fan against the phantom's true sector, text
and a depth scale burned in outside the fan left out, polygons checked by hand."""
import functools

import numpy as np
import pytest
from PIL import Image, ImageDraw

from nnsens_core import preprocess as P
from nnsens_core.data import ImageData
from nnsens_core.errors import NnsensError
from nnsens_core.phantom import make_phantom
from nnsens_core.roi import fan_mask, parse_polygon, polygon_mask, roi_masks


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("size", [64, 160])
def test_fan_mask_finds_the_phantom_sector(size):
    d = make_phantom(12, size=size, seed=5, channels=1)
    ious = [_iou(fan_mask(d.images[i]), d.meta["sector"][i]) for i in range(len(d))]
    assert min(ious) >= 0.9, ious


@functools.lru_cache(maxsize=1)
def _fans():
    return make_phantom(5, size=256, seed=0, channels=1)   # one generator chunk, made once


def _screenshot(seed=0):
    """A phantom fan inside a wider scanner screen with burned-in text, a depth scale and a logo
    outside the fan, and compression-like noise on the black frame."""
    image, sector = _fans().images[seed, 0], _fans().meta["sector"][seed]
    h, w = 300, 420
    canvas = np.zeros((h, w), np.float32)
    top, left = 30, 80
    canvas[top:top + 256, left:left + 256] = image
    fan = np.zeros((h, w), bool)
    fan[top:top + 256, left:left + 256] = sector
    overlay = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(overlay)
    draw.text((4, 4), "JOHN DOE  ID 12345", fill=255)
    draw.text((4, 280), "C5-1  12 Hz  GN 60", fill=255)
    draw.line([(350, top), (350, top + 250)], fill=230, width=1)          # depth scale
    for k in range(6):
        draw.line([(350, top + 50 * k), (356, top + 50 * k)], fill=230, width=1)
        draw.text((360, top + 50 * k - 5), f"{k}", fill=230)
    draw.rectangle([380, 260, 410, 290], fill=180)                        # a logo
    text = np.asarray(overlay) > 0
    rng = np.random.default_rng(seed)
    img = np.where(text, np.asarray(overlay) / 255.0, canvas)
    img = np.where(fan | text, img, rng.uniform(0, 4 / 255, (h, w)))      # noisy black frame
    return img[None].astype(np.float32), fan, text


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fan_mask_leaves_out_burned_in_text_and_the_depth_scale(seed):
    img, fan, text = _screenshot(seed)
    m = fan_mask(img)
    assert m.shape == fan.shape
    assert _iou(m, fan) >= 0.9
    assert not (m & text).any(), int((m & text).sum())


def test_fan_mask_on_a_large_colour_image_works_on_a_copy():
    img, fan, _ = _screenshot(3)
    big = np.asarray(Image.fromarray(img[0]).resize((1260, 900), Image.NEAREST))
    big_fan = np.asarray(Image.fromarray(fan.astype(np.uint8)).resize((1260, 900), Image.NEAREST)) > 0
    m = fan_mask(np.repeat(big[None], 3, 0))
    assert m.shape == (900, 1260) and _iou(m, big_fan) >= 0.9


def test_fan_mask_of_a_black_image_says_to_use_a_polygon():
    with pytest.raises(NnsensError, match="polygon"):
        fan_mask(np.zeros((1, 40, 40), np.float32))


def test_polygon_mask_by_hand():
    m = polygon_mask([(2, 1), (5, 1), (5, 3), (2, 3)], (6, 8))
    want = np.zeros((6, 8), bool)
    want[1:4, 2:6] = True                    # rows 1..3, columns 2..5: centres on or inside
    np.testing.assert_array_equal(m, want)
    tri = polygon_mask([(0, 0), (99, 0), (0, 99)], (100, 100))
    assert abs(tri.sum() - 100 * 101 / 2) < 100      # about half the square
    assert tri[0, 0] and not tri[99, 99]


def test_parse_polygon_names_the_bad_vertex():
    assert parse_polygon("10,20; 200 20;\n120,180") == [(10, 20), (200, 20), (120, 180)]
    with pytest.raises(NnsensError, match=r"vertex 2 \('200,x'\)"):
        parse_polygon("10,20; 200,x; 1,2")
    with pytest.raises(NnsensError, match="vertex 1"):
        parse_polygon("1,2,3; 4,5; 6,7")
    with pytest.raises(NnsensError, match="2 vertices"):
        parse_polygon("1,2; 3,4")


def test_roi_masks_reach_the_model_input_through_the_recipe():
    img, fan, _ = _screenshot(4)
    d = ImageData(np.zeros((1, 1, 8, 8), np.float32), np.array([0]), ("a", "b"), originals=(img,))
    masks = roi_masks(d.originals, "fan")
    out = d.for_recipe(P.Recipe((60, 60), 1), masks)
    p = out.placements[0]
    assert out.roi.shape == (1, 60, 60) and not out.roi[0, :p.box[0]].any()   # padding is outside
    want = P.mask_to_model(fan, p)
    assert _iou(out.roi[0], want) > 0.85
    poly = roi_masks(d.originals, "polygon", "0,0; 419,0; 419,299; 0,299")
    assert poly[0].all()
    assert roi_masks(d.originals, "none") is None
    with pytest.raises(NnsensError, match="outside an image of 420×300"):
        roi_masks(d.originals, "polygon", "1000,1000; 1100,1000; 1100,1100")


def test_an_image_without_a_dark_frame_is_all_inside():
    assert fan_mask(np.full((3, 30, 50), 0.7, np.float32)).all()
