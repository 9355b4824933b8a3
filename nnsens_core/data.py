"""Datasets: tabular (CSV / NPZ / demo) and image (folder / ZIP / NPZ / phantom demo).

Everything is plain numpy on the way in; core functions turn arrays into tensors on their device.
"""
from __future__ import annotations

import dataclasses
import io
import os
import re
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ._validate import check_images
from .errors import NnsensError
from .resources import pima_csv

PIMA_URL = ("https://raw.githubusercontent.com/jbrownlee/Datasets/master/"
            "pima-indians-diabetes.data.csv")
PIMA_COLUMNS = ["Pregnancies", "Glucose", "BloodPressure", "SkinThickness", "Insulin", "BMI",
                "DiabetesPedigreeFunction", "Age", "Outcome"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}

# Bounds on what an upload may unpack to, checked before anything is decompressed or decoded.
MAX_IMAGE_PIXELS = 50_000_000       # one image (a 4000 x 3000 photo is 12 MP)
MAX_UPLOAD_PIXELS = 500_000_000     # all images of one upload together
MAX_ZIP_TOTAL = 2 * 2**30           # uncompressed bytes of a ZIP / NPZ
MAX_ZIP_MEMBER = 512 * 2**20        # uncompressed bytes of one member
MAX_ZIP_RATIO = 200                 # uncompressed / compressed, for members over 1 MiB


@dataclass(frozen=True, eq=False)
class TabularData:
    """Features ``X`` (n, d) float64, target ``y`` (n,), and names."""
    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    target_name: str
    name: str = "data"

    def __post_init__(self):
        if self.X.ndim != 2:
            raise NnsensError(f"X has shape {self.X.shape}; it must be 2-D (rows, features)")
        if len(self.y) != len(self.X):
            raise NnsensError(f"X has {len(self.X)} rows but y has {len(self.y)}; they must match")
        if len(self.feature_names) != self.X.shape[1]:
            raise NnsensError(f"{len(self.feature_names)} feature names for {self.X.shape[1]} columns")

    @property
    def n_features(self) -> int:
        return self.X.shape[1]

    def rows(self, spec: str | slice | None) -> TabularData:
        """A row range such as ``"0:500"`` (``None`` keeps all rows)."""
        sl = parse_rows(spec, len(self.X)) if not isinstance(spec, slice) else spec
        return TabularData(self.X[sl], self.y[sl], self.feature_names, self.target_name, self.name)

    def bounds(self) -> np.ndarray:
        """Per-feature ``[min, max]`` (d, 2), the default Sobol bounds."""
        return np.stack([self.X.min(axis=0), self.X.max(axis=0)], axis=1)


def parse_rows(spec: str | None, n: int) -> slice:
    """``"0:500"`` -> ``slice(0, 500)``, checked against ``n`` rows."""
    if spec is None or spec == "":
        return slice(0, n)
    try:
        a, b = (s.strip() for s in str(spec).split(":"))
        start, stop = int(a or 0), int(b) if b else n
    except ValueError:
        raise NnsensError(f"rows={spec!r} is not a range; write it like '0:500'") from None
    if not 0 <= start < stop <= n:
        raise NnsensError(f"rows={spec!r} is outside the {n} rows of the data; use 0 <= start < stop <= {n}")
    return slice(start, stop)


def check_table(X: np.ndarray, y: np.ndarray, feature_names, target_name: str,
                what: str = "the data") -> None:
    """The one check of every tabular loader (CSV, NPZ): at least one row, every value finite
    (the error names the column and the first bad row), and a target that is not constant."""
    if len(X) == 0:
        raise NnsensError(f"{what} has no rows; upload a file with at least two rows of numbers")
    for values, names in ((np.asarray(X, np.float64).reshape(len(X), -1), feature_names),
                          (np.asarray(y, np.float64).reshape(len(y), 1), (target_name,))):
        bad = ~np.isfinite(values)
        if bad.any():
            row, col = (int(i[0]) for i in np.nonzero(bad))
            raise NnsensError(f"column {str(names[col])!r} has {int(bad[:, col].sum())} missing (NaN) "
                              f"or infinite value(s), the first in data row {row + 1} "
                              f"({values[row, col]}); fill or drop them")
    if len(np.unique(y)) < 2:
        raise NnsensError(f"the target column {target_name!r} has one value ({float(y[0]):g}) in "
                          f"every row; pick another target column or add rows of the other class")


def _non_numeric(column, name) -> str:
    """Name the first cell of ``column`` that is not a number, with its data row (1 = the first
    row under the header; the CSV line is one more)."""
    import pandas as pd
    if pd.api.types.is_bool_dtype(column):
        return (f"column {str(name)!r} holds True/False values (data row 1: {column.iloc[0]!r}); "
                "encode it as 0/1 or drop it")
    num = pd.to_numeric(column, errors="coerce")
    bad = num.isna() & column.notna()
    pos = int(np.argmax(bad.to_numpy())) if bad.any() else 0
    cell = str(column.iloc[pos])
    return (f"column {str(name)!r} is not numeric: data row {pos + 1} (CSV line {pos + 2}) holds "
            f"{cell[:60]!r}; encode it as numbers, fix that cell or drop the column")


def tabular_from_frame(df, target: str, name: str = "data") -> TabularData:
    """Validate a pandas DataFrame: non-empty, numeric, finite (:func:`check_table`); the error
    names the column."""
    import pandas as pd
    if target not in df.columns:
        raise NnsensError(f"target column {target!r} is not in the CSV; columns are {list(df.columns)}")
    if df.shape[1] < 2:
        raise NnsensError("the CSV needs at least one feature column besides the target")
    if len(df) == 0:
        raise NnsensError("the CSV has a header but no data rows; upload a file with rows of numbers")
    for col in df.columns:
        if not pd.api.types.is_numeric_dtype(df[col]) or pd.api.types.is_bool_dtype(df[col]):
            raise NnsensError(_non_numeric(df[col], col))
    feats = [c for c in df.columns if c != target]
    X, y = df[feats].to_numpy(np.float64), df[target].to_numpy(np.float64)
    check_table(X, y, [str(c) for c in feats], str(target), "the CSV")
    return TabularData(X, y, tuple(str(c) for c in feats), str(target), name)


