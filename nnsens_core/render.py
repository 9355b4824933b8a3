"""Maps as pictures a case can be read from: a perceptually uniform colour map (signed maps on a
diverging one centred at 0), overlays on the original image, top-p % contour outlines, colour bars.

Pure numpy + Pillow (no plotting library), so pages, the CLI and the PDF report draw the same
pixels offline. Maps may hold NaN where nothing was computed (outside the part of the original a
model saw, or outside a region of interest): NaN is drawn transparent.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .errors import NnsensError

# Control points (value in [0, 1], RGB 0..255). Sequential: matplotlib's "inferno" sampled at 9
# points (perceptually uniform, readable in grey); diverging: ColorBrewer's RdBu (blue < 0 < red).
_INFERNO = [(0.0, (0, 0, 4)), (0.125, (31, 12, 72)), (0.25, (85, 15, 109)), (0.375, (136, 34, 106)),
            (0.5, (186, 54, 85)), (0.625, (227, 89, 51)), (0.75, (249, 140, 10)),
            (0.875, (249, 201, 50)), (1.0, (252, 255, 164))]
_RDBU = [(0.0, (5, 48, 97)), (0.1, (33, 102, 172)), (0.2, (67, 147, 195)), (0.3, (146, 197, 222)),
         (0.4, (209, 229, 240)), (0.5, (247, 247, 247)), (0.6, (253, 219, 199)),
         (0.7, (244, 165, 130)), (0.8, (214, 96, 77)), (0.9, (178, 24, 43)), (1.0, (103, 0, 31))]
COLORMAPS = {"inferno": _INFERNO, "rdbu": _RDBU}


@lru_cache(maxsize=4)
def lut(name: str) -> np.ndarray:
    """The 256 × 3 uint8 lookup table of colour map ``name`` (:data:`COLORMAPS`)."""
    if name not in COLORMAPS:
        raise NnsensError(f"colour map {name!r} is unknown; use one of {list(COLORMAPS)}")
    pts = COLORMAPS[name]
    xs = np.array([p for p, _ in pts])
    rgb = np.array([c for _, c in pts], np.float64)
    t = np.linspace(0, 1, 256)
    return np.stack([np.interp(t, xs, rgb[:, k]) for k in range(3)], 1).round().astype(np.uint8)


def scale_of(m: np.ndarray, signed: bool = False) -> tuple[float, float]:
    """The colour scale of map ``m``: (min, max) of its finite values, or (-a, a) with a = max |m|
    for a signed map (so 0 is the middle colour)."""
    v = np.asarray(m, np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return (-1.0, 1.0) if signed else (0.0, 1.0)
    if signed:
        a = float(np.abs(v).max()) or 1.0
        return -a, a
    lo, hi = float(v.min()), float(v.max())
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def colorize(m: np.ndarray, signed: bool = False, vmin: float | None = None,
             vmax: float | None = None) -> np.ndarray:
    """Map (h, w) -> RGBA uint8 (h, w, 4): inferno (or RdBu for ``signed``) between ``vmin`` and
    ``vmax`` (default :func:`scale_of`); NaN pixels have alpha 0."""
    m = np.asarray(m, np.float64)
    if m.ndim != 2:
        raise NnsensError(f"a map of shape {m.shape}; expected (height, width)")
    lo, hi = scale_of(m, signed)
    lo = lo if vmin is None else float(vmin)
    hi = hi if vmax is None else float(vmax)
    if not hi > lo:
        raise NnsensError(f"the colour scale [{lo}, {hi}] is empty; give vmax > vmin")
    finite = np.isfinite(m)
    idx = np.clip((np.where(finite, m, lo) - lo) / (hi - lo), 0, 1) * 255
    out = np.empty((*m.shape, 4), np.uint8)
    out[..., :3] = lut("rdbu" if signed else "inferno")[idx.round().astype(np.int64)]
    out[..., 3] = np.where(finite, 255, 0)
    return out


def to_rgb(image: np.ndarray) -> np.ndarray:
    """(C, h, w) or (h, w) float in [0, 1] (C = 1 or 3) -> uint8 RGB (h, w, 3)."""
    a = np.asarray(image, np.float64)
    if a.ndim == 3:
        a = a.transpose(1, 2, 0)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    if a.shape[-1] != 3:
        raise NnsensError(f"an image of shape {image.shape}; expected (C, H, W) with C = 1 or 3")
    return (np.clip(a, 0, 1) * 255).round().astype(np.uint8)


def overlay(base: np.ndarray, m: np.ndarray, alpha: float = 0.5, signed: bool = False,
            vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """The map coloured (:func:`colorize`) over the image ``base`` with opacity ``alpha``; where the
    map is NaN the image shows unchanged. ``m`` must have the image's size."""
    rgb = to_rgb(base).astype(np.float64)
    if tuple(np.shape(m)) != rgb.shape[:2]:
        raise NnsensError(f"the map is {np.shape(m)} but the image is {rgb.shape[:2]}; bring the map "
                          "to the image's size first (preprocess.map_to_original)")
    col = colorize(m, signed, vmin, vmax)
    a = alpha * (col[..., 3:4] / 255.0)
    return (rgb * (1 - a) + col[..., :3] * a).round().astype(np.uint8)


