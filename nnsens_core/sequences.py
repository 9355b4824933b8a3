"""Cine loops and DICOM: frame sequences, per-frame explanations and annotated exports.

* :class:`Sequence`: frames ``(T, C, h, w)`` float32 in [0, 1] (C = 1 or 3) at their own size, the
  frame rate, the pixel spacing (mm, when the file states it), safe metadata in ``info`` and the
  patient identifiers a DICOM carried in ``identifiers``, which are kept out of ``repr``,
  :meth:`Sequence.to_dict` and every export unless the caller passes ``include_identifiers=True``.
* :func:`load_sequence`: MP4 / AVI / MOV / WebM (PyAV), animated GIF and other multi-frame images
  (Pillow), DICOM (pydicom; single and multi-frame) and ``.npy`` arrays. Every size (file bytes,
  frame count, pixels per frame and per sequence) is checked from the header before the frames are
  decoded; errors are one line naming the value and the fix.
* :func:`explain_frames`: one saliency method (from :mod:`nnsens_core.saliency.registry`) run on
  every frame through the model's preprocessing recipe (:mod:`nnsens_core.preprocess`), in batches;
  a :class:`FrameMaps` result with the maps at model and at original resolution and the per-frame
  predictions.
* :func:`export_loop` (MP4 / GIF of the frames with their overlays and predicted class) and
  :func:`maps_npz` (the numbers).
* :func:`phantom_cine`: a synthetic convex-probe lung-ultrasound loop whose B-lines slide
  laterally from frame to frame, with per-frame ground-truth B-line masks.
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import PurePath

import numpy as np

from ._results import Result
from .data import MAX_IMAGE_PIXELS
from .errors import NnsensError

__all__ = ["DEFAULT_FPS", "IDENTIFIER_KEYWORDS", "MAX_FILE_BYTES", "MAX_FRAMES",
           "MAX_FRAME_PIXELS", "MAX_SEQUENCE_PIXELS", "FrameMaps", "FrameMapsSettings", "Sequence",
           "explain_frames", "export_loop", "load_sequence", "maps_npz", "phantom_cine",
           "render_frames", "subsample"]

# Bounds on what one uploaded loop may decode to, checked before the frames are decoded.
MAX_FILE_BYTES = 512 * 2**20          # bytes of the uploaded file
MAX_FRAMES = 600                      # frames of one loop (20 s at 30 frames/s)
MAX_FRAME_PIXELS = MAX_IMAGE_PIXELS   # pixels of one frame (as for one image)
MAX_SEQUENCE_PIXELS = 200_000_000     # pixels of all frames together (e.g. 400 frames of 800 x 600)
DEFAULT_FPS = 10.0                    # when the file states no frame rate

# DICOM attributes that identify a patient, a study or a place (never in ``info`` or an export
# unless the user opts in). Anything not on the safe list below (UIDs too) is never kept at all.
IDENTIFIER_KEYWORDS = (
    "PatientName", "PatientID", "OtherPatientIDs", "OtherPatientNames", "IssuerOfPatientID",
    "PatientBirthDate", "PatientBirthTime", "PatientSex", "PatientAge", "PatientAddress",
    "PatientTelephoneNumbers", "PatientMotherBirthName", "MilitaryRank", "EthnicGroup",
    "AccessionNumber", "StudyID", "StudyDescription", "SeriesDescription",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName",
    "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName", "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy", "RequestingPhysician", "DeviceSerialNumber",
    "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "AcquisitionDateTime",
    "StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime",
)
# DICOM attributes copied into ``info`` (describe the device and the image, not the patient).
SAFE_KEYWORDS = ("Modality", "Manufacturer", "ManufacturerModelName", "PhotometricInterpretation",
                 "BitsStored", "BodyPartExamined", "BurnedInAnnotation")

_VIDEO_KINDS = ("mp4", "mov", "avi", "webm", "mkv")


# --------------------------------------------------------------------------- the sequence

@dataclass(frozen=True, eq=False)
class Sequence:
    """A cine loop: ``frames`` (T, C, h, w) float32 in [0, 1] with C = 1 (grey) or 3 (RGB).

    ``fps``: frames per second (``info["fps_source"]`` says where it came from);
    ``pixel_spacing``: (row, column) spacing in mm, or None when the file does not state it;
    ``kind``: the file type (``"mp4"``, ``"avi"``, ``"gif"``, ``"dicom"``, ``"npy"``, ...);
    ``name``: the file name; ``info``: safe metadata only (modality, frame count, size, device
    model, ...); ``identifiers``: the patient / study identifiers the file carried (DICOM), never
    shown by ``repr`` nor written by :meth:`to_dict` or an export unless asked for with
    ``include_identifiers=True``.
    """
    frames: np.ndarray
    fps: float
    pixel_spacing: tuple[float, float] | None = None
    kind: str = "npy"
    name: str = "sequence"
    info: dict = field(default_factory=dict)
    identifiers: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        f = self.frames
        if not isinstance(f, np.ndarray) or f.ndim != 4 or f.shape[1] not in (1, 3) or not f.size:
            shape = getattr(f, "shape", type(f).__name__)
            raise NnsensError(f"frames have shape {shape}; expected (T, C, h, w) with C = 1 or 3 "
                              "and at least one frame")
        if f.dtype != np.float32:
            raise NnsensError(f"frames are {f.dtype}; convert them to float32 in [0, 1]")
        lo, hi = float(f.min()), float(f.max())
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0 or hi > 1:
            raise NnsensError(f"frames range over [{lo:.3g}, {hi:.3g}]; they must lie in [0, 1]")
        fps = float(self.fps) if isinstance(self.fps, (int, float, np.number)) else float("nan")
        if not (math.isfinite(fps) and 0 < fps <= 1000):
            raise NnsensError(f"fps={self.fps!r} must be a number in (0, 1000]")
        object.__setattr__(self, "fps", fps)
        if self.pixel_spacing is not None:
            ps = tuple(float(s) for s in self.pixel_spacing)
            if len(ps) != 2 or not all(math.isfinite(s) and s > 0 for s in ps):
                raise NnsensError(f"pixel_spacing={self.pixel_spacing!r} must be two positive "
                                  "numbers (row, column) in mm, or None")
            object.__setattr__(self, "pixel_spacing", ps)
        leaked = sorted(set(self.info) & set(IDENTIFIER_KEYWORDS))
        if leaked:
            raise NnsensError(f"info holds patient identifiers {leaked}; put them in identifiers")
        object.__setattr__(self, "info", dict(self.info))
        object.__setattr__(self, "identifiers", {str(k): str(v) for k, v in self.identifiers.items()})

    def __repr__(self) -> str:
        ids = f", identifiers=<{len(self.identifiers)} hidden>" if self.identifiers else ""
        return (f"Sequence(kind={self.kind!r}, name={self.name!r}, frames={tuple(self.frames.shape)}, "
                f"fps={self.fps:g}, pixel_spacing={self.pixel_spacing}{ids})")

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def n_frames(self) -> int:
        return len(self)

    @property
    def channels(self) -> int:
        return int(self.frames.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        """(h, w) of every frame."""
        return int(self.frames.shape[2]), int(self.frames.shape[3])

    @property
    def duration(self) -> float:
        """Seconds the loop lasts at ``fps``."""
        return len(self) / self.fps

    def originals(self) -> tuple[np.ndarray, ...]:
        """The frames as a tuple of (C, h, w) arrays (what :func:`preprocess.prepare` takes)."""
        return tuple(self.frames)

    def to_dict(self, include_identifiers: bool = False) -> dict:
        """JSON-safe description (no pixels): kind, frame count, size, channels, fps, pixel
        spacing and ``info``; the identifiers and the file name (which often carries a patient's
        name) only with ``include_identifiers=True``."""
        from ._results import jsonable
        doc = {"kind": self.kind, "n_frames": len(self),
               "size": list(self.size), "channels": self.channels, "fps": self.fps,
               "pixel_spacing_mm": None if self.pixel_spacing is None else list(self.pixel_spacing),
               "info": self.info, "identifiers_present": bool(self.identifiers)}
        if include_identifiers:
            doc["identifiers"] = dict(self.identifiers)
            doc["name"] = self.name
        return jsonable(doc)


def subsample(seq: Sequence, every: int) -> Sequence:
    """Every ``every``-th frame of ``seq`` (from the first), at ``fps / every``."""
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise NnsensError(f"every={every!r} must be a whole number >= 1 (1 keeps every frame)")
    every = int(every)
    if every == 1:
        return seq
    frames = np.ascontiguousarray(seq.frames[::every])
    info = {**seq.info, "n_frames": len(frames), "subsampled_every": every}
    return dataclasses.replace(seq, frames=frames, fps=seq.fps / every, info=info)


# --------------------------------------------------------------------------- loading

def load_sequence(data: bytes, name: str, *, max_frames: int = MAX_FRAMES) -> Sequence:
    """A cine loop or DICOM file's bytes -> :class:`Sequence`.

    The type is found from the content (then from ``name``'s extension): MP4 / MOV / AVI / WebM /
    MKV through PyAV, animated GIF and other (multi-frame) images through Pillow, DICOM through
    pydicom, ``.npy`` arrays (T, h, w) or (T, C, h, w) (uint8, uint16 or floats in [0, 1]; never
    pickles). The file size (:data:`MAX_FILE_BYTES`), the frame count (``max_frames``, default
    :data:`MAX_FRAMES`), the pixels per frame (:data:`MAX_FRAME_PIXELS`) and per loop
    (:data:`MAX_SEQUENCE_PIXELS`) are checked from the header before the frames are decoded.
    Frames whose colour channels are equal (a grey loop stored as RGB) are kept as one channel.
    """
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise NnsensError(f"load_sequence takes the file's bytes, got {type(data).__name__}")
    name = str(name)
    if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1:
        raise NnsensError(f"max_frames={max_frames!r} must be a whole number >= 1")
    if len(data) > MAX_FILE_BYTES:
        raise NnsensError(f"{name!r} is {len(data) / 2**20:.0f} MiB, over the "
                          f"{MAX_FILE_BYTES // 2**20} MiB limit per loop; cut or compress it")
    if not data:
        raise NnsensError(f"{name!r} is empty; upload an MP4, AVI, GIF or DICOM file")
    kind = _kind_of(data, name)
    limits = _Limits(name, max_frames)
    if kind == "dicom":
        return _load_dicom(data, name, limits)
    if kind == "npy":
        return _load_npy(data, name, limits)
    if kind in _VIDEO_KINDS:
        return _load_video(data, name, kind, limits)
    return _load_pillow(data, name, limits)


def _kind_of(data: bytes, name: str) -> str:
    head = data[:16]
    ext = PurePath(name).suffix.lower().lstrip(".")
    if data[128:132] == b"DICM":
        return "dicom"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:6] == b"\x93NUMPY":
        return "npy"
    if head[4:8] == b"ftyp":
        return "mov" if head[8:10] == b"qt" else "mp4"
    if head[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "avi"
    if head[:4] == b"\x1aE\xdf\xa3":  # EBML: WebM / Matroska
        return "webm" if ext == "webm" else "mkv"
    if ext in ("dcm", "dicom", "dic"):
        return "dicom"  # a DICOM file without the 128-byte preamble
    return "image"


class _Limits:
    """The header checks shared by every reader."""

    def __init__(self, name: str, max_frames: int):
        self.name, self.max_frames = name, max_frames

    def frame(self, h: int, w: int) -> None:
        if h < 1 or w < 1:
            raise NnsensError(f"{self.name!r} has frames of {w} x {h} pixels; the file is damaged")
        if h * w > MAX_FRAME_PIXELS:
            raise NnsensError(f"{self.name!r} has frames of {w} x {h} pixels, over the "
                              f"{MAX_FRAME_PIXELS / 1e6:.0f} MP limit per frame; downscale it")

    def count(self, n: int, h: int, w: int, how: str = "") -> None:
        if n > self.max_frames:
            raise NnsensError(f"{self.name!r} has {n} frames{how}, over the limit of "
                              f"{self.max_frames}; cut the loop or keep every k-th frame before "
                              "uploading")
        if n * h * w > MAX_SEQUENCE_PIXELS:
            raise NnsensError(f"{self.name!r} holds {n} frames of {w} x {h} pixels "
                              f"({n * h * w / 1e6:.0f} MP), over the {MAX_SEQUENCE_PIXELS / 1e6:.0f} "
                              "MP limit per loop; cut it, downscale it or keep every k-th frame")


def _grey_or_rgb(frames_u: np.ndarray, scale: float, tol: float) -> tuple[np.ndarray, str]:
    """(T, h, w, 3) or (T, h, w) integer frames -> (T, C, h, w) float32 in [0, 1]; RGB frames
    whose channels differ by at most ``tol`` (in stored units) everywhere become one grey channel."""
    if frames_u.ndim == 3:
        return (frames_u[:, None].astype(np.float32) / np.float32(scale)), "grey"
    spread = 0.0
    for fr in frames_u:  # frame by frame: no (T, h, w, 3) temporary of a wider type
        f = fr.astype(np.float32)
        spread = max(spread, float(np.abs(f[..., 0] - f[..., 1]).max()),
                     float(np.abs(f[..., 1] - f[..., 2]).max()))
        if spread > tol:
            break
    if spread <= tol:
        grey = frames_u.astype(np.float32).mean(axis=-1)
        return np.clip(grey[:, None] / np.float32(scale), 0, 1).astype(np.float32), "grey"
    rgb = frames_u.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(scale)
    return np.ascontiguousarray(rgb), "RGB"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]


# ---- video (PyAV)

def _load_video(data: bytes, name: str, kind: str, limits: _Limits) -> Sequence:
    import av
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise NnsensError(f"{name!r} is not a readable {kind.upper()} video ({_first_line(exc)}); "
                          "upload MP4 (H.264), AVI, GIF or DICOM") from None
    try:
        with container:
            streams = container.streams.video
            if not streams:
                raise NnsensError(f"{name!r} holds no video stream; upload a cine loop")
            stream = streams[0]
            cc = stream.codec_context
            h, w = int(cc.height or 0), int(cc.width or 0)
            limits.frame(h, w)
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else 0.0
            n_header = int(stream.frames or 0)
            how = ""
            if not n_header and stream.duration and stream.time_base and fps > 0:
                n_header = round(float(stream.duration * stream.time_base) * fps)
                how = " (from its duration)"
            elif not n_header and container.duration and fps > 0:
                n_header = round(container.duration / 1e6 * fps)
                how = " (from its duration)"
            if n_header:
                limits.count(n_header, h, w, how)
            frames = []
            for frame in container.decode(stream):
                if len(frames) >= limits.max_frames:
                    limits.count(len(frames) + 1, h, w, " or more")
                limits.count(len(frames) + 1, h, w)
                frames.append(frame.to_ndarray(format="rgb24", width=w, height=h))
    except NnsensError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise NnsensError(f"{name!r} could not be decoded ({_first_line(exc)}); re-encode it as "
                          "MP4 (H.264) or upload the frames as a GIF") from None
    if not frames:
        raise NnsensError(f"{name!r} holds no decodable frame; re-encode it as MP4 (H.264)")
    arr, colour = _grey_or_rgb(np.stack(frames), 255.0, tol=4)
    fps_source = "file" if fps > 0 else "default"
    fps = fps if 0 < fps <= 1000 else DEFAULT_FPS
    info = {"n_frames": len(arr), "size": [h, w], "colour": colour, "fps_source": fps_source,
            "codec": stream.codec_context.name}
    return Sequence(arr, fps, None, kind, name, info)


# ---- GIF and other images (Pillow)

def _pil_frame(img) -> tuple[np.ndarray, float]:
    """One Pillow frame -> (h, w) or (h, w, 3) integer array and the value of full brightness."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(img, dtype=np.uint16), 65535.0
    if mode == "I":
        return np.clip(np.asarray(img, dtype=np.int64), 0, 65535).astype(np.uint16), 65535.0
    if mode == "F":
        a = np.asarray(img, dtype=np.float32)
        return np.clip(np.nan_to_num(a), 0, 1) * 65535.0, 65535.0
    if mode in ("1", "L", "LA"):
        return np.asarray(img.convert("L")), 255.0
    return np.asarray(img.convert("RGB")), 255.0


def _load_pillow(data: bytes, name: str, limits: _Limits) -> Sequence:
    import warnings

    from PIL import Image, UnidentifiedImageError
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
                limits.frame(h, w)
                n = int(getattr(img, "n_frames", 1) or 1)  # GIF: counts frames without decoding them
                limits.count(n, h, w)
                kind = (img.format or "image").lower()
                frames, durations, scale = [], [], 255.0
                for i in range(n):
                    img.seek(i)
                    if img.size != (w, h):
                        raise NnsensError(f"{name!r}: frame {i} is {img.size[0]} x {img.size[1]} "
                                          f"pixels but frame 0 is {w} x {h}; frames must share one size")
                    durations.append(img.info.get("duration"))
                    a, scale = _pil_frame(img)
                    frames.append(a)
    except NnsensError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise NnsensError(f"{name!r} is over the {MAX_FRAME_PIXELS / 1e6:.0f} MP limit per frame "
                          "(Pillow's decompression-bomb guard); downscale it") from None
    except (UnidentifiedImageError, OSError, ValueError, EOFError, SyntaxError) as exc:
        raise NnsensError(f"{name!r} is not a cine loop, DICOM or image I can read "
                          f"({_first_line(exc)}); upload MP4, AVI, MOV, GIF, DICOM or .npy") from None
    if len({a.ndim for a in frames}) > 1:  # a palette GIF can mix grey and colour frames
        frames = [np.repeat(a[..., None], 3, axis=-1) if a.ndim == 2 else a for a in frames]
    arr, colour = _grey_or_rgb(np.stack(frames), scale, tol=0)
    ms = [float(d) for d in durations if isinstance(d, (int, float)) and d > 0]
    fps, source = (1000.0 / float(np.median(ms)), "frame durations") if ms else (DEFAULT_FPS, "default")
    info = {"n_frames": len(arr), "size": [h, w], "colour": colour, "fps_source": source}
    if scale > 255:
        info["bit_depth"] = 16
    return Sequence(arr, min(fps, 1000.0), None, kind, name, info)


# ---- .npy

def _load_npy(data: bytes, name: str, limits: _Limits) -> Sequence:
    fmt = np.lib.format
    bio = io.BytesIO(data)
    try:
        version = fmt.read_magic(bio)
        reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = reader(bio)
    except (ValueError, OSError, EOFError) as exc:
        raise NnsensError(f"{name!r} is not a readable .npy file ({_first_line(exc)})") from None
    if dtype.hasobject or dtype.kind not in "uif":
        raise NnsensError(f"{name!r} holds {dtype} values; save numbers (uint8, uint16 or floats "
                          "in [0, 1])")
    if len(shape) == 3:
        t, c, (h, w) = shape[0], 1, shape[1:]
    elif len(shape) == 4 and shape[1] in (1, 3):
        t, c, h, w = shape
    else:
        raise NnsensError(f"{name!r} has shape {shape}; save frames as (T, h, w) or (T, C, h, w) "
                          "with C = 1 or 3")
    limits.frame(h, w)
    limits.count(t, h, w)
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise NnsensError(f"{name!r} could not be read ({_first_line(exc)}); the file is damaged") from None
    arr = arr.reshape(t, c, h, w)
    if dtype.kind == "f":
        arr = arr.astype(np.float32)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        if not np.isfinite(arr).all() or lo < 0 or hi > 1:
            raise NnsensError(f"{name!r} holds floats in [{lo:.3g}, {hi:.3g}]; scale them to [0, 1] "
                              "or save uint8 / uint16")
    else:
        top = 255.0 if dtype.itemsize == 1 else 65535.0
        if dtype.kind == "i" and arr.min() < 0:
            raise NnsensError(f"{name!r} holds negative integers; save uint8, uint16 or floats in [0, 1]")
        arr = np.clip(arr.astype(np.float32) / np.float32(top), 0, 1)
    info = {"n_frames": int(t), "size": [int(h), int(w)], "colour": "grey" if c == 1 else "RGB",
            "fps_source": "default", "dtype": str(dtype)}
    return Sequence(np.ascontiguousarray(arr, dtype=np.float32), DEFAULT_FPS, None, "npy", name, info)


# ---- DICOM (pydicom)

def _dicom_identifiers(ds) -> dict[str, str]:
    out = {}
    for kw in IDENTIFIER_KEYWORDS:
        val = ds.get(kw)
        if val is None:
            continue
        val = getattr(val, "value", val)
        text = str(val).strip()
        if text:
            out[kw] = text
    return out


def _dicom_number(ds, kw):
    try:
        val = ds.get(kw)
        if val is None or val == "":
            return None
        if isinstance(val, (list, tuple)) or (hasattr(val, "__len__") and not isinstance(val, str)):
            val = list(val)
            val = val[0] if val else None
        val = float(val)
        return val if math.isfinite(val) else None
    except (TypeError, ValueError):
        return None


def _dicom_fps(ds) -> tuple[float, str]:
    ft = _dicom_number(ds, "FrameTime")
    if ft and ft > 0:
        return 1000.0 / ft, "FrameTime"
    vec = ds.get("FrameTimeVector")
    if vec is not None:
        try:
            ms = [float(v) for v in vec][1:]
            ms = [v for v in ms if v > 0]
            if ms:
                return 1000.0 / float(np.mean(ms)), "FrameTimeVector"
        except (TypeError, ValueError):
            pass
    for kw in ("CineRate", "RecommendedDisplayFrameRate"):
        r = _dicom_number(ds, kw)
        if r and r > 0:
            return r, kw
    return DEFAULT_FPS, "default"


def _dicom_spacing(ds) -> tuple[tuple[float, float] | None, str]:
    for kw in ("PixelSpacing", "ImagerPixelSpacing"):
        val = ds.get(kw)
        if val is not None:
            try:
                ps = tuple(float(v) for v in val)
                if len(ps) == 2 and all(math.isfinite(s) and s > 0 for s in ps):
                    return ps, kw
            except (TypeError, ValueError):
                pass
    regions = ds.get("SequenceOfUltrasoundRegions")
    for reg in (regions or ()):
        try:
            ux, uy = int(reg.get("PhysicalUnitsXDirection", 0)), int(reg.get("PhysicalUnitsYDirection", 0))
            dx, dy = float(reg.PhysicalDeltaX), float(reg.PhysicalDeltaY)
        except (AttributeError, TypeError, ValueError):
            continue
        if ux == uy == 3 and dx > 0 and dy > 0:  # 3 = cm
            return (abs(dy) * 10.0, abs(dx) * 10.0), "SequenceOfUltrasoundRegions"
    return None, ""


def _decode_dicom(ds):
    """All frames of ``ds`` as an array (pydicom; YBR converted to RGB). Separate so tests can
    prove the limits are checked before anything is decoded."""
    from pydicom.pixels import pixel_array
    return pixel_array(ds)


def _load_dicom(data: bytes, name: str, limits: _Limits) -> Sequence:
    import pydicom
    from pydicom.errors import InvalidDicomError
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=data[128:132] != b"DICM")
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError,
            IndexError, NotImplementedError) as exc:
        raise NnsensError(f"{name!r} is not a readable DICOM file ({_first_line(exc)}); export it "
                          "again from the scanner or PACS") from None
    if "PixelData" not in ds:
        raise NnsensError(f"{name!r} is a DICOM file without an image (e.g. a report or a "
                          "DICOMDIR); upload the image or cine loop itself")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        n = int(ds.get("NumberOfFrames", 1) or 1)
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)) or 8)
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        pi = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    except (AttributeError, TypeError, ValueError) as exc:
        raise NnsensError(f"{name!r}: the DICOM image attributes are unreadable "
                          f"({_first_line(exc)}); export it again") from None
    limits.frame(rows, cols)
    limits.count(n, rows, cols)
    if spp not in (1, 3):
        raise NnsensError(f"{name!r} has {spp} samples per pixel; only grey (1) or colour (3) "
                          "DICOM images are supported")
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        arr = _decode_dicom(ds)
    except Exception as exc:  # noqa: BLE001 - decoders raise many types; each becomes one line
        if ts is not None and ts.is_compressed:
            raise NnsensError(
                f"{name!r} is compressed with {ts.name} ({ts}), which cannot be decoded here "
                f"({_first_line(exc)}); install pylibjpeg with pylibjpeg-libjpeg and "
                "pylibjpeg-openjpeg (or python-gdcm), or export the DICOM uncompressed (Explicit VR "
                "Little Endian)") from None
        raise NnsensError(f"{name!r}: the DICOM pixel data cannot be read ({_first_line(exc)}); "
                          "the file is damaged or truncated; export it again") from None
    arr = np.asarray(arr)
    want = (n, rows, cols) if spp == 1 else (n, rows, cols, 3)
    if arr.shape != want:
        if arr.size != int(np.prod(want)):
            raise NnsensError(f"{name!r}: decoded pixels have shape {arr.shape}, expected {want}; "
                              "the file is damaged")
        arr = arr.reshape(want)
    info: dict = {"n_frames": n, "size": [rows, cols]}
    if pi == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut
        arr = apply_color_lut(arr, ds)
        frames, colour = _grey_or_rgb(arr, 65535.0 if arr.dtype.itemsize > 1 else 255.0, tol=0)
        info["intensity"] = "palette colour lookup table"
    elif spp == 3:  # RGB, or YBR converted to RGB by pydicom
        frames, colour = _grey_or_rgb(arr, float(2 ** bits - 1), tol=0)
        info["intensity"] = f"colour, scaled by the stored bit depth ({bits} bits)"
    else:
        frames, how = _dicom_grey(ds, arr, bits, signed)
        if pi == "MONOCHROME1":  # low values are white
            frames = 1.0 - frames
            how += "; MONOCHROME1 inverted"
        frames, colour = frames[:, None].astype(np.float32), "grey"
        info["intensity"] = how
    fps, fps_source = _dicom_fps(ds)
    spacing, spacing_source = _dicom_spacing(ds)
    info.update({"colour": colour, "fps_source": fps_source,
                 "transfer_syntax": ts.name if ts is not None else "unknown"})
    if spacing_source:
        info["pixel_spacing_source"] = spacing_source
    for kw in SAFE_KEYWORDS:
        val = ds.get(kw)
        if val is not None and str(val).strip():
            info[kw] = val if isinstance(val, (int, float)) else str(val).strip()
    return Sequence(np.ascontiguousarray(frames, dtype=np.float32), min(fps, 1000.0), spacing,
                    "dicom", name, info, _dicom_identifiers(ds))


