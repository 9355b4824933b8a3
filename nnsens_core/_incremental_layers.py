"""How each layer maps a box (the rules of the incremental engine) and the gathering helpers:
which output box a perturbed input box reaches, and how to compute it from a window."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

POINTWISE = (nn.BatchNorm2d, nn.Identity, nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.ReLU,
             nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
             nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus,
             nn.Softsign, nn.Tanhshrink)
"""Layers that act on each activation (or each channel) independently; exact types only, since a
subclass may override ``forward``."""

# --------------------------------------------------------------------------- how a layer maps a box

@dataclass(frozen=True)
class _Axis:
    """One spatial dim of a sliding-window layer: output ``o`` reads inputs
    ``o * stride - pad + j * dilation`` for ``j < kernel``."""
    kernel: int
    stride: int
    dilation: int
    pad: int

    @property
    def span(self) -> int:
        return (self.kernel - 1) * self.dilation + 1

    def reach(self, lo: torch.Tensor, hi: torch.Tensor, n_out: int):
        """Outputs whose window reads an input in ``[lo, hi]`` (inclusive; per tile, clamped)."""
        olo = -torch.div(self.span - 1 - self.pad - lo, self.stride, rounding_mode="floor")
        ohi = torch.div(hi + self.pad, self.stride, rounding_mode="floor")
        return olo.clamp(min=0), ohi.clamp(max=n_out - 1)

    def window(self, n_box: int) -> int:
        """Input positions read by ``n_box`` consecutive outputs."""
        return (n_box - 1) * self.stride + self.span


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class _Pointwise:
    """Acts on each activation: the patch keeps its box."""
    window = False

    def __init__(self, m: nn.Module):
        self.m = m

    def apply(self, patch, *_):
        return self.m(patch)


class _Conv:
    """Conv2d with zero padding: F.conv2d on the gathered window, padding 0."""
    window, pad_value = True, 0.0

    def __init__(self, m: nn.Conv2d):
        self.m = m
        k, s, d = _pair(m.kernel_size), _pair(m.stride), _pair(m.dilation)
        if m.padding == "valid":
            p = (0, 0)
        elif m.padding == "same":   # as ATen: the odd extra padding goes after the map
            p = tuple((d[i] * (k[i] - 1)) // 2 for i in range(2))
        else:
            p = _pair(m.padding)
        self.axes = tuple(_Axis(k[i], s[i], d[i], p[i]) for i in range(2))

    def apply(self, window, *_):
        m = self.m
        return F.conv2d(window, m.weight, m.bias, m.stride, 0, m.dilation, m.groups)


class _MaxPool:
    """MaxPool2d: pads with -inf, so padding and ceil_mode overhangs never win."""
    window, pad_value = True, -math.inf

    def __init__(self, m: nn.MaxPool2d):
        self.m = m
        k, d = _pair(m.kernel_size), _pair(m.dilation)
        s, p = _pair(m.stride or m.kernel_size), _pair(m.padding)
        self.axes = tuple(_Axis(k[i], s[i], d[i], p[i]) for i in range(2))

    def apply(self, window, *_):
        a = self.axes
        return F.max_pool2d(window, (a[0].kernel, a[1].kernel), (a[0].stride, a[1].stride), 0,
                            (a[0].dilation, a[1].dilation))


class _AvgPool:
    """AvgPool2d: window sums divided by the divisor PyTorch uses at each output position
    (padding, ``ceil_mode``, ``count_include_pad`` and ``divisor_override`` all change it)."""
    window, pad_value = True, 0.0

    def __init__(self, m: nn.AvgPool2d):
        self.m = m
        k, s, p = _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding)
        self.axes = tuple(_Axis(k[i], s[i], 1, p[i]) for i in range(2))
        self.divisor = None   # _Map of the (Hout, Wout) divisors, set by bind()

    def bind(self, in_hw, out_hw, dev):
        if self.m.divisor_override:
            div = torch.full(out_hw, float(self.m.divisor_override), device=dev)
        else:
            counts = []
            for ax, n_in, n_out in zip(self.axes, in_hw, out_hw):
                start = torch.arange(n_out, device=dev) * ax.stride - ax.pad
                end = (start + ax.kernel).clamp(max=n_in + ax.pad)
                if not self.m.count_include_pad:
                    start, end = start.clamp(min=0), end.clamp(max=n_in)
                counts.append((end - start).float())
            div = counts[0][:, None] * counts[1][None, :]
        self.divisor = _Map(div[None])

    def apply(self, window, rows, cols, box):
        a = self.axes
        s = F.avg_pool2d(window, (a[0].kernel, a[1].kernel), (a[0].stride, a[1].stride), 0,
                         divisor_override=1)
        return s / self.divisor.boxes(rows, cols, box)


def _layer(m: nn.Module):
    """The box rule of module ``m``, or a string saying why it is not supported."""
    t = type(m)
    if m.training:
        return "is in training mode (call model.eval())"
    if t is nn.Conv2d:
        if m.padding_mode != "zeros":
            return f"has padding_mode={m.padding_mode!r} (only 'zeros' is supported)"
        return _Conv(m)
    if t is nn.MaxPool2d:
        return "returns indices" if m.return_indices else _MaxPool(m)
    if t is nn.AvgPool2d:
        return _AvgPool(m)
    if t in POINTWISE:
        if t is nn.BatchNorm2d and m.running_mean is None:
            return "normalises with batch statistics (no running stats)"
        return _Pointwise(m)
    return "is not supported by the incremental engine"


# --------------------------------------------------------------------------- gathering

class _Map:
    """A base activation (C, H, W) stored channels-last as rows (H*W, C): a box of it for each
    sample is one ``index_select`` of whole rows."""

    def __init__(self, t: torch.Tensor):
        self.channels, self.height, self.width = t.shape
        self.rows = t.permute(1, 2, 0).reshape(-1, self.channels).contiguous()
        self._grids: dict = {}

    def boxes(self, r: torch.Tensor, c: torch.Tensor, box) -> torch.Tensor:
        """``t[:, r:r+h, c:c+w]`` for each sample -> (N, C, h, w), channels-last and fresh."""
        h, w = box
        grid = self._grids.get(box)
        if grid is None:
            dev = self.rows.device
            grid = self._grids[box] = (torch.arange(h, device=dev)[:, None] * self.width
                                       + torch.arange(w, device=dev)[None])
        idx = (r * self.width + c)[:, None, None] + grid
        out = self.rows.index_select(0, idx.reshape(-1))
        return out.view(len(r), h, w, self.channels).permute(0, 3, 1, 2)


def _paste(window: torch.Tensor, patch: torch.Tensor, off_r, off_c, inside: bool) -> torch.Tensor:
    """Write ``patch`` (N, C, ph, pw) into ``window`` (N, C, h, w, channels-last, from
    :meth:`_Map.boxes`) at per-sample offsets; parts outside the window are dropped (``inside``:
    the caller knows there are none)."""
    n, ch, h, w = window.shape
    ph, pw = patch.shape[-2:]
    dev = window.device
    a = torch.arange(ph, device=dev)[None, :, None] + off_r[:, None, None]   # window row, col of
    b = torch.arange(pw, device=dev)[None, None, :] + off_c[:, None, None]   # each patch pixel
    dst = ((torch.arange(n, device=dev)[:, None, None] * h + a) * w + b).reshape(-1)
    src = patch.permute(0, 2, 3, 1).reshape(-1, ch)
    flat = window.permute(0, 2, 3, 1).view(-1, ch)
    if not inside:
        keep = ((a >= 0) & (a < h) & (b >= 0) & (b < w)).reshape(-1).nonzero().squeeze(1)
        dst, src = dst[keep], src[keep]
    flat.index_copy_(0, dst, src)
    return window

