"""Image filters shared by the feature modules (the saliency reference image and the blur rule of
activation maximization use the same Gaussian blur)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``x`` (N, C, H, W), each channel on its own.

    The kernel has radius ``ceil(3 sigma)`` (at least 1), capped at the image size minus one per
    dimension, and is normalised to sum 1; edges use reflect padding (scipy's ``mode="mirror"``),
    so a constant image stays constant. ``sigma <= 0`` returns a copy of ``x``; a dimension of one
    pixel is left as it is."""
    if sigma <= 0:
        return x.clone()
    h, w = x.shape[-2:]
    c = x.shape[1]
    out = x
    for dim, size in ((-1, w), (-2, h)):
        if size < 2:
            continue
        r = max(1, min(int(math.ceil(3 * sigma)), size - 1))
        t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
        k = torch.exp(-0.5 * (t / sigma) ** 2)
        k = k / k.sum()
        if dim == -1:
            padded = F.pad(out, (r, r, 0, 0), mode="reflect")
            out = F.conv2d(padded, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        else:
            padded = F.pad(out, (0, 0, r, r), mode="reflect")
            out = F.conv2d(padded, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return out if out is not x else x.clone()
