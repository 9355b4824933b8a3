"""Synthetic brain phantom: grey-matter-density volumes of controls and "AD" patients, an atlas of
named regions and ground-truth masks of the regions the disease affects.

A stand-in for the 3-D grey-matter MRI maps of Thibeau-Sutre et al. (Alzheimer's disease vs
cognitively normal controls), small enough to train a 3-D CNN on one CPU thread in minutes.

* **Template**: a brain-shaped ellipsoid in a ``size``\\ :sup:`3` grid (axes D = inferior ->
  superior, H = posterior -> anterior, W = left -> right), split into :data:`REGIONS` (lobes per
  hemisphere, cerebellum, hippocampi, thalami, ventricles: labels 1..14, 0 = background). Grey-
  matter density is high in a folded cortical ribbon, the deep nuclei and the cerebellum, low in
  the white matter and near zero in the ventricles; region edges are smooth.
* **Subjects** vary in global intensity (x 0.85 - 1.15), in every region's density (+- 6 %), in a
  random "nuisance" atrophy of one non-affected lobe (0 - 25 %, both classes), in ageing of the
  affected regions (controls 0 - 8 %), in smooth low-frequency noise and voxel noise, and are
  shifted by up to one voxel along each axis (imperfect registration).
* **Patients** (``AD``) lose 18 - 45 % of their density in :data:`AFFECTED_REGIONS`
  (hippocampi and temporal lobes), each region by its own fraction of the subject's severity.
  ``masks`` are the union of the affected regions (shifted with the subject) for patients and
  empty for controls; :func:`atlas` gives the template's regions.

Deterministic by seed, generated in chunks of :data:`CHUNK` volumes with one child generator each
(``default_rng(seed).spawn``) and balanced within every pair, so the first ``k`` volumes of a set
do not depend on how many are asked for and any prefix is balanced to within one volume.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.ndimage import gaussian_filter

from . import _validate as v
from .data import ImageData
from .errors import NnsensError
from .volumes import Atlas

CLASSES = ("control", "AD")
REGIONS = {1: "left frontal", 2: "right frontal", 3: "left parietal", 4: "right parietal",
           5: "left temporal", 6: "right temporal", 7: "left occipital", 8: "right occipital",
           9: "cerebellum", 10: "left hippocampus", 11: "right hippocampus", 12: "left thalamus",
           13: "right thalamus", 14: "ventricles"}
AFFECTED_REGIONS = ("left hippocampus", "right hippocampus", "left temporal", "right temporal")
LOBES = (1, 2, 3, 4, 7, 8)  # nuisance atrophy candidates: cortex the disease spares
CHUNK = 16  # volumes per child generator (even: every chunk is balanced)
DEMO_SPLITS = {"train": (0, 320), "test": (1, 160), "val": (2, 96)}
_NOISE_GRID = 6  # low-frequency noise is drawn on a 6^3 grid and upsampled


@dataclass(frozen=True)
class BrainPhantomConfig:
    """What :func:`generate` makes: ``n`` volumes of ``size``\\ :sup:`3` voxels, 1 channel."""
    n: int
    size: int = 48
    seed: int = 0
    severity: tuple[float, float] = (0.18, 0.45)
    noise: float = 0.04

    def __post_init__(self):
        v.positive("n", self.n, integer=True)
        if not isinstance(self.size, int) or isinstance(self.size, bool) or not 24 <= self.size <= 128:
            raise NnsensError(f"size={self.size!r} must be a whole number in [24, 128] (e.g. 48)")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise NnsensError(f"seed={self.seed!r} must be a whole number >= 0")
        lo, hi = self.severity
        v.in_range("severity[0]", lo, 0.0, 1.0)
        v.in_range("severity[1]", hi, lo, 1.0)
        v.in_range("noise", self.noise, 0.0, 0.5)


def make_brain_phantom(n: int, size: int = 48, seed: int = 0, **kwargs) -> ImageData:
    """``n`` volumes (n, 1, size, size, size); see :func:`generate`."""
    return generate(BrainPhantomConfig(n=n, size=size, seed=seed, **kwargs))


def generate(cfg: BrainPhantomConfig) -> ImageData:
    """Volumes (n, 1, S, S, S) float32 in [0, 1], labels (0 control, 1 AD), ground-truth masks
    (n, S, S, S) (the affected regions of patients, empty for controls), the :func:`atlas`, and
    ``meta``: ``severity`` (n,) (0 for controls), ``shift`` (n, 3) voxels, ``brain`` (S, S, S)."""
    tpl = _template(cfg.size)
    n_chunks = -(-cfg.n // CHUNK)
    rngs = np.random.default_rng(cfg.seed).spawn(n_chunks)
    parts = [_chunk(rng, CHUNK, tpl, cfg) for rng in rngs]
    vols, labels, masks, severity, shift = (np.concatenate([p[i] for p in parts])[:cfg.n]
                                            for i in range(5))
    return ImageData(vols[:, None], labels.astype(np.int64), CLASSES, masks,
                     name=f"brain phantom (seed {cfg.seed})", atlas=atlas(cfg.size),
                     meta={"severity": severity.astype(np.float32), "shift": shift,
                           "brain": tpl["brain"], "affected_regions": AFFECTED_REGIONS,
                           "seed": cfg.seed, "size": cfg.size,
                           "generator": "nnsens_core.brain_phantom"})


def demo_volumes(split: str, n: int | None = None) -> ImageData:
    """The demo sets at 48^3: ``train`` (seed 0, 320 volumes), ``test`` (seed 1, 160) and ``val``
    (seed 2, 96); ``n`` overrides the count (the first ``n`` of the same set)."""
    if split not in DEMO_SPLITS:
        raise NnsensError(f"split={split!r} is unknown; use one of {tuple(DEMO_SPLITS)}")
    seed, default_n = DEMO_SPLITS[split]
    d = make_brain_phantom(default_n if n is None else n, size=48, seed=seed)
    return ImageData(d.images, d.labels, d.class_names, d.masks, f"brain phantom ({split})",
                     d.meta, d.atlas)


def atlas(size: int = 48) -> Atlas:
    """The template's regions (:data:`REGIONS`) as an :class:`~nnsens_core.volumes.Atlas`."""
    return Atlas(_template(size)["labels"], dict(REGIONS))