_PLAIN_NUMBER = re.compile(r"[+-]?(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d{1,3}))?")
_PLAIN_CSV_MAX_BYTES = 2 * 2**20


def _plain_cell(cell: str) -> bool:
    """A decimal number that every correct parser reads as the same float: at most 15 significant
    digits and a power of ten within +-22 (one exact product or quotient, rounded once)."""
    m = _PLAIN_NUMBER.fullmatch(cell)
    if m is None or not (m.group(1) or m.group(2)):
        return False
    digits = (m.group(1) + (m.group(2) or "")).lstrip("0")
    scale = int(m.group(3) or 0) - len(m.group(2) or "")
    return len(digits) <= 15 and -22 <= scale <= 22


def _plain_csv(source) -> tuple[list[str], np.ndarray] | None:
    """(header, values) of a small CSV that is a header of distinct non-empty names over rows of
    plain numbers (:func:`_plain_cell`), all of the header's length; None for anything else, which
    pandas then reads (and names what is wrong). Reading these without pandas keeps a CLI run
    from importing it; the floats are the ones pandas reads."""
    import csv
    try:
        if isinstance(source, (bytes, bytearray)):
            raw = bytes(source)
        elif isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.is_file() or path.stat().st_size > _PLAIN_CSV_MAX_BYTES:
                return None
            raw = path.read_bytes()
        else:
            return None
        if len(raw) > _PLAIN_CSV_MAX_BYTES or b'"' in raw or b"\r" in raw:
            return None
        rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    rows = [r for r in rows if r]  # pandas skips blank lines
    if len(rows) < 2:
        return None
    header, body = rows[0], rows[1:]
    width = len(header)
    if width < 2 or len(set(header)) != width or any(not h or h != h.strip() for h in header):
        return None
    if any(len(r) != width for r in body) or not all(_plain_cell(c) for r in body for c in r):
        return None
    return header, np.array([[float(c) for c in r] for r in body], dtype=np.float64)


def load_csv(source: str | os.PathLike | bytes | BinaryIO, target: str | None = None,
             name: str | None = None) -> TabularData:
    """Read a CSV; ``target`` defaults to the last column. A small CSV of plain numbers is read
    without pandas (:func:`_plain_csv`: the same floats); any other goes through pandas."""
    nm = name or (Path(source).stem if isinstance(source, (str, os.PathLike)) else "uploaded CSV")
    plain = _plain_csv(source)
    if plain is not None and (target is None or target in plain[0]):
        header, values = plain
        t = header.index(target) if target is not None else len(header) - 1
        feats = [h for i, h in enumerate(header) if i != t]
        X, y = np.delete(values, t, axis=1), values[:, t].copy()
        check_table(X, y, feats, header[t], "the CSV")
        return TabularData(X, y, tuple(feats), header[t], nm)
    import pandas as pd
    try:
        if isinstance(source, (bytes, bytearray)):
            df = pd.read_csv(io.BytesIO(source))
        else:
            df = pd.read_csv(source)
    except FileNotFoundError:
        raise NnsensError(f"CSV file {str(source)!r} does not exist") from None
    except pd.errors.EmptyDataError:
        raise NnsensError("the file is not a readable CSV: it is empty; upload a file with a header "
                          "row and rows of numbers") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise NnsensError(f"the file is not a readable CSV: {str(exc)[:200]}") from None
    if target is None:
        target = df.columns[-1]
    return tabular_from_frame(df, target, nm)


def cache_dir() -> Path:
    """Where :func:`download_pima` saves by default (``$NNSENS_CACHE``); nothing is read from it
    unless the caller passes the path."""
    return Path(os.environ.get("NNSENS_CACHE", Path.home() / ".cache" / "nnsens"))


def pima_path() -> Path:
    """The Pima CSV the demos use: ``$NNSENS_PIMA_CSV`` when set, else the copy nnsens ships
    (:func:`nnsens_core.resources.pima_csv`), so the demo is the same on every machine."""
    env = os.environ.get("NNSENS_PIMA_CSV")
    return Path(env) if env else pima_csv()


def download_pima(dest: Path | None = None, timeout: float = 20.0) -> Path:
    """Download Pima diabetes to ``dest`` (default: the cache dir) and return its path, for users
    with internet who want the original file; nnsens itself reads the shipped copy."""
    dest = dest or cache_dir() / "diabetes.csv"
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(PIMA_URL, timeout=timeout) as resp:
            raw = resp.read().decode()
    except OSError as exc:
        raise NnsensError(f"could not download the Pima data ({exc}); set NNSENS_PIMA_CSV to a "
                          "local copy instead") from None
    dest.write_text(",".join(PIMA_COLUMNS) + "\n" + raw)
    return dest


def load_pima(path: Path | None = None) -> TabularData:
    """Pima diabetes (target ``Outcome``) from ``path``, default :func:`pima_path`."""
    return load_csv(path or pima_path(), target="Outcome", name="Pima diabetes")


def load_breast_cancer() -> TabularData:
    """scikit-learn's bundled breast-cancer Wisconsin data (no download)."""
    from sklearn.datasets import load_breast_cancer as _load
    b = _load()
    return TabularData(np.asarray(b.data, np.float64), np.asarray(b.target, np.float64),
                       tuple(str(n) for n in b.feature_names), "malignant(0)/benign(1)",
                       "Breast cancer Wisconsin")


def demo_tabular() -> TabularData:
    """The tabular demo: Pima diabetes (shipped), the data of the sensitivity paper."""
    return load_pima()