def _dicom_grey(ds, arr: np.ndarray, bits: int, signed: bool) -> tuple[np.ndarray, str]:
    """Grey frames in [0, 1]: the rescale (slope, intercept) applied, then the VOI window when the
    file states one, else the stored bit depth's full range (rescaled the same way)."""
    slope = _dicom_number(ds, "RescaleSlope")
    inter = _dicom_number(ds, "RescaleIntercept")
    slope = 1.0 if not slope else slope
    inter = 0.0 if inter is None else inter
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    vals = arr.astype(np.float32) * np.float32(slope) + np.float32(inter)
    centre, width = _dicom_number(ds, "WindowCenter"), _dicom_number(ds, "WindowWidth")
    if centre is not None and width is not None and width >= 1:
        # DICOM PS3.3 C.11.2.1.2 linear window
        out = ((vals - (centre - 0.5)) / (width - 1.0) + 0.5) if width > 1 else (vals > centre - 0.5)
        return np.clip(out, 0, 1).astype(np.float32), f"window centre {centre:g}, width {width:g}"
    a, b = sorted((lo * slope + inter, hi * slope + inter))
    how = f"scaled by the stored bit depth ({bits} bits{', signed' if signed else ''})"
    if slope != 1.0 or inter != 0.0:
        how += f" after rescale slope {slope:g}, intercept {inter:g}"
    return np.clip((vals - a) / np.float32(b - a), 0, 1).astype(np.float32), how


