"""3-D volumes: NIfTI / ``.npy`` files, ZIPs and folders of class sub-folders of volumes, atlases
of named regions, and NIfTI export of masks and maps.

Volumes are :class:`~nnsens_core.data.ImageData` with ``images`` (n, C, D, H, W) float32 in [0, 1]
and optional ``masks`` (n, D, H, W) and :class:`Atlas`. The voxel axes are the file's as stored
(nibabel's i, j, k become D, H, W): nothing is reoriented or resampled, so volumes, masks and
atlas must come from the same registration (same grid), which is checked by shape.

Every loader checks sizes before it decodes: one volume holds at most :data:`MAX_VOLUME_VOXELS`
voxels, one upload at most :data:`MAX_UPLOAD_VOXELS`, and ZIP members go through
:func:`~nnsens_core.data.check_zip`.
"""
from __future__ import annotations

import csv
import gzip
import io
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .data import ImageData, check_zip
from .errors import NnsensError

MAX_VOLUME_VOXELS = 256 ** 3          # one volume (a 1 mm MNI brain is 182 x 218 x 182 = 7.2 M)
MAX_UPLOAD_VOXELS = 256 * 2 ** 20     # all volumes of one upload together (1 GiB as float32)
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".npy")

Source = str | os.PathLike | bytes | BinaryIO


def _raw(source: Source) -> tuple[bytes, str]:
    """(bytes, a name for messages) of a path, bytes or file object."""
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), "the volume"
    if hasattr(source, "read"):
        return source.read(), str(getattr(source, "name", "the volume"))
    path = Path(source)
    if not path.is_file():
        raise NnsensError(f"volume file {str(path)!r} does not exist")
    return path.read_bytes(), path.name


def _check_voxels(shape, name: str, budget: list | None) -> None:
    """Refuse a volume (its spatial shape: the last three of ``shape``) over
    :data:`MAX_VOLUME_VOXELS`, and charge all of ``shape`` to ``budget`` (a one-item list of
    voxels the upload may still use)."""
    spatial = tuple(int(s) for s in shape[-3:])
    n = int(np.prod(spatial, dtype=np.int64))
    if n > MAX_VOLUME_VOXELS:
        raise NnsensError(f"{name!r} has {' x '.join(map(str, spatial))} = {n / 1e6:.1f} M voxels, "
                          f"over the {MAX_VOLUME_VOXELS / 1e6:.1f} M (256^3) limit per volume; crop "
                          "or downsample it")
    if budget is not None:
        budget[0] -= int(np.prod(shape, dtype=np.int64))
        if budget[0] < 0:
            raise NnsensError(f"the upload's volumes hold more than {MAX_UPLOAD_VOXELS / 1e6:.0f} M "
                              "voxels together; upload fewer or smaller volumes")


# --------------------------------------------------------------------------- NIfTI

def _nifti_image(raw: bytes, name: str, budget: list | None):
    """A nibabel image of NIfTI-1/2 bytes (gzipped or not), its shape checked from the header
    before the voxel data is decompressed or read."""
    import nibabel as nib
    gz = raw[:2] == b"\x1f\x8b"
    d = zlib.decompressobj(16 + zlib.MAX_WBITS) if gz else None
    try:
        head = d.decompress(raw, 540) if gz else raw[:540]
    except zlib.error as exc:
        raise NnsensError(f"{name!r} is not a readable .nii.gz ({exc})") from None
    size = int.from_bytes(head[:4], "little") if len(head) >= 4 else 0
    if size not in (348, 540):
        size = int.from_bytes(head[:4], "big") if len(head) >= 4 else 0
    klass = {348: nib.Nifti1Image, 540: nib.Nifti2Image}.get(size)
    if klass is None or len(head) < size:
        raise NnsensError(f"{name!r} is not a NIfTI file (no NIfTI-1/2 header); upload .nii, "
                          ".nii.gz or .npy volumes")
    try:
        header = klass.header_class.from_fileobj(io.BytesIO(head[:size]))
    except Exception as exc:  # noqa: BLE001 - nibabel raises several types for broken headers
        raise NnsensError(f"{name!r} has a broken NIfTI header ({str(exc)[:200]})") from None
    shape = tuple(int(s) for s in header.get_data_shape())
    _spatial_shape(shape, name)
    _check_voxels(shape[:3], name, budget)
    needed = int(header.get_data_offset()) + int(np.prod(shape, dtype=np.int64)) * \
        header.get_data_dtype().itemsize
    if gz:
        try:
            raw = head + d.decompress(d.unconsumed_tail, max(needed - len(head), 0) + 1)
        except zlib.error as exc:
            raise NnsensError(f"{name!r} is not a readable .nii.gz ({exc})") from None
    if len(raw) < needed:
        raise NnsensError(f"{name!r} is truncated: its header announces {shape} voxels but the file "
                          "ends early; upload the complete file")
    try:
        return klass.from_bytes(raw[:needed] if gz else raw)
    except Exception as exc:  # noqa: BLE001
        raise NnsensError(f"{name!r} is not a readable NIfTI file ({str(exc)[:200]})") from None