def demo_rows(data: TabularData) -> tuple[str, str]:
    """(train rows, test rows) for a demo: the paper's 0:500 / 500:700, or ~65%/35% otherwise."""
    n = len(data.X)
    if n >= 700:
        return "0:500", "500:700"
    cut = int(n * 0.65)
    return f"0:{cut}", f"{cut}:{n}"


# --------------------------------------------------------------------------- images

@dataclass(frozen=True, eq=False)
class Originals:
    """Images at their own sizes, stored compactly and read as float32 (C, h, w) in [0, 1].

    Each image is kept as decoded: ``uint8`` (8-bit files), ``uint16`` (16-bit files) or
    ``float32``, with the full-scale value it is divided by (``scales``: 255, 4095, 65535 or 1), so
    a 12-megapixel RGB photo costs 36 MB here instead of 144 MB as float32. Indexing with an int
    gives that image as float32; with a slice or index array, another :class:`Originals`. It is a
    read-only sequence, used wherever a tuple of originals is (``ImageData.originals``)."""
    arrays: tuple
    scales: tuple

    def __post_init__(self):
        if len(self.arrays) != len(self.scales):
            raise NnsensError(f"{len(self.arrays)} originals but {len(self.scales)} scales")
        for i, a in enumerate(self.arrays):
            if a.ndim != 3 or a.shape[0] not in (1, 3):
                raise NnsensError(f"original {i} has shape {a.shape}; expected (C, h, w), C = 1 or 3")

    @classmethod
    def of(cls, images) -> Originals:
        """Float images (C, h, w) in [0, 1] as :class:`Originals` (kept as float32)."""
        if isinstance(images, Originals):
            return images
        arrays = tuple(np.asarray(a, np.float32) for a in images)
        return cls(arrays, (1.0,) * len(arrays))

    def __len__(self) -> int:
        return len(self.arrays)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __getitem__(self, i):
        if isinstance(i, (int, np.integer)):
            a, s = self.arrays[int(i)], self.scales[int(i)]
            return a.astype(np.float32) if s == 1.0 else (a.astype(np.float32) / np.float32(s))
        idx = np.arange(len(self))[i]
        return Originals(tuple(self.arrays[k] for k in idx), tuple(self.scales[k] for k in idx))

    def shape(self, i: int) -> tuple[int, int, int]:
        """(C, h, w) of image ``i`` (without converting it)."""
        return tuple(self.arrays[i].shape)

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays))

    def __repr__(self) -> str:
        return f"Originals({len(self)} images, {self.nbytes / 2**20:.1f} MiB)"


@dataclass(frozen=True, eq=False)
class ImageData:
    """Images (n, C, H, W) or volumes (n, C, D, H, W), float32 in [0, 1], integer labels, class
    names, optional masks (n, H, W) / (n, D, H, W) and, for volumes, an optional
    :class:`~nnsens_core.volumes.Atlas` of named regions in the volumes' voxel grid."""
    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    masks: np.ndarray | None = None
    name: str = "images"
    meta: dict = field(default_factory=dict)
    atlas: Atlas | None = None  # noqa: F821 - nnsens_core.volumes.Atlas (no import cycle)
    originals: Originals | tuple | None = None  # (C, h, w) float32 [0, 1] per image, own size
    placements: tuple | None = None    # preprocess.Placement per image: original -> images
    groups: tuple | None = None        # patient / video id per image (grouped splits)
    files: tuple | None = None         # file name per image
    roi: np.ndarray | None = None      # (n, H, W) bool: the region of interest at model resolution

    def __post_init__(self):
        check_images(self.images, what="images", arrays=True, volumes=True)
        if len(self.labels) != len(self.images):
            raise NnsensError(f"{len(self.images)} images but {len(self.labels)} labels")
        if self.masks is not None and self.masks.shape != (self.images.shape[0], *self.images.shape[2:]):
            raise NnsensError(f"masks have shape {self.masks.shape}; expected "
                              f"{(self.images.shape[0], *self.images.shape[2:])} (one per image)")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise NnsensError(f"labels must lie in 0..{len(self.class_names) - 1}")
        if self.atlas is not None:
            if self.ndim_spatial != 3:
                raise NnsensError("an atlas labels the voxels of 3-D volumes; these are 2-D images "
                                  f"{tuple(self.images.shape)}; drop the atlas or load volumes")
            self.atlas.check_shape(tuple(self.images.shape[2:]), "the volumes")
        n = len(self.images)
        for nm in ("originals", "placements", "groups", "files"):
            v = getattr(self, nm)
            if v is not None and len(v) != n:
                raise NnsensError(f"{nm} has {len(v)} entries for {n} images; give one per image")
        if self.roi is not None and self.roi.shape != (n, *self.images.shape[2:]):
            raise NnsensError(f"roi has shape {self.roi.shape}; expected "
                              f"{(n, *self.images.shape[2:])} (one mask per image)")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, ...]:
        """One item's shape: (C, H, W) for images, (C, D, H, W) for volumes."""
        return tuple(self.images.shape[1:])

    @property
    def ndim_spatial(self) -> int:
        """2 for images (n, C, H, W), 3 for volumes (n, C, D, H, W)."""
        return self.images.ndim - 2

    def subset(self, idx) -> ImageData:
        idx = np.asarray(idx)
        pick = (lambda v: None if v is None else tuple(v[int(i)] for i in np.arange(len(self))[idx]))
        orig = self.originals[idx] if isinstance(self.originals, Originals) else pick(self.originals)
        return dataclasses.replace(
            self, images=self.images[idx], labels=self.labels[idx],
            masks=None if self.masks is None else self.masks[idx],
            originals=orig, placements=pick(self.placements),
            groups=pick(self.groups), files=pick(self.files),
            roi=None if self.roi is None else self.roi[idx])

    def is_grey(self) -> bool:
        """True when every image is grey: its originals have one channel (read from their
        shapes, nothing decoded), or, without originals, the channels are all equal (the default
        of grey activation maximization on the page and in ``nnsens am``)."""
        orig = self.originals
        if orig is not None and len(orig):
            shape = getattr(orig, "shape", None)
            if callable(shape):  # Originals: shapes without decoding
                return all(shape(i)[0] == 1 for i in range(len(orig)))
            return all(np.shape(o)[0] == 1 for o in orig)
        imgs = np.asarray(self.images)
        if imgs.ndim < 4 or len(imgs) == 0:
            return False
        return imgs.shape[1] == 1 or all(np.array_equal(imgs[:, 0], imgs[:, c])
                                         for c in range(1, imgs.shape[1]))

    def original(self, i: int) -> np.ndarray:
        """Image ``i`` at its own size (C, h, w) (the model-size image when no original is kept)."""
        return self.originals[i] if self.originals is not None else self.images[i]

    def for_recipe(self, recipe, roi_originals=None) -> ImageData:
        """These images as the input of a model with ``recipe``
        (:class:`~nnsens_core.preprocess.Recipe`), rebuilt from the originals (the images as they
        are when none are kept), so one upload serves models of any size. Masks are carried to the
        model's grid; ``roi_originals`` (one boolean (h, w) mask per image, or None) becomes ``roi``."""
        from . import preprocess
        if self.ndim_spatial != 2:
            raise NnsensError("a preprocessing recipe applies to 2-D images; these are 3-D volumes")
        # Originals convert one image at a time (never all of them to float32 at once)
        src = self.originals if self.originals is not None else list(self.images)
        arr, places = preprocess.prepare(src, recipe)
        masks = None
        if self.masks is not None:
            if self.originals is not None and self.placements is not None:
                # masks live on the current grid: back to each original, then onto the new grid
                orig = [preprocess.map_to_original(m.astype(np.float32), p) > 0.5
                        for m, p in zip(self.masks, self.placements)]
            else:
                orig = list(self.masks)
            masks = np.stack([preprocess.mask_to_model(np.nan_to_num(m).astype(bool), p)
                              for m, p in zip(orig, places)])
        roi = None
        if roi_originals is not None:
            roi = np.stack([preprocess.mask_to_model(m, p) for m, p in zip(roi_originals, places)])
        return dataclasses.replace(self, images=arr, masks=masks, placements=places, roi=roi,
                                   originals=src if self.originals is not None else tuple(src))


