"""Synthetic lung-ultrasound phantom: convex-probe B-mode images with ground-truth feature masks.

Three classes, each defined by one visible feature, and a mask of exactly that feature:

* ``regular``:   A-lines, bright horizontal reverberation arcs below the pleural line at multiples
  of the pleural depth (mask: the arcs).
* ``covid``:     B-lines, 1-4 bright radial comet tails from the pleural line to the bottom of the
  sector; A-lines are faded or gone (mask: the B-lines).
* ``pneumonia``: a subpleural consolidation, an irregular tissue-like region just below the
  pleural line with bright air-bronchogram dots; the pleural line is broken above it (mask: the
  region).

Every image shares the rest: a convex-probe sector (apex above the top edge, curved top and bottom
edges, black outside), subcutaneous tissue bands, a bright curved pleural line at 25-35 % depth,
speckle (smoothed complex Gaussian noise, Rayleigh magnitude), depth attenuation and a random gain.
Geometry, brightness, line counts/positions/widths and consolidation sizes vary from image to image.

Generation is vectorised numpy and deterministic by seed.  Images are made in chunks of
:data:`CHUNK` with one child generator each (``default_rng(seed).spawn``), so the first ``k`` images
of a set do not depend on how many are asked for: ``make_phantom(60, seed=s)`` equals the first 60
of ``make_phantom(300, seed=s)``.  Pixels inside the sector are never below ``FLOOR`` and pixels
outside are exactly 0, so :func:`sector_of` recovers the sector from any image.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from . import _validate as v
from .data import ImageData
from .errors import NnsensError

CLASSES = ("regular", "covid", "pneumonia")
CHUNK = 30  # images per child generator; a multiple of 1, 2 and 3 so every chunk is balanced
FLOOR = 2.0 / 255.0  # lowest grey inside the sector (survives 8-bit PNG round trips)
MAX_B_LINES = 4
MAX_BRONCHOGRAMS = 6
DEMO_SPLITS = {"train": (0, 900), "test": (1, 300), "val": (2, 300)}


@dataclass(frozen=True)
class PhantomConfig:
    """What :func:`make_phantom` generates: ``n`` images of ``size`` x ``size`` pixels."""
    n: int
    size: int = 64
    seed: int = 0
    classes: tuple[str, ...] = CLASSES
    channels: int = 3

    def __post_init__(self):
        v.positive("n", self.n, integer=True)
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 32:
            raise NnsensError(f"size={self.size!r} must be a whole number >= 32 (e.g. 64)")
        if self.size > 1024:
            raise NnsensError(f"size={self.size!r} is over 1024; use 64 to 512")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise NnsensError(f"seed={self.seed!r} must be a whole number >= 0")
        v.one_of("channels", self.channels, (1, 3))
        if isinstance(self.classes, str) or not isinstance(self.classes, tuple) or not self.classes:
            raise NnsensError(f"classes={self.classes!r} must be a non-empty tuple drawn from {CLASSES}")
        for c in self.classes:
            v.one_of("class", c, CLASSES)
        if len(set(self.classes)) != len(self.classes):
            raise NnsensError(f"classes={self.classes!r} names a class twice; list each once")


def make_phantom(n: int, size: int = 64, seed: int = 0, classes=CLASSES,
                 channels: int = 3) -> ImageData:
    """``n`` phantom images (n, C, size, size) float32 in [0, 1], balanced labels and masks.

    ``labels`` index ``classes``: every consecutive block of ``len(classes)`` images holds each
    class once, in shuffled order, so any prefix is balanced to within one image;
    ``masks`` (n, size, size) bool mark each image's class-defining feature; ``meta["sector"]``
    (n, size, size) bool is the imaging sector and ``meta["pleura_depth"]`` (n,) the pleural depth
    as a fraction of the sector depth (per-image arrays in ``meta`` are not re-indexed by
    ``ImageData.subset``; use :func:`sector_of` on a subset instead).
    """
    cfg = PhantomConfig(n=n, size=size, seed=seed, classes=tuple(classes), channels=channels)
    return generate(cfg)


def generate(cfg: PhantomConfig) -> ImageData:
    n_chunks = -(-cfg.n // CHUNK)
    rngs = np.random.default_rng(cfg.seed).spawn(n_chunks)
    parts = [_chunk(rng, CHUNK, cfg.size, cfg.classes) for rng in rngs]
    imgs, labels, masks, sector, depth = (np.concatenate([p[i] for p in parts])[:cfg.n]
                                          for i in range(5))
    imgs = np.repeat(imgs[:, None], cfg.channels, axis=1)
    return ImageData(imgs.astype(np.float32), labels.astype(np.int64), tuple(cfg.classes), masks,
                     name=f"lung-ultrasound phantom (seed {cfg.seed})",
                     meta={"sector": sector, "pleura_depth": depth.astype(np.float32),
                           "seed": cfg.seed, "size": cfg.size, "generator": "nnsens_core.phantom"})


def demo_images(split: str, n: int | None = None) -> ImageData:
    """The demo sets at 64 x 64, 3 channels: ``train`` (seed 0, 900 images), ``test`` (seed 1, 300)
    and ``val`` (seed 2, 300); ``n`` overrides the count (the first ``n`` of the same set)."""
    if split not in DEMO_SPLITS:
        raise NnsensError(f"split={split!r} is unknown; use one of {tuple(DEMO_SPLITS)}")
    seed, default_n = DEMO_SPLITS[split]
    data = make_phantom(default_n if n is None else n, size=64, seed=seed)
    return ImageData(data.images, data.labels, data.class_names, data.masks,
                     f"lung-ultrasound phantom ({split})", data.meta)


def sector_of(images: np.ndarray) -> np.ndarray:
    """The imaging sector (n, H, W) bool of phantom images (n, C, H, W): every non-black pixel."""
    images = np.asarray(images)
    v.check_images(images, what="images", arrays=True)
    return images.max(axis=1) > 0


# --------------------------------------------------------------------------- generation

def _u(rng, lo, hi, n):
    return rng.uniform(lo, hi, n)[:, None, None]


def _smooth_wave(rng, n, u, amp):
    """A smooth random function of the lateral coordinate ``u`` (n, H, W), amplitude ~``amp``."""
    out = np.zeros_like(u)
    for freq in (1.0, 2.3, 4.1):
        ph = _u(rng, 0, 2 * np.pi, n)
        a = _u(rng, 0.3, 1.0, n) / freq
        out += a * np.sin(freq * np.pi * u + ph)
    return amp * out


def _chunk(rng: np.random.Generator, n: int, S: int, classes: tuple[str, ...]):
    k = len(classes)
    labels = np.argsort(rng.random((n // k, k)), axis=1).reshape(-1)  # each block of k: all classes
    kind = np.array([CLASSES.index(c) for c in classes])[labels]  # 0 regular, 1 covid, 2 pneumonia
    is_reg, is_cov, is_pne = ((kind == i)[:, None, None] for i in range(3))

    # ---- geometry: apex above the top edge, everything in units of the image height
    apex_y = _u(rng, -0.42, -0.28, n)
    apex_x = 0.5 + _u(rng, -0.02, 0.02, n)
    r_min = -apex_y + _u(rng, 0.01, 0.04, n)
    r_max = -apex_y + _u(rng, 0.93, 0.98, n)
    half = np.deg2rad(_u(rng, 24.0, 31.0, n))
    yy, xx = np.meshgrid((np.arange(S) + 0.5) / S, (np.arange(S) + 0.5) / S, indexing="ij")
    dy, dx = yy[None] - apex_y, xx[None] - apex_x
    r = np.hypot(dx, dy)
    theta = np.arctan2(dx, dy)
    sector = (r >= r_min) & (r <= r_max) & (np.abs(theta) <= half)
    span = r_max - r_min
    d = (r - r_min) / span           # depth, 0 at the skin, 1 at the bottom of the sector
    u = theta / half                 # lateral position, -1 .. 1 across the fan
    px_d = span * S                  # pixels per unit depth
    lat_px = r * S                   # pixels per radian at each point

    # ---- pleural line: bright, thin, slightly wavy arc at 25-35 % depth
    d_p = _u(rng, 0.25, 0.35, n)
    d_pl = d_p + _smooth_wave(rng, n, u, 0.008)
    below = 1.0 / (1.0 + np.exp(-(d - d_pl) * px_d / 0.6))  # soft 0/1: lung side of the pleura

    # ---- subcutaneous tissue: mid-grey with a few bright bands
    tissue = _u(rng, 0.16, 0.26, n) * (1 - below)
    for _ in range(3):
        depth = _u(rng, 0.06, 1.0, n) * (d_p - 0.08) + 0.04
        w = _u(rng, 0.6, 1.4, n)
        amp = _u(rng, 0.08, 0.3, n)
        band_d = depth + _smooth_wave(rng, n, u, 0.01)
        tissue = tissue + amp * np.exp(-0.5 * ((d - band_d) * px_d / w) ** 2) * (1 - below)

    # ---- lung: dark air with faint texture
    lung = _u(rng, 0.06, 0.14, n) * below

    # ---- consolidation (pneumonia): lateral window and irregular region below the pleura
    u_c = _u(rng, -0.45, 0.45, n)
    hw = _u(rng, 0.25, 0.45, n)
    depth_c = _u(rng, 0.18, 0.34, n)
    lat = (u - u_c) / hw
    inside_lat = np.clip(1 - lat ** 2, 0, None)
    deep = d_pl + depth_c * np.sqrt(inside_lat) * (1 + _smooth_wave(rng, n, u * 3, 0.12))
    consol = (np.abs(lat) < 1) & (d > d_pl + 0.5 / px_d) & (d < deep) & sector & is_pne
    consol_soft = gaussian_filter(consol.astype(np.float64), (0, 0.7, 0.7))
    pleura_gap = is_pne * np.exp(-0.5 * (lat / 0.6) ** 6)  # where the pleural line is broken

    # ---- pleural line intensity
    w_pl = _u(rng, 0.7, 1.1, n)
    pleura = _u(rng, 0.8, 1.0, n) * np.exp(-0.5 * ((d - d_pl) * px_d / w_pl) ** 2)
    pleura = pleura * (1 - 0.85 * pleura_gap)

    # ---- A-lines at 2x and 3x the pleural depth (constant-depth arcs)
    a_amp = np.where(is_reg, _u(rng, 0.55, 0.9, n),
                     np.where(is_cov, _u(rng, 0.0, 0.2, n), _u(rng, 0.1, 0.45, n)))
    a_prof = np.zeros_like(d)
    a_lines = np.zeros_like(d)
    w_a = _u(rng, 0.8, 1.3, n)
    for m, decay in ((2, 1.0), (3, 0.7)):
        prof = np.exp(-0.5 * ((d - m * d_p) * px_d / w_a) ** 2) * (m * d_p < 0.97)
        a_prof = np.maximum(a_prof, prof)
        a_lines = a_lines + decay * prof
    a_lines = a_amp * a_lines * below * (1 - is_pne * (consol_soft > 0.05))

    # ---- B-lines (covid): radial comet tails from the pleura to the bottom of the sector
    n_b = rng.integers(1, MAX_B_LINES + 1, n)
    b_prof = np.zeros_like(d)
    b_lines = np.zeros_like(d)
    for j in range(MAX_B_LINES):
        on = (j < n_b)[:, None, None] & is_cov
        th_b = _u(rng, -0.8, 0.8, n) * half
        sig = _u(rng, 0.7, 1.6, n)  # pixels
        prof = np.exp(-0.5 * ((theta - th_b) * lat_px / sig) ** 2) * on
        b_prof = np.maximum(b_prof, prof)
        amp = _u(rng, 0.65, 1.0, n) * (1 - _u(rng, 0.0, 0.35, n) * d)
        b_lines = np.maximum(b_lines, amp * prof)
    b_lines = b_lines * below

    # ---- echogenicity map
    cons_echo = _u(rng, 0.28, 0.42, n) * consol_soft
    echo = tissue + lung * (1 - consol_soft) + pleura + a_lines + b_lines + cons_echo
    n_dots = rng.integers(3, MAX_BRONCHOGRAMS + 1, n)
    for j in range(MAX_BRONCHOGRAMS):
        # a dot at a random point of the consolidation: pick lateral then depth inside the region
        lu = u_c + _u(rng, -0.7, 0.7, n) * hw
        frac = _u(rng, 0.15, 0.75, n)
        lat_j = (lu - u_c) / hw
        dd = d_p + frac * depth_c * np.sqrt(np.clip(1 - lat_j ** 2, 0, None))
        tj = lu * half
        ry = (d - dd) * px_d
        rx = (theta - tj) * lat_px
        on = (j < n_dots)[:, None, None] & is_pne
        echo = echo + on * _u(rng, 0.5, 0.9, n) * np.exp(-0.5 * ((ry / 0.8) ** 2 + (rx / 1.0) ** 2)) \
            * consol_soft

    # ---- speckle: smoothed complex Gaussian -> Rayleigh magnitude, mean 1
    re = gaussian_filter(rng.standard_normal((n, S, S)), (0, 0.5, 0.9))
    im = gaussian_filter(rng.standard_normal((n, S, S)), (0, 0.5, 0.9))
    speckle = np.hypot(re, im)
    speckle /= speckle.mean(axis=(1, 2), keepdims=True)
    speckle = 0.35 + 0.65 * speckle  # partly developed speckle: keeps the features legible

    atten = np.exp(-_u(rng, 0.2, 0.7, n) * d)
    gain = _u(rng, 0.85, 1.2, n)
    img = echo * speckle * atten * gain + 0.015 * rng.standard_normal((n, S, S))
    img = np.clip(img, FLOOR, 1.0) * sector

    masks = np.where(is_reg, (a_prof > 0.5) & (d > d_pl + 1.0 / px_d),
                     np.where(is_cov, (b_prof > 0.5) & (d > d_pl + 1.0 / px_d), consol)) & sector
    if not masks.reshape(n, -1).any(axis=1).all():  # cannot happen with the ranges above
        raise NnsensError("a phantom mask came out empty; report this seed as a bug")
    return img, labels, masks, sector, d_p[:, 0, 0]
