"""Middle slices of 3-D volumes as RGB images, for a quick look at volume datasets (the Robustness
page has the full three-view viewer)."""
from __future__ import annotations

import numpy as np

from .volume_views import AXES as VIEWS
from .volume_views import gray, slice_of

AXES = ("D", "H", "W")
"""The spatial axes of a (C, D, H, W) volume, as stored in its file (nothing is reoriented)."""


def middle_slice(vol, axis: int = 0, mask=None, alpha: float = 0.35,
                 colour: tuple[int, int, int] = (255, 0, 0)) -> np.ndarray:
    """The middle slice of ``vol`` (C, D, H, W) (or (D, H, W)) in [0, 1] across spatial ``axis``
    (0 = D, 1 = H, 2 = W) as an RGB uint8 image oriented as in the Robustness page's viewer
    (:func:`ui.volume_views.slice_of`: axial, coronal, sagittal; D points up): 1 channel is shown
    grey, 3 as RGB, any other count by its first channel. ``mask`` (D, H, W) tints the voxels where it is > 0 with
    ``colour`` (weight ``alpha``); the rest of the slice is left as it is."""
    v = np.asarray(vol, dtype=np.float32)
    if v.ndim == 3:
        v = v[None]
    if v.ndim != 4:
        raise ValueError(f"a volume is (C, D, H, W) or (D, H, W); got shape {v.shape}")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis={axis!r} must be 0 (D), 1 (H) or 2 (W)")
    view, k = VIEWS[axis], v.shape[1 + axis] // 2
    rgb = gray(slice_of(v, view, k)).astype(np.float32)  # the viewer's orientation: D points up
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != v.shape[1:]:
            raise ValueError(f"the mask has shape {m.shape}; the volume's spatial shape is "
                             f"{v.shape[1:]}")
        on = slice_of(m, view, k) > 0
        rgb[on] = rgb[on] * (1 - alpha) + np.asarray(colour, np.float32) * alpha
    return np.rint(rgb).astype(np.uint8)


def slice_index(vol, axis: int) -> int:
    """The index :func:`middle_slice` shows along spatial ``axis`` of ``vol`` (C, D, H, W)."""
    return int(np.asarray(vol).shape[-3 + axis]) // 2