def check_zip(zf: zipfile.ZipFile, what: str = "the ZIP") -> None:
    """Refuse a ZIP (or NPZ) whose members would unpack beyond the limits, before reading any."""
    total = 0
    for info in zf.infolist():
        total += info.file_size
        if info.file_size > MAX_ZIP_MEMBER:
            raise NnsensError(f"{what} member {info.filename!r} unpacks to {info.file_size / 2**20:.0f} "
                              f"MiB, over the {MAX_ZIP_MEMBER // 2**20} MiB limit per file")
        if info.file_size > 2**20 and info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1):
            raise NnsensError(f"{what} member {info.filename!r} is compressed {info.file_size // max(info.compress_size, 1)}:1 "
                              f"(a decompression bomb?); the limit is {MAX_ZIP_RATIO}:1")
    if total > MAX_ZIP_TOTAL:
        raise NnsensError(f"{what} unpacks to {total / 2**30:.1f} GiB, over the "
                          f"{MAX_ZIP_TOTAL / 2**30:.0f} GiB limit; upload fewer or smaller files")


MAX_ORIGINAL_SIDE = 2048
"""Originals whose longest side is above this many pixels are downscaled when loaded (aspect ratio
kept; ``meta["downscaled"]`` names them with their file size). Models see at most a few hundred
pixels and the screen about as many as this; a 4000 x 3000 photo kept whole would cost 36 MB
(uint8) and every map drawn on it 48 MB (float32)."""

MAX_SKIPPED_NAMES = 10
"""How many skipped file names ``meta["skipped"]`` lists (``meta["n_skipped"]`` counts them all)."""

_SYSTEM = ("__MACOSX/", "/.", "Thumbs.db", "desktop.ini")


def _shrink(a: np.ndarray, max_side: int) -> np.ndarray:
    """(C, h, w) -> the same dtype with the longest side ``max_side`` (bilinear, antialiased)."""
    from PIL import Image
    h, w = a.shape[1:]
    s = max_side / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    out = []
    for ch in a:
        if ch.dtype == np.uint8:
            im = Image.fromarray(ch, "L")
        elif ch.dtype == np.uint16:
            im = Image.fromarray(ch.astype(np.int32), "I")
        else:
            im = Image.fromarray(ch.astype(np.float32), "F")
        out.append(np.asarray(im.resize((nw, nh), Image.BILINEAR)).astype(ch.dtype))
    return np.stack(out)