def _spatial_shape(shape: tuple[int, ...], name: str) -> tuple[int, ...]:
    """(D, H, W) of a NIfTI's data shape: trailing singleton dimensions dropped, a 4-D series
    refused unless its 4th dimension is 1 (checked from the header, before reading)."""
    s = tuple(shape)
    while len(s) > 3 and s[-1] == 1:
        s = s[:-1]
    if len(s) > 3:
        raise NnsensError(f"{name!r} is a {len(shape)}-D NIfTI of shape {tuple(shape)} (a series of "
                          f"{shape[3]} volumes); nnsens reads one 3-D volume per file: split it "
                          "(e.g. fslsplit) or keep the one volume you need")
    if len(s) < 3:
        raise NnsensError(f"{name!r} has shape {tuple(shape)}; a volume needs 3 spatial dimensions")
    return s


def minmax(v: np.ndarray, name: str = "the volume") -> np.ndarray:
    """``v`` scaled to [0, 1] by its own min and max (a constant volume becomes all zeros);
    NaN or infinite voxels are refused."""
    v = np.asarray(v, np.float64)
    bad = ~np.isfinite(v)
    if bad.any():
        raise NnsensError(f"{name!r} has {int(bad.sum())} NaN or infinite voxel(s); replace them "
                          "(e.g. by 0) before uploading")
    lo, hi = float(v.min()), float(v.max())
    return ((v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)).astype(np.float32)


def load_nifti(source: Source, *, scale: bool = True, name: str | None = None,
               budget: list | None = None) -> np.ndarray:
    """One NIfTI volume (``.nii`` or ``.nii.gz``; path, bytes or file) -> (1, D, H, W) float32.

    With ``scale=True`` (the default) intensities are **min-max scaled to [0, 1] per volume**
    (``(v - min) / (max - min)``), so absolute intensities of different scans are not comparable
    afterwards; ``scale=False`` keeps the stored values (scl_slope / scl_inter applied). A 4-D
    NIfTI is refused unless its 4th dimension is 1. ``budget``: a one-item list of voxels the
    upload may still use, decreased here."""
    raw, nm = _raw(source)
    nm = name or nm
    img = _nifti_image(raw, nm, budget)
    a = np.asarray(img.dataobj).reshape(_spatial_shape(img.shape, nm))
    return (minmax(a, nm) if scale else a.astype(np.float32))[None]


def save_nifti(array, path: str | os.PathLike | None = None, *, affine=None,
               compress: bool | None = None) -> bytes:
    """``array`` (D, H, W) or (1, D, H, W) -> the bytes of a NIfTI-1 file, also written to
    ``path`` when given. Booleans are stored as uint8, integers as int16 / int32, the rest as
    float32; ``affine`` (4 x 4) defaults to the identity (1 mm voxels). ``compress`` (gzip)
    defaults to ``path`` ending in ``.gz`` (plain ``.nii`` without a path)."""
    import nibabel as nib
    a = np.asarray(array.detach().cpu() if hasattr(array, "detach") else array)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3:
        raise NnsensError(f"save_nifti takes one volume (D, H, W) or (1, D, H, W); got shape "
                          f"{a.shape}")
    if a.dtype == bool:
        a = a.astype(np.uint8)
    elif np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.int16 if a.min() >= -2**15 and a.max() < 2**15 else np.int32)
    else:
        a = a.astype(np.float32)
    img = nib.Nifti1Image(a, np.eye(4) if affine is None else np.asarray(affine, np.float64))
    img.header.set_xyzt_units("mm")
    out = img.to_bytes()
    if compress is None:
        compress = path is not None and str(path).endswith(".gz")
    if compress:
        out = gzip.compress(out, mtime=0)
    if path is not None:
        Path(path).write_bytes(out)
    return out


