"""Regions of interest on an original image: the ultrasound fan (sector), found automatically, or a
polygon given by the user. Maps and metrics restricted to the region leave out the black frame,
burned-in text, depth scales and logos around the image.

* :func:`fan_mask`: the largest bright-enough connected region after a morphological opening
  (which cuts thin text strokes and scale ticks off the fan), holes filled, then its convex hull
  (a convex-probe sector is convex but for its shallow top arc; a linear probe's rectangle is
  convex). Computed on a copy at most :data:`WORK_SIDE` pixels long, then scaled back.
* :func:`polygon_mask` / :func:`parse_polygon`: a polygon of ``(x, y)`` vertices in the original's
  pixels (x to the right, y down, from the top-left corner).
* :func:`roi_masks`: one mask per image of a dataset for a choice ``"none"``, ``"fan"`` or
  ``"polygon"``.

Masks are boolean (h, w) arrays on the original; :meth:`nnsens_core.data.ImageData.for_recipe`
carries them to a model's input (``ImageData.roi``).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .errors import NnsensError

WORK_SIDE = 512
"""Longest side of the copy :func:`fan_mask` works on (the mask is scaled back to the original)."""
ROI_CHOICES = {"none": "none (the whole image)", "fan": "auto-detected ultrasound fan",
               "polygon": "polygon (vertices in original pixels)"}


def _grey(original: np.ndarray) -> np.ndarray:
    a = np.asarray(original, np.float32)
    if a.ndim == 2:
        return a
    if a.ndim != 3 or a.shape[0] not in (1, 3):
        raise NnsensError(f"an image of shape {a.shape}; expected (C, h, w) with C = 1 or 3")
    return a.max(axis=0)   # coloured overlays count as bright too


def _hull_mask(mask: np.ndarray) -> np.ndarray:
    """The convex hull of the True pixels' centres of ``mask``, rasterised (boundary included)."""
    ys, xs = np.nonzero(mask)
    if len(xs) < 3:
        return mask.copy()
    # only the leftmost and rightmost pixel of each row can be hull vertices
    rows = np.unique(ys)
    left = ndimage.minimum(xs, ys, rows)
    right = ndimage.maximum(xs, ys, rows)
    pts = np.concatenate([np.stack([left, rows], 1), np.stack([right, rows], 1)]).astype(int)
    hull = _monotone_chain(np.unique(pts, axis=0))
    if len(hull) < 3:   # a straight line of pixels
        return mask.copy()
    return polygon_mask([(float(x), float(y)) for x, y in hull], mask.shape)


def _monotone_chain(pts: np.ndarray) -> list[tuple[int, int]]:
    """Convex hull of integer points (Andrew's monotone chain), counter-clockwise."""
    pts = sorted(map(tuple, pts.tolist()))
    if len(pts) < 3:
        return pts

    def half(seq):
        out: list = []
        for p in seq:
            while len(out) >= 2 and ((out[-1][0] - out[-2][0]) * (p[1] - out[-2][1])
                                     - (out[-1][1] - out[-2][1]) * (p[0] - out[-2][0])) <= 0:
                out.pop()
            out.append(p)
        return out
    lower, upper = half(pts), half(reversed(pts))
    return lower[:-1] + upper[:-1]