# --------------------------------------------------------------------------- synthetic cine loop

def phantom_cine(n_frames: int = 24, size: tuple[int, int] = (96, 128), seed: int = 0,
                 n_b_lines: int = 3, sweep: float = 0.2, fps: float = 20.0,
                 channels: int = 1) -> tuple[Sequence, np.ndarray]:
    """A synthetic convex-probe lung-ultrasound loop in the look of :mod:`nnsens_core.phantom`
    (fan below an apex above the top edge, subcutaneous bands, a bright pleural line, faint
    A-lines, Rayleigh speckle, depth attenuation, black outside the fan) with ``n_b_lines`` B-lines
    (radial comet tails from the pleura to the bottom of the fan) that slide to and fro across the
    fan like lung sliding: B-line ``j`` sits at angle ``theta_j + sweep * half * sin(2 pi t / T +
    phi_j)`` in frame ``t`` of ``T`` (``half``: the fan's half-angle), so the loop plays seamlessly.
    The lung speckle decorrelates smoothly over the loop; the tissue above the pleura stays still.

    Returns ``(sequence, masks)``: frames (T, C, h, w) float32 in [0, 1] at ``fps`` and per-frame
    ground-truth B-line masks (T, h, w) bool (the B-line cores below the pleura, inside the fan).
    Deterministic by ``seed``.
    """
    from scipy.ndimage import gaussian_filter

    from .phantom import FLOOR
    if isinstance(n_frames, bool) or not isinstance(n_frames, int) or not 1 <= n_frames <= MAX_FRAMES:
        raise NnsensError(f"n_frames={n_frames!r} must be a whole number in 1..{MAX_FRAMES}")
    try:
        H, W = (int(s) for s in size)
    except (TypeError, ValueError):
        raise NnsensError(f"size={size!r} must be (height, width), e.g. (96, 128)") from None
    if not (32 <= H <= 1024 and 32 <= W <= 1024) or W < H:
        raise NnsensError(f"size={size!r} must be (height, width) with 32 <= height <= width <= 1024")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise NnsensError(f"seed={seed!r} must be a whole number >= 0")
    if isinstance(n_b_lines, bool) or not isinstance(n_b_lines, int) or not 1 <= n_b_lines <= 6:
        raise NnsensError(f"n_b_lines={n_b_lines!r} must be a whole number in 1..6")
    if not (isinstance(sweep, (int, float)) and 0 <= sweep <= 0.5):
        raise NnsensError(f"sweep={sweep!r} must lie in [0, 0.5] (a fraction of the fan's half-angle)")
    if channels not in (1, 3):
        raise NnsensError(f"channels={channels!r} must be 1 or 3")
    rng = np.random.default_rng(seed)
    T = n_frames

    # geometry in units of the image height; the apex is centred horizontally
    apex_y = rng.uniform(-0.40, -0.30)
    apex_x = 0.5 * W / H
    r_min = -apex_y + rng.uniform(0.01, 0.04)
    r_max = -apex_y + rng.uniform(0.93, 0.97)
    half = np.deg2rad(rng.uniform(26.0, 32.0))
    yy, xx = np.meshgrid((np.arange(H) + 0.5) / H, (np.arange(W) + 0.5) / H, indexing="ij")
    dy, dx = yy - apex_y, xx - apex_x
    r = np.hypot(dx, dy)
    theta = np.arctan2(dx, dy)
    sector = (r >= r_min) & (r <= r_max) & (np.abs(theta) <= half)
    span = r_max - r_min
    d = (r - r_min) / span
    u = theta / half
    px_d = span * H
    lat_px = r * H

    # pleural line (slightly wavy) and the soft lung side below it
    d_p = rng.uniform(0.26, 0.34)
    d_pl = d_p + 0.006 * np.sin(2.3 * np.pi * u + rng.uniform(0, 2 * np.pi))
    below = 1.0 / (1.0 + np.exp(-(d - d_pl) * px_d / 0.6))
    tissue = rng.uniform(0.18, 0.24) * (1 - below)
    for _ in range(3):
        depth = rng.uniform(0.06, 1.0) * (d_p - 0.08) + 0.04
        tissue = tissue + rng.uniform(0.08, 0.25) * np.exp(
            -0.5 * ((d - depth) * px_d / rng.uniform(0.6, 1.4)) ** 2) * (1 - below)
    lung = rng.uniform(0.07, 0.12) * below
    pleura_amp, w_pl = rng.uniform(0.8, 1.0), rng.uniform(0.7, 1.1)
    a_lines = np.zeros_like(d)
    for m, decay in ((2, 1.0), (3, 0.7)):
        a_lines += decay * np.exp(-0.5 * ((d - m * d_p) * px_d / 1.0) ** 2) * (m * d_p < 0.97)
    a_lines *= rng.uniform(0.08, 0.18) * below  # faint: B-lines erase A-lines

    th0 = rng.uniform(-0.6, 0.6, n_b_lines) * half
    phase = rng.uniform(0, 2 * np.pi, n_b_lines)
    sig = rng.uniform(0.9, 1.6, n_b_lines)  # pixels
    amp = rng.uniform(0.7, 1.0, n_b_lines)
    fade = rng.uniform(0.0, 0.3, n_b_lines)

    def speckle(a, b):
        s = np.hypot(gaussian_filter(a, (0.5, 0.9)), gaussian_filter(b, (0.5, 0.9)))
        return 0.35 + 0.65 * s / s.mean()

    still = speckle(rng.standard_normal((H, W)), rng.standard_normal((H, W)))
    lung_re = rng.standard_normal((2, H, W))
    lung_im = rng.standard_normal((2, H, W))
    atten = np.exp(-rng.uniform(0.2, 0.6) * d)
    gain = rng.uniform(0.9, 1.15)
    noise = rng.standard_normal((T, H, W))

    frames = np.empty((T, H, W), np.float32)
    masks = np.empty((T, H, W), bool)
    for t in range(T):
        ang = 2 * np.pi * t / T
        th_t = th0 + sweep * half * np.sin(ang + phase)
        b_prof = np.zeros_like(d)
        b_lines = np.zeros_like(d)
        for j in range(n_b_lines):
            prof = np.exp(-0.5 * ((theta - th_t[j]) * lat_px / sig[j]) ** 2)
            b_prof = np.maximum(b_prof, prof)
            b_lines = np.maximum(b_lines, amp[j] * (1 - fade[j] * d) * prof)
        b_lines *= below
        shimmer = 1 + 0.15 * np.sin(6 * np.pi * u - ang)  # the pleura glitters as it slides
        pleura = pleura_amp * shimmer * np.exp(-0.5 * ((d - d_pl) * px_d / w_pl) ** 2)
        c, s = np.cos(ang), np.sin(ang)  # lung speckle: a smooth periodic walk between two fields
        moving = speckle(c * lung_re[0] + s * lung_re[1], c * lung_im[0] + s * lung_im[1])
        spk = still * (1 - below) + moving * below
        echo = tissue + lung + pleura + a_lines + b_lines
        img = echo * spk * atten * gain + 0.012 * noise[t]
        frames[t] = np.clip(img, FLOOR, 1.0) * sector
        masks[t] = (b_prof > 0.5) & (d > d_pl + 1.0 / px_d) & sector
    data = np.repeat(frames[:, None], channels, axis=1)
    info = {"n_frames": T, "size": [H, W], "colour": "grey" if channels == 1 else "RGB",
            "fps_source": "phantom", "generator": "nnsens_core.sequences.phantom_cine", "seed": seed,
            "b_lines": n_b_lines, "sweep": float(sweep)}
    seq = Sequence(np.ascontiguousarray(data), float(fps), None, "phantom",
                   f"lung-ultrasound phantom loop (seed {seed})", info)
    return seq, masks


