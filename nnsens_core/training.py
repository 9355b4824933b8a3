"""Training loops, written once for every page that (re)trains a model: the paper MLP and image
classifiers (:func:`fit`), CNNs on user images or volumes with validation and early stopping
(:func:`train_cnn`), balanced accuracy and stratified folds."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import _validate as v
from ._batching import Progress, map_batches
from ._results import Result
from .device import resolve_device
from .errors import NnsensError


def _check_optimiser_settings(cfg) -> None:
    """The checks :class:`TrainConfig` and :class:`CNNTrainConfig` share (epochs, batch size and
    the optimiser's settings)."""
    v.positive("epochs", cfg.epochs, integer=True)
    v.positive("batch_size", cfg.batch_size, integer=True)
    v.positive("lr", cfg.lr)
    v.non_negative("weight_decay", cfg.weight_decay)
    v.non_negative("momentum", cfg.momentum)
    v.one_of("optimizer", cfg.optimizer, ("sgd", "adam"))


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
        _check_optimiser_settings(self)

    def make_optimizer(self, params) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(params, lr=self.lr, weight_decay=self.weight_decay,
                               momentum=self.momentum)


def _run_epoch(model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss_fn, opt, batch_size: int,
               gen: torch.Generator, dev, augment=None, on_batch=None) -> float:
    """One pass over ``X`` in a random order (drawn from ``gen``) with mini-batches of
    ``batch_size`` (a last batch of one sample is skipped: BatchNorm needs two); returns the mean
    loss. ``on_batch(k)`` is called after the k-th batch (1-based)."""
    n = len(X)
    perm = torch.randperm(n, generator=gen)
    total = 0.0
    for k, start in enumerate(range(0, n, batch_size)):
        idx = perm[start:start + batch_size]
        if len(idx) >= 2 or n < 2:
            xb, yb = X[idx].to(dev), y[idx].to(dev)
            if augment is not None:
                xb = augment(xb, gen)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        if on_batch is not None:
            on_batch(k + 1)
    return total / n


def fit(model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss_fn, cfg: TrainConfig,
        device="auto", progress: Progress | None = None, augment=None) -> list[float]:
    """Mini-batch training; returns the mean loss of every epoch. Leaves the model in eval mode."""
    dev = resolve_device(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.to(dev).train()
    opt = cfg.make_optimizer(model.parameters())
    history = []
    for epoch in range(cfg.epochs):
        history.append(_run_epoch(model, X, y, loss_fn, opt, cfg.batch_size, gen, dev, augment))
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


# --------------------------------------------------------------------------- CNNs on user data

def balanced_accuracy(y_true, y_pred) -> float:
    """The mean recall over the classes present in ``y_true`` (scikit-learn's
    ``balanced_accuracy_score``): 0.5 for a constant guess on two classes, whatever their sizes."""
    t = np.asarray(y_true).reshape(-1)
    p = np.asarray(y_pred).reshape(-1)
    if len(t) != len(p) or len(t) == 0:
        raise NnsensError(f"balanced_accuracy needs as many predictions as labels, at least one; "
                          f"got {len(t)} labels and {len(p)} predictions")
    return float(np.mean([(p[t == c] == c).mean() for c in np.unique(t)]))


def stratified_folds(labels, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (train, test) index pairs: the test sets are disjoint, cover every index once, and
    each holds every class in proportion (its count within one of ``n_class / k``); fold sizes
    differ by at most one per class. Indices are sorted int64; ``seed`` fixes the shuffle."""
    y = np.asarray(labels).reshape(-1)
    if not isinstance(k, int) or isinstance(k, bool) or k < 2:
        raise NnsensError(f"k={k!r} must be a whole number >= 2")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise NnsensError(f"the labels hold one class only ({classes.tolist()}); stratified folds "
                          "need at least two classes")
    if counts.min() < k:
        c = classes[counts.argmin()].item()
        raise NnsensError(f"class {c!r} has {counts.min()} sample(s), fewer than k={k} folds; use "
                          f"k <= {counts.min()} so every fold tests every class")
    rng = np.random.default_rng(seed)
    tests: list[list[np.ndarray]] = [[] for _ in range(k)]
    offset = 0
    for c in classes:
        idx = rng.permutation(np.nonzero(y == c)[0])
        for j, part in enumerate(np.array_split(idx, k)):
            tests[(j + offset) % k].append(part)  # rotate so the larger parts spread over folds
        offset += len(idx) % k
    all_idx = np.arange(len(y))
    out = []
    for parts in tests:
        test = np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)
        out.append((np.setdiff1d(all_idx, test).astype(np.int64), test))
    return out


@dataclass(frozen=True)
class CNNTrainConfig:
    """How :func:`train_cnn` trains: Adam (or SGD) for up to ``epochs`` epochs, keeping the weights
    of the epoch with the best validation balanced accuracy (ties: lower validation loss) and
    stopping after ``patience`` epochs without improvement (0: never stop early). Without
    ``val_idx``, a stratified ``val_fraction`` of the training indices validates (0: no
    validation; the last epoch's weights are kept)."""
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.0
    optimizer: str = "adam"
    patience: int = 5
    val_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self):
        _check_optimiser_settings(self)
        if not isinstance(self.patience, int) or isinstance(self.patience, bool) or self.patience < 0:
            raise NnsensError(f"patience={self.patience!r} must be a whole number >= 0 (0: no early "
                              "stopping)")
        v.in_range("val_fraction", self.val_fraction, 0.0, 0.5)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise NnsensError(f"seed={self.seed!r} must be a whole number >= 0")

    def make_optimizer(self, params) -> torch.optim.Optimizer:
        return TrainConfig.make_optimizer(self, params)  # same fields, same optimisers


@dataclass
class TrainReport(Result):
    """What :func:`train_cnn` did: per-epoch ``train_loss``, ``val_loss`` and
    ``val_balanced_accuracy`` (empty without validation), the kept epoch ``best_epoch``
    (1-based), whether it ``stopped_early``, and the indices it trained and validated on."""
    config: CNNTrainConfig
    seconds: float
    train_loss: list[float]
    val_loss: list[float]
    val_balanced_accuracy: list[float]
    best_epoch: int
    stopped_early: bool
    train_idx: np.ndarray
    val_idx: np.ndarray

    @property
    def epochs_run(self) -> int:
        return len(self.train_loss)

    @property
    def best_val_balanced_accuracy(self) -> float | None:
        return self.val_balanced_accuracy[self.best_epoch - 1] if self.val_balanced_accuracy else None

    def _payload(self) -> dict:
        return {"epochs_run": self.epochs_run, "best_epoch": self.best_epoch,
                "stopped_early": self.stopped_early,
                "best_val_balanced_accuracy": self.best_val_balanced_accuracy,
                "n_train": len(self.train_idx), "n_val": len(self.val_idx),
                "history": self.to_frame().to_dict(orient="list")}

    def to_frame(self):
        import pandas as pd
        n = self.epochs_run
        pad = [None] * n
        return pd.DataFrame({"epoch": list(range(1, n + 1)), "train_loss": self.train_loss,
                             "val_loss": self.val_loss or pad,
                             "val_balanced_accuracy": self.val_balanced_accuracy or pad})

    def arrays(self) -> dict[str, np.ndarray]:
        return {"train_idx": self.train_idx, "val_idx": self.val_idx}


def _indices(idx, n: int, what: str) -> np.ndarray:
    a = np.asarray(idx, dtype=np.int64).reshape(-1)
    if len(a) and (a.min() < 0 or a.max() >= n):
        raise NnsensError(f"{what} holds indices outside 0..{n - 1} (min {a.min()}, max {a.max()})")
    if len(np.unique(a)) != len(a):
        raise NnsensError(f"{what} holds an index twice; give each sample once")
    return a


def train_cnn(model: nn.Module, data, cfg: CNNTrainConfig = CNNTrainConfig(), *, train_idx=None,
              val_idx=None, spec=None, device="auto", progress: Progress | None = None
              ) -> tuple[nn.Module, TrainReport]:
    """Train a classifier returning logits on ``data`` (:class:`~nnsens_core.data.ImageData`,
    2-D images or 3-D volumes) with cross-entropy; returns the model (eval mode, with the kept
    epoch's weights) and a :class:`TrainReport`.

    ``train_idx`` (default: every sample not in ``val_idx``) and ``val_idx`` (default: a stratified
    ``cfg.val_fraction`` of ``train_idx``) pick the samples; ``spec`` (a
    :class:`~nnsens_core.zoo.ModelSpec`) normalises the [0, 1] images and checks their shape;
    ``progress(done, total)`` advances after every batch (``total`` = epochs x batches; it jumps
    to ``total`` when training stops early). ``cfg.seed`` fixes the split, the batch order and
    dropout; the initial weights are the caller's."""
    import copy
    import time
    t0 = time.perf_counter()
    n = len(data)
    if spec is not None and tuple(spec.input_shape) != tuple(data.shape):
        raise NnsensError(f"the data has shape {tuple(data.shape)} per sample but the model takes "
                          f"{tuple(spec.input_shape)}; load the data at the model's size")
    val = None if val_idx is None else _indices(val_idx, n, "val_idx")
    train = _indices(np.setdiff1d(np.arange(n), val if val is not None else []) if train_idx is None
                     else train_idx, n, "train_idx")
    if val is None:
        val = np.zeros(0, np.int64)
        if cfg.val_fraction > 0:
            k = max(2, int(round(1 / cfg.val_fraction)))
            fold = stratified_folds(data.labels[train], k, cfg.seed)[0][1]
            val, train = train[fold], np.delete(train, fold)
    if np.intersect1d(train, val).size:
        raise NnsensError(f"train_idx and val_idx share {np.intersect1d(train, val).size} "
                          "sample(s); validate on samples the model does not train on")
    if len(train) < 2:
        raise NnsensError(f"{len(train)} training sample(s); train on at least two")
    n_cls = len(data.class_names)
    X = torch.as_tensor(np.asarray(data.images), dtype=torch.float32)
    if spec is not None:
        X = spec.normalize(X)
    y = torch.as_tensor(np.asarray(data.labels), dtype=torch.long)
    dev = resolve_device(device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.to(dev).eval()
    with torch.no_grad():
        out = model(X[train[:2]].to(dev))
    if out.ndim != 2 or out.shape[1] != n_cls:
        raise NnsensError(f"the model returns outputs of shape {tuple(out.shape)} but the data has "
                          f"{n_cls} classes {list(data.class_names)}; build it with "
                          f"num_classes={n_cls}")
    opt = cfg.make_optimizer(model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    Xtr, ytr = X[train], y[train]
    n_batches = -(-len(train) // cfg.batch_size)
    total = cfg.epochs * n_batches
    history: dict[str, list[float]] = {"train": [], "val_loss": [], "val_bacc": []}
    best_key, best_epoch, best_state, stale, stopped = None, cfg.epochs, None, 0, False
    for epoch in range(cfg.epochs):
        model.train()
        on_batch = None if progress is None else (
            lambda k, e=epoch: progress(e * n_batches + k, total))
        history["train"].append(_run_epoch(model, Xtr, ytr, loss_fn, opt, cfg.batch_size, gen,
                                           dev, on_batch=on_batch))
        if not len(val):
            continue
        logits = predict(model, X[val], dev, batch_size=cfg.batch_size)
        vloss = float(loss_fn(logits, y[val]))
        bacc = balanced_accuracy(y[val].numpy(), logits.argmax(1).numpy())
        history["val_loss"].append(vloss)
        history["val_bacc"].append(bacc)
        key = (bacc, -vloss)
        if best_key is None or key > best_key:
            best_key, best_epoch, stale = key, epoch + 1, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if cfg.patience and stale >= cfg.patience:
                stopped = epoch + 1 < cfg.epochs
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    if progress is not None:
        progress(total, total)
    return model, TrainReport(cfg, time.perf_counter() - t0, history["train"], history["val_loss"],
                              history["val_bacc"], best_epoch, stopped, np.sort(train),
                              np.sort(val))