# --------------------------------------------------------------------------- .npy

def load_npy(source: Source, *, name: str | None = None, budget: list | None = None,
             dims: int = 3) -> np.ndarray:
    """A ``.npy`` array without pickled objects, its shape checked from the header before the data
    is read. ``dims=3``: one volume (D, H, W) or (C, D, H, W) -> (C, D, H, W) float32, kept as is
    when within [0, 1], else min-max scaled per volume; ``dims=0``: the raw array."""
    raw, nm = _raw(source)
    nm = name or nm
    f = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    except (ValueError, OSError, EOFError) as exc:
        raise NnsensError(f"{nm!r} is not a readable .npy file ({str(exc)[:200]})") from None
    if dtype.hasobject:
        raise NnsensError(f"{nm!r} holds pickled Python objects, which nnsens never loads; save a "
                          "numeric array")
    _check_voxels(shape, nm, budget)
    try:
        a = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise NnsensError(f"{nm!r} is not a readable .npy file ({str(exc)[:200]})") from None
    if not dims:
        return a
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise NnsensError(f"{nm!r} has shape {a.shape}; a volume is (D, H, W) or (C, D, H, W)")
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise NnsensError(f"{nm!r} has dtype {a.dtype}; save real numbers")
    a = a.astype(np.float32)
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        a = minmax(a, nm)
    return a


