"""Real image files in a ZIP / folder: kept at their own size (grey 1 channel, colour 3), 8/16-bit
scaled by their bit depth, CMYK / palette / RGBA converted, EXIF applied, first GIF frame, skipped
files counted, class/patient/image folders; every model gets its input through its recipe."""
import io
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw

from nnsens_core import data as nd
from nnsens_core import preprocess as P
from nnsens_core.errors import NnsensError
from nnsens_core.fingerprint import fingerprint
from tests.uploads import png_bytes, zip_bytes


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _ramp16(hi: int, h=30, w=50) -> np.ndarray:
    return np.round(np.linspace(0, hi, h * w)).astype(np.uint16).reshape(h, w)


def _by_file(d):
    return {f: i for i, f in enumerate(d.files)}


@pytest.fixture(scope="module")
def mixed():
    """A ZIP with one of each kind of file a clinician's folder holds."""
    rgb = np.zeros((24, 40, 3), np.uint8)
    rgb[..., 0], rgb[..., 1] = 200, np.arange(40, dtype=np.uint8)[None] * 5
    grey = (np.arange(20 * 30) % 256).astype(np.uint8).reshape(20, 30)
    screenshot = Image.new("L", (60, 40), 0)
    ImageDraw.Draw(screenshot).text((2, 2), "PATIENT 123", fill=255)
    pal = Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=16)
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., :3], rgba[:, :6, 3], rgba[:, 6:, 3] = 255, 255, 0   # right half transparent
    frames = [Image.new("L", (16, 12), v) for v in (40, 220)]
    gif = _save(frames[0], "GIF", save_all=True, append_images=frames[1:])
    exif = Image.Exif()
    exif[0x0112] = 6                                   # rotate 90° clockwise to display
    tall = _save(Image.fromarray(rgb), "JPEG", exif=exif.tobytes(), quality=95)
    files = {
        "data/covid/p1/a16.png": png_bytes(_ramp16(65535)),
        "data/covid/p1/b12.png": png_bytes(_ramp16(4095)),
        "data/covid/p2/cmyk.jpg": _save(Image.new("CMYK", (20, 10), (255, 0, 0, 0)), "JPEG",
                                        quality=95),
        "data/covid/p2/grey.png": png_bytes(grey),
        "data/regular/p3/shot.png": _save(screenshot, "PNG"),
        "data/regular/p3/pal.png": _save(pal, "PNG"),
        "data/regular/p4/rgba.png": png_bytes(rgba),
        "data/regular/p4/loop.gif": gif,
        "data/regular/p4/rot.jpg": tall,
        "data/regular/p4/tiff16.tif": _save(Image.fromarray(_ramp16(65535, 8, 9)), "TIFF"),
        "data/regular/notes.txt": b"not an image",
        "data/.DS_Store": b"\0",
        "__MACOSX/data/covid/._x.png": b"\0",
    }
    return zip_bytes(files), {"rgb": rgb, "grey": grey}


def test_every_kind_keeps_its_size_channels_and_scale(mixed):
    z, src = mixed
    d = nd.load_image_zip(z, recipe=P.Recipe((32, 32), 3))
    assert d.class_names == ("covid", "regular") and len(d) == 10
    f = _by_file(d)
    o = lambda name: d.original(f[name])  # noqa: E731
    # 16-bit over its whole range: divided by 65535, not clipped at 255 (85 % white before)
    a16 = o("covid/p1/a16.png")
    assert a16.shape == (1, 30, 50)
    np.testing.assert_allclose(a16[0], _ramp16(65535) / 65535.0, atol=1e-6)
    assert (a16 >= 0.999).mean() < 0.01
    # 12-bit data in a 16-bit file: divided by 4095 (its bit depth), so it is not nearly black
    np.testing.assert_allclose(o("covid/p1/b12.png")[0], _ramp16(4095) / 4095.0, atol=1e-6)
    assert d.originals.arrays[f["covid/p1/a16.png"]].dtype == np.uint16
    # CMYK cyan -> RGB (0, 255, 255)
    cm = o("covid/p2/cmyk.jpg")
    assert cm.shape == (3, 10, 20)
    np.testing.assert_allclose(cm[:, 5, 10], [0, 1, 1], atol=0.03)
    # grey stays one channel, exact
    np.testing.assert_allclose(o("covid/p2/grey.png")[0], src["grey"] / 255.0, atol=1e-7)
    assert o("regular/p3/shot.png").shape == (1, 40, 60)
    # palette -> RGB colours close to the source
    pal = o("regular/p3/pal.png")
    assert pal.shape == (3, 24, 40) and abs(pal[0].mean() - 200 / 255) < 0.05
    # RGBA: transparent pixels onto black; opaque white stays white (and becomes 1 channel)
    rgba = o("regular/p4/rgba.png")
    assert rgba.shape == (1, 10, 12) and rgba[0, :, :6].min() == 1.0 and rgba[0, :, 6:].max() == 0
    # animated GIF: the first frame
    gif = o("regular/p4/loop.gif")
    assert gif.shape == (1, 12, 16) and abs(gif.mean() - 40 / 255) < 0.01
    # EXIF orientation 6: a 40 x 24 (w x h) file displays 24 wide, 40 tall
    assert o("regular/p4/rot.jpg").shape == (3, 40, 24)
    assert o("regular/p4/tiff16.tif").max() == pytest.approx(1.0)
    m = d.meta
    assert m["n_skipped"] == 3 and "data/regular/notes.txt" in m["skipped"]
    assert m["grey"] == 7 and m["colour"] == 3
    assert m["bits"] == {"16-bit": 2, "12-bit in 16": 1, "8-bit": 7}
    assert m["converted"] == {"CMYK": 1, "P": 2, "RGBA": 1} and m["multi_frame"] == 1
    assert m["rotated"] == 1
    assert d.groups[f["covid/p1/a16.png"]] == "covid/p1" and m["groups"] == 4
    text = "\n".join(nd.load_report(d))
    for bit in ("3 file(s) skipped", "not an image (.txt)", "first frame", "7 grey", "3 colour",
                "CMYK", "4 groups"):
        assert bit in text, (bit, text)


