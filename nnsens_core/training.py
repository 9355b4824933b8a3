"""Training loops, written once for every page that (re)trains a model."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import _validate as v
from ._batching import Progress, map_batches
from .device import resolve_device


@dataclass(frozen=True)
class TrainConfig:
    """Defaults are the Sobol paper's: SGD, lr 0.01, weight decay 1e-3."""
    epochs: int = 100
    batch_size: int = 32
    lr: float = 0.01
    weight_decay: float = 1e-3
    momentum: float = 0.0
    optimizer: str = "sgd"
    seed: int = 0

    def __post_init__(self):
        v.positive("epochs", self.epochs, integer=True)
        v.positive("batch_size", self.batch_size, integer=True)
        v.positive("lr", self.lr)
        v.non_negative("weight_decay", self.weight_decay)
        v.non_negative("momentum", self.momentum)
        v.one_of("optimizer", self.optimizer, ("sgd", "adam"))

    def make_optimizer(self, params) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(params, lr=self.lr, weight_decay=self.weight_decay,
                               momentum=self.momentum)


def fit(model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss_fn, cfg: TrainConfig,
        device="auto", progress: Progress | None = None, augment=None) -> list[float]:
    """Mini-batch training; returns the mean loss of every epoch. Leaves the model in eval mode."""
    dev = resolve_device(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.to(dev).train()
    opt = cfg.make_optimizer(model.parameters())
    history = []
    n = len(X)
    for epoch in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, cfg.batch_size):
            idx = perm[start:start + cfg.batch_size]
            if len(idx) < 2 and n >= 2:  # BatchNorm needs two samples
                continue
            xb, yb = X[idx].to(dev), y[idx].to(dev)
            if augment is not None:
                xb = augment(xb, gen)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        history.append(total / n)
        if progress is not None:
            progress(epoch + 1, cfg.epochs)
    model.eval()
    return history


def train_binary(model: nn.Module, X: np.ndarray, y: np.ndarray, cfg: TrainConfig = TrainConfig(),
                 device="auto", progress: Progress | None = None) -> list[float]:
    """Binary classifier whose output is a probability (e.g. :class:`~nnsens_core.zoo.PaperMLP`)."""
    torch.manual_seed(cfg.seed)
    Xt = torch.as_tensor(X, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.float32)
    return fit(model, Xt, yt, nn.BCELoss(), cfg, device, progress)


def train_classifier(model: nn.Module, images: np.ndarray, labels: np.ndarray,
                     cfg: TrainConfig = TrainConfig(optimizer="adam", lr=1e-3, weight_decay=0.0),
                     device="auto", progress: Progress | None = None, augment=None) -> list[float]:
    """Multi-class classifier returning logits; ``images`` already in model-input space."""
    torch.manual_seed(cfg.seed)
    Xt = torch.as_tensor(images, dtype=torch.float32)
    yt = torch.as_tensor(labels, dtype=torch.long)
    return fit(model, Xt, yt, nn.CrossEntropyLoss(), cfg, device, progress, augment)


@torch.no_grad()
def predict(model: nn.Module, X, device="auto", batch_size: int = 1024) -> torch.Tensor:
    """Model outputs for all rows of ``X`` (CPU tensor), batched."""
    dev = resolve_device(device)
    Xt = torch.as_tensor(X, dtype=torch.float32)
    model.to(dev).eval()
    return map_batches(lambda sl: model(Xt[sl].to(dev)), len(Xt), batch_size)


def binary_accuracy(model: nn.Module, X, y, device="auto") -> float:
    p = predict(model, X, device).numpy().reshape(-1)
    return float(((p >= 0.5) == (np.asarray(y).reshape(-1) >= 0.5)).mean())


def class_accuracy(model: nn.Module, X, y, device="auto") -> float:
    logits = predict(model, X, device)
    return float((logits.argmax(1).numpy() == np.asarray(y)).mean())
