"""Similarity of two perturbation masks (Thibeau-Sutre et al. 2020) and the classification metric.

A **mask** here is one keep mask ``M`` in [0, 1] with the spatial shape of the inputs, ``(H, W)``
or ``(D, H, W)`` (1 keeps the pixel / voxel, 0 replaces it by the reference), e.g.
``GroupMaskResult.mask``; its **deletion map** is ``1 - M``. Functions that apply a mask to
inputs also take a low-resolution grid mask (``GroupMaskResult.m``) and upsample it as the mask
optimiser does.

Definitions (also in each docstring):

* **prob_CNN** (0 = similar masks, 1 = dissimilar): the mean output probability of the true class
  when the inputs are perturbed by the *common deletion* of the two masks::

      M_ab = max(M_a, M_b)                      (combine="max", default)
      M_ab = 1 - (1 - M_a) * (1 - M_b)          (combine="product")
      prob_CNN(a, b) = 1/N sum_i p_model(y_i | M_ab * X_i + (1 - M_ab) * R_i)

  A voxel is deleted by ``M_ab`` only as much as *both* masks delete it. Two masks that delete the
  same regions give ``M_ab = M_a = M_b``, which fools the network: a low probability. Masks that
  delete different regions have an (almost) empty common deletion: the inputs stay as they are and
  the probability stays that of the unperturbed inputs (near 1 for a well-trained network). With
  two networks (two runs / folds, ``model_b``) the value is the mean of the two networks'
  probabilities for the same combined mask, so it is symmetric. ``prob_CNN(a, a)`` is the mask's
  own residual probability (the floor of the scale), not 0 by construction.
* **ROI density** of a mask in region ``r`` of an atlas: ``rho_r = mean_{u: atlas(u) = r} (1 - M(u))``
  over every label ``r != 0``; **ROI cosine** (1 = similar): ``<rho_a, rho_b> / (|rho_a| |rho_b|)``,
  NaN when either mask deletes nothing inside the atlas.
* **pixel cosine / Spearman / top-p% IoU** of the deletion maps ``1 - M`` (the definitions of
  :mod:`nnsens_core.saliency.metrics`, over every pixel / voxel).
* **balanced accuracy**: mean over the classes present in ``y_true`` of the recall
  ``#{y_pred = c and y_true = c} / #{y_true = c}`` (sklearn's ``balanced_accuracy_score``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from .. import stats
from .._batching import map_batches
from ..device import inference_model, resolve_device
from ..errors import NnsensError
from ..training import balanced_accuracy  # noqa: F401  (re-exported: the studies report it)
from ..saliency import metrics as smt
from ..saliency._common import _classes, check_model_input
from ..saliency.meaningful_mask import MASK_REFERENCES, mask_reference, upsample

COMBINES = ("max", "product")


# --------------------------------------------------------------------------- masks

def as_mask(mask, name: str = "mask") -> np.ndarray:
    """``mask`` (tensor or array, 2-D or 3-D) as float64 numpy in [0, 1]."""
    a = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if a.ndim not in (2, 3) or a.size == 0:
        raise NnsensError(f"{name} has shape {a.shape}; expected one keep mask (H, W) or (D, H, W)")
    a = a.astype(np.float64)
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        raise NnsensError(f"{name} must hold values in [0, 1] (1 keeps, 0 deletes); it has values "
                          f"in [{np.nanmin(a):g}, {np.nanmax(a):g}]")
    return a


def _pair(mask_a, mask_b) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_mask(mask_a, "mask_a"), as_mask(mask_b, "mask_b")
    if a.shape != b.shape:
        raise NnsensError(f"mask_a {a.shape} and mask_b {b.shape} must have the same shape")
    return a, b


def combine_masks(mask_a, mask_b, how: str = "max") -> np.ndarray:
    """The keep mask of the deletion common to both masks: ``max(M_a, M_b)`` (``how="max"``) or
    ``1 - (1 - M_a)(1 - M_b)`` (``how="product"``); equal for binary masks."""
    if how not in COMBINES:
        raise NnsensError(f"combine={how!r} is unknown; use one of {COMBINES}")
    a, b = _pair(mask_a, mask_b)
    return np.maximum(a, b) if how == "max" else 1.0 - (1.0 - a) * (1.0 - b)


def _full_mask(mask, spatial: tuple[int, ...], dev) -> torch.Tensor:
    m = torch.as_tensor(as_mask(mask), dtype=torch.float32, device=dev)
    if tuple(m.shape) == spatial:
        return m[None, None]
    if m.ndim != len(spatial) or any(s > t for s, t in zip(m.shape, spatial)):
        raise NnsensError(f"the mask has shape {tuple(m.shape)} but the inputs are "
                          f"{'x'.join(map(str, spatial))}; give a mask of the input size or a "
                          "coarser grid of the same dimensionality")
    return upsample(m[None], spatial)


# --------------------------------------------------------------------------- network-based

@torch.no_grad()
def masked_probability(model, x: torch.Tensor, labels, mask=None, *, reference: str = "max",
                       constant: float = 0.0, blur_sigma: float = 5.0, spec=None, device="auto",
                       batch_size: int = 32) -> np.ndarray:
    """``p_model(y_i | M * X_i + (1 - M) * R_i)`` per input, ``(N,)`` float64; ``mask=None``: the
    unperturbed inputs. ``R`` as in :func:`~nnsens_core.saliency.meaningful_mask.mask_reference`
    (``reference`` one of ``max``, ``black``, ``constant``, ``blur``)."""
    if reference not in MASK_REFERENCES:
        raise NnsensError(f"reference={reference!r} is not allowed; use one of {MASK_REFERENCES}")
    if spec is None:
        spec = getattr(model, "spec", None)
    dev = resolve_device(device)
    net = inference_model(model, dev)
    x, n_out = check_model_input(net, x, spec, dev)
    if len(x) == 0:
        return np.zeros(0)
    cls = torch.tensor(_classes(labels, len(x), n_out), dtype=torch.long)
    big = None if mask is None else _full_mask(mask, tuple(x.shape[2:]), dev)

    def one(sl):
        xb = x[sl].to(dev)
        if big is not None:
            xb = big * xb + (1 - big) * mask_reference(xb, reference, constant, blur_sigma, spec)
        return torch.softmax(net(xb), -1).gather(1, cls[sl].to(dev)[:, None])[:, 0]

    return map_batches(one, len(x), batch_size).double().numpy()


def prob_cnn(model, x: torch.Tensor, labels, mask_a, mask_b, *, model_b=None,
             combine: str = "max", reference: str = "max", constant: float = 0.0,
             blur_sigma: float = 5.0, spec=None, device="auto", batch_size: int = 32) -> float:
    """prob_CNN of two masks (0 = similar, 1 = dissimilar)::

        M_ab = max(M_a, M_b)   (or 1 - (1 - M_a)(1 - M_b) with combine="product")
        prob_CNN = 1/N sum_i p(y_i | M_ab * X_i + (1 - M_ab) * R_i)

    with ``p`` the softmax output of ``model`` (with ``model_b``: the mean of the two models'
    values, for masks found on two networks). ``labels`` are the true classes ``y_i`` (one per
    input or one for all). See the module docstring for why the common deletion is used."""
    m_ab = combine_masks(mask_a, mask_b, combine)
    kw = {"reference": reference, "constant": constant, "blur_sigma": blur_sigma, "spec": spec,
              "device": device, "batch_size": batch_size}
    vals = [masked_probability(model, x, labels, m_ab, **kw).mean()]
    if model_b is not None:
        vals.append(masked_probability(model_b, x, labels, m_ab, **kw).mean())
    return float(np.mean(vals))


# --------------------------------------------------------------------------- atlas-based

def check_atlas(atlas, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``atlas`` as an int64 label array (0 = background) of spatial ``shape``."""
    a = atlas.detach().cpu().numpy() if isinstance(atlas, torch.Tensor) else np.asarray(atlas)
    if a.dtype.kind == "f":
        if not np.isfinite(a).all() or not np.all(a == np.round(a)):
            raise NnsensError("the atlas must hold integer region labels (0 = background)")
    elif a.dtype.kind not in "iub":
        raise NnsensError(f"the atlas must be an integer label array, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if (a < 0).any():
        raise NnsensError("the atlas has negative labels; use 0 for the background and 1, 2, ... "
                          "for the regions")
    if shape is not None and a.shape != tuple(shape):
        raise NnsensError(f"the atlas has shape {a.shape} but the mask is {tuple(shape)}; give an "
                          "atlas resampled to the mask's (input's) size")
    if not (a != 0).any():
        raise NnsensError("the atlas has no region (every label is 0, the background)")
    return a


def roi_density(mask, atlas, regions: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(regions, rho)``: ``rho_r = mean_{u: atlas(u) = r} (1 - M(u))`` for every label ``r != 0``
    of the atlas (sorted) or the given ``regions`` (a region absent from the atlas gets 0)."""
    m = as_mask(mask)
    a = check_atlas(atlas, m.shape)
    regs = np.unique(a[a != 0]) if regions is None else np.asarray(regions, dtype=np.int64)
    d = (1.0 - m).reshape(-1)
    flat = a.reshape(-1)
    size = max(int(flat.max()), int(regs.max(initial=0))) + 1
    sums = np.bincount(np.clip(flat, 0, None), weights=d, minlength=size)
    counts = np.bincount(np.clip(flat, 0, None), minlength=size)
    idx = np.clip(regs, 0, size - 1)
    rho = np.where(counts[idx] > 0, sums[idx] / np.maximum(counts[idx], 1), 0.0)
    return regs, rho


def _cos(u: np.ndarray, w: np.ndarray) -> float:
    den = np.linalg.norm(u) * np.linalg.norm(w)
    return float(np.dot(u, w) / den) if den > 0 else float("nan")


def roi_cosine(mask_a, mask_b, atlas) -> float:
    """Cosine of the ROI density vectors of two masks (1 = similar):
    ``<rho_a, rho_b> / (|rho_a| |rho_b|)`` over the atlas labels ``!= 0``; NaN when either mask
    deletes nothing inside the atlas."""
    a, b = _pair(mask_a, mask_b)
    atl = check_atlas(atlas, a.shape)
    regs, ra = roi_density(a, atl)
    _, rb = roi_density(b, atl, regs)
    return _cos(ra, rb)


def top_regions(mask, atlas, n: int = 5, names: Mapping[int, str] | None = None):
    """The ``n`` regions with the highest ROI density (ties: lower label first), as a DataFrame
    with columns ``rank`` (1 = most masked), ``region``, ``name``, ``density``."""
    import pandas as pd
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise NnsensError(f"n={n!r} must be a whole number >= 1")
    regs, rho = roi_density(mask, atlas)
    order = np.lexsort((regs, -rho))[:n]
    names = names or {}
    return pd.DataFrame({"rank": np.arange(1, len(order) + 1), "region": regs[order],
                         "name": [str(names.get(int(r), r)) for r in regs[order]],
                         "density": rho[order]})


def region_agreement(masks: Sequence, atlas, n: int = 5, names: Mapping[int, str] | None = None):
    """How many of ``masks`` have each region in their top-``n`` (:func:`top_regions`): a DataFrame
    with ``region``, ``name``, ``count`` (masks with the region in their top-n), ``share``
    (count / number of masks) and ``mean_density`` (over every mask), one row per region in at
    least one top-n, most shared first (then densest)."""
    import pandas as pd
    masks = list(masks)
    if not masks:
        raise NnsensError("masks is empty; give at least one mask")
    count: dict[int, int] = {}
    dens: dict[int, list[float]] = {}
    for k, m in enumerate(masks):
        for r in top_regions(m, atlas, n)["region"]:
            count[int(r)] = count.get(int(r), 0) + 1
        regs, rho = roi_density(m, atlas)
        for r, d in zip(regs, rho):
            dens.setdefault(int(r), []).append(float(d))
    names = names or {}
    rows = [{"region": r, "name": str(names.get(r, r)), "count": c, "share": c / len(masks),
             "mean_density": float(np.mean(dens[r]))} for r, c in count.items()]
    df = pd.DataFrame(rows, columns=["region", "name", "count", "share", "mean_density"])
    return df.sort_values(["count", "mean_density", "region"], ascending=[False, False, True],
                          kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- pixel-based

def _deletions(mask_a, mask_b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _pair(mask_a, mask_b)
    return (1.0 - a).reshape(1, 1, -1), (1.0 - b).reshape(1, 1, -1)


def pixel_cosine(mask_a, mask_b) -> float:
    """Cosine of the flattened deletion maps ``1 - M``; NaN when either mask deletes nothing."""
    return float(smt.cosine(*_deletions(mask_a, mask_b))[0])


def pixel_spearman(mask_a, mask_b) -> float:
    """Spearman correlation of the deletion maps over every pixel / voxel; NaN for a constant map."""
    da, db = _deletions(mask_a, mask_b)
    return float(stats.spearman(da.reshape(-1), db.reshape(-1)))


def top_p_iou(mask_a, mask_b, p: float = 0.1) -> float:
    """IoU of the top-p% most deleted pixels / voxels of the two masks."""
    return float(smt.top_p_iou(*_deletions(mask_a, mask_b), p)[0])


def mask_similarity(mask_a, mask_b, *, atlas=None, p: float = 0.1) -> dict[str, float]:
    """``{"pixel_cosine", "spearman", "top_p_iou"}`` (+ ``"roi_cosine"`` with an atlas) of two
    masks (the network-free metrics; prob_CNN needs the model: :func:`prob_cnn`)."""
    out = {"pixel_cosine": pixel_cosine(mask_a, mask_b), "spearman": pixel_spearman(mask_a, mask_b),
           "top_p_iou": top_p_iou(mask_a, mask_b, p)}
    if atlas is not None:
        out["roi_cosine"] = roi_cosine(mask_a, mask_b, atlas)
    return out


