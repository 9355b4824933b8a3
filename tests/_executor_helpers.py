"""Tiny models, data and unit functions shared by the executor tests (module-level so Ray workers
can unpickle them)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nnsens_core.phantom import make_phantom
from nnsens_core.saliency.meaningful_mask import MaskConfig
from nnsens_core.saliency.occlusion import OcclusionConfig
from nnsens_core.zoo import ModelSpec

S = 32
METHODS = ("gradcam", "occlusion")
CFGS = {"occlusion": OcclusionConfig(window=8, stride=8, drill_top=0.5, approx_sample=8)}
"""Approximate occlusion (drill-down): the chunked runs must also give the one call's error."""


def tiny_cnn(n_classes: int = 3, channels: int = 1, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, n_classes)).eval()


def phantom(n: int = 8):
    return make_phantom(n, size=S, seed=3, channels=1)


def spec_of(data) -> ModelSpec:
    return ModelSpec("tiny", "tiny", "image", (1, S, S), tuple(data.class_names))


# --------------------------------------------------------------------------- retrain

def retrain_data(n: int = 16):
    """Two classes of 1x8x8 images: class 1 is darker in the top-left quarter."""
    g = torch.Generator().manual_seed(0)
    y = np.arange(n) % 2
    x = 0.5 + 0.1 * torch.rand(n, 1, 8, 8, generator=g)
    x[torch.as_tensor(y == 1), :, :4, :4] -= 0.3
    return x, y


def build_small() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(128, 2))


class TrainSmall:
    """``train_fn(seed, train_idx, val_idx)``: one epoch of Adam on ``x[train_idx]`` (a picklable
    object, not a closure; deterministic: one torch thread, seeded)."""

    def __init__(self, x, y, calls: list | None = None):
        self.x, self.y = x, torch.as_tensor(y)
        self.calls = calls

    def __call__(self, seed, train_idx, val_idx):
        if self.calls is not None:
            self.calls.append((int(seed), tuple(train_idx[:3].tolist())))
        torch.set_num_threads(1)
        torch.manual_seed(seed)
        model = build_small()
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        xb, yb = self.x[torch.as_tensor(train_idx)], self.y[torch.as_tensor(train_idx)]
        for s in range(0, len(xb), 4):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb[s:s + 4]), yb[s:s + 4]).backward()
            opt.step()
        return model.eval()


RETRAIN_MASK = MaskConfig(steps=3, resolution=4, lambda1=0.01, lambda2=0.01, reference="constant",
                          batch_size=8)


# --------------------------------------------------------------------------- flaky units

def square(u):
    return np.full(3, float(u) ** 2)


def square_shared(u, shared):
    return shared["scale"] * np.full(3, float(u) ** 2)


class FailOnce:
    """``fn(u)``: raises (``exit=False``) or kills its worker process (``exit=True``) the first time
    it sees unit ``bad``; a marker file in ``root`` remembers the first attempt across processes."""

    def __init__(self, root, bad, exit: bool = False, always: bool = False):
        self.root, self.bad, self.exit, self.always = str(root), bad, exit, always

    def __call__(self, u):
        marker = Path(self.root) / f"attempt-{u}"
        if u == self.bad and (self.always or not marker.exists()):
            marker.touch()
            if self.exit:
                os._exit(1)
            raise RuntimeError(f"planned failure of unit {u}")
        marker.touch()
        return square(u)


def sobol_case():
    """A linear model on 3 inputs and its Sobol problem / config (for the convergence units)."""
    from nnsens_core import sobol as S
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0, 0.5]]))
        model.bias.zero_()
    return model, S.SobolProblem(("a", "b", "c"), ((0, 1),) * 3), S.SobolConfig(num_resamples=20,
                                                                               seed=3)