def npy_bytes(array) -> bytes:
    """The bytes of ``array`` saved as ``.npy``."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def load_volume(source: Source, *, name: str | None = None, budget: list | None = None
                ) -> np.ndarray:
    """One volume file, NIfTI or ``.npy`` (told apart by content) -> (C, D, H, W) float32 in [0, 1]."""
    raw, nm = _raw(source)
    nm = name or nm
    if raw[:6] == b"\x93NUMPY":
        return load_npy(raw, name=nm, budget=budget)
    return load_nifti(raw, name=nm, budget=budget)


# --------------------------------------------------------------------------- class folders

def _collect_volumes(entries: dict[str, dict[str, bytes]], name: str, atlas) -> ImageData:
    classes = sorted(c for c in entries if entries[c])
    if len(classes) < 2:
        raise NnsensError(f"found {len(classes)} class folder(s) with volumes ({classes}); a volume "
                          "dataset needs at least two class sub-folders (root/class_name/scan.nii.gz)")
    vols, labels, first = [], [], None
    budget = [MAX_UPLOAD_VOXELS]
    for k, c in enumerate(classes):
        for fname, blob in sorted(entries[c].items()):
            v = load_volume(blob, name=f"{c}/{fname}", budget=budget)
            if first is None:
                first = (f"{c}/{fname}", v.shape)
            elif v.shape != first[1]:
                raise NnsensError(f"{c + '/' + fname!r} has shape {v.shape} but {first[0]!r} has "
                                  f"{first[1]}; all volumes must share one grid (register and "
                                  "resample them to the same template)")
            vols.append(v)
            labels.append(k)
    return ImageData(np.stack(vols), np.asarray(labels, np.int64), tuple(classes), name=name,
                     atlas=atlas)


def _is_volume(fname: str) -> bool:
    low = fname.lower()
    return low.endswith(VOLUME_SUFFIXES) and not Path(fname).name.startswith(".")


def load_volume_zip(source: Source, atlas: "Atlas | None" = None, max_files: int = 5000
                    ) -> ImageData:
    """A ZIP of ``<class>/<volume>`` (``.nii``, ``.nii.gz`` or ``.npy``; one optional top folder is
    skipped) -> volumes (n, C, D, H, W); class names are the folder names, sorted. All volumes must
    have one shape (nothing is resampled); ``atlas`` must have their spatial shape."""
    raw, _ = _raw(source)
    try:
        zf = zipfile.ZipFile(io.BytesIO(raw))
    except zipfile.BadZipFile:
        raise NnsensError("the upload is not a ZIP archive; zip a folder of class sub-folders of "
                          "volumes") from None
    with zf:
        check_zip(zf)
        files = [i for i in zf.infolist() if not i.is_dir() and _is_volume(i.filename)
                 and "__MACOSX" not in i.filename]
        if len(files) > max_files:
            raise NnsensError(f"the ZIP holds {len(files)} volumes, over the {max_files} limit")
        parts = [Path(i.filename).parts for i in files]
        if parts and all(len(p) >= 3 for p in parts) and len({p[0] for p in parts}) == 1:
            parts = [p[1:] for p in parts]
        entries: dict[str, dict[str, bytes]] = {}
        for info, p in zip(files, parts):
            if len(p) >= 2:
                entries.setdefault(p[-2], {})[p[-1]] = zf.read(info)
    return _collect_volumes(entries, "uploaded volumes", atlas)


def load_volume_folder(root: str | os.PathLike, atlas: "Atlas | None" = None) -> ImageData:
    """``root/<class>/<volume>`` (``.nii``, ``.nii.gz`` or ``.npy``), as :func:`load_volume_zip`."""
    root = Path(root)
    if not root.is_dir():
        raise NnsensError(f"volume folder {str(root)!r} does not exist")
    entries = {d.name: {f.name: f.read_bytes() for f in d.iterdir() if _is_volume(f.name)}
               for d in root.iterdir() if d.is_dir()}
    return _collect_volumes(entries, root.name, atlas)


# --------------------------------------------------------------------------- atlas

@dataclass(frozen=True, eq=False)
class Atlas:
    """Integer ``labels`` (D, H, W) (0 = background, 1..K regions) in the volumes' voxel grid and
    ``names`` ``{label: region name}`` (labels without a name are called ``"region <k>"``)."""
    labels: np.ndarray
    names: dict = field(default_factory=dict)

    def __post_init__(self):
        a = self.labels
        if not isinstance(a, np.ndarray) or a.ndim != 3:
            raise NnsensError(f"atlas labels have shape {getattr(a, 'shape', type(a).__name__)}; "
                              "they must be one 3-D integer volume (D, H, W)")
        if not np.issubdtype(a.dtype, np.integer):
            raise NnsensError(f"atlas labels have dtype {a.dtype}; they must be whole numbers (load "
                              "them with load_atlas, which accepts integral floats)")
        if a.size and a.min() < 0:
            raise NnsensError(f"atlas labels must be >= 0 (0 = background); found {int(a.min())}")
        for k, nm in self.names.items():
            if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
                raise NnsensError(f"atlas region label {k!r} (named {nm!r}) must be a whole number "
                                  ">= 1; 0 is the background")

    @property
    def region_ids(self) -> tuple[int, ...]:
        """The labels present, background excluded, ascending."""
        return tuple(int(k) for k in np.unique(self.labels) if k != 0)

    def name_of(self, label: int) -> str:
        return str(self.names.get(int(label), f"region {int(label)}"))

    @property
    def region_names(self) -> dict[int, str]:
        """``{label: name}`` of every region present."""
        return {k: self.name_of(k) for k in self.region_ids}

    def label_of(self, region: int | str) -> int:
        """The label of a region given by label or by name."""
        if isinstance(region, str):
            found = [k for k, n in self.region_names.items() if n == region]
            if not found:
                raise NnsensError(f"region {region!r} is not in the atlas; regions are "
                                  f"{list(self.region_names.values())}")
            return found[0]
        if int(region) not in self.region_ids:
            raise NnsensError(f"region label {region!r} is not in the atlas; labels are "
                              f"{list(self.region_ids)}")
        return int(region)

    def mask(self, *regions: int | str) -> np.ndarray:
        """(D, H, W) bool: the union of the given regions (by label or name)."""
        return np.isin(self.labels, [self.label_of(r) for r in regions])

    def check_shape(self, spatial: tuple[int, ...], what: str = "the volumes") -> None:
        if tuple(self.labels.shape) != tuple(spatial):
            raise NnsensError(f"the atlas has shape {tuple(self.labels.shape)} but {what} have "
                              f"spatial shape {tuple(spatial)}; use an atlas in the same grid "
                              "(registered and resampled to the same template)")

    def region_means(self, maps) -> np.ndarray:
        """Mean of ``maps`` (..., D, H, W) over each region -> (..., K), K in :attr:`region_ids`
        order (e.g. a saliency map summarised per region)."""
        m = np.asarray(maps.detach().cpu() if hasattr(maps, "detach") else maps, np.float64)
        self.check_shape(m.shape[-3:], "the maps")
        ids = np.asarray(self.region_ids)
        lab = self.labels.reshape(-1)
        flat = m.reshape(-1, lab.size)
        onehot = (lab[None, :] == ids[:, None]).astype(np.float64)  # (K, V)
        out = flat @ onehot.T / onehot.sum(1)
        return out.reshape(*m.shape[:-3], len(ids))


def _read_names(source: Source) -> dict[int, str]:
    raw, nm = _raw(source)
    try:
        rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    except UnicodeDecodeError:
        raise NnsensError(f"the region table {nm!r} is not UTF-8 text; save it as a CSV with "
                          "columns label,name") from None
    rows = [r for r in rows if r and any(c.strip() for c in r)]
    if rows and rows[0][0].strip().lower() in ("label", "id", "index", "value"):
        rows = rows[1:]
    names: dict[int, str] = {}
    for i, r in enumerate(rows):
        try:
            k = int(r[0].strip())
        except ValueError:
            raise NnsensError(f"row {i + 1} of the region table starts with {r[0]!r}, not a whole "
                              "number; write it as label,name (e.g. 1,left hippocampus)") from None
        if len(r) < 2 or not r[1].strip():
            raise NnsensError(f"row {i + 1} of the region table has no name for label {k}")
        if k in names:
            raise NnsensError(f"the region table names label {k} twice ({names[k]!r}, {r[1]!r})")
        names[k] = r[1].strip()
    return names


def load_atlas(source: Source, names: Source | dict | None = None) -> Atlas:
    """An atlas: integer labels from a NIfTI (``.nii`` / ``.nii.gz``) or ``.npy`` volume
    (integral floats are accepted, fractional values refused) and region names from a CSV table
    ``label,name`` (path or bytes, header optional) or a dict; label 0 is the background."""
    raw, nm = _raw(source)
    if raw[:6] == b"\x93NUMPY":
        a = np.asarray(load_npy(raw, name=nm, dims=0))
        if a.ndim == 4 and a.shape[0] == 1:
            a = a[0]
        if a.ndim != 3:
            raise NnsensError(f"the atlas has shape {a.shape}; it must be one 3-D volume (D, H, W)")
    else:
        a = load_nifti(raw, scale=False, name=nm)[0]
    if not np.issubdtype(a.dtype, np.integer):
        a = np.asarray(a, np.float64)
        frac = ~np.isfinite(a) | (a != np.round(a))
        if frac.any():
            i = tuple(int(j[0]) for j in np.nonzero(frac))
            raise NnsensError(f"the atlas holds non-integer labels ({int(frac.sum())} voxels, e.g. "
                              f"{a[i]} at voxel {i}); an atlas labels regions with whole numbers "
                              "(was it resampled with linear instead of nearest-neighbour "
                              "interpolation?)")
        a = a.astype(np.int64)
    table = names if isinstance(names, dict) else ({} if names is None else _read_names(names))
    present = set(np.unique(a).tolist())
    return Atlas(a.astype(np.int32), {int(k): str(v) for k, v in table.items() if int(k) in present})


__all__ = ["Atlas", "MAX_VOLUME_VOXELS", "MAX_UPLOAD_VOXELS", "load_nifti", "save_nifti",
           "load_npy", "npy_bytes", "load_volume", "load_volume_zip", "load_volume_folder", "load_atlas",
           "minmax"]
