"""Pieces every saliency method shares: the class score, the reference image, the batch and
class checks, and per-image map scaling."""
from __future__ import annotations

import numpy as np
import torch

from .. import _validate as v
from .._filters import gaussian_blur
from .._validate import check_images as check_batch  # noqa: F401 - the shared (N, C, H, W) check
from ..errors import NnsensError

REFERENCES = ("blur", "constant")
SCORES = ("prob", "logit")


# --------------------------------------------------------------------------- shared pieces

def reference_image(x: torch.Tensor, reference: str = "blur", blur_sigma: float = 5.0,
                    constant: float = 0.0, spec=None) -> torch.Tensor:
    """The image that replaces perturbed pixels (same shape and space as ``x``)."""
    v.one_of("reference", reference, REFERENCES)
    if reference == "blur":
        return gaussian_blur(x, blur_sigma)
    grey = torch.full_like(x, float(constant))
    return spec.normalize(grey) if spec is not None else grey


def class_score(logits: torch.Tensor, classes: torch.Tensor, score: str) -> torch.Tensor:
    """``f`` per row: softmax probability or logit of ``classes[i]``."""
    vals = torch.softmax(logits, dim=-1) if score == "prob" else logits
    return vals.gather(1, classes.view(-1, 1)).squeeze(1)


# --------------------------------------------------------------------------- occlusion



def _classes(classes, n: int, n_out: int | None) -> list[int]:
    c = np.asarray(classes if classes is not None else [], dtype=np.int64).reshape(-1)
    if c.size == 1 and n > 1:
        c = np.repeat(c, n)
    if c.size != n:
        raise NnsensError(f"{c.size} classes given for {n} images; give one class per image "
                          "(or a single class for all)")
    if n_out is not None and len(c) and (c.min() < 0 or c.max() >= n_out):
        raise NnsensError(f"classes {sorted(set(c.tolist()))} must lie in 0..{n_out - 1} "
                          f"(the model has {n_out} outputs)")
    return c.tolist()