def affected_mask(size: int = 48) -> np.ndarray:
    """(S, S, S) bool: the union of :data:`AFFECTED_REGIONS` in the template."""
    return atlas(size).mask(*AFFECTED_REGIONS)


# --------------------------------------------------------------------------- template

def _ellipsoid(z, y, x, c, r):
    return ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 <= 1


@lru_cache(maxsize=4)
def _template(S: int) -> dict:
    """Labels, base density and smoothed region indicators of the size-``S`` template (cached;
    the arrays are read-only)."""
    c = (np.arange(S) + 0.5) / S * 2 - 1
    z, y, x = np.meshgrid(c, c, c, indexing="ij")  # D: inferior->superior, H: post->ant, W: L->R
    rho = np.sqrt((z / 0.74) ** 2 + (y / 0.9) ** 2 + (x / 0.8) ** 2)
    brain = rho <= 1.0
    left = x < 0
    lab = np.zeros((S, S, S), np.int32)
    cereb = brain & (z < -0.3) & (y < -0.25)
    occ = brain & ~cereb & (y < -0.5)
    front = brain & ~cereb & (y > 0.22)
    temp = brain & ~cereb & ~occ & ~front & (z < -0.08)
    par = brain & ~cereb & ~occ & ~front & ~temp
    for region, (lo, hi) in ((front, (1, 2)), (par, (3, 4)), (temp, (5, 6)), (occ, (7, 8))):
        lab[region & left], lab[region & ~left] = lo, hi
    lab[cereb] = 9
    for side, k in ((-1, 10), (1, 11)):  # hippocampi: elongated, medial temporal
        lab[brain & _ellipsoid(z, y, x, (-0.24, -0.08, 0.3 * side), (0.11, 0.27, 0.1))] = k
    for side, k in ((-1, 12), (1, 13)):  # thalami
        lab[brain & _ellipsoid(z, y, x, (0.02, -0.08, 0.13 * side), (0.13, 0.16, 0.1))] = k
    vent = (_ellipsoid(z, y, x, (0.2, 0.0, -0.11), (0.1, 0.38, 0.06))
            | _ellipsoid(z, y, x, (0.2, 0.0, 0.11), (0.1, 0.38, 0.06)))
    lab[brain & vent] = 14

    # grey-matter density: folded cortical ribbon, deep grey nuclei, cerebellum, dark ventricles
    folds = 0.5 + 0.5 * np.sin(9 * x + 2 * np.sin(5 * y)) * np.sin(8 * y + 3 * z) * np.cos(7 * z - x)
    ribbon = np.clip((rho - 0.72) / 0.1, 0, 1) * (0.55 + 0.45 * folds)
    dens = 0.22 + 0.63 * ribbon
    dens = np.where(lab == 9, 0.62 + 0.2 * folds, dens)
    dens = np.where((lab >= 10) & (lab <= 13), 0.8, dens)
    dens = np.where(lab == 14, 0.03, dens)
    dens = gaussian_filter(dens * brain, 0.8) * brain
    soft = {k: gaussian_filter((lab == k).astype(np.float32), 1.0) for k in REGIONS}
    out = {"labels": lab, "density": dens.astype(np.float32), "brain": brain, "soft": soft}
    for a in (lab, out["density"], brain, *soft.values()):
        a.setflags(write=False)
    return out


