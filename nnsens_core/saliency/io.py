"""Ground-truth masks uploaded by users, and report tables."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .._results import markdown_text
from ..errors import NnsensError
from .registry import label

# --------------------------------------------------------------------------- user ground-truth masks

def read_gt_masks(raw: bytes, filename: str, n_images: int, hw: Sequence[int]) -> np.ndarray:
    """Ground-truth masks from an upload: ``.npz`` (array ``masks``, or its only array), ``.npy``, or
    a ``.png``/``.jpg`` image (one mask; pixels above half the maximum are inside).

    Returns bool ``(k, H, W)`` with ``k == n_images`` (one mask per image of the dataset) or ``k == 1``
    (one mask, for the image on screen). A mask whose size is not ``hw`` (the images' H x W), a
    file that cannot be read, or a non-binary array raise :class:`NnsensError` saying what to fix.
    """
    import io
    import zipfile
    h, w = (int(s) for s in hw)
    name = str(filename or "upload")
    suffix = name.lower().rsplit(".", 1)[-1] if "." in name else ""
    if suffix in ("npz", "npy"):
        try:
            obj = np.load(io.BytesIO(raw), allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise NnsensError(f"{name!r} is not a readable .{suffix} without pickled objects: "
                              f"{str(exc)[:200]}") from None
        if isinstance(obj, np.ndarray):
            arr = obj
        else:
            with obj:
                files = list(obj.files)
                key = "masks" if "masks" in files else (files[0] if len(files) == 1 else None)
                if key is None:
                    raise NnsensError(f"{name!r} holds the arrays {files}; name the masks array "
                                      "'masks' (np.savez(f, masks=...))")
                arr = obj[key]
        if arr.dtype == object:
            raise NnsensError(f"{name!r} holds Python objects; save a numeric (N, H, W) array")
        if arr.ndim == 4 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise NnsensError(f"the masks in {name!r} have shape {arr.shape}; expected (N, H, W) or "
                              f"(H, W) with H x W = {h} x {w}")
        vals = np.unique(arr)
        if arr.dtype != bool and not np.all(np.isin(vals, (0, 1))):
            raise NnsensError(f"the masks in {name!r} must be binary (0/1 or bool); they have values "
                              f"such as {vals[:5].tolist()}")
        arr = arr.astype(bool)
    elif suffix in ("png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff") or not suffix:
        from PIL import Image, UnidentifiedImageError
        try:
            with Image.open(io.BytesIO(raw)) as img:
                img.load()
                a = np.asarray(img.convert("L"), dtype=np.float32)
        except (UnidentifiedImageError, OSError, ValueError):
            raise NnsensError(f"{name!r} is not a readable image; upload a black-and-white PNG "
                              "mask, or an .npz with a 'masks' array") from None
        arr = (a > a.max() / 2)[None] if a.max() > 0 else np.zeros((1, *a.shape), bool)
    else:
        raise NnsensError(f"{name!r}: masks must be .npz, .npy or .png (got .{suffix})")
    if tuple(arr.shape[1:]) != (h, w):
        raise NnsensError(f"the mask in {name!r} is {arr.shape[1]}x{arr.shape[2]} (H x W) but the "
                          f"images are {h}x{w}; save the masks at the images' size")
    if len(arr) not in (1, n_images):
        raise NnsensError(f"{name!r} holds {len(arr)} masks for {n_images} images; give one mask "
                          "(for the image on screen) or one per image, in dataset order")
    return arr


def markdown_table(info: Mapping, class_names: Sequence[str] | None = None,
                   feature_names: Mapping[str, str] | None = None) -> str:
    """A markdown table from :meth:`Evaluation.to_dict` (``info``): one row per method, one
    column per class with ``IoU / pointing`` (mean over that class's images), then all classes.

    ``feature_names`` renames class columns, e.g. ``{"covid": "B-lines (covid)"}``; the best value
    of each column is printed in bold. When the evaluation has chance levels, a last column gives
    the chance IoU / pointing over all classes (random maps of the same smoothness, see
    :func:`~nnsens_core.saliency.metrics.chance_level`)."""
    methods = info.get("methods", {})
    if not methods:
        raise NnsensError("metrics have no methods; run an evaluation first")
    classes = list(class_names) if class_names is not None else list(
        dict.fromkeys(c for e in methods.values() for c in e.get("per_class", {})))
    feature_names = dict(feature_names or {})

    def cell(e: Mapping | None, k: str) -> float | None:
        return None if e is None else e.get(k)

    cols = [(c, feature_names.get(c, c)) for c in classes] + [("all", "all classes")]
    vals = {m: {c: (cell(e if c == "all" else e.get("per_class", {}).get(c), "iou"),
                    cell(e if c == "all" else e.get("per_class", {}).get(c), "pointing"))
                for c, _ in cols} for m, e in methods.items()}
    best = {(c, j): max((v[c][j] for v in vals.values() if v[c][j] is not None), default=None)
            for c, _ in cols for j in (0, 1)}

    def fmt(x, c, j):
        if x is None:
            return "n/a"
        s = f"{x:.2f}"
        b = best[(c, j)]
        return f"**{s}**" if b is not None and b > 0 and round(x, 2) == round(b, 2) else s

    has_chance = any("chance" in e for e in methods.values())

    def chance(e: Mapping) -> str:
        ch = e.get("chance", {})
        parts = [ch.get(k, {}).get("mean") for k in ("iou", "pointing")]
        return " / ".join("n/a" if v is None or v != v else f"{v:.2f}" for v in parts)

    head = "| method | " + " | ".join(f"{markdown_text(lab)}: IoU / pointing" for _, lab in cols) \
        + (" | chance: IoU / pointing |" if has_chance else " |")
    lines = [head, "|" + "---|" * (len(cols) + 1 + has_chance)]
    for m, row in vals.items():
        lines.append(f"| {markdown_text(label(m))} | " + " | ".join(
            f"{fmt(row[c][0], c, 0)} / {fmt(row[c][1], c, 1)}" for c, _ in cols)
            + (f" | {chance(methods[m])} |" if has_chance else " |"))
    return "\n".join(lines) + "\n"