# --------------------------------------------------------------------------- per-frame explanations

@dataclass(frozen=True)
class FrameMapsSettings:
    """What produced a :class:`FrameMaps`: the method and its config, the class explained
    (``"pred"``: each frame's prediction, else a class index), the preprocessing recipe and the
    batch size."""
    method: str
    target: str | int
    recipe: object
    batch_size: int
    method_config: object


@dataclass
class FrameMaps(Result):
    """One saliency method's maps for every frame of a :class:`Sequence`.

    ``maps`` (T, H, W) float32: the method's raw maps at the model's input (not rescaled; signed
    methods keep their sign), ``placement``: where each frame sits in the model input
    (:class:`~nnsens_core.preprocess.Placement`; every frame of a loop has the same),
    ``maps_original`` (T, h, w): the same maps on the frames' own pixels (NaN where the model did not
    see the frame, e.g. cropped away), ``probs`` (T, K) softmax probabilities, ``preds`` (T,)
    predicted classes, ``targets`` (T,) the classes explained, ``class_names`` the model's classes,
    ``signed``: the method's maps are signed, ``fps`` of the loop, ``sequence``: the loop's safe
    description (:meth:`Sequence.to_dict`, never its identifiers).
    """
    maps: np.ndarray
    placement: object
    probs: np.ndarray
    preds: np.ndarray
    targets: np.ndarray
    class_names: tuple[str, ...]
    method: str
    label: str
    signed: bool
    fps: float
    model: str
    sequence: dict
    config: FrameMapsSettings
    seconds: float = 0.0
    _original: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.maps.shape[0])

    @property
    def maps_original(self) -> np.ndarray:
        """(T, h, w) float32 maps on the frames' own pixels (NaN where the model saw nothing);
        computed once, on first use."""
        if self._original is None:
            from .preprocess import map_to_original
            self._original = map_to_original(self.maps, self.placement)
        return self._original

    def frame_original(self, i: int) -> np.ndarray:
        """Frame ``i``'s map (h, w) on the frame's own pixels (without computing all frames)."""
        from .preprocess import map_to_original
        if self._original is not None:
            return self._original[i]
        return map_to_original(self.maps[i], self.placement)

    def predicted_names(self) -> list[str]:
        return [self.class_names[int(p)] for p in self.preds]

    def scale(self) -> tuple[float, float]:
        """One colour scale shared by every frame (so frames are comparable and the video does
        not flicker): (min, max) of all maps, or (-a, a) for signed maps."""
        from .render import scale_of
        return scale_of(self.maps, self.signed)

    def summary(self) -> dict:
        """Over all frames: ``mean_map`` (h, w) on the frames' pixels and ``mean_map_model``
        (H, W), ``class_fractions`` (share of frames predicted as each class, in class order),
        ``majority`` (the most frequent prediction; ties go to the lower class index),
        ``mean_confidence`` (mean top probability) and ``n_frames``."""
        from .preprocess import map_to_original
        mean_model = self.maps.mean(axis=0)
        counts = np.bincount(self.preds, minlength=len(self.class_names))
        return {"n_frames": len(self),
                "mean_map_model": mean_model,
                "mean_map": map_to_original(mean_model, self.placement),
                "class_fractions": {c: float(k) / len(self) for c, k in zip(self.class_names, counts)},
                "majority": self.class_names[int(np.argmax(counts))],
                "mean_confidence": float(self.probs.max(axis=1).mean())}

    def to_frame(self):
        """The per-frame prediction strip: one row per frame with ``frame``, ``time_s``,
        ``predicted`` (class name), ``confidence``, ``explained`` (class name of the map) and the
        probability of every class (``p(<class>)``)."""
        import pandas as pd
        rows = {"frame": np.arange(len(self)), "time_s": np.arange(len(self)) / self.fps,
                "predicted": self.predicted_names(),
                "confidence": self.probs.max(axis=1).astype(float),
                "explained": [self.class_names[int(t)] for t in self.targets]}
        for k, c in enumerate(self.class_names):
            rows[f"p({c})"] = self.probs[:, k].astype(float)
        return pd.DataFrame(rows)

    def arrays(self) -> dict[str, np.ndarray]:
        s = self.summary()
        return {"maps": self.maps.astype(np.float32), "maps_original": self.maps_original,
                "mean_map": s["mean_map"], "mean_map_model": s["mean_map_model"],
                "probs": self.probs.astype(np.float32), "preds": self.preds, "targets": self.targets}

    def _payload(self) -> dict:
        s = self.summary()
        vmin, vmax = self.scale()
        return {"method": self.method, "label": self.label, "signed": self.signed,
                "model": self.model, "class_names": list(self.class_names), "fps": self.fps,
                "n_frames": len(self), "model_input": list(self.maps.shape[1:]),
                "placement": self.placement.to_dict(), "sequence": self.sequence,
                "scale": {"vmin": vmin, "vmax": vmax,
                          "note": "raw map values; one colour scale shared by all frames"},
                "summary": {"class_fractions": s["class_fractions"], "majority": s["majority"],
                            "mean_confidence": s["mean_confidence"]},
                "frames": [{"frame": i, "predicted": self.class_names[int(p)],
                            "explained": self.class_names[int(t)],
                            "probs": {c: float(self.probs[i, k]) for k, c in enumerate(self.class_names)}}
                           for i, (p, t) in enumerate(zip(self.preds, self.targets))]}


