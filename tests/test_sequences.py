"""Cine loops and DICOM (nnsens_core.sequences): loading with limits checked before decoding,
identifiers kept out of everything unless asked for, per-frame explanations against hand-computed
oracles, and exports that read back."""
from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest
import torch

from nnsens_core import sequences as sq
from nnsens_core import zoo
from nnsens_core.errors import NnsensError
from nnsens_core.preprocess import Recipe, prepare
from nnsens_core.saliency import registry

NAME, PID, BIRTH = "DOE^JANE", "PAT-98765", "19700101"
CLASSES = ("regular", "covid", "pneumonia")


# --------------------------------------------------------------------------- helpers

def dicom_bytes(frames, photometric="MONOCHROME2", bits=12, spacing=(0.3, 0.4), frame_time=50.0,
                identifiers=True, extra=None, transfer_syntax=None, pixel_data=None) -> bytes:
    """A multi-frame DICOM written with pydicom: frames (T, h, w) uint16 or (T, h, w, 3) uint8."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    frames = np.asarray(frames)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # Ultrasound Multi-frame Image
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    if identifiers:
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, PID, BIRTH
        ds.InstitutionName = "St Example Hospital"
    ds.Modality, ds.Manufacturer, ds.ManufacturerModelName = "US", "Phantom Co", "Probe-1"
    ds.Rows, ds.Columns = frames.shape[1:3]
    ds.NumberOfFrames = frames.shape[0]
    rgb = frames.ndim == 4
    ds.SamplesPerPixel = 3 if rgb else 1
    if rgb:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if rgb else 16
    ds.BitsStored = 8 if rgb else bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if spacing is not None:
        ds.PixelSpacing = list(spacing)
    if frame_time is not None:
        ds.FrameTime = frame_time
    for k, v in (extra or {}).items():
        setattr(ds, k, v)
    ds.PixelData = pixel_data if pixel_data is not None else \
        frames.astype(np.uint8 if rgb else "<u2").tobytes()
    if pixel_data is not None:
        ds["PixelData"].VR = "OB"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def tiny_model(channels=1, size=(64, 64)) -> zoo.LoadedModel:
    torch.manual_seed(0)
    m = zoo.build("vgg16-small", width=0.0625, in_channels=channels).eval()
    spec = zoo.ModelSpec("tiny", "vgg16-small", "image", (channels, *size), CLASSES,
                         mean=(0.5,) * channels, std=(0.25,) * channels)
    return zoo.LoadedModel(m, spec)


@pytest.fixture(scope="module")
def loop():
    return sq.phantom_cine(n_frames=24, size=(96, 128), seed=0)


def _ramp(t=6, h=20, w=24, bits=12):
    """Frames whose values sweep the whole stored range (0 and 2**bits - 1 included)."""
    top = 2 ** bits - 1
    v = np.linspace(0, top, t * h * w).round().astype(np.uint16)
    return v.reshape(t, h, w)


# --------------------------------------------------------------------------- phantom loop

def test_phantom_loop_has_sliding_b_lines_under_their_masks(loop):
    seq, masks = loop
    assert seq.frames.shape == (24, 1, 96, 128) and seq.frames.dtype == np.float32
    assert masks.shape == (24, 96, 128) and masks.dtype == bool
    assert seq.fps == 20.0 and 0 <= seq.frames.min() and seq.frames.max() <= 1
    img = seq.frames[:, 0]
    outside = img == 0  # black outside the fan, identical in every frame
    assert (outside == outside[0]).all() and 0.1 < outside[0].mean() < 0.6
    for t in range(24):
        assert masks[t].any() and not (masks[t] & outside[t]).any()
        lung = ~masks[t] & ~outside[t]
        lung[: int(masks[t].nonzero()[0].min())] = False  # only depths where B-lines run
        assert img[t][masks[t]].mean() > 3 * img[t][lung].mean()
    cols = np.array([np.nonzero(m)[1].mean() for m in masks])
    assert np.ptp(cols) > 3  # the B-lines move laterally ...
    assert np.abs(cols[0] - cols[-1]) < np.ptp(cols) / 2  # ... and come back: the loop is seamless
    again, masks2 = sq.phantom_cine(n_frames=24, size=(96, 128), seed=0)
    assert np.array_equal(again.frames, seq.frames) and np.array_equal(masks2, masks)
    assert not np.array_equal(sq.phantom_cine(n_frames=24, seed=1)[0].frames, seq.frames)


@pytest.mark.parametrize("kw", [{"n_frames": 0}, {"size": (16, 16)}, {"size": (96, 64)},
                                {"sweep": 0.9}, {"channels": 2}, {"seed": -1}])
def test_phantom_loop_refuses_bad_settings(kw):
    with pytest.raises(NnsensError):
        sq.phantom_cine(**kw)


# --------------------------------------------------------------------------- videos and GIFs

def test_mp4_written_and_read_back(loop):
    seq, _ = loop
    data = sq.export_loop(seq, fmt="mp4", upscale=1)
    assert data[4:8] == b"ftyp"
    back = sq.load_sequence(data, "loop.mp4")
    assert back.kind == "mp4" and back.frames.shape == (24, 1, 96, 128)  # grey stays one channel
    assert back.fps == pytest.approx(20.0) and back.info["fps_source"] == "file"
    err = np.abs(back.frames - seq.frames)
    assert err.mean() < 0.02 and np.percentile(err, 99) < 0.12  # H.264 is lossy, not far off


def test_gif_written_and_read_back_exactly(loop):
    seq, _ = loop
    data = sq.export_loop(seq, fmt="gif", upscale=1)
    assert data[:6] == b"GIF89a"
    back = sq.load_sequence(data, "loop.gif")
    assert back.kind == "gif" and back.frames.shape == (24, 1, 96, 128)
    assert back.fps == pytest.approx(20.0) and back.info["fps_source"] == "frame durations"
    assert np.abs(back.frames - seq.frames).max() <= 0.5 / 255 + 1e-6  # 8-bit grey: rounding only


def test_colour_gif_keeps_rgb_and_every_frame():
    from PIL import Image
    rng = np.random.default_rng(0)
    cols = rng.integers(0, 256, (5, 3))
    ims = [Image.new("RGB", (30, 20), tuple(int(c) for c in col)) for col in cols]
    buf = io.BytesIO()
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], duration=100, loop=0)
    seq = sq.load_sequence(buf.getvalue(), "colours.gif")
    assert seq.frames.shape == (5, 3, 20, 30) and seq.fps == pytest.approx(10.0)
    assert np.allclose(seq.frames[:, :, 5, 5], cols / 255, atol=1e-6)


def test_npy_frames_load_without_pickle():
    a = (np.arange(4 * 8 * 10) % 256).astype(np.uint8).reshape(4, 8, 10)
    buf = io.BytesIO()
    np.save(buf, a)
    seq = sq.load_sequence(buf.getvalue(), "frames.npy")
    assert seq.frames.shape == (4, 1, 8, 10) and np.allclose(seq.frames[:, 0], a / 255)
    obj = io.BytesIO()
    np.save(obj, np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True)
    with pytest.raises(NnsensError, match="object"):
        sq.load_sequence(obj.getvalue(), "evil.npy")
    bad = io.BytesIO()
    np.save(bad, np.full((2, 4, 4), 3.0, np.float32))
    with pytest.raises(NnsensError, match=r"\[0, 1\]"):
        sq.load_sequence(bad.getvalue(), "hot.npy")


# --------------------------------------------------------------------------- DICOM

def test_dicom_16_bit_monochrome2_scaled_by_stored_bits_with_spacing_and_rate():
    raw = _ramp(bits=12)
    seq = sq.load_sequence(dicom_bytes(raw, bits=12), "case.dcm")
    assert seq.kind == "dicom" and seq.frames.shape == (6, 1, 20, 24)
    assert np.allclose(seq.frames[:, 0], raw / 4095.0, atol=1e-6)
    assert seq.frames.min() == 0 and seq.frames.max() == 1
    assert seq.pixel_spacing == (0.3, 0.4) and seq.fps == pytest.approx(20.0)
    assert seq.info["Modality"] == "US" and seq.info["ManufacturerModelName"] == "Probe-1"
    assert seq.info["fps_source"] == "FrameTime" and seq.info["pixel_spacing_source"] == "PixelSpacing"
    assert seq.identifiers["PatientName"] == NAME and seq.identifiers["PatientID"] == PID


def test_dicom_monochrome1_is_inverted():
    raw = _ramp(bits=12)
    seq = sq.load_sequence(dicom_bytes(raw, photometric="MONOCHROME1", bits=12), "m1.dcm")
    assert np.allclose(seq.frames[:, 0], 1 - raw / 4095.0, atol=1e-6)
    assert "MONOCHROME1 inverted" in seq.info["intensity"]


def test_dicom_rescale_and_window_by_hand():
    raw = np.array([[[0, 100, 200, 300], [400, 500, 600, 1000]]], np.uint16)  # 1 frame, 2 x 4
    seq = sq.load_sequence(dicom_bytes(raw, bits=12, extra={
        "RescaleSlope": 2, "RescaleIntercept": -100, "WindowCenter": 400, "WindowWidth": 401}),
        "win.dcm")
    vals = raw * 2.0 - 100  # modality values
    expect = np.clip((vals - 399.5) / 400 + 0.5, 0, 1)  # PS3.3 C.11.2.1.2 linear window
    assert np.allclose(seq.frames[0, 0], expect, atol=1e-6)
    # without a window: the stored range [0, 4095] rescaled the same way spans [0, 1]
    seq = sq.load_sequence(dicom_bytes(raw, bits=12, extra={"RescaleSlope": 2,
                                                            "RescaleIntercept": -100}), "r.dcm")
    assert np.allclose(seq.frames[0, 0], (vals + 100) / (4095 * 2), atol=1e-6)


def test_dicom_rgb_and_ybr_and_ultrasound_region_spacing():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (3, 10, 12, 3)).astype(np.uint8)
    seq = sq.load_sequence(dicom_bytes(rgb, photometric="RGB", spacing=None), "rgb.dcm")
    assert seq.frames.shape == (3, 3, 10, 12)
    assert np.allclose(seq.frames.transpose(0, 2, 3, 1), rgb / 255, atol=1e-6)
    assert seq.pixel_spacing is None
    # YBR_FULL with neutral chroma (Cb = Cr = 128) is grey: R = G = B = Y (to rounding)
    y = rng.integers(0, 256, (2, 8, 8)).astype(np.uint8)
    ybr = np.stack([y, np.full_like(y, 128), np.full_like(y, 128)], -1)
    from pydicom.dataset import Dataset
    region = Dataset()
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # cm
    region.PhysicalDeltaX, region.PhysicalDeltaY = 0.02, 0.025
    seq = sq.load_sequence(dicom_bytes(ybr, photometric="YBR_FULL", spacing=None,
                                       extra={"SequenceOfUltrasoundRegions": [region]}), "ybr.dcm")
    assert seq.frames.shape == (2, 1, 8, 8)
    assert np.abs(seq.frames[:, 0] - y / 255).max() <= 1.5 / 255
    assert seq.pixel_spacing == pytest.approx((0.25, 0.2))  # mm, (row, column)


def test_identifiers_never_in_repr_dict_or_info():
    seq = sq.load_sequence(dicom_bytes(_ramp()), "case.dcm")
    for text in (repr(seq), str(seq), json.dumps(seq.to_dict()), json.dumps(seq.info)):
        assert NAME not in text and PID not in text and BIRTH not in text and "Example" not in text
    assert "hidden" in repr(seq) and seq.to_dict()["identifiers_present"] is True
    assert seq.to_dict(include_identifiers=True)["identifiers"]["PatientID"] == PID
    with pytest.raises(NnsensError, match="identifiers"):
        dataclasses.replace(seq, info={"PatientName": NAME})
    assert sq.load_sequence(dicom_bytes(_ramp(), identifiers=False), "anon.dcm").identifiers == {}


def test_dicom_to_maps_to_exports_keeps_identifiers_out_unless_asked():
    raw = (sq.phantom_cine(n_frames=6, size=(48, 64), seed=2)[0].frames[:, 0] * 4095).round()
    seq = sq.load_sequence(dicom_bytes(raw.astype(np.uint16)), "case.dcm")
    fm = sq.explain_frames(tiny_model(3), seq, "gradcam", batch_size=4)
    assert fm.maps.shape == (6, 64, 64) and fm.maps_original.shape == (6, 48, 64)
    secret = (NAME.encode(), PID.encode(), BIRTH.encode(), NAME.replace("^", " ").encode())

    def leaks(blob: bytes) -> bool:
        return any(s in blob for s in secret)

    docs = json.dumps(fm.to_dict()).encode()
    npz = np.load(io.BytesIO(sq.maps_npz(fm, seq)))
    npz_text = b"".join(np.asarray(npz[k]).tobytes() for k in npz.files)
    assert "identifiers" not in npz.files and not leaks(docs) and not leaks(npz_text)
    assert not leaks(repr(fm).encode())
    for fmt in ("mp4", "gif"):
        assert not leaks(sq.export_loop(seq, fm, fmt=fmt))
        assert leaks(sq.export_loop(seq, fm, fmt=fmt, include_identifiers=True))
    opted = np.load(io.BytesIO(sq.maps_npz(fm, seq, include_identifiers=True)))
    assert json.loads(str(opted["identifiers"]))["PatientName"] == NAME


def test_compressed_dicom_that_cannot_be_decoded_names_the_syntax_and_the_fix():
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLosslessSV1
    data = dicom_bytes(_ramp(t=2), transfer_syntax=JPEGLosslessSV1,
                       pixel_data=encapsulate([b"\xff\xd8\x00garbage\xff\xd9"] * 2))
    with pytest.raises(NnsensError) as exc:
        sq.load_sequence(data, "jpegls.dcm")
    msg = str(exc.value)
    assert "JPEG Lossless" in msg and "pylibjpeg" in msg and "Explicit VR Little Endian" in msg
    assert "\n" not in msg


# --------------------------------------------------------------------------- limits and bad files

def test_too_many_frames_refused_before_decoding(monkeypatch, loop):
    def never(ds):
        raise AssertionError("decoded before the frame count was checked")
    monkeypatch.setattr(sq, "_decode_dicom", never)
    with pytest.raises(NnsensError, match="6 frames, over the limit of 5"):
        sq.load_sequence(dicom_bytes(_ramp(t=6)), "long.dcm", max_frames=5)
    seq, _ = loop
    for fmt in ("mp4", "gif"):
        data = sq.export_loop(seq, fmt=fmt, upscale=1)
        with pytest.raises(NnsensError, match="24 frames.* over the limit of 10"):
            sq.load_sequence(data, f"long.{fmt}", max_frames=10)


def test_pixel_and_file_size_limits(monkeypatch):
    data = dicom_bytes(_ramp(t=6))  # 6 frames of 24 x 20
    monkeypatch.setattr(sq, "MAX_FRAME_PIXELS", 24 * 20 - 1)
    with pytest.raises(NnsensError, match="24 x 20 pixels, over the"):
        sq.load_sequence(data, "big.dcm")
    monkeypatch.setattr(sq, "MAX_FRAME_PIXELS", 10**6)
    monkeypatch.setattr(sq, "MAX_SEQUENCE_PIXELS", 5 * 24 * 20)
    with pytest.raises(NnsensError, match="MP limit per loop"):
        sq.load_sequence(data, "big.dcm")
    monkeypatch.setattr(sq, "MAX_FILE_BYTES", len(data) - 1)
    with pytest.raises(NnsensError, match="MiB limit per loop"):
        sq.load_sequence(data, "big.dcm")


def test_corrupt_files_give_one_line_errors(loop):
    seq, _ = loop
    mp4 = sq.export_loop(seq, fmt="mp4", upscale=1)
    dcm = dicom_bytes(_ramp(t=3))
    bad = {"noise.mp4": bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)),
           "cut.mp4": mp4[: len(mp4) // 3], "cut.dcm": dcm[: len(dcm) - 200],
           "fake.gif": b"GIF89a" + b"\x00" * 50, "notes.txt": b"hello", "empty.mp4": b"",
           "junk.dcm": b"\x00" * 128 + b"DICM" + b"\x01" * 40}
    for name, data in bad.items():
        with pytest.raises(NnsensError) as exc:
            sq.load_sequence(data, name)
        assert "\n" not in str(exc.value) and name in str(exc.value), name


def test_sequence_checks_its_fields():
    ok = np.zeros((2, 1, 4, 4), np.float32)
    for kw in ({"frames": np.zeros((2, 4, 4), np.float32)}, {"frames": ok.astype(np.float64)},
               {"frames": ok + 2}, {"fps": 0}, {"pixel_spacing": (0.1, -1)}):
        with pytest.raises(NnsensError):
            sq.Sequence(**{"frames": ok, "fps": 10.0, **kw})


def test_subsample_keeps_every_kth_frame(loop):
    seq, _ = loop
    sub = sq.subsample(seq, 3)
    assert len(sub) == 8 and np.array_equal(sub.frames, seq.frames[::3])
    assert sub.fps == pytest.approx(20 / 3) and sub.info["n_frames"] == 8
    assert sq.subsample(seq, 1) is seq
    with pytest.raises(NnsensError):
        sq.subsample(seq, 0)


# --------------------------------------------------------------------------- explain_frames

def test_maps_equal_the_registry_frame_by_frame_at_any_batch_size(loop):
    seq = sq.subsample(loop[0], 4)  # 6 frames
    lm = tiny_model(1)
    runs = {b: sq.explain_frames(lm, seq, "gradcam", batch_size=b) for b in (1, 4, 6)}
    recipe = Recipe.from_spec(lm.spec)
    for t in range(len(seq)):
        x01, _ = prepare([seq.frames[t]], recipe)
        x = lm.spec.normalize(torch.from_numpy(x01))
        pred = int(torch.softmax(lm.module(x), -1).argmax())
        one = registry.run("gradcam", lm, x, [pred]).numpy()[0]
        for fm in runs.values():
            assert fm.preds[t] == pred and fm.targets[t] == pred
            np.testing.assert_allclose(fm.maps[t], one, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(runs[1].probs, runs[6].probs, rtol=1e-5, atol=1e-7)


def _toy(model, x, targets, cfg, *, spec=None, device="cpu", progress=None):
    """A hand-checkable method: the (normalised) first input channel times (class + 1) * gain."""
    cls = torch.as_tensor(targets, dtype=torch.float32).view(-1, 1, 1)
    return x[:, 0] * (cls + 1) * cfg.gain


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    gain: float = 1.0


@pytest.fixture
def toy_method():
    registry.register(registry.Method("toy-frames", "Toy", _toy, ToyConfig, signed=True))
    yield "toy-frames"
    registry.unregister("toy-frames")


def test_targets_options_and_recipes_by_hand(loop, toy_method):
    seq = sq.subsample(loop[0], 6)  # 4 frames of 96 x 128
    lm = tiny_model(1)
    # letterbox of 96 x 128 into 48 x 64 is an exact halving: no padding, nothing cut away
    recipe = Recipe((48, 64), 1, "letterbox", (0.5,), (0.25,))
    fm = sq.explain_frames(lm, seq, toy_method, recipe=recipe, target="pneumonia", gain=2.0)
    x01, _ = prepare(list(seq.frames), recipe)
    np.testing.assert_allclose(fm.maps, (x01[:, 0] - 0.5) / 0.25 * 3 * 2.0, rtol=1e-6, atol=1e-6)
    assert (fm.targets == 2).all() and fm.config.method_config == ToyConfig(2.0)
    assert fm.maps_original.shape == (4, 96, 128) and not np.isnan(fm.maps_original).any()
    assert fm.signed and fm.config.target == 2
    # centre crop of 96 x 128 into 64 x 64: the sides the model never sees are NaN on the original
    crop = sq.explain_frames(lm, seq, toy_method, recipe=Recipe((64, 64), 1, "crop", (0.5,), (0.25,)),
                             target=0)
    orig = crop.maps_original
    assert np.isnan(orig[:, :, :16]).all() and np.isnan(orig[:, :, -16:]).all()
    assert not np.isnan(orig[:, :, 16:-16]).any()
    np.testing.assert_allclose(crop.frame_original(2), orig[2], equal_nan=True)
    with pytest.raises(NnsensError, match="no setting"):
        sq.explain_frames(lm, seq, toy_method, gainz=1.0)
    with pytest.raises(NnsensError, match="not one of the model's classes"):
        sq.explain_frames(lm, seq, toy_method, target="b-lines")
    with pytest.raises(NnsensError, match="class index"):
        sq.explain_frames(lm, seq, toy_method, target=7)


def test_prediction_strip_summary_and_exported_numbers(loop, toy_method):
    seq = sq.subsample(loop[0], 3)  # 8 frames
    fm = sq.explain_frames(tiny_model(1), seq, toy_method, batch_size=3)
    strip = fm.to_frame()
    assert list(strip["frame"]) == list(range(8))
    np.testing.assert_allclose(strip["time_s"], np.arange(8) / seq.fps)
    assert list(strip["predicted"]) == [CLASSES[p] for p in fm.preds]
    np.testing.assert_allclose(strip[[f"p({c})" for c in CLASSES]].sum(axis=1), 1, atol=1e-5)
    s = fm.summary()
    counts = np.bincount(fm.preds, minlength=3) / 8
    assert s["class_fractions"] == pytest.approx(dict(zip(CLASSES, counts)))
    np.testing.assert_allclose(s["mean_map_model"], fm.maps.mean(0), rtol=1e-6)
    assert s["mean_map"].shape == (96, 128)
    doc = fm.to_dict()
    assert doc["n_frames"] == 8 and len(doc["frames"]) == 8 and doc["seconds"] >= 0
    assert doc["config"]["method"] == toy_method and doc["sequence"]["n_frames"] == 8
    json.dumps(doc, allow_nan=False)
    npz = np.load(io.BytesIO(sq.maps_npz(fm)))
    np.testing.assert_array_equal(npz["maps"], fm.maps)
    assert list(npz["class_names"]) == list(CLASSES)


def test_annotated_loop_exports_carry_the_overlay_and_label(loop, toy_method):
    seq = sq.subsample(loop[0], 6)
    fm = sq.explain_frames(tiny_model(1), seq, toy_method)
    frames = sq.render_frames(seq, fm, upscale=2)
    plain = sq.render_frames(seq, None, upscale=2)
    assert len(frames) == 4 and frames[0].shape[1] == 256 and frames[0].shape[0] > 192  # + bar
    assert plain[0].shape == (192, 256, 3)
    corner = frames[0][:8, :40]
    assert (corner.max(axis=2) > 200).any() and (corner.max(axis=2) < 30).any()  # white on black
    for fmt in ("mp4", "gif"):
        back = sq.load_sequence(sq.export_loop(seq, fm, fmt=fmt, upscale=2), f"x.{fmt}")
        assert len(back) == 4 and back.channels == 3
        assert back.size == (frames[0].shape[0] + frames[0].shape[0] % 2, 256)
    with pytest.raises(NnsensError, match="labels"):
        sq.export_loop(seq, fm, labels=["a", "b"])
    with pytest.raises(NnsensError, match="fmt"):
        sq.export_loop(seq, fm, fmt="avi")


def test_jpeg_baseline_ultrasound_dicom_decodes_to_rgb():
    """The usual ultrasound export: YBR_FULL_422 frames compressed as JPEG baseline (decoded
    offline through Pillow)."""
    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit
    frames = np.zeros((3, 32, 48, 3), np.uint8)
    frames[..., 0], frames[..., 2] = 200, 40
    frames[..., 1] = np.linspace(0, 255, 48).astype(np.uint8)

    def jpeg(a):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=95)
        return buf.getvalue()
    seq = sq.load_sequence(dicom_bytes(frames, photometric="YBR_FULL_422",
                                       transfer_syntax=JPEGBaseline8Bit,
                                       pixel_data=encapsulate([jpeg(f) for f in frames])), "us.dcm")
    assert seq.frames.shape == (3, 3, 32, 48) and seq.info["transfer_syntax"].startswith("JPEG Baseline")
    assert np.abs(seq.frames.transpose(0, 2, 3, 1) - frames / 255).max() < 8 / 255  # JPEG loss only


def test_file_name_stays_out_of_the_description_unless_opted_in():
    from nnsens_core.sequences import phantom_cine
    import dataclasses
    seq, _ = phantom_cine(n_frames=2, size=(32, 40))
    seq = dataclasses.replace(seq, name="DOE_JOHN_1961.mp4")
    assert "DOE_JOHN" not in str(seq.to_dict())
    assert seq.to_dict(include_identifiers=True)["name"] == "DOE_JOHN_1961.mp4"
