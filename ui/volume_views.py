"""Slice viewer of 3-D volumes (and 2-D images) with a map overlay and the atlas outline.

Pure rendering helpers (arrays in, RGB ``uint8`` out: :func:`slice_of`, :func:`gray`,
:func:`colourize`, :func:`blend`, :func:`outline_of`, :func:`render_slice`, :func:`render`) are
Streamlit-free and unit-tested; :func:`viewer` and :func:`side_by_side` draw them with ``st.image``
(PIL pictures, enlarged nearest-neighbour so 48-voxel slices stay crisp).

Axes of a volume ``(C, D, H, W)`` (or ``(D, H, W)``): **axial** = a slice across D (an ``H x W``
picture), **coronal** = across H (``D x W``), **sagittal** = across W (``D x H``); coronal and
sagittal pictures show D upwards (row 0 at the bottom).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

AXES = ("axial", "coronal", "sagittal")
CMAPS = ("hot", "jet", "viridis", "red")
OUTLINE_COLOUR = (0, 255, 255)
CROSS_COLOUR = (0, 200, 0)

# piecewise-linear colour maps: (positions, R, G, B) in [0, 1]
_LUTS = {
    "hot": ((0, .375, .75, 1), (0, 1, 1, 1), (0, 0, 1, 1), (0, 0, 0, 1)),
    "jet": ((0, .125, .375, .625, .875, 1), (0, 0, 0, 1, 1, .5), (0, 0, 1, 1, 0, 0),
            (.5, 1, 1, 0, 0, 0)),
    "viridis": ((0, .25, .5, .75, 1), (.267, .229, .128, .369, .993), (.005, .322, .567, .789, .906),
                (.329, .546, .551, .383, .144)),
    "red": ((0, 1), (0, 1), (0, 0), (0, 0)),
}


def axis_index(axis: str) -> int:
    if axis not in AXES:
        raise ValueError(f"axis={axis!r} must be one of {AXES}")
    return AXES.index(axis)


def slice_of(volume: np.ndarray, axis: str, index: int) -> np.ndarray:
    """One slice of ``volume`` (C, D, H, W) or (D, H, W): ``(C, rows, cols)`` / ``(rows, cols)``.

    axial -> (H, W); coronal -> (D, W) and sagittal -> (D, H), both flipped so D points up.
    ``index`` is clipped to the axis."""
    a = np.asarray(volume)
    lead = a.ndim - 3
    if lead not in (0, 1):
        raise ValueError(f"a volume is (C, D, H, W) or (D, H, W); got shape {a.shape}")
    k = axis_index(axis)
    n = a.shape[lead + k]
    s = np.take(a, int(np.clip(index, 0, n - 1)), axis=lead + k)
    return s if k == 0 else np.flip(s, axis=-2)


def gray(img: np.ndarray) -> np.ndarray:
    """(C, rows, cols) with C in {1, 3} or (rows, cols), values in [0, 1] -> (rows, cols, 3) uint8."""
    a = np.asarray(img, dtype=np.float32)
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else a[:3].transpose(1, 2, 0)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return (np.clip(np.nan_to_num(a), 0, 1) * 255).round().astype(np.uint8)


def colourize(values: np.ndarray, cmap: str = "hot", vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """(rows, cols) values -> (rows, cols, 3) float RGB in [0, 1] through ``cmap``, values scaled
    from [vmin, vmax] to [0, 1] (clipped)."""
    if cmap not in _LUTS:
        raise ValueError(f"cmap={cmap!r} must be one of {CMAPS}")
    t = (np.asarray(values, dtype=np.float64) - vmin) / max(vmax - vmin, 1e-12)
    t = np.clip(np.nan_to_num(t), 0, 1)
    pos, *rgb = _LUTS[cmap]
    return np.stack([np.interp(t, pos, c) for c in rgb], axis=-1)


def blend(base: np.ndarray, values: np.ndarray, alpha: float = 0.5, cmap: str = "hot",
          vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """``base`` (rows, cols, 3) uint8 with ``values`` (rows, cols) coloured by ``cmap`` on top:
    ``(1 - alpha) * base + alpha * colour`` (alpha 0: the base; 1: the colour alone)."""
    a = float(np.clip(alpha, 0, 1))
    col = colourize(values, cmap, vmin, vmax) * 255
    return np.clip((1 - a) * np.asarray(base, np.float64) + a * col, 0, 255).round().astype(np.uint8)


def outline_of(labels: np.ndarray) -> np.ndarray:
    """Boundary voxels of an integer label array (any dimension): a labelled voxel (!= 0) with a
    face neighbour (inside the array) of another label. Returns a bool array of the same shape."""
    lab = np.asarray(labels)
    out = np.zeros(lab.shape, dtype=bool)
    for ax in range(lab.ndim):
        n = lab.shape[ax]
        if n < 2:
            continue
        a = np.take(lab, np.arange(n - 1), axis=ax)
        b = np.take(lab, np.arange(1, n), axis=ax)
        diff = a != b
        lo = [slice(None)] * lab.ndim
        hi = [slice(None)] * lab.ndim
        lo[ax], hi[ax] = slice(0, n - 1), slice(1, n)
        out[tuple(lo)] |= diff
        out[tuple(hi)] |= diff
    return out & (lab != 0)


def upscale(rgb: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer ``factor``."""
    f = max(1, int(factor))
    return np.repeat(np.repeat(rgb, f, axis=0), f, axis=1)