def test_images_follow_the_recipe_and_another_model_reuses_the_upload(mixed):
    z, _ = mixed
    d64 = nd.load_image_zip(z, recipe=P.Recipe((64, 64), 3))
    assert d64.images.shape == (10, 3, 64, 64)
    i = _by_file(d64)["covid/p1/a16.png"]  # 50 x 30 (w x h) -> letterboxed 64 x 38
    assert d64.placements[i].box == (13, 0, 38, 64)
    d = d64.for_recipe(P.Recipe((96, 128), 1, "crop"))
    assert d.images.shape == (10, 1, 96, 128) and d.originals is d64.originals
    assert d.placements[i].crop[2:] == (30, 40)      # 4:3 window of the 5:3 image
    np.testing.assert_allclose(d.images[i], P.to_model(d64.original(i), P.Recipe((96, 128), 1, "crop"))[0])
    sub = d.subset([i, 0])
    assert isinstance(sub.originals, nd.Originals) and sub.original(0).shape == (1, 30, 50)
    assert fingerprint(d64) == fingerprint(nd.load_image_zip(z, recipe=P.Recipe((64, 64), 3)))


def test_a_4000_by_3000_photo_is_kept_at_most_2048_long_and_stays_cheap():
    yy, xx = np.mgrid[0:3000, 0:4000]
    rgb = np.stack([(xx % 256), (yy % 256), ((xx + yy) // 32 % 256)], -1).astype(np.uint8)
    big = _save(Image.fromarray(rgb), "JPEG", quality=85)
    z = zip_bytes({"a/big.jpg": big, "b/small.png": png_bytes(np.zeros((8, 8), np.uint8))})
    t0 = time.perf_counter()
    d = nd.load_image_zip(z, recipe=P.Recipe((128, 128), 3))
    seconds = time.perf_counter() - t0
    o = d.original(0)
    assert o.shape == (3, 1536, 2048)                           # 4:3 kept
    assert d.originals.arrays[0].dtype == np.uint8 and d.originals.nbytes < 10 * 2**20
    assert d.meta["downscaled"] == {"a/big.jpg": [3000, 4000]}
    assert "downscaled" in "\n".join(nd.load_report(d))
    assert d.placements[0].box == (16, 0, 96, 128)
    assert seconds < 10, seconds


def test_an_image_bomb_in_a_zip_is_still_refused_from_its_header(monkeypatch):
    monkeypatch.setattr(nd, "MAX_IMAGE_PIXELS", 100)
    z = zip_bytes({"a/x.png": png_bytes(np.zeros((20, 20), np.uint8)),
                   "b/y.png": png_bytes(np.zeros((4, 4), np.uint8))})
    with pytest.raises(NnsensError, match="'a/x.png' is 20 x 20 pixels, over the"):
        nd.load_image_zip(z)


def test_classes_are_the_first_folder_level_and_groups_the_second():
    px = png_bytes(np.zeros((4, 4), np.uint8))
    z = zip_bytes({f"{c}/{p}/f{k}.png": px for c in ("covid", "regular") for p in ("pA", "pB")
                   for k in range(2)})
    d = nd.load_image_zip(z)
    assert d.class_names == ("covid", "regular")         # not one class per patient
    assert sorted(set(d.groups)) == ["covid/pA", "covid/pB", "regular/pA", "regular/pB"]
    assert d.meta["group_source"] == "folders"
    flat = nd.load_image_zip(zip_bytes({"a/clip7.mp4_frame3.png": px, "a/clip7.mp4_frame4.png": px,
                                        "b/p03_017.png": px, "b/IMG_0001.png": px}))
    assert flat.groups == ("a/clip7.mp4", "a/clip7.mp4", "b/IMG_0001", "b/p03")
    assert flat.meta["group_source"] == "file names"
    rooted = nd.load_image_zip(zip_bytes({"root/c1/p1/a.png": px, "root/c2/p1/b.png": px}))
    assert rooted.class_names == ("c1", "c2") and rooted.groups == ("c1/p1", "c2/p1")


def test_folder_loader_reads_nested_folders(tmp_path):
    for c in ("x", "y"):
        (tmp_path / c / "pt1").mkdir(parents=True)
        (tmp_path / c / "pt1" / "1.png").write_bytes(png_bytes(np.full((6, 9), 50, np.uint8)))
    (tmp_path / "x" / "readme.md").write_text("hi")
    d = nd.load_image_folder(tmp_path, recipe=P.Recipe((12, 12), 1))
    assert d.images.shape == (2, 1, 12, 12) and d.original(0).shape == (1, 6, 9)
    assert d.groups == ("x/pt1", "y/pt1") and d.meta["n_skipped"] == 1


def test_previews_keep_each_originals_aspect_ratio(mixed):
    from ui.image_views import model_view, outlined, thumbnail
    d = nd.load_image_zip(mixed[0], recipe=P.Recipe((64, 64), 3))
    for i in range(len(d)):
        c, h, w = d.original(i).shape
        t = thumbnail(d.original(i), max_side=32)
        assert t.dtype == np.uint8 and t.shape[2] == 3 and max(t.shape[:2]) == min(32, max(h, w))
        assert abs(t.shape[1] / t.shape[0] - w / h) < 0.1 * w / h + 2 / t.shape[0], (h, w, t.shape)
    big = np.zeros((1, 1536, 2048), np.float32)
    assert thumbnail(big).shape == (240, 320, 3)
    mask = np.zeros((1536, 2048), bool)
    mask[400:1000, 500:1500] = True
    o = outlined(big, mask)
    assert o.shape == (240, 320, 3) and (o == [0, 230, 255]).all(axis=2).any()
    assert model_view(d.images[0]).shape == (64, 64, 3)


def _png16_colour(a: np.ndarray) -> bytes:
    """A 16-bit RGB (colour type 2) or RGBA (6) PNG written by hand from ``a`` (h, w, 3 | 4):
    unfiltered rows, one zlib stream (Pillow cannot write 16-bit colour PNGs)."""
    import struct
    import zlib
    h, w, c = a.shape
    raw = b"".join(b"\x00" + a[r].astype(">u2").tobytes() for r in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    head = struct.pack(">IIBBBBB", w, h, 16, 2 if c == 3 else 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def test_16_bit_colour_pngs_keep_their_16_bits():
    """Pillow reads 16-bit colour PNGs with 8 bits; they are decoded with all 16 (12-bit data in 16
    bits by its own scale; transparent pixels onto black)."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 65536, (20, 30, 3)).astype(np.uint16)
    rgba = rng.integers(0, 4096, (20, 30, 4)).astype(np.uint16)
    rgba[..., 3] = 65535
    rgba[0, :5, 3] = 0
    d = nd.load_image_zip(zip_bytes({"data/a/rgb16.png": _png16_colour(rgb),
                                     "data/b/rgba12.png": _png16_colour(rgba)}))
    f = _by_file(d)
    i, j = f["a/rgb16.png"], f["b/rgba12.png"]
    assert d.originals.arrays[i].dtype == np.uint16
    np.testing.assert_array_equal(d.originals.arrays[i], rgb.transpose(2, 0, 1))  # every bit
    np.testing.assert_allclose(d.original(i), rgb.transpose(2, 0, 1) / 65535.0, atol=1e-6)
    want = rgba[..., :3].transpose(2, 0, 1) / 4095.0
    want[:, 0, :5] = 0.0
    np.testing.assert_allclose(d.original(j), want, atol=1e-6)
    assert d.meta["bits"] == {"12-bit in 16": 1, "16-bit": 1}