def _frames_target(target, class_names, n_out: int):
    """``None``/"pred" -> "pred"; a class index or class name -> its index."""
    if target is None or (isinstance(target, str) and target.strip().lower() == "pred"):
        return "pred"
    if isinstance(target, str):
        if target not in class_names:
            raise NnsensError(f"target={target!r} is not one of the model's classes "
                              f"{list(class_names)}; give a class name, an index or None (prediction)")
        return list(class_names).index(target)
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or not 0 <= target < n_out:
        raise NnsensError(f"target={target!r} must be a class index in 0..{n_out - 1}, a class name "
                          "or None (each frame's prediction)")
    return int(target)


def explain_frames(model, seq: Sequence, method_name: str, recipe=None, target=None,
                   batch_size: int = 8, progress=None, *, config=None, device="auto",
                   **method_options) -> FrameMaps:
    """Explain every frame of ``seq`` with one saliency method.

    ``model``: a :class:`~nnsens_core.zoo.LoadedModel` (its ``spec`` gives the class names and,
    with ``recipe=None``, the preprocessing recipe :meth:`Recipe.from_spec
    <nnsens_core.preprocess.Recipe.from_spec>`); ``recipe``: another
    :class:`~nnsens_core.preprocess.Recipe` (size, channels, resize policy, normalisation) to feed
    the model with. ``method_name``: a name or alias of :mod:`nnsens_core.saliency.registry`;
    ``config`` its config object, or ``method_options`` fields of its default config (e.g.
    ``window=16`` for occlusion). ``target``: None (each frame's predicted class), a class index or
    a class name. Frames are prepared (:func:`nnsens_core.preprocess.prepare`) and explained
    ``batch_size`` at a time through the registry's one signature, so results do not depend on
    ``batch_size``. ``progress(done, total)`` runs from 0 to ``1000 * number of batches``.
    """
    import torch

    from ._batching import batch_slices, sub_progress
    from .device import inference_model, resolve_device
    from .preprocess import Recipe, prepare
    from .saliency import registry
    from .saliency.compare import predict_proba
    from .zoo import LoadedModel

    t0 = time.perf_counter()
    if not isinstance(model, LoadedModel):
        raise NnsensError(f"model must be a LoadedModel (weights with their spec), got "
                          f"{type(model).__name__}; load it with nnsens_core.load_model")
    if not isinstance(seq, Sequence):
        raise NnsensError(f"seq must be a Sequence (load_sequence), got {type(seq).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise NnsensError(f"batch_size={batch_size!r} must be a whole number >= 1")
    spec = model.spec
    if spec.task != "image" or len(spec.input_shape) != 3:
        raise NnsensError(f"the model {spec.name!r} takes inputs {tuple(spec.input_shape)}; cine "
                          "loops need a 2-D image model (C, H, W)")
    if recipe is None:
        recipe = Recipe.from_spec(spec)
    elif not isinstance(recipe, Recipe):
        raise NnsensError(f"recipe must be a preprocess.Recipe, got {type(recipe).__name__}")
    else:  # the model is fed (and the method normalises / clamps) through this recipe
        spec = spec.replace(input_shape=(recipe.channels, *recipe.size), mean=tuple(recipe.mean),
                            std=tuple(recipe.std), resize=recipe.resize)
    method = registry.get(method_name)
    if config is not None and method_options:
        raise NnsensError("give the method's settings either as config= or as keyword options, "
                          "not both")
    if config is None:
        config = registry.default_config(method.name, tuple(spec.input_shape[1:]), model)
        if method_options:
            known = {f.name for f in dataclasses.fields(config)}
            bad = sorted(set(method_options) - known)
            if bad:
                raise NnsensError(f"{method.name!r} has no setting {bad}; its settings are "
                                  f"{sorted(known)}")
            config = dataclasses.replace(config, **method_options)
    config = method.bind(config)
    dev = resolve_device(device)
    net = inference_model(model, dev)
    originals = seq.originals()
    n = len(originals)
    slices = list(batch_slices(n, batch_size))
    total = 1000 * len(slices)
    probs, maps, targets, placement = [], [], [], None
    tgt = None
    last = [None]

    def report(done: int, total_: int, stage: str = "") -> None:  # each step once
        if progress is not None and (done, total_) != last[0]:
            last[0] = (done, total_)
            progress(done, total_)
    for b, sl in enumerate(slices):
        x01, places = prepare(originals[sl], recipe)
        placement = placement or places[0]
        x = spec.normalize(torch.from_numpy(x01))
        p = predict_proba(net, x, dev, batch_size=batch_size)
        if tgt is None:
            tgt = _frames_target(target, spec.class_names, p.shape[1])
        cls = p.argmax(1).numpy() if tgt == "pred" else np.full(len(x), tgt, np.int64)
        sub = sub_progress(report, "", b * 1000, total, span=1000)
        m = method(net, x, cls.tolist(), config, spec=spec, device=dev, progress=sub)
        probs.append(p.numpy())
        maps.append(m.numpy())
        targets.append(cls)
        report((b + 1) * 1000, total)
    probs_a = np.concatenate(probs).astype(np.float32)
    names = tuple(spec.class_names) or tuple(f"class {k}" for k in range(probs_a.shape[1]))
    if len(names) != probs_a.shape[1]:
        raise NnsensError(f"the model has {probs_a.shape[1]} outputs but {len(names)} class names; "
                          "fix the model's class names")
    settings = FrameMapsSettings(method.name, tgt, recipe, batch_size, config)
    return FrameMaps(np.concatenate(maps).astype(np.float32), placement, probs_a,
                     probs_a.argmax(1).astype(np.int64), np.concatenate(targets).astype(np.int64),
                     names, method.name, method.label, bool(method.signed), seq.fps, spec.name,
                     seq.to_dict(), settings, time.perf_counter() - t0)


# --------------------------------------------------------------------------- exports

def maps_npz(frame_maps: FrameMaps, seq: Sequence | None = None,
             include_identifiers: bool = False) -> bytes:
    """The numbers of a per-frame explanation as a compressed ``.npz``: ``maps`` (T, H, W),
    ``maps_original`` (T, h, w; NaN where unseen), ``mean_map(_model)``, ``probs``, ``preds``,
    ``targets``, ``class_names`` and ``document`` (the JSON of :meth:`FrameMaps.to_dict`).
    The patient identifiers of ``seq`` are added (``identifiers``, JSON) only with
    ``include_identifiers=True``."""
    from ._results import dumps, npz_bytes
    arrays = {**frame_maps.arrays(), "class_names": np.array(frame_maps.class_names, dtype=str),
              "document": np.array(dumps(frame_maps.to_dict()))}
    if include_identifiers and seq is not None and seq.identifiers:
        arrays["identifiers"] = np.array(json.dumps(seq.identifiers))
    return npz_bytes(arrays)


def _labels_for(n: int, maps, labels) -> list[str]:
    if labels is None:
        if isinstance(maps, FrameMaps):
            return [f"{maps.class_names[int(p)]} {maps.probs[i].max():.0%}"
                    for i, p in enumerate(maps.preds)]
        return [""] * n
    if isinstance(labels, str):
        return [labels] * n
    labels = [str(s) for s in labels]
    if len(labels) != n:
        raise NnsensError(f"{len(labels)} labels for {n} frames; give one per frame (or one text)")
    return labels


def _draw_label(img: np.ndarray, text: str) -> np.ndarray:
    """``text`` in white on a dark box in the top-left corner (Pillow's default font)."""
    if not text:
        return img
    from PIL import Image, ImageDraw, ImageFont
    pil = Image.fromarray(img)
    size = max(10, min(img.shape[0], img.shape[1]) // 16)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizes
        font = ImageFont.load_default()
    d = ImageDraw.Draw(pil)
    _left, _top, right, bottom = d.textbbox((4, 3), text, font=font)
    d.rectangle((0, 0, right + 4, bottom + 3), fill=(0, 0, 0))
    d.text((4, 3), text, fill=(255, 255, 255), font=font)
    return np.asarray(pil)


def render_frames(seq: Sequence, maps=None, alpha: float = 0.5, labels=None,
                  upscale: int | None = None, colorbar: bool = True) -> list[np.ndarray]:
    """The annotated frames (uint8 RGB) of :func:`export_loop`: each frame with its map over it
    (:func:`nnsens_core.render.overlay`, one colour scale shared by every frame), scaled up by the
    whole number ``upscale`` (default: so that the shorter side reaches 240 pixels), its label
    (default: the predicted class and its probability) in the top-left corner and, with maps, a
    colour bar under it."""
    from . import render
    n = len(seq)
    h, w = seq.size
    signed, method = False, ""
    if maps is not None:
        if isinstance(maps, FrameMaps):
            signed, method = maps.signed, maps.label
            vmin, vmax = maps.scale()
            maps_o = maps.maps_original
        else:
            maps_o = np.asarray(maps, np.float32)
            vmin, vmax = render.scale_of(maps_o, signed)
        if maps_o.shape != (n, h, w):
            raise NnsensError(f"maps have shape {maps_o.shape}; expected {(n, h, w)} (one map per "
                              "frame on the frame's own pixels)")
    if upscale is None:
        upscale = max(1, math.ceil(240 / min(h, w)))
    if isinstance(upscale, bool) or not isinstance(upscale, int) or not 1 <= upscale <= 16:
        raise NnsensError(f"upscale={upscale!r} must be a whole number in 1..16")
    if not 0 <= float(alpha) <= 1:
        raise NnsensError(f"alpha={alpha!r} must lie in [0, 1]")
    texts = _labels_for(n, maps, labels)
    bar = None
    if maps is not None and colorbar:
        W = w * upscale
        cb = render.colorbar(vmin, vmax, f"{method} (raw values; one scale for all frames)"
                             if method else "map value", signed, length=max(32, W - 40))
        bar = np.full((cb.shape[0], max(W, cb.shape[1]), 3), 255, np.uint8)
        bar[:, :cb.shape[1]] = cb
        bar = bar[:, :W]
    out = []
    for t in range(n):
        if maps is None:
            img = render.to_rgb(seq.frames[t])
        else:
            img = render.overlay(seq.frames[t], maps_o[t], float(alpha), signed, vmin, vmax)
        if upscale > 1:
            img = np.repeat(np.repeat(img, upscale, axis=0), upscale, axis=1)
        img = _draw_label(np.ascontiguousarray(img), texts[t])
        if bar is not None:
            img = np.concatenate([img, bar], axis=0)
        out.append(np.ascontiguousarray(img))
    return out


def export_loop(seq: Sequence, maps=None, fmt: str = "mp4", fps: float | None = None,
                alpha: float = 0.5, labels=None, *, include_identifiers: bool = False,
                upscale: int | None = None) -> bytes:
    """The annotated loop as the bytes of an MP4 (PyAV; H.264 when available, else MPEG-4 part 2)
    or an animated GIF (Pillow), at ``fps`` (default the loop's).

    ``maps``: a :class:`FrameMaps` (its maps on the frames' pixels, its colour scale and, when
    ``labels`` is None, each frame's predicted class and probability in the corner) or an array
    (T, h, w); None exports the frames alone. ``labels``: one text per frame (or one for all).
    Frames are drawn by :func:`render_frames`. The file's metadata carries the patient identifiers
    only with ``include_identifiers=True``; nothing else of them is ever written.
    """
    if fmt not in ("mp4", "gif"):
        raise NnsensError(f"fmt={fmt!r} must be 'mp4' or 'gif'")
    fps = seq.fps if fps is None else fps
    if not isinstance(fps, (int, float)) or not 0 < float(fps) <= 100:
        raise NnsensError(f"fps={fps!r} must be a number in (0, 100]")
    frames = render_frames(seq, maps, alpha, labels, upscale)
    comment = json.dumps(seq.identifiers) if include_identifiers and seq.identifiers else None
    if fmt == "gif":
        return _gif_bytes(frames, float(fps), comment)
    return _mp4_bytes(frames, float(fps), comment)


def _gif_bytes(frames: list[np.ndarray], fps: float, comment: str | None) -> bytes:
    from PIL import Image
    grey = all((f[..., 0] == f[..., 1]).all() and (f[..., 1] == f[..., 2]).all() for f in frames)
    ims = [Image.fromarray(f[..., 0] if grey else f) for f in frames]
    buf = io.BytesIO()
    extra = {"comment": comment.encode()} if comment else {}
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:],
                duration=max(20, round(1000 / fps)), loop=0, **extra)
    return buf.getvalue()


def _mp4_bytes(frames: list[np.ndarray], fps: float, comment: str | None) -> bytes:
    import av
    h, w = frames[0].shape[:2]
    H, W = h + h % 2, w + w % 2  # yuv420p needs even sides: repeat the last row / column
    buf = io.BytesIO()
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(buf, mode="w", format="mp4") as out:
        if comment:
            out.metadata["comment"] = comment
        try:
            stream = out.add_stream("libx264", rate=rate)
            stream.options = {"crf": "18", "preset": "veryfast"}
        except (av.FFmpegError, ValueError):
            stream = out.add_stream("mpeg4", rate=rate)
            stream.bit_rate = max(400_000, 8 * W * H * math.ceil(fps) // 10)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for f in frames:
            if (H, W) != (h, w):
                f = np.pad(f, ((0, H - h), (0, W - w), (0, 0)), mode="edge")
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()
