"""Pictures of images at their own aspect ratio for the pages: thumbnails of originals, the model's
input as the model sees it, and a region of interest outlined on an image."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

THUMB_SIDE = 320
"""Longest side of a preview (pixels); the aspect ratio of the original is kept."""


def _rgb(img01: np.ndarray) -> np.ndarray:
    """(C, h, w) or (h, w) in [0, 1] -> (h, w, 3) uint8."""
    a = np.asarray(img01, np.float32)
    if a.ndim == 3:
        a = np.repeat(a, 3, axis=0) if a.shape[0] == 1 else a
        a = a.transpose(1, 2, 0)
    else:
        a = np.repeat(a[..., None], 3, axis=2)
    return (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)


def thumb_size(shape: tuple[int, int], max_side: int = THUMB_SIDE) -> tuple[int, int]:
    """(h, w) of the preview of an (h, w) image: the longest side ``max_side`` at most, aspect kept."""
    h, w = (int(s) for s in shape)
    s = min(1.0, max_side / max(h, w))
    return max(1, round(h * s)), max(1, round(w * s))


def thumbnail(original: np.ndarray, max_side: int = THUMB_SIDE) -> np.ndarray:
    """An original (C, h, w) in [0, 1] as uint8 RGB (h', w', 3) with the same aspect ratio."""
    from PIL import Image
    rgb = _rgb(original)
    th, tw = thumb_size(rgb.shape[:2], max_side)
    if (th, tw) == rgb.shape[:2]:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((tw, th), Image.BILINEAR))


def outlined(original: np.ndarray, mask: np.ndarray | None, max_side: int = THUMB_SIDE,
             color=(0, 230, 255)) -> np.ndarray:
    """:func:`thumbnail` with the boundary of ``mask`` (bool (h, w) on the original) drawn on it."""
    from PIL import Image
    img = thumbnail(original, max_side)
    if mask is None:
        return img
    small = np.asarray(Image.fromarray(np.asarray(mask, np.uint8) * 255).resize(
        (img.shape[1], img.shape[0]), Image.NEAREST)) > 127
    edge = small & ~ndimage.binary_erosion(small, iterations=max(1, img.shape[1] // 160))
    out = img.copy()
    out[edge] = color
    return out


def model_view(x01: np.ndarray, roi: np.ndarray | None = None) -> np.ndarray:
    """A model input (C, H, W) in [0, 1] as uint8 RGB, the region of interest outlined when given."""
    return outlined(x01, roi, max_side=max(np.asarray(x01).shape[-2:]))