def scale_for(shape: Sequence[int], target: int = 240) -> int:
    """The integer enlargement that brings the largest side near ``target`` pixels (at least 1)."""
    return max(1, int(round(target / max(max(shape), 1))))


def compose(img: np.ndarray, values: np.ndarray | None = None, labels: np.ndarray | None = None, *,
            alpha: float = 0.5, cmap: str = "hot", vmin: float = 0.0, vmax: float = 1.0,
            scale: int = 1, cross: tuple[int, int] | None = None) -> np.ndarray:
    """One 2-D picture: ``img`` (C, rows, cols) / (rows, cols) in grey (or RGB), ``values``
    (rows, cols) blended on top, the ``labels`` outline painted, enlarged ``scale`` times; ``cross``
    (row, col) draws a crosshair (the other slices' positions)."""
    rgb = gray(img)
    if values is not None:
        v = np.asarray(values)
        if v.shape != rgb.shape[:2]:
            raise ValueError(f"the overlay has shape {v.shape}, the picture {rgb.shape[:2]}")
        rgb = blend(rgb, v, alpha, cmap, vmin, vmax)
    if labels is not None:
        edge = outline_of(labels)
        rgb = rgb.copy()
        rgb[edge] = OUTLINE_COLOUR
    rgb = upscale(rgb, scale)
    if cross is not None:
        r, c = (int(cross[0]) * scale + scale // 2, int(cross[1]) * scale + scale // 2)
        rgb = rgb.copy()
        if 0 <= r < rgb.shape[0]:
            rgb[r, ::2] = CROSS_COLOUR
        if 0 <= c < rgb.shape[1]:
            rgb[::2, c] = CROSS_COLOUR
    return rgb


def render_slice(volume: np.ndarray, axis: str, index: int, values: np.ndarray | None = None,
                 atlas: np.ndarray | None = None, *, alpha: float = 0.5, cmap: str = "hot",
                 vmin: float = 0.0, vmax: float = 1.0, scale: int = 1,
                 point: Sequence[int] | None = None) -> np.ndarray:
    """Slice ``index`` along ``axis`` of ``volume`` (C, D, H, W) with the same slice of ``values``
    (D, H, W) and of the integer ``atlas`` (D, H, W) -> RGB uint8; ``point`` (d, h, w) draws the
    crosshair of the voxel shown by the other two slices."""
    img = slice_of(volume, axis, index)
    v = None if values is None else slice_of(values, axis, index)
    lab = None if atlas is None else slice_of(atlas, axis, index)
    cross = None
    if point is not None:
        d, h, w = (int(p) for p in point)
        D = np.asarray(volume).shape[-3]
        cross = {"axial": (h, w), "coronal": (D - 1 - d, w), "sagittal": (D - 1 - d, h)}[axis]
    return compose(img, v, lab, alpha=alpha, cmap=cmap, vmin=vmin, vmax=vmax, scale=scale, cross=cross)


def render(x: np.ndarray, values: np.ndarray | None = None, atlas: np.ndarray | None = None, *,
           point: Sequence[int] | None = None, crosshair: bool = False, target: int = 240,
           **kw) -> dict[str, np.ndarray]:
    """Every view of one input: ``{"axial", "coronal", "sagittal"}`` pictures of a volume
    (C, D, H, W) at ``point`` (d, h, w; default: the centre), or ``{"image": ...}`` of a 2-D image
    (C, H, W) with ``values`` (H, W) on top. ``target``: about how many pixels the largest side
    becomes; other keywords go to :func:`compose`."""
    a = np.asarray(x)
    if a.ndim == 3:  # 2-D image (C, H, W)
        return {"image": compose(a, values, atlas, scale=scale_for(a.shape[1:], target), **kw)}
    D, H, W = a.shape[1:]
    point = tuple(point) if point is not None else (D // 2, H // 2, W // 2)
    s = scale_for((D, H, W), target)
    return {ax: render_slice(a, ax, point[k], values, atlas, scale=s,
                             point=point if crosshair else None, **kw)
            for k, ax in enumerate(AXES)}


def voxel_readout(point: Sequence[int], values: np.ndarray | None = None, atlas=None) -> str:
    """What lies at voxel ``point`` (d, h, w): the map's value and the atlas region's name."""
    d, h, w = (int(p) for p in point)
    parts = [f"voxel (d={d}, h={h}, w={w})"]
    if values is not None:
        parts.append(f"map {float(np.asarray(values)[d, h, w]):.3f}")
    if atlas is not None:
        lab = int(np.asarray(atlas.labels)[d, h, w])
        parts.append("background" if lab == 0 else f"region {atlas.name_of(lab)}")
    return " · ".join(parts)


# ----------------------------------------------------------------------------- Streamlit

def _controls(where, key: str, shape: Sequence[int], with_atlas: bool, show_map: bool):
    c = where.columns(4 if len(shape) == 3 else 3)
    alpha = c[0].slider("Map opacity", 0.0, 1.0, 0.5, 0.05, key=f"{key}_alpha", disabled=not show_map)
    cmap = c[1].selectbox("Colour map", CMAPS, key=f"{key}_cmap", disabled=not show_map)
    atlas_on = c[2].checkbox("Atlas outline", value=False, key=f"{key}_atlas", disabled=not with_atlas,
                             help="Region boundaries of the atlas (needs data with an atlas).")
    cross = c[3].checkbox("Crosshair", value=False, key=f"{key}_cross") if len(shape) == 3 else False
    return alpha, cmap, atlas_on and with_atlas, cross


def _image(where, rgb: np.ndarray, caption: str) -> None:
    from PIL import Image
    where.image(Image.fromarray(rgb), caption=caption)


def viewer(where, x: np.ndarray, values: np.ndarray | None = None, atlas=None, *, key: str,
           label: str = "map", vmin: float = 0.0, vmax: float = 1.0) -> None:
    """Three orthogonal slices of a volume ``x`` (C, D, H, W) with slice sliders, ``values``
    (D, H, W) as an overlay (colour map + opacity), the ``atlas`` (an :class:`Atlas`) outline on
    demand and the region under the crosshair; a 2-D image (C, H, W) is shown whole with its
    overlay (H, W). Widget keys start with ``key``."""
    a = np.asarray(x)
    shape = a.shape[1:]
    labels = None if atlas is None else np.asarray(atlas.labels)
    alpha, cmap, atlas_on, cross = _controls(where, key, shape, labels is not None, values is not None)
    kw = dict(alpha=alpha, cmap=cmap, vmin=vmin, vmax=vmax)
    if len(shape) == 2:
        pics = render(a, values, labels if atlas_on else None, **kw)
        _image(where, pics["image"], label)
        return
    s = where.columns(3)
    point = tuple(int(s[k].slider(f"{ax.capitalize()} slice ({'DHW'[k]})", 0, n - 1, n // 2,
                                  key=f"{key}_{ax}"))
                  for k, (ax, n) in enumerate(zip(AXES, shape)))
    pics = render(a, values, labels if atlas_on else None, point=point, crosshair=cross, **kw)
    cols = where.columns(3)
    for k, ax in enumerate(AXES):
        _image(cols[k], pics[ax], f"{ax} {point[k]}")
    where.caption(voxel_readout(point, values, atlas))


def side_by_side(where, x: np.ndarray, maps: Mapping[str, np.ndarray], atlas=None, *, key: str,
                 per_row: int = 4, vmin: float = 0.0, vmax: float = 1.0) -> None:
    """Several maps (``{caption: (D, H, W) or (H, W)}``: the masks of runs / folds / grid cells) over
    the same input ``x``, all at the same slice (one axis selector and one slider for every
    picture)."""
    a = np.asarray(x)
    shape = a.shape[1:]
    labels = None if atlas is None else np.asarray(atlas.labels)
    alpha, cmap, atlas_on, _ = _controls(where, key, (0, 0), labels is not None, True)
    kw = dict(alpha=alpha, cmap=cmap, vmin=vmin, vmax=vmax)
    lab = labels if atlas_on else None
    if len(shape) == 3:
        c1, c2 = where.columns([1, 3])
        axis = c1.selectbox("Slice axis", AXES, key=f"{key}_axis")
        n = shape[AXES.index(axis)]
        index = int(c2.slider("Slice", 0, n - 1, n // 2, key=f"{key}_index_{axis}"))
        s = scale_for(shape, 160)
        pics = {name: render_slice(a, axis, index, m, lab, scale=s, **kw) for name, m in maps.items()}
    else:
        pics = {name: compose(a, m, None, scale=scale_for(shape, 160), **kw) for name, m in maps.items()}
    items = list(pics.items())
    for start in range(0, len(items), per_row):
        cols = where.columns(per_row)
        for col, (name, rgb) in zip(cols, items[start:start + per_row]):
            _image(col, rgb, name)
