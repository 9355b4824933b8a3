"""How an image of any size becomes a model's input, and how a map at the model's input goes back
onto the original image.

A :class:`Recipe` is part of a model (its input size H × W, channels, resize policy and
normalisation; :meth:`Recipe.from_spec`). The dataset keeps every image at its own size; each model
gets its input through its own recipe, so one upload serves models of different sizes.

Resize policies (:data:`RESIZE_POLICIES`):

* ``letterbox``: scale the whole image to fit inside H × W keeping its aspect ratio, centred, the
  rest padded with black. Nothing is cut away; maps are cropped back from the padding.
* ``crop``: scale so the image covers H × W keeping its aspect ratio, then cut the centre. The parts
  cut away are never seen by the model: their maps are NaN (not computed).
* ``stretch``: scale each side to H and W independently (the aspect ratio changes).

A :class:`Placement` records, for one image, where its content lies in the model input (``box``)
and which part of the original the model sees (``crop``), so :func:`map_to_original` is exact
bookkeeping, not a guess.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import NnsensError

RESIZE_POLICIES = {
    "letterbox": "letterbox: keep the aspect ratio, pad with black (nothing is cut away)",
    "crop": "centre crop: keep the aspect ratio, cut the sides that do not fit",
    "stretch": "stretch: scale width and height independently (changes the aspect ratio)",
}


@dataclass(frozen=True)
class Recipe:
    """A model's preprocessing: resize to ``size`` (H, W) by ``resize``, convert to ``channels``
    (1 = luminance, 3 = RGB; grey images are repeated), then normalise ``(x - mean) / std`` per
    channel (empty = no normalisation; the normalisation itself is applied by the model's spec)."""
    size: tuple[int, int]
    channels: int = 3
    resize: str = "letterbox"
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __post_init__(self):
        size = tuple(int(s) for s in self.size)
        if len(size) != 2 or min(size) < 1:
            raise NnsensError(f"size={self.size!r} must be (height, width) in pixels, both >= 1")
        object.__setattr__(self, "size", size)
        if self.channels not in (1, 3):
            raise NnsensError(f"channels={self.channels!r} must be 1 (grey) or 3 (RGB)")
        if self.resize not in RESIZE_POLICIES:
            raise NnsensError(f"resize={self.resize!r} is unknown; use one of {list(RESIZE_POLICIES)}")
        for nm, v in (("mean", self.mean), ("std", self.std)):
            if v and len(v) != self.channels:
                raise NnsensError(f"{nm}={v} must have one value per channel ({self.channels})")
        if any(s <= 0 for s in self.std):
            raise NnsensError(f"std={self.std} must be > 0")

    @classmethod
    def from_spec(cls, spec) -> "Recipe":
        """The recipe of a 2-D image model (:class:`~nnsens_core.zoo.ModelSpec`)."""
        if len(spec.input_shape) != 3:
            raise NnsensError(f"the model takes inputs of shape {tuple(spec.input_shape)}; a recipe "
                              "describes 2-D image models (C, H, W)")
        c, h, w = (int(s) for s in spec.input_shape)
        return cls((h, w), c, getattr(spec, "resize", "letterbox"), tuple(spec.mean), tuple(spec.std))

    def describe(self) -> str:
        """One line for the page: ``128×128 px, 1 channel (grey), letterbox, mean 0.5 / std 0.25``."""
        norm = ("no normalisation (inputs in [0, 1])" if not self.mean else
                "mean " + "/".join(f"{m:g}" for m in self.mean) + ", std "
                + "/".join(f"{s:g}" for s in self.std))
        ch = "1 channel (grey)" if self.channels == 1 else "3 channels (RGB)"
        return f"{self.size[0]}×{self.size[1]} px, {ch}, {RESIZE_POLICIES[self.resize].split(':')[0]}, {norm}"


@dataclass(frozen=True)
class Placement:
    """Where one original image sits in a model input.

    ``original``: (h, w) of the original; ``crop``: (top, left, height, width) of the part of the
    original the model sees (the whole image except for the ``crop`` policy), in original pixels;
    ``box``: (top, left, height, width) of that part in model-input pixels (smaller than the input
    for ``letterbox``: the rest is padding)."""
    original: tuple[int, int]
    crop: tuple[int, int, int, int]
    box: tuple[int, int, int, int]
    size: tuple[int, int]

    def to_dict(self) -> dict:
        return {"original": list(self.original), "crop": list(self.crop), "box": list(self.box),
                "size": list(self.size)}


def placement(original: tuple[int, int], recipe: Recipe) -> Placement:
    """The :class:`Placement` of an ``original`` (h, w) image under ``recipe``."""
    h, w = (int(s) for s in original)
    H, W = recipe.size
    if recipe.resize == "stretch":
        return Placement((h, w), (0, 0, h, w), (0, 0, H, W), (H, W))
    if recipe.resize == "letterbox":
        s = min(H / h, W / w)
        bh, bw = max(1, min(H, round(h * s))), max(1, min(W, round(w * s)))
        return Placement((h, w), (0, 0, h, w), ((H - bh) // 2, (W - bw) // 2, bh, bw), (H, W))
    s = max(H / h, W / w)  # crop: the original region that maps onto the whole input
    ch, cw = max(1, min(h, round(H / s))), max(1, min(w, round(W / s)))
    return Placement((h, w), ((h - ch) // 2, (w - cw) // 2, ch, cw), (0, 0, H, W), (H, W))


def _resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C, h, w) float32 -> (C, H, W), antialiased bilinear per channel (Pillow, float mode)."""
    from PIL import Image
    if a.shape[1:] == tuple(size):
        return a.astype(np.float32, copy=True)
    out = [np.asarray(Image.fromarray(ch.astype(np.float32), mode="F").resize(
        (size[1], size[0]), Image.BILINEAR), np.float32) for ch in a]
    return np.stack(out)


def convert_channels(a: np.ndarray, channels: int) -> np.ndarray:
    """(C, h, w) with C in {1, 3} -> ``channels``: grey repeated to RGB, RGB to luminance (ITU-R
    601: 0.299 R + 0.587 G + 0.114 B, as Pillow's ``convert("L")``)."""
    c = a.shape[0]
    if c == channels:
        return a
    if c == 1 and channels == 3:
        return np.repeat(a, 3, axis=0)
    if c == 3 and channels == 1:
        return (0.299 * a[0] + 0.587 * a[1] + 0.114 * a[2])[None].astype(np.float32)
    raise NnsensError(f"an image with {c} channels cannot become {channels}; use 1 or 3 channels")


def to_model(image: np.ndarray, recipe: Recipe) -> tuple[np.ndarray, Placement]:
    """One original (C, h, w) float in [0, 1] -> the model's input in [0, 1] (channels, H, W) and
    its :class:`Placement` (normalisation is left to the model's spec)."""
    a = np.asarray(image, np.float32)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[0] not in (1, 3):
        raise NnsensError(f"an image of shape {a.shape}; expected (C, H, W) with C = 1 or 3")
    a = convert_channels(a, recipe.channels)
    p = placement(a.shape[1:], recipe)
    t, l, ch, cw = p.crop
    bt, bl, bh, bw = p.box
    out = np.zeros((recipe.channels, *recipe.size), np.float32)
    out[:, bt:bt + bh, bl:bl + bw] = _resize(a[:, t:t + ch, l:l + cw], (bh, bw))
    return np.clip(out, 0.0, 1.0), p


def prepare(images: Sequence[np.ndarray], recipe: Recipe) -> tuple[np.ndarray, tuple[Placement, ...]]:
    """Many originals (each (C, h, w), any sizes) -> (N, channels, H, W) float32 and their placements."""
    if not len(images):
        raise NnsensError("no images to prepare; give at least one")
    pairs = [to_model(im, recipe) for im in images]
    return np.stack([a for a, _ in pairs]), tuple(p for _, p in pairs)


def map_to_original(m: np.ndarray, p: Placement) -> np.ndarray:
    """A map at the model's input (..., H, W) -> the original's pixels (..., h, w): the part that
    covers the image (``box``) is resized (bilinear) onto the part of the original the model saw
    (``crop``); pixels the model never saw are NaN. Padding is dropped."""
    m = np.asarray(m, np.float32)
    if tuple(m.shape[-2:]) != tuple(p.size):
        raise NnsensError(f"the map is {m.shape[-2]}×{m.shape[-1]} but the model input is "
                          f"{p.size[0]}×{p.size[1]}; pass maps at the model's input size")
    lead = m.shape[:-2]
    flat = m.reshape(-1, *m.shape[-2:])
    bt, bl, bh, bw = p.box
    t, l, ch, cw = p.crop
    part = _resize(np.nan_to_num(flat[:, bt:bt + bh, bl:bl + bw]), (ch, cw))
    out = np.full((flat.shape[0], *p.original), np.nan, np.float32)
    out[:, t:t + ch, l:l + cw] = part
    return out.reshape(*lead, *p.original)


def mask_to_model(mask: np.ndarray, p: Placement) -> np.ndarray:
    """A boolean mask on the original (h, w) -> the model input (H, W) (nearest; padding False)."""
    mask = np.asarray(mask, bool)
    if mask.shape != tuple(p.original):
        raise NnsensError(f"the mask is {mask.shape} but the image is {p.original}")
    from PIL import Image
    t, l, ch, cw = p.crop
    bt, bl, bh, bw = p.box
    part = Image.fromarray(mask[t:t + ch, l:l + cw].astype(np.uint8) * 255).resize((bw, bh), Image.NEAREST)
    out = np.zeros(p.size, bool)
    out[bt:bt + bh, bl:bl + bw] = np.asarray(part) > 127
    return out