def top_region(m: np.ndarray, percent: float) -> np.ndarray:
    """Boolean mask of the ``percent`` % highest finite values of ``m``."""
    v = np.asarray(m, np.float64)
    fin = np.isfinite(v)
    if not fin.any():
        return np.zeros(v.shape, bool)
    cut = np.percentile(v[fin], 100 - float(percent))
    return fin & (v >= cut)


CONTOUR_COLOURS = {5: (255, 255, 255), 10: (255, 200, 0), 20: (0, 200, 255)}


def contours(base: np.ndarray, m: np.ndarray, percents=(5, 10, 20), width: int = 1) -> np.ndarray:
    """Outlines of the top ``percents`` % of ``m`` over ``base`` (white / amber / cyan for 5 / 10 /
    20 %): the image stays visible, the regions are read from their borders."""
    rgb = to_rgb(base).copy()
    if tuple(np.shape(m)) != rgb.shape[:2]:
        raise NnsensError(f"the map is {np.shape(m)} but the image is {rgb.shape[:2]}")
    for p in sorted(percents, reverse=True):
        r = top_region(m, p)
        edge = np.zeros_like(r)
        for _ in range(max(1, int(width))):
            inner = r.copy()
            inner[1:] &= r[:-1]
            inner[:-1] &= r[1:]
            inner[:, 1:] &= r[:, :-1]
            inner[:, :-1] &= r[:, 1:]
            edge |= r & ~inner
            r = inner
        rgb[edge] = CONTOUR_COLOURS.get(int(p), (255, 255, 255))
    return rgb


def colorbar(vmin: float, vmax: float, label: str = "", signed: bool = False, length: int = 256,
             thickness: int = 16, horizontal: bool = True) -> np.ndarray:
    """A colour bar (uint8 RGB) with its end values and middle written under it (and ``label``)."""
    from PIL import Image, ImageDraw
    ramp = lut("rdbu" if signed else "inferno")[np.linspace(0, 255, length).round().astype(int)]
    bar = np.repeat(ramp[None], thickness, axis=0)
    text_h = 14 * (2 if label else 1)
    img = Image.new("RGB", (length + 40, thickness + text_h + 4), (255, 255, 255))
    img.paste(Image.fromarray(bar), (20, 0))
    d = ImageDraw.Draw(img)
    fmt = (lambda v: f"{v:.3g}")
    mid = (vmin + vmax) / 2
    for x, v in ((20, vmin), (20 + length // 2, mid), (20 + length, vmax)):
        t = fmt(v)
        w = d.textlength(t)
        d.text((max(0, min(x - w / 2, img.width - w)), thickness + 2), t, fill=(0, 0, 0))
    if label:
        d.text((20, thickness + 16), label, fill=(0, 0, 0))
    out = np.asarray(img)
    return out if horizontal else np.ascontiguousarray(np.rot90(out))


def side_by_side(images, gap: int = 6, background=(255, 255, 255)) -> np.ndarray:
    """uint8 RGB images in one row (top-aligned)."""
    ims = [np.asarray(i, np.uint8) for i in images]
    h = max(i.shape[0] for i in ims)
    w = sum(i.shape[1] for i in ims) + gap * (len(ims) - 1)
    out = np.empty((h, w, 3), np.uint8)
    out[:] = background
    x = 0
    for i in ims:
        out[:i.shape[0], x:x + i.shape[1]] = i[..., :3]
        x += i.shape[1] + gap
    return out


SCALE_NOTE = ("colours span this map's own lowest to highest value (per-image scale; values are "
              "not comparable across images unless a shared scale is chosen)")