def _pixels(img, name: str) -> tuple[np.ndarray, float, str]:
    """A decoded Pillow image -> (C, h, w) array (uint8 / uint16 / float32), its full scale, and
    its bit depth in words (``"8-bit"``, ``"16-bit"``, ``"12-bit in 16"``, ...).

    Palette images become RGB (RGBA where they have transparency); CMYK, YCbCr, LAB and HSV become
    RGB; transparent pixels are composited onto black (the background of a scan); 16-bit images
    keep their 16 bits and are scaled by their bit depth (see :func:`decode_image`)."""
    mode = img.mode
    if mode == "1":
        img = img.convert("L")
    elif mode in ("P", "PA"):
        img = img.convert("RGBA" if mode == "PA" or "transparency" in img.info else "RGB")
    elif mode in ("La", "RGBa"):
        img = img.convert(mode.upper())
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        img = img.convert("RGB")
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(img)
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 65535:   # 32-bit integers: no bit depth to trust; scale to [0, 1]
            a = ((a.astype(np.float64) - lo) / max(hi - lo, 1)).astype(np.float32)
            return a[None], 1.0, "32-bit integers (min-max scaled)"
        return (a.astype(np.uint16)[None], *_scale16(hi))
    if mode == "F":
        a = np.asarray(img, np.float32)
        if not np.isfinite(a).all():
            raise NnsensError(f"{name!r} holds NaN or infinite pixel values; save finite values")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0 or hi > 1:
            return ((a - lo) / max(hi - lo, 1e-12)).astype(np.float32)[None], 1.0, \
                "32-bit float (min-max scaled)"
        return a[None], 1.0, "32-bit float"
    if mode not in ("L", "LA", "RGB", "RGBA"):
        img = img.convert("RGB")
        mode = "RGB"
    a = np.asarray(img)
    if mode in ("LA", "RGBA"):   # transparent pixels onto black
        a = ((a[..., :-1].astype(np.uint16) * a[..., -1:] + 127) // 255).astype(np.uint8)
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return a, 255.0, "8-bit"


def _is_colour_png16(img) -> bool:
    """A 16-bit RGB / RGBA PNG (Pillow decodes those to 8 bits: it has no 16-bit colour mode)."""
    tile = getattr(img, "tile", None) or ()
    return (img.format == "PNG" and img.mode in ("RGB", "RGBA") and len(tile) > 0
            and str(tile[0][3]).endswith(";16B"))


def _colour_png16(data: bytes, name: str) -> tuple[np.ndarray, float, str]:
    """A 16-bit colour PNG decoded with its 16 bits (FFmpeg's PNG decoder through PyAV), as
    :func:`_pixels` gives it: (3, h, w) uint16, transparent pixels onto black, the full scale of
    its bit depth (4095 when no value is above it: 12-bit data in 16 bits)."""
    import av
    try:
        with av.open(io.BytesIO(data), format="png_pipe") as box:
            frame = next(box.decode(video=0))
            alpha = "a" in frame.format.name.replace("rgb48", "")
            a = frame.to_ndarray(format="rgba64le" if alpha else "rgb48le")
    except (av.FFmpegError, StopIteration, ValueError) as exc:
        raise NnsensError(f"{name!r} is a 16-bit colour PNG that could not be decoded ({exc}); "
                          "save it again as PNG") from None
    if alpha:  # transparent pixels onto black
        a = ((a[..., :3].astype(np.uint32) * a[..., 3:] + 32767) // 65535).astype(np.uint16)
    a = np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.uint16)
    return (a, *_scale16(int(a.max(initial=0))))


def _scale16(hi: int) -> tuple[float, str]:
    """The full scale and bit depth of 16-bit pixels whose largest value is ``hi``: 4095 when no
    value is above it (12-bit scanner data stored in 16 bits), else 65535."""
    return (4095.0, "12-bit in 16") if hi < 4096 else (65535.0, "16-bit")


def decode_image(data: bytes, name: str = "image", budget: list | None = None,
                 max_side: int | None = MAX_ORIGINAL_SIDE) -> tuple[np.ndarray, float, dict]:
    """One image file -> ``(array, scale, info)``: the image at its own size as (C, h, w), C = 1 for
    grey and 3 for colour, in its own dtype (``array / scale`` lies in [0, 1]), and what was done.

    * The pixel count is checked from the header before decoding (:data:`MAX_IMAGE_PIXELS`;
      ``budget``: a one-item list of pixels the upload may still use, decreased here).
    * EXIF orientation is applied; a multi-frame file (animated GIF, multi-page TIFF) gives its
      first frame (``info["frames"]`` says how many it has).
    * Palette, CMYK, RGBA (onto black) ... become RGB; a colour file whose pixels are all grey
      (R = G = B) is kept as 1 channel.
    * 8-bit images are divided by 255. 16-bit images (PNG / TIFF; colour PNGs through PyAV, as
      Pillow reads those with 8 bits) keep their 16 bits and are divided
      by their bit depth's full scale: 65535, or 4095 when no value is above 4095 (a 12-bit scanner
      image stored in 16 bits; dividing it by 65535 would leave it almost black). 32-bit and float
      images outside [0, 1] are min-max scaled. Nothing saturates.
    * Longer sides than ``max_side`` are downscaled (aspect kept; ``info["downscaled_from"]``)."""
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                pixels = img.size[0] * img.size[1]
                if pixels > MAX_IMAGE_PIXELS:
                    raise NnsensError(f"{name!r} is {img.size[0]} x {img.size[1]} pixels, over the "
                                      f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP limit per image; downscale it")
                if budget is not None:
                    budget[0] -= pixels
                    if budget[0] < 0:
                        raise NnsensError(f"the upload's images hold more than "
                                          f"{MAX_UPLOAD_PIXELS / 1e6:.0f} MP together; upload fewer "
                                          "or smaller images")
                frames = int(getattr(img, "n_frames", 1) or 1)
                file_mode = img.mode
                colour16 = _is_colour_png16(img)   # (the tile is gone after load)
                img.load()
                orientation = img.getexif().get(0x0112, 1)
                if orientation not in (0, 1):
                    img = ImageOps.exif_transpose(img)
                if colour16 and orientation in (0, 1):
                    arr, scale, bits = _colour_png16(data, name)
                else:
                    arr, scale, bits = _pixels(img, name)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise NnsensError(f"{name!r} is over the {MAX_IMAGE_PIXELS / 1e6:.0f} MP limit per image "
                          "(Pillow's decompression-bomb guard); downscale it") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        if isinstance(exc, NnsensError):
            raise
        raise NnsensError(f"{name!r} is not a readable image ({exc}); upload PNG or JPEG") from None
    if arr.shape[0] == 3 and np.array_equal(arr[0], arr[1]) and np.array_equal(arr[1], arr[2]):
        arr = arr[:1].copy()
    info = {"mode": file_mode, "bits": bits, "frames": frames, "rotated": orientation not in (0, 1),
            "channels": int(arr.shape[0]), "size": tuple(int(s) for s in arr.shape[1:])}
    if max_side is not None and max(arr.shape[1:]) > max_side:
        arr = _shrink(arr, max_side)
        info["downscaled_from"] = info["size"]
        info["size"] = tuple(int(s) for s in arr.shape[1:])
    return arr, scale, info


def load_image_bytes(data: bytes, size: tuple[int, int] | None = None, channels: int = 3,
                     name: str = "image", budget: list | None = None) -> np.ndarray:
    """One image file -> (``channels``, H, W) float32 in [0, 1], stretched to ``size`` (default:
    its own size); decoded by :func:`decode_image` (limits, EXIF, 16-bit, CMYK ...)."""
    from . import preprocess
    arr, scale, _ = decode_image(data, name, budget, max_side=None)
    img = arr.astype(np.float32) / np.float32(scale)
    recipe = preprocess.Recipe(tuple(size) if size is not None else img.shape[1:], channels, "stretch")
    return preprocess.to_model(img, recipe)[0]


_FRAME_WORD = re.compile(r"^(.+?)(?:[\s_\-.]*(?:frame|frm|slice)[\s_\-.]*|[\s_\-.]+f)\d+$",
                         re.IGNORECASE)
_ID_THEN_NUMBER = re.compile(r"^(.*\d.*?)[\s_\-.]+\d+$")


def group_from_name(file_name: str) -> str:
    """The patient / video a file belongs to, read from its name: the part before a trailing frame
    number (``clip7.mp4_frame12.png`` -> ``clip7.mp4``, ``clip12_f003.png`` -> ``clip12``;
    ``p03_017.png`` -> ``p03``: an id with a digit, a separator, then a number); otherwise the
    file's own name (a group of one: ``img_001.png`` is not taken as a group ``img``)."""
    stem = Path(file_name).stem
    for rx in (_FRAME_WORD, _ID_THEN_NUMBER):
        m = rx.match(stem)
        if m and m.group(1).strip(" _-."):
            return m.group(1).strip(" _-.")
    return stem


def _why_skipped(path: str) -> str | None:
    """Why a member is not read as an image (None: it is one)."""
    if any(s in "/" + path for s in _SYSTEM) or Path(path).name.startswith("."):
        return "system file (macOS / Windows metadata)"
    if Path(path).suffix.lower() not in IMAGE_SUFFIXES:
        return "not an image (" + (Path(path).suffix.lower() or "no extension") + ")"
    return None


def _load_tree(members: list[tuple[str, object]], read, recipe, name: str, max_files: int,
               source: str, channels: int = 3) -> ImageData:
    """Images at ``class/[group/...]image`` paths (one optional top folder shared by all is
    skipped) -> :class:`ImageData` with originals, files, groups, and ``images`` built through
    ``recipe`` (a :class:`~nnsens_core.preprocess.Recipe`, or None: the first image's size with
    ``channels``, letterbox). ``read(handle)`` gives a member's bytes, one at a time."""
    from . import preprocess
    skipped: list[tuple[str, str]] = []
    found: list[tuple[tuple[str, ...], object]] = []
    for path, handle in members:
        why = _why_skipped(path)
        if why:
            skipped.append((path, why))
        else:
            found.append((tuple(p for p in path.split("/") if p), handle))
    if len(found) > max_files:
        raise NnsensError(f"the {source} holds {len(found)} images, over the {max_files} limit")
    parts = [p for p, _ in found]
    if parts and all(len(p) >= 3 for p in parts) and len({p[0] for p in parts}) == 1 \
            and len({p[1] for p in parts}) >= 2:
        found = [(p[1:], h) for p, h in found]
    kept = []
    for p, h in found:
        if len(p) < 2:
            skipped.append(("/".join(p), "not inside a class folder"))
        else:
            kept.append((p, h))
    classes = sorted({p[0] for p, _ in kept})
    if len(classes) < 2:
        raise NnsensError(f"found {len(classes)} class folder(s) with images ({classes}); an image "
                          "dataset needs at least two class sub-folders (root/class_name/image.png, "
                          "or class_name/patient/image.png)")
    kept.sort(key=lambda t: (classes.index(t[0][0]), t[0]))
    arrays, scales, labels, files, groups, infos = [], [], [], [], [], []
    budget = [MAX_UPLOAD_PIXELS]
    for p, h in kept:
        rel = "/".join(p)
        arr, scale, info = decode_image(read(h), rel, budget)
        arrays.append(arr)
        scales.append(scale)
        labels.append(classes.index(p[0]))
        files.append(rel)
        groups.append(f"{p[0]}/{p[1]}" if len(p) >= 3 else f"{p[0]}/{group_from_name(p[-1])}")
        infos.append(info)
    originals = Originals(tuple(arrays), tuple(scales))
    if recipe is None:
        recipe = preprocess.Recipe(originals.shape(0)[1:], channels)
    images, places = preprocess.prepare(originals, recipe)
    meta = _load_meta(infos, files, skipped, any(len(p) >= 3 for p, _ in kept), len(set(groups)))
    meta["recipe"] = recipe.describe()
    return ImageData(images, np.asarray(labels, np.int64), tuple(classes), name=name, meta=meta,
                     originals=originals, placements=places, groups=tuple(groups),
                     files=tuple(files))


def _load_meta(infos, files, skipped, by_folder: bool, n_groups: int) -> dict:
    """What a load did, counted for the page and the CLI (:func:`load_report`)."""
    conv = {}
    for i in infos:
        if i["mode"] in ("CMYK", "P", "PA", "RGBA", "LA", "YCbCr", "LAB", "HSV", "1"):
            conv[i["mode"]] = conv.get(i["mode"], 0) + 1
    why: dict[str, int] = {}
    for _, w in skipped:
        why[w] = why.get(w, 0) + 1
    multi = [f for f, i in zip(files, infos) if i["frames"] > 1]
    down = {f: list(i["downscaled_from"]) for f, i in zip(files, infos) if "downscaled_from" in i}
    return {"n_files": len(files), "n_skipped": len(skipped),
            "skipped": [n for n, _ in skipped[:MAX_SKIPPED_NAMES]], "skipped_why": why,
            "grey": sum(i["channels"] == 1 for i in infos),
            "colour": sum(i["channels"] == 3 for i in infos),
            "bits": {b: sum(i["bits"] == b for i in infos) for b in sorted({i["bits"] for i in infos})},
            "converted": conv, "rotated": sum(i["rotated"] for i in infos),
            "multi_frame": len(multi), "multi_frame_files": multi[:MAX_SKIPPED_NAMES],
            "downscaled": down, "max_side": MAX_ORIGINAL_SIDE,
            "sizes": sorted({tuple(i["size"]) for i in infos})[:20],
            "groups": n_groups, "group_source": "folders" if by_folder else "file names"}


def load_report(data: ImageData) -> list[str]:
    """Plain lines saying what a folder / ZIP load found and did (``data.meta`` of
    :func:`load_image_zip`): channels, bit depths, conversions, first frames, downscaling,
    skipped files and groups. Empty for data from elsewhere."""
    m = data.meta
    if "n_files" not in m:
        return []
    lines = [f"{m['n_files']} images in {len(data.class_names)} classes: {m['grey']} grey, "
             f"{m['colour']} colour; " + ", ".join(f"{n} {b}" for b, n in m["bits"].items())]
    if m["converted"]:
        names = {"P": "palette", "PA": "palette + alpha", "1": "1-bit"}
        lines.append("converted from other colour modes: " + ", ".join(
            f"{n} {names.get(k, k)}" for k, n in m["converted"].items())
            + (" (transparent pixels onto black)" if {"RGBA", "LA", "PA"} & set(m["converted"]) else ""))
    if m["rotated"]:
        lines.append(f"{m['rotated']} rotated as their EXIF orientation says")
    if m["multi_frame"]:
        lines.append(f"{m['multi_frame']} multi-frame file(s) (animated GIF / multi-page TIFF): the "
                     "first frame is used (" + ", ".join(m["multi_frame_files"]) + ")")
    if m["downscaled"]:
        lines.append(f"{len(m['downscaled'])} image(s) over {m['max_side']} px downscaled to a longest "
                     "side of " + f"{m['max_side']} px: " + ", ".join(
                         f"{f} ({w[1]}×{w[0]})" for f, w in list(m["downscaled"].items())[:5]))
    if m["n_skipped"]:
        why = "; ".join(f"{n} {w}" for w, n in m["skipped_why"].items())
        more = "…" if m["n_skipped"] > len(m["skipped"]) else ""
        lines.append(f"{m['n_skipped']} file(s) skipped ({why}): " + ", ".join(m["skipped"]) + more)
    lines.append(f"{m['groups']} groups (patients / videos) from the "
                 + ("second folder level (class/patient/image)" if m["group_source"] == "folders"
                    else "file names (no class/patient/image folders)"))
    return lines


def load_image_folder(root: str | os.PathLike, size: tuple[int, int] | None = None,
                      channels: int = 3, recipe=None, max_files: int = 20000) -> ImageData:
    """``root/<class>/[<patient>/...]<image>``: as :func:`load_image_zip`."""
    root = Path(root)
    if not root.is_dir():
        raise NnsensError(f"image folder {str(root)!r} does not exist")
    members = [(f.relative_to(root).as_posix(), f) for f in sorted(root.rglob("*")) if f.is_file()]
    return _load_tree(members, Path.read_bytes, _recipe(recipe, size, channels), root.name,
                      max_files, "folder", channels)


def _recipe(recipe, size, channels):
    """The recipe of a load: ``recipe``, else ``size`` + ``channels`` stretched (the loaders' old
    behaviour, kept for callers that pass a size), else None (the first image's size, letterbox)."""
    from . import preprocess
    if recipe is not None:
        return recipe
    if size is not None:
        return preprocess.Recipe(tuple(size), channels, "stretch")
    return None


def load_image_zip(source: str | os.PathLike | bytes | BinaryIO, size: tuple[int, int] | None = None,
                   channels: int = 3, max_files: int = 20000, recipe=None) -> ImageData:
    """A ZIP of ``<class>/<image>`` or ``<class>/<patient or video>/.../<image>`` (one top folder
    shared by every file is skipped).

    The class is the first folder level, the group (patient / video, for grouped splits) the
    second, else read from the file name (:func:`group_from_name`). Every image is kept at its own
    size in ``originals`` (:func:`decode_image`: grey / colour, 8 / 16-bit, EXIF, CMYK ...;
    longest side at most :data:`MAX_ORIGINAL_SIDE`), and ``images`` are built through ``recipe``
    (:class:`~nnsens_core.preprocess.Recipe`, with ``placements``); without one, ``size`` and
    ``channels`` stretch every image (the old behaviour), and without a size the first image's size
    is used (letterbox). Files that are not images are skipped and counted in ``meta``
    (:func:`load_report` says what was found)."""
    raw = source if isinstance(source, (bytes, bytearray)) else (
        source.read() if hasattr(source, "read") else Path(source).read_bytes())
    try:
        zf = zipfile.ZipFile(io.BytesIO(raw))
    except zipfile.BadZipFile:
        raise NnsensError("the upload is not a ZIP archive; zip a folder of class sub-folders") from None
    with zf:
        check_zip(zf)
        members = [(i.filename, i) for i in zf.infolist() if not i.is_dir()]
        return _load_tree(members, zf.read, _recipe(recipe, size, channels), "uploaded ZIP",
                          max_files, "ZIP", channels)


def align_classes(data: ImageData, class_names, mapping: dict | None = None
                  ) -> tuple[ImageData, str]:
    """``data`` with its labels renumbered to ``class_names`` (the model's), matched by name
    (case- and space-insensitive), never by position; returns the data and a one-line report.

    Folder names of a ZIP are sorted alphabetically, which is rarely the model's order:
    position-based matching silently scores a model on the wrong labels. ``mapping`` (dataset class
    -> model class, e.g. chosen by the user) overrides the matching by name. A dataset class that
    matches no model class raises :class:`NnsensError` naming both lists."""
    model_names = [str(c) for c in class_names]
    if not model_names or (not mapping and list(data.class_names) == model_names):
        return data, ""
    key = {c.strip().lower(): k for k, c in enumerate(model_names)}
    mapping = dict(mapping or {})
    bad = {c: m for c, m in mapping.items() if str(m) not in model_names}
    if bad:
        raise NnsensError(f"the mapping {bad} names classes the model does not have; use "
                          f"{model_names}")
    target = [mapping.get(c, c) for c in data.class_names]
    unknown = [c for c, m in zip(data.class_names, target) if str(m).strip().lower() not in key]
    if unknown:
        raise NnsensError(f"the dataset's classes {list(data.class_names)} do not match the model's "
                          f"{model_names} by name ({unknown} unknown); rename the class folders to "
                          "the model's class names, enter the model's class names when loading it, "
                          "or match them by hand")
    new = np.asarray([key[str(m).strip().lower()] for m in target], np.int64)
    moved = [f"{c} -> {model_names[new[k]]}" for k, c in enumerate(data.class_names)
             if new[k] != k or c != model_names[new[k]]]
    aligned = dataclasses.replace(data, labels=new[data.labels], class_names=tuple(model_names))
    how = "by hand" if mapping else "by name"
    return aligned, f"classes matched to the model's {how}" + (f": {', '.join(moved)}" if moved else "")


def load_npz(source: str | os.PathLike | bytes | BinaryIO, target: str | None = None):
    """``.npz`` with ``images``/``labels`` (optional ``masks``, ``class_names``) -> ImageData, or
    ``X``/``y`` (optional ``feature_names``) -> TabularData. Pickled objects are refused.

    ``images`` (N, C, H, W) (or (N, H, W)) are 2-D images, scaled by 1/255 when above 1;
    (N, C, D, H, W) are 3-D volumes, kept when within [0, 1], else min-max scaled per volume,
    with optional ``masks`` (N, D, H, W) and an optional atlas: ``atlas`` (D, H, W) integer labels
    with ``region_labels`` (K,) and ``region_names`` (K,) naming them."""
    raw = source if isinstance(source, (bytes, bytearray)) else (
        source.read() if hasattr(source, "read") else Path(source).read_bytes())
    if zipfile.is_zipfile(io.BytesIO(raw)):
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            check_zip(zf, "the .npz")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise NnsensError(f"the file is not a readable .npz without pickled objects: {str(exc)[:200]}") from None
    keys = set(arrays)
    if {"images", "labels"} <= keys:
        imgs = arrays["images"].astype(np.float32)
        if imgs.size == 0 or arrays["labels"].size == 0:
            raise NnsensError(f"the .npz holds no images (images has shape {imgs.shape}, labels "
                              f"{arrays['labels'].shape}); save at least one image per class")
        if not np.isfinite(imgs).all():
            first = int(np.nonzero(~np.isfinite(imgs.reshape(len(imgs), -1)).any(axis=1))[0][0])
            raise NnsensError(f"images has NaN or infinite values (first in image {first}); save "
                              "pixel values in [0, 1] or 0..255")
        if imgs.ndim == 3:
            imgs = imgs[:, None]
        atlas = None
        if imgs.ndim == 5:  # volumes (N, C, D, H, W): limits, scaling and atlas of volumes.py
            from . import volumes
            volumes._check_voxels(imgs.shape, "the .npz volumes", [volumes.MAX_UPLOAD_VOXELS])
            if imgs.min() < 0 or imgs.max() > 1.0:
                imgs = np.stack([volumes.minmax(v, f"volume {i}") for i, v in enumerate(imgs)])
            if "atlas" in keys:
                atlas = volumes.load_atlas(volumes.npy_bytes(arrays["atlas"]), dict(zip(
                    (int(k) for k in arrays.get("region_labels", ())),
                    (str(n) for n in arrays.get("region_names", ())))))
        elif imgs.max() > 1.0:
            imgs = imgs / 255.0
        labels = arrays["labels"].astype(np.int64)
        names = tuple(str(c) for c in arrays["class_names"]) if "class_names" in keys else tuple(
            str(i) for i in range(int(labels.max()) + 1))
        masks = arrays["masks"].astype(bool) if "masks" in keys else None
        return ImageData(imgs, labels, names, masks, name="uploaded NPZ", atlas=atlas)
    if {"X", "y"} <= keys:
        X = arrays["X"].astype(np.float64)
        if X.ndim != 2:
            raise NnsensError(f"X has shape {X.shape}; it must be 2-D (rows, features)")
        names = tuple(str(c) for c in arrays["feature_names"]) if "feature_names" in keys else tuple(
            f"x{i}" for i in range(X.shape[1]))
        y = arrays["y"].astype(np.float64)
        if len(names) != X.shape[1] or y.ndim != 1 or len(y) != len(X):
            raise NnsensError(f"the .npz has X {X.shape}, y {y.shape} and {len(names)} feature names; "
                              "y must be 1-D with one value per row of X, and one name per column")
        check_table(X, y, names, target or "y", "the .npz")
        return TabularData(X, y, names, target or "y", "uploaded NPZ")
    raise NnsensError(f"the .npz has keys {sorted(keys)}; expected images+labels (optionally masks) "
                      "or X+y")