def fan_mask(original: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """The ultrasound fan / sector of an image (C, h, w) (or (h, w)) in [0, 1] as a bool (h, w)
    mask.

    On a copy at most :data:`WORK_SIDE` long: smooth (a box of ~1 % of the side, so dark speckle
    inside the fan stays above the threshold), keep pixels brighter than ``threshold`` (default:
    the darkest tenth's level + 0.02, within [0.015, 0.1]: just above the black frame and its
    compression noise), open with a disc of ~1.5 % of the side (thin text, ticks and calipers
    disconnect or vanish), keep the largest connected region, fill its holes and take its convex
    hull; scaled back to (h, w). An image without a dark frame gives (nearly) the whole image."""
    g = _grey(original)
    h, w = g.shape
    s = min(1.0, WORK_SIDE / max(h, w))
    if s < 1.0:
        from PIL import Image
        small = np.asarray(Image.fromarray(g, "F").resize(
            (max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR), np.float32)
    else:
        small = g
    side = max(small.shape)
    smooth = ndimage.uniform_filter(small, max(3, round(side / 100)) | 1)
    if threshold is None:
        dark = float(np.quantile(smooth, 0.1))
        threshold = max(0.015, min(dark + 0.02, 0.1))
    bright = smooth > threshold
    r = max(1, round(side * 0.015))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    # outside the image counts as inside the fan: a fan cut by the image edge keeps its corners
    disc = (xx ** 2 + yy ** 2) <= r * r
    opened = ndimage.binary_dilation(ndimage.binary_erosion(bright, disc, border_value=1), disc)
    labels, n = ndimage.label(opened)
    if n == 0:
        raise NnsensError(f"no fan found: no region of the image is brighter than {threshold:.3f}; "
                          "choose a polygon instead (or 'none')")
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
    largest = labels == (1 + int(np.argmax(sizes)))
    fan = _hull_mask(ndimage.binary_fill_holes(largest))
    if s < 1.0:
        from PIL import Image
        fan = np.asarray(Image.fromarray(fan.astype(np.uint8) * 255).resize((w, h), Image.BILINEAR)) > 127
    return fan


def polygon_mask(points, shape: tuple[int, int]) -> np.ndarray:
    """A bool (h, w) mask of the polygon with ``points`` [(x, y), ...] in pixels (x to the right,
    y down; the centre of pixel (row i, column j) is at (x, y) = (j, i); pixels whose centres lie
    inside or on the boundary are True)."""
    from PIL import Image, ImageDraw
    h, w = (int(s) for s in shape)
    pts = [(float(x), float(y)) for x, y in points]
    if len(pts) < 3:
        raise NnsensError(f"a polygon needs at least 3 vertices; got {len(pts)}")
    im = Image.new("L", (w, h), 0)
    ImageDraw.Draw(im).polygon(pts, fill=255, outline=255)
    return np.asarray(im) > 0


def parse_polygon(text: str) -> list[tuple[float, float]]:
    """``"x1,y1; x2,y2; x3,y3"`` -> [(x1, y1), ...] (pixels of the original; at least 3 vertices).
    The error names the vertex that is not two numbers."""
    pts = []
    items = [t.strip() for t in str(text).replace("\n", ";").split(";")]
    items = [t for t in items if t]
    for k, item in enumerate(items, 1):
        nums = [t.strip() for t in item.replace(" ", ",").split(",") if t.strip()]
        try:
            x, y = (float(t) for t in nums)
        except ValueError:
            raise NnsensError(f"polygon vertex {k} ({item!r}) is not two numbers 'x,y'; write the "
                              "vertices like '10,20; 200,20; 120,180'") from None
        if not (np.isfinite(x) and np.isfinite(y)):
            raise NnsensError(f"polygon vertex {k} ({item!r}) is not finite")
        pts.append((x, y))
    if len(pts) < 3:
        raise NnsensError(f"the polygon has {len(pts)} vertices; give at least 3, like "
                          "'10,20; 200,20; 120,180'")
    return pts


def roi_masks(originals, choice: str = "none", polygon: str = "") -> list[np.ndarray] | None:
    """One bool (h, w) mask per original for ``choice`` (:data:`ROI_CHOICES`): None for
    ``"none"``, :func:`fan_mask` of each image for ``"fan"``, the ``polygon`` text
    (:func:`parse_polygon`) on each image's own pixels for ``"polygon"``."""
    if choice not in ROI_CHOICES:
        raise NnsensError(f"region of interest {choice!r} is unknown; use one of {list(ROI_CHOICES)}")
    if choice == "none":
        return None
    if choice == "fan":
        return [fan_mask(o) for o in originals]
    pts = parse_polygon(polygon)
    out = []
    for o in originals:
        m = polygon_mask(pts, np.asarray(o).shape[-2:])
        if not m.any():
            raise NnsensError(f"the polygon lies outside an image of {o.shape[-1]}×{o.shape[-2]} "
                              "pixels; give vertices in that image's pixels")
        out.append(m)
    return out


__all__ = ["ROI_CHOICES", "WORK_SIDE", "fan_mask", "parse_polygon", "polygon_mask", "roi_masks"]
