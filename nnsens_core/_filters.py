"""Image filters shared by the feature modules (the saliency reference image and the blur rule of
activation maximization use the same Gaussian blur)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of images ``x`` (N, C, H, W) or volumes (N, C, D, H, W), each channel
    on its own, along every spatial dimension.

    The kernel has radius ``ceil(3 sigma)`` (at least 1), capped at the size minus one per
    dimension, and is normalised to sum 1; edges use reflect padding (scipy's ``mode="mirror"``),
    so a constant image stays constant. ``sigma <= 0`` returns a copy of ``x``; a dimension of one
    pixel is left as it is."""
    if sigma <= 0:
        return x.clone()
    spatial = x.ndim - 2
    conv = {2: F.conv2d, 3: F.conv3d}[spatial]
    c = x.shape[1]
    out = x
    for axis in range(spatial):  # the last dimension first, as before
        dim = x.ndim - 1 - axis
        size = x.shape[dim]
        if size < 2:
            continue
        r = max(1, min(int(math.ceil(3 * sigma)), size - 1))
        t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
        k = torch.exp(-0.5 * (t / sigma) ** 2)
        k = k / k.sum()
        pad = [0, 0] * spatial
        pad[2 * axis:2 * axis + 2] = [r, r]  # F.pad lists the last dimension first
        ks = [1] * spatial
        ks[spatial - 1 - axis] = 2 * r + 1
        out = conv(F.pad(out, pad, mode="reflect"), k.view(1, 1, *ks).expand(c, 1, *ks), groups=c)
    return out if out is not x else x.clone()