# --------------------------------------------------------------------------- subjects

@lru_cache(maxsize=4)
def _upsampler(S: int) -> np.ndarray:
    """(S, G) linear interpolation weights from the G-point noise grid to S voxel centres."""
    u = np.clip((np.arange(S) + 0.5) / S * _NOISE_GRID - 0.5, 0, _NOISE_GRID - 1)
    lo = np.minimum(np.floor(u).astype(int), _NOISE_GRID - 2)
    w = u - lo
    m = np.zeros((S, _NOISE_GRID), np.float32)
    m[np.arange(S), lo] = 1 - w
    m[np.arange(S), lo + 1] = w
    return m


def _chunk(rng: np.random.Generator, n: int, tpl: dict, cfg: BrainPhantomConfig):
    S = cfg.size
    labels = np.argsort(rng.random((n // 2, 2)), axis=1).reshape(-1)  # each pair: one of each
    ad = labels == 1
    factor = np.ones((n, S, S, S), np.float32)

    def scale_regions(k: int, loss: np.ndarray) -> None:  # density x (1 - loss) in region k
        factor[...] -= loss[:, None, None, None].astype(np.float32) * tpl["soft"][k][None]

    for k in REGIONS:  # every region's own density, subject to subject
        scale_regions(k, rng.normal(0.0, 0.06, n))
    affected = [k for k, nm in REGIONS.items() if nm in AFFECTED_REGIONS]
    lo, hi = cfg.severity
    severity = np.where(ad, rng.uniform(lo, hi, n), 0.0)
    ageing = rng.uniform(0.0, 0.08, n)
    for k in affected:  # the disease, each region by its own share of the severity
        scale_regions(k, severity * rng.uniform(0.6, 1.0, n) + ageing * rng.uniform(0.5, 1.0, n))
    nuisance = rng.choice(LOBES, n)
    amount = rng.uniform(0.0, 0.25, n)
    for k in LOBES:  # a spared lobe that shrinks anyway, in both classes
        scale_regions(k, np.where(nuisance == k, amount, 0.0))

    g = rng.uniform(0.85, 1.15, n)[:, None, None, None]
    low = rng.standard_normal((n, _NOISE_GRID, _NOISE_GRID, _NOISE_GRID)).astype(np.float32)
    up = _upsampler(S)
    low = np.einsum("id,ndjk->nijk", up, low)  # trilinear upsampling, one axis at a time
    low = np.einsum("jd,nidk->nijk", up, low)
    low = np.einsum("kd,nijd->nijk", up, low)
    vol = tpl["density"][None] * factor * g * (1 + 0.06 * low)
    vol = vol + cfg.noise * rng.standard_normal((n, S, S, S)) * tpl["brain"]
    vol = np.clip(vol, 0.0, 1.0) * tpl["brain"]

    shift = rng.integers(-1, 2, (n, 3))
    gt = np.isin(tpl["labels"], affected)
    masks = np.zeros((n, S, S, S), bool)
    for i in range(n):
        vol[i] = np.roll(vol[i], tuple(shift[i]), axis=(0, 1, 2))
        if ad[i]:
            masks[i] = np.roll(gt, tuple(shift[i]), axis=(0, 1, 2))
    return vol.astype(np.float32), labels, masks, severity, shift


__all__ = ["BrainPhantomConfig", "CLASSES", "REGIONS", "AFFECTED_REGIONS", "DEMO_SPLITS",
           "make_brain_phantom", "generate", "demo_volumes", "atlas", "affected_mask"]
