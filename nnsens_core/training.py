"""Training loops, written once for every page that (re)trains a model: the paper MLP and image
classifiers (:func:`fit`), CNNs on user images or volumes with validation and early stopping
(:func:`train_cnn`), balanced accuracy and stratified folds."""
from __future__ import annotations

from dataclasses import dataclass, field

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
               gen: torch.Generator, dev, augment=None, on_batch=None, sample_weights=None) -> float:
    """One pass over ``X`` in a random order (drawn from ``gen``) with mini-batches of
    ``batch_size`` (a last batch of one sample is skipped: BatchNorm needs two); returns the mean
    loss. ``on_batch(k)`` is called after the k-th batch (1-based). ``sample_weights``: draw
    ``len(X)`` samples with replacement in proportion to them (``WeightedRandomSampler``) instead
    of a permutation."""
    n = len(X)
    if sample_weights is None:
        perm = torch.randperm(n, generator=gen)
    else:
        from torch.utils.data import WeightedRandomSampler
        perm = torch.as_tensor(list(WeightedRandomSampler(sample_weights, n, replacement=True,
                                                          generator=gen)), dtype=torch.long)
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


# --------------------------------------------------------------------------- grouped splits

MAX_GROUP_CSV_BYTES = 5 * 2**20


def groups_from_names(files, pattern: str | None = None) -> tuple[str, ...]:
    """One group id per file name (patient / video), for :func:`grouped_split`.

    Default: the file-name stem up to its frame number, as the image loaders read it
    (:func:`nnsens_core.data.group_from_name`; ``covid/clip12_f003.png`` -> ``clip12``). ``pattern``: a regular expression searched in the
    whole name (folders included); its first group (or the whole match, without a group) is the
    id; a name it does not match is an error naming it."""
    import re
    from pathlib import PurePosixPath
    names = [str(f) for f in files]
    if not names:
        raise NnsensError("no file names to take groups from; the dataset keeps file names when it "
                          "is loaded from a ZIP or folder")
    if pattern is None:
        from .data import group_from_name
        return tuple(group_from_name(PurePosixPath(f.replace("\\", "/")).name) for f in names)
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise NnsensError(f"group pattern {pattern!r} is not a regular expression ({exc}); e.g. "
                          r"'(patient\d+)' or '^([^_]+)_'") from None
    out = []
    for f in names:
        m = rx.search(f)
        gid = (m.group(1) if rx.groups else m.group(0)) if m else None
        if not gid:
            raise NnsensError(f"group pattern {pattern!r} does not match file {f!r} (or captures an "
                              "empty id); fix the pattern so every file name holds its group id")
        out.append(gid)
    return tuple(out)


def groups_from_csv(data, csv_bytes: bytes) -> tuple[str, ...]:
    """One group id per image of ``data`` (an :class:`~nnsens_core.data.ImageData` with
    ``files``) from a CSV of ``file,group`` rows (a header row naming ``file`` is skipped). A row's
    file matches an image by its full name inside the upload or by its base name; every image
    needs a row."""
    import csv
    from pathlib import PurePosixPath
    files = getattr(data, "files", None)
    if not files:
        raise NnsensError("the dataset keeps no file names, so a CSV cannot assign its groups; load "
                          "the images from a ZIP or folder (or take groups from the names)")
    if len(csv_bytes) > MAX_GROUP_CSV_BYTES:
        raise NnsensError(f"the group CSV is {len(csv_bytes) / 2**20:.1f} MiB, over the "
                          f"{MAX_GROUP_CSV_BYTES // 2**20} MiB limit")
    try:
        text = bytes(csv_bytes).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise NnsensError("the group CSV is not UTF-8 text; save it as CSV (UTF-8)") from None
    rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
    if rows and rows[0][0].strip().lower() in ("file", "filename", "file_name", "image", "path"):
        rows = rows[1:]
    by_name: dict[str, str] = {}
    for k, r in enumerate(rows):
        if len(r) < 2 or not r[0].strip() or not r[1].strip():
            raise NnsensError(f"group CSV row {k + 1} is {r!r}; every row needs a file name and a "
                              "group id: file,group")
        by_name[r[0].strip().replace("\\", "/")] = r[1].strip()
    base = {}
    for name, g in by_name.items():
        base.setdefault(PurePosixPath(name).name, set()).add(g)
    out, missing = [], []
    for f in files:
        f = str(f).replace("\\", "/")
        g = by_name.get(f)
        if g is None:
            gs = base.get(PurePosixPath(f).name, set())
            g = next(iter(gs)) if len(gs) == 1 else None
        if g is None:
            missing.append(f)
        out.append(g)
    if missing:
        raise NnsensError(f"the group CSV has no row for {len(missing)} of {len(files)} image(s), "
                          f"e.g. {missing[0]!r}; add a 'file,group' row for every image")
    return tuple(out)


def _split_fraction(name: str, value) -> None:
    v.in_range(name, value, 0.0, 0.5)


def grouped_split(labels, groups=None, test_fraction: float = 0.2, val_fraction: float = 0.2,
                  seed: int = 0, class_names=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(train, val, test)`` sorted int64 index arrays in which a group (``groups[i]``: the
    patient / video of sample ``i``; None: every sample its own group, i.e. a split stratified by
    image) lies in one part only.

    Stratified by class as far as the groups allow: a group counts for its majority class, and each
    class's groups (shuffled with ``seed``, largest first) go to the part furthest below its share
    of that class's samples (``test_fraction``, ``val_fraction``, the rest training). Every class
    keeps at least one group in training and, when the fraction is above 0, one in validation and
    one in test; a class with too few groups is an error naming it (by ``class_names[c]`` when
    given)."""
    y = np.asarray(labels).reshape(-1)
    n = len(y)
    _split_fraction("test_fraction", test_fraction)
    _split_fraction("val_fraction", val_fraction)
    if n == 0:
        raise NnsensError("no samples to split")
    g = np.arange(n).astype(str) if groups is None else np.asarray([str(x) for x in groups])
    if len(g) != n:
        raise NnsensError(f"{len(g)} group ids for {n} samples; give one group per sample")
    fracs = {"train": 1.0 - test_fraction - val_fraction, "val": float(val_fraction),
             "test": float(test_fraction)}
    needed = [p for p, f in fracs.items() if f > 0]
    uniq, inv = np.unique(g, return_inverse=True)
    sizes = np.bincount(inv, minlength=len(uniq))
    # majority class of each group (ties: the smaller class index)
    counts = np.zeros((len(uniq), int(y.max()) + 1), np.int64)
    np.add.at(counts, (inv, y), 1)
    major = counts.argmax(1)
    rng = np.random.default_rng(seed)
    part_of = np.empty(len(uniq), dtype=object)
    for c in np.unique(major):
        gs = np.flatnonzero(major == c)
        if len(gs) < len(needed):
            what = "image(s)" if groups is None else "group(s)"
            raise NnsensError(
                f"class {_class_name(c, class_names)} has {len(gs)} {what}, too few to give train"
                + (", validation" if val_fraction > 0 else "") + (" and test" if test_fraction > 0 else "")
                + f" one each; add {'images' if groups is None else 'patients / videos'} of that class"
                + (", or set the test / validation fraction to 0" if len(needed) > 1 else ""))
        gs = rng.permutation(gs)
        gs = gs[np.argsort(-sizes[gs], kind="stable")]  # largest first, random among equals
        total = sizes[gs].sum()
        filled = {p: 0 for p in needed}
        members: dict[str, list[int]] = {p: [] for p in needed}
        for k, gi in enumerate(gs):
            left = len(gs) - k
            empty = [p for p in needed if not members[p]]
            if len(empty) >= left:  # the remaining groups must each fill an empty part
                p = max(empty, key=lambda q: fracs[q])
            else:
                p = max(needed, key=lambda q: (fracs[q] * total - filled[q], fracs[q]))
            members[p].append(gi)
            filled[p] += sizes[gi]
        for p, ms in members.items():
            part_of[ms] = p
    parts = tuple(np.flatnonzero(np.isin(inv, np.flatnonzero(part_of == p))).astype(np.int64)
                  for p in ("train", "val", "test"))
    return parts


def _class_name(c, class_names) -> str:
    return repr(str(class_names[int(c)])) if class_names is not None else str(int(c))


def check_no_group_leak(groups, **parts) -> None:
    """Raise when a group id appears in two of the named index arrays (e.g. ``train=..., test=...``)."""
    if groups is None:
        return
    g = np.asarray([str(x) for x in groups])
    seen: dict[str, str] = {}
    for name, idx in parts.items():
        for gid in np.unique(g[np.asarray(idx, dtype=np.int64)]):
            if gid in seen and seen[gid] != name:
                raise NnsensError(f"group {gid!r} is in both {seen[gid]} and {name}; keep each "
                                  "patient / video in one part (use grouped_split)")
            seen[gid] = name


# --------------------------------------------------------------------------- balancing

BALANCING = ("none", "weights", "sampler")


def class_weights(labels, n_classes: int) -> np.ndarray:
    """Weights ``n / (K * n_c)`` per class (scikit-learn's ``"balanced"``; ``K`` classes present,
    ``n`` samples): each class then weighs as much in the loss as any other. A class absent from
    ``labels`` gets 0."""
    y = np.asarray(labels).reshape(-1)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(n_classes, np.float64)
    w[present] = len(y) / (present.sum() * counts[present])
    return w


# --------------------------------------------------------------------------- augmentation

@dataclass(frozen=True)
class AugmentConfig:
    """On-the-fly augmentation of [0, 1] training images suited to (convex-probe) ultrasound, drawn
    per image from a seeded generator: a rotation of up to ``rotation_deg`` degrees about the
    probe apex (the top-centre of the image), a zoom by up to ``scale`` (fraction) about the same
    point, a shift of up to ``translate`` (fraction of each side), gamma ``exp(U(-gamma, gamma))``,
    contrast ``1 + U(-contrast, contrast)`` about the image mean, brightness ``U(-brightness,
    brightness)``, multiplicative speckle ``x (1 + speckle N(0, 1))``, clipped to [0, 1]. No vertical
    flip (the probe is at the top); a horizontal flip with probability 0.5 when ``hflip``.
    All zeros and ``hflip=False`` is the identity (:meth:`off`)."""
    rotation_deg: float = 10.0
    scale: float = 0.1
    translate: float = 0.05
    brightness: float = 0.1
    contrast: float = 0.15
    gamma: float = 0.15
    speckle: float = 0.1
    hflip: bool = False

    def __post_init__(self):
        v.in_range("rotation_deg", self.rotation_deg, 0.0, 45.0)
        for name in ("scale", "translate", "brightness", "contrast", "gamma", "speckle"):
            v.in_range(name, getattr(self, name), 0.0, 0.5)
        if not isinstance(self.hflip, bool):
            raise NnsensError(f"hflip={self.hflip!r} must be True or False")

    @classmethod
    def off(cls) -> AugmentConfig:
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, False)

    @property
    def enabled(self) -> bool:
        return self.hflip or any(getattr(self, f) > 0 for f in (
            "rotation_deg", "scale", "translate", "brightness", "contrast", "gamma", "speckle"))


def augment_images(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """``x`` (N, C, H, W) in [0, 1] augmented by ``cfg`` (see :class:`AugmentConfig`); the random
    draws come from ``gen`` (a CPU generator), so a seed fixes them. Same shape, values in [0, 1];
    ``x`` itself when nothing is enabled."""
    if not cfg.enabled:
        return x
    if x.ndim != 4:
        raise NnsensError(f"augmentation takes 2-D images (N, C, H, W); got shape {tuple(x.shape)}")
    import math

    import torch.nn.functional as F
    n, _, h, w = x.shape

    def u(lo, hi):  # n uniform draws in [lo, hi) from gen, on x's device
        return (lo + (hi - lo) * torch.rand(n, generator=gen)).to(x.device, x.dtype)

    out = x
    if cfg.rotation_deg > 0 or cfg.scale > 0 or cfg.translate > 0:
        ang = u(-cfg.rotation_deg, cfg.rotation_deg) * (math.pi / 180)
        s = u(1 - cfg.scale, 1 + cfg.scale)
        tx, ty = u(-cfg.translate, cfg.translate) * 2, u(-cfg.translate, cfg.translate) * 2
        # output -> input coordinates in grid_sample's [-1, 1] units, rotating in pixel units
        # about the apex p = (0, -1) (top-centre): src = D^-1 R D (out - p) / s + p - t
        cos, sin = torch.cos(ang), torch.sin(ang)
        ar = w / h
        a = torch.stack([torch.stack([cos, -sin / ar], -1), torch.stack([sin * ar, cos], -1)], -2)
        a = a / s.view(n, 1, 1)
        p = torch.tensor([0.0, -1.0], device=x.device, dtype=x.dtype)
        b = p - a @ p - torch.stack([tx, ty], -1)
        theta = torch.cat([a, b.unsqueeze(-1)], -1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(out, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if cfg.hflip:
        flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
        out = torch.where(flip.view(n, 1, 1, 1), out.flip(-1), out)
    if cfg.gamma > 0:
        out = out.clamp(0, 1) ** torch.exp(u(-cfg.gamma, cfg.gamma)).view(n, 1, 1, 1)
    if cfg.contrast > 0:
        m = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - m) * (1 + u(-cfg.contrast, cfg.contrast)).view(n, 1, 1, 1) + m
    if cfg.brightness > 0:
        out = out + u(-cfg.brightness, cfg.brightness).view(n, 1, 1, 1)
    if cfg.speckle > 0:
        noise = torch.randn((n, 1, h, w), generator=gen).to(x.device, x.dtype)
        out = out * (1 + cfg.speckle * noise)
    return out.clamp(0.0, 1.0)


@dataclass(frozen=True)
class CNNTrainConfig:
    """How :func:`train_cnn` trains: Adam (or SGD) for up to ``epochs`` epochs, keeping the weights
    of the epoch with the best validation balanced accuracy (ties: lower validation loss) and
    stopping after ``patience`` epochs without improvement (0: never stop early). Without
    ``val_idx``, a stratified ``val_fraction`` of the training indices validates (0: no
    validation; the last epoch's weights are kept).

    ``test_fraction`` > 0 (or ``groups`` given to :func:`train_cnn`) splits the data with
    :func:`grouped_split` into train / validation / test; the report then holds the test
    accuracy, balanced accuracy and confusion matrix. ``balance``: ``"none"``, ``"weights"``
    (cross-entropy weighted by :func:`class_weights` of the training labels) or ``"sampler"``
    (batches drawn with replacement, each class equally likely). ``augment``: an
    :class:`AugmentConfig` applied to each training batch (2-D images only)."""
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.0
    optimizer: str = "adam"
    patience: int = 5
    val_fraction: float = 0.2
    seed: int = 0
    test_fraction: float = 0.0
    balance: str = "none"
    augment: AugmentConfig | None = None

    def __post_init__(self):
        _check_optimiser_settings(self)
        v.in_range("test_fraction", self.test_fraction, 0.0, 0.5)
        v.one_of("balance", self.balance, BALANCING)
        if self.augment is not None and not isinstance(self.augment, AugmentConfig):
            raise NnsensError(f"augment={self.augment!r} must be an AugmentConfig or None")
        if not isinstance(self.patience, int) or isinstance(self.patience, bool) or self.patience < 0:
            raise NnsensError(f"patience={self.patience!r} must be a whole number >= 0 (0: no early "
                              "stopping)")
        v.in_range("val_fraction", self.val_fraction, 0.0, 0.5)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise NnsensError(f"seed={self.seed!r} must be a whole number >= 0")

    def make_optimizer(self, params) -> torch.optim.Optimizer:
        return TrainConfig.make_optimizer(self, params)  # same fields, same optimisers


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """(K, K) int64 counts: row = true class, column = predicted class."""
    t = np.asarray(y_true, dtype=np.int64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if len(t) != len(p):
        raise NnsensError(f"{len(t)} labels but {len(p)} predictions; give one prediction per label")
    cm = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


@dataclass
class TrainReport(Result):
    """What :func:`train_cnn` did: per-epoch ``train_loss``, ``val_loss`` and
    ``val_balanced_accuracy`` (empty without validation), the kept epoch ``best_epoch``
    (1-based), whether it ``stopped_early``, and the indices it trained, validated and tested on.
    With a test split: ``test_accuracy``, ``test_balanced_accuracy`` and ``confusion`` ((K, K)
    int counts, row = true class, column = predicted, classes ``class_names``) of the kept
    weights on the test samples; ``class_weights`` of the loss (``balance="weights"``); ``groups``:
    how many groups (patients / videos) each part holds (empty without groups)."""
    config: CNNTrainConfig
    seconds: float
    train_loss: list[float]
    val_loss: list[float]
    val_balanced_accuracy: list[float]
    best_epoch: int
    stopped_early: bool
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    test_accuracy: float | None = None
    test_balanced_accuracy: float | None = None
    confusion: np.ndarray | None = None
    class_names: tuple[str, ...] = ()
    class_weights: tuple[float, ...] = ()
    groups: dict = field(default_factory=dict)

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
                "n_test": len(self.test_idx), "test_accuracy": self.test_accuracy,
                "test_balanced_accuracy": self.test_balanced_accuracy,
                "confusion": None if self.confusion is None else {
                    "class_names": list(self.class_names), "rows": "true class",
                    "columns": "predicted class", "counts": self.confusion.tolist()},
                "class_weights": list(self.class_weights), "groups": dict(self.groups),
                "history": self.to_frame().to_dict(orient="list")}

    def to_frame(self):
        import pandas as pd
        n = self.epochs_run
        pad = [None] * n
        return pd.DataFrame({"epoch": list(range(1, n + 1)), "train_loss": self.train_loss,
                             "val_loss": self.val_loss or pad,
                             "val_balanced_accuracy": self.val_balanced_accuracy or pad})

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"train_idx": self.train_idx, "val_idx": self.val_idx}
        if len(self.test_idx):
            out["test_idx"] = self.test_idx
        if self.confusion is not None:
            out["confusion"] = self.confusion
        return out


def _indices(idx, n: int, what: str) -> np.ndarray:
    a = np.asarray(idx, dtype=np.int64).reshape(-1)
    if len(a) and (a.min() < 0 or a.max() >= n):
        raise NnsensError(f"{what} holds indices outside 0..{n - 1} (min {a.min()}, max {a.max()})")
    if len(np.unique(a)) != len(a):
        raise NnsensError(f"{what} holds an index twice; give each sample once")
    return a


def _split(data, cfg: CNNTrainConfig, train_idx, val_idx, test_idx, groups):
    """(train, val, test) indices of :func:`train_cnn` (see there)."""
    n = len(data)
    y = np.asarray(data.labels)
    if groups is not None and len(groups) != n:
        raise NnsensError(f"{len(groups)} group ids for {n} samples; give one group per sample")
    if train_idx is None and val_idx is None and test_idx is None and (
            groups is not None or cfg.test_fraction > 0):
        return grouped_split(y, groups, cfg.test_fraction, cfg.val_fraction, cfg.seed,
                             data.class_names)
    test = np.zeros(0, np.int64) if test_idx is None else _indices(test_idx, n, "test_idx")
    val = None if val_idx is None else _indices(val_idx, n, "val_idx")
    rest = np.setdiff1d(np.arange(n), np.concatenate([test, val if val is not None else []]))
    train = _indices(rest if train_idx is None else train_idx, n, "train_idx")
    if val is None:
        val = np.zeros(0, np.int64)
        if cfg.val_fraction > 0:
            if groups is not None:
                sub = [groups[i] for i in train]
                tr, va, _ = grouped_split(y[train], sub, 0.0, cfg.val_fraction, cfg.seed,
                                          data.class_names)
                val, train = train[va], train[tr]
            else:
                k = max(2, round(1 / cfg.val_fraction))
                fold = stratified_folds(y[train], k, cfg.seed)[0][1]
                val, train = train[fold], np.delete(train, fold)
    for a, b, what in ((train, val, "train_idx and val_idx"), (train, test, "train_idx and test_idx"),
                       (val, test, "val_idx and test_idx")):
        if np.intersect1d(a, b).size:
            raise NnsensError(f"{what} share {np.intersect1d(a, b).size} sample(s); validate and "
                              "test on samples the model does not train on")
    check_no_group_leak(groups, train=train, validation=val, test=test)
    return train, val, test


def train_cnn(model: nn.Module, data, cfg: CNNTrainConfig = CNNTrainConfig(), *, train_idx=None,
              val_idx=None, test_idx=None, groups=None, spec=None, device="auto",
              progress: Progress | None = None) -> tuple[nn.Module, TrainReport]:
    """Train a classifier returning logits on ``data`` (:class:`~nnsens_core.data.ImageData`,
    2-D images or 3-D volumes) with cross-entropy; returns the model (eval mode, with the kept
    epoch's weights) and a :class:`TrainReport`.

    Splits: with ``groups`` (one patient / video id per sample, e.g. ``data.groups``) or
    ``cfg.test_fraction`` > 0 and no indices given, :func:`grouped_split` makes train /
    validation / test (a group never in two parts). Otherwise ``test_idx`` (default: none),
    ``train_idx`` (default: every sample not in ``val_idx`` / ``test_idx``) and ``val_idx``
    (default: a stratified ``cfg.val_fraction`` of ``train_idx``, grouped when ``groups`` is
    given) pick the samples; given indices are checked for shared samples and groups.
    ``spec`` (a :class:`~nnsens_core.zoo.ModelSpec`) normalises the [0, 1] images and checks
    their shape; ``progress(done, total)`` advances after every batch (``total`` = epochs x
    batches; it jumps to ``total`` when training stops early). ``cfg.seed`` fixes the split, the
    batch order, the augmentation and dropout; the initial weights are the caller's."""
    import copy
    import time
    t0 = time.perf_counter()
    if spec is not None and tuple(spec.input_shape) != tuple(data.shape):
        raise NnsensError(f"the data has shape {tuple(data.shape)} per sample but the model takes "
                          f"{tuple(spec.input_shape)}; load the data at the model's size")
    aug = cfg.augment if cfg.augment is not None and cfg.augment.enabled else None
    if aug is not None and data.ndim_spatial != 2:
        raise NnsensError("augmentation is for 2-D images; these are volumes "
                          f"{tuple(data.shape)}: train without augment")
    train, val, test = _split(data, cfg, train_idx, val_idx, test_idx, groups)
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
    weights = class_weights(y[train].numpy(), n_cls)
    loss_fn = nn.CrossEntropyLoss()
    train_loss_fn = loss_fn
    if cfg.balance == "weights":
        train_loss_fn = nn.CrossEntropyLoss(weight=torch.as_tensor(weights, dtype=torch.float32,
                                                                   device=dev))
    sample_w = torch.as_tensor(weights[y[train].numpy()], dtype=torch.double) \
        if cfg.balance == "sampler" else None
    augment = None
    if aug is not None:
        if spec is not None:
            def augment(xb, g):  # augment in [0, 1], then back to model input
                return spec.normalize(augment_images(spec.denormalize(xb).clamp(0, 1), aug, g))
        else:
            def augment(xb, g):
                return augment_images(xb, aug, g)
    Xtr, ytr = X[train], y[train]
    n_batches = -(-len(train) // cfg.batch_size)
    total = cfg.epochs * n_batches
    history: dict[str, list[float]] = {"train": [], "val_loss": [], "val_bacc": []}
    best_key, best_epoch, best_state, stale, stopped = None, cfg.epochs, None, 0, False
    for epoch in range(cfg.epochs):
        model.train()
        on_batch = None if progress is None else (
            lambda k, e=epoch: progress(e * n_batches + k, total))
        history["train"].append(_run_epoch(model, Xtr, ytr, train_loss_fn, opt, cfg.batch_size,
                                           gen, dev, augment=augment, on_batch=on_batch,
                                           sample_weights=sample_w))
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
    t_acc = t_bacc = cm = None
    if len(test):
        pred = predict(model, X[test], dev, batch_size=cfg.batch_size).argmax(1).numpy()
        truth = y[test].numpy()
        t_acc = float((pred == truth).mean())
        t_bacc = balanced_accuracy(truth, pred)
        cm = confusion_matrix(truth, pred, n_cls)
    n_groups = {}
    if groups is not None:
        g = np.asarray([str(x) for x in groups])
        n_groups = {p: len(np.unique(g[idx])) for p, idx in
                    (("train", train), ("val", val), ("test", test))}
    if progress is not None:
        progress(total, total)
    return model, TrainReport(cfg, time.perf_counter() - t0, history["train"], history["val_loss"],
                              history["val_bacc"], best_epoch, stopped, np.sort(train),
                              np.sort(val), np.sort(test), t_acc, t_bacc, cm,
                              tuple(str(c) for c in data.class_names),
                              tuple(float(w) for w in weights) if cfg.balance == "weights" else (),
                              n_groups)


# --------------------------------------------------------------------------- models for user images

IMAGENET_HEADS = {"vgg16": "classifier.6.", "resnet18": "fc."}
"""The classifier head of each architecture an ImageNet checkpoint can initialise (its tensors are
left as built when their shape differs: another number of classes)."""

MIN_SIDE = {"vgg16-small": 32, "vgg16": 32, "resnet18-small": 8, "resnet18": 32}
"""The smallest input side (pixels) each trainable 2-D architecture accepts."""


@dataclass(frozen=True)
class ImagenetInit:
    """What :func:`init_from_imagenet` copied: tensor names ``copied``, ``head`` (left as built:
    another shape), ``summed`` (the first conv whose RGB weights were summed for grey input; "" when
    none), ``unused`` (checkpoint tensors the model has no place for)."""
    copied: tuple[str, ...]
    head: tuple[str, ...]
    summed: str
    unused: tuple[str, ...]

    def describe(self) -> str:
        text = f"ImageNet checkpoint: {len(self.copied)} tensors copied"
        if self.summed:
            text += f" ({self.summed}: RGB weights summed for 1-channel input)"
        if self.head:
            text += f"; head {', '.join(self.head)} trained from scratch (other number of classes)"
        if self.unused:
            text += f"; {len(self.unused)} checkpoint tensor(s) unused"
        return text


def init_from_imagenet(model: nn.Module, arch: str, checkpoint) -> ImagenetInit:
    """Copy a torchvision ImageNet checkpoint of ``arch`` (``"vgg16"`` / ``"resnet18"``; the
    state_dict file's bytes, read with :func:`~nnsens_core.loading.read_state_dict`, weights only,
    or a dict of tensors) into ``model`` (built by :func:`~nnsens_core.zoo.build` with the same
    arch): every tensor of the same name and shape, except the classifier head when its shape
    differs (another number of classes). For a 1-channel model the first conv's RGB weights are
    summed (a grey image repeated in R, G and B gives the same response). Nothing is downloaded.
    Any other mismatch is an error naming the tensor."""
    from .loading import read_state_dict
    if arch not in IMAGENET_HEADS:
        raise NnsensError(f"ImageNet checkpoints initialise {sorted(IMAGENET_HEADS)}, not arch="
                          f"{arch!r}; pick vgg16 or resnet18 (full size) or train from scratch")
    state = read_state_dict(bytes(checkpoint)) if isinstance(checkpoint, (bytes, bytearray)) \
        else dict(checkpoint)
    head = IMAGENET_HEADS[arch]
    first = "features.0.weight" if arch == "vgg16" else "conv1.weight"
    target = model.state_dict()
    new, copied, skipped, summed = {}, [], [], ""
    missing = [k for k in target if k not in state and not k.startswith(head)
               and not k.endswith("num_batches_tracked")]
    if missing:
        raise NnsensError(f"the checkpoint lacks {len(missing)} of the {len(target)} tensors of "
                          f"{arch}, e.g. {missing[0]!r}; upload torchvision's {arch} ImageNet "
                          "state_dict (e.g. saved from torchvision.models." + arch + "(weights=...))")
    for k, t in target.items():
        if k not in state:
            continue
        src = state[k]
        if k == first and src.ndim == 4 and src.shape[1] == 3 and t.shape[1] == 1 \
                and src.shape[0] == t.shape[0] and src.shape[2:] == t.shape[2:]:
            src, summed = src.sum(dim=1, keepdim=True), k
        if tuple(src.shape) != tuple(t.shape):
            if k.startswith(head):
                skipped.append(k)
                continue
            raise NnsensError(f"checkpoint tensor {k!r} has shape {tuple(src.shape)} but {arch} "
                              f"here has {tuple(t.shape)}; is it a torchvision {arch} checkpoint?")
        new[k] = src.to(t.dtype)
        copied.append(k)
    model.load_state_dict(new, strict=False)
    unused = tuple(k for k in state if k not in target)
    return ImagenetInit(tuple(copied), tuple(skipped), summed, unused)


def model_kwargs(arch: str, n_classes: int, shape: tuple[int, ...], width=None) -> dict:
    """``build`` keyword arguments of ``arch`` for ``n_classes`` classes and inputs ``shape``
    (C, H, W) (volumes (C, D, H, W) for ``cnn3d-small``: as many pooling blocks as the smallest side
    allows, at most 4); ``width``: the width multiplier of the ``-small`` variants (base channels
    for ``cnn3d-small``), ignored by the full-size ones. The input must reach the smallest side of
    :data:`MIN_SIDE`."""
    kw = {"num_classes": int(n_classes), "in_channels": int(shape[0])}
    side = min(shape[1:])
    if arch == "cnn3d-small":
        blocks = min(4, int(np.floor(np.log2(side))) if side >= 2 else 0)
        if blocks < 1:
            raise NnsensError(f"the volumes are {tuple(shape[1:])} voxels; cnn3d-small needs at "
                              "least 2 voxels per side")
        kw.update(width=int(width or 8), blocks=blocks)
        return kw
    if arch not in MIN_SIDE:
        raise NnsensError(f"arch={arch!r} cannot be trained on images here; use one of "
                          f"{sorted(MIN_SIDE)}")
    if len(shape) != 3:
        raise NnsensError(f"{arch} takes 2-D images (C, H, W); got inputs of shape {tuple(shape)}")
    if side < MIN_SIDE[arch]:
        raise NnsensError(f"the input is {shape[1]}×{shape[2]} pixels; {arch} needs at least "
                          f"{MIN_SIDE[arch]} per side" + ("; use resnet18-small" if arch != "resnet18-small" else ""))
    if arch.endswith("-small"):
        kw["width"] = float(0.125 if width is None else width)
    return kw


@dataclass
class TrainedModel:
    """A model trained by :func:`train_image_model`: the ``module`` (eval mode), its ``spec``
    (class names, input shape, normalisation and resize policy: the preprocessing recipe), the
    :class:`TrainReport` and, when it started from ImageNet weights, an :class:`ImagenetInit`."""
    module: nn.Module
    spec: ModelSpec  # noqa: F821
    report: TrainReport
    init: ImagenetInit | None = None
    data_name: str = ""

    def state_dict_bytes(self) -> bytes:
        """The weights as a ``torch.save``d state_dict on the CPU (tensors only)."""
        import io
        buf = io.BytesIO()
        torch.save({k: t.detach().cpu() for k, t in self.module.state_dict().items()}, buf)
        return buf.getvalue()

    def summary(self) -> str:
        rep = self.report
        bacc = rep.best_val_balanced_accuracy
        text = f"{rep.epochs_run} epoch(s) in {rep.seconds:.1f} s, kept epoch {rep.best_epoch}"
        text += (f", validation balanced accuracy {bacc:.3f} on {len(rep.val_idx)}" if bacc is not None
                 else ", no validation split (last epoch kept)")
        if rep.test_balanced_accuracy is not None:
            text += (f"; test accuracy {rep.test_accuracy:.3f}, balanced accuracy "
                     f"{rep.test_balanced_accuracy:.3f} on {len(rep.test_idx)}")
        return text

    def manifest(self, file: str, **extra) -> dict:
        """The model's manifest entry (:func:`~nnsens_core.model_manifest.manifest_entry`: arch,
        class names, input shape, mean / std, resize policy) with the test metrics, the split and
        the training settings."""
        from .model_manifest import manifest_entry
        rep = self.report
        recipe = ""
        if len(self.spec.input_shape) == 3:
            from .preprocess import Recipe
            recipe = Recipe.from_spec(self.spec).describe()
        return manifest_entry(
            self.spec, file, recipe=recipe, balanced_accuracy=rep.best_val_balanced_accuracy,
            test_accuracy=rep.test_accuracy, test_balanced_accuracy=rep.test_balanced_accuracy,
            confusion=None if rep.confusion is None else rep.confusion.tolist(),
            best_epoch=rep.best_epoch, epochs_run=rep.epochs_run, n_train=len(rep.train_idx),
            n_val=len(rep.val_idx), n_test=len(rep.test_idx), groups=dict(rep.groups),
            train_seed=rep.config.seed, lr=rep.config.lr, batch_size=rep.config.batch_size,
            balance=rep.config.balance, augment=rep.config.augment is not None
            and rep.config.augment.enabled, data=self.data_name,
            imagenet_init=None if self.init is None else self.init.describe(), **extra)


def train_image_model(data, arch: str, cfg: CNNTrainConfig = CNNTrainConfig(), *, recipe=None,
                      mean=(), std=(), width=None, groups=None, imagenet=None, name: str | None = None,
                      device="auto", progress: Progress | None = None) -> TrainedModel:
    """Train a fresh ``arch`` (``vgg16``, ``resnet18``, their ``-small`` variants; ``cnn3d-small``
    for volumes) on ``data`` (:class:`~nnsens_core.data.ImageData`) with :func:`train_cnn`.

    ``recipe`` (:class:`~nnsens_core.preprocess.Recipe`; 2-D images): the model's input size,
    channels, resize policy and normalisation; the images are rebuilt from the dataset's originals
    (``data.for_recipe``; without originals, the images are resampled when their size or
    channels differ from the recipe's). Without a recipe the data is used as it is, normalised by ``mean`` / ``std``.
    ``groups`` (one id per image, e.g. ``data.groups``) keeps each patient / video in one of
    train / validation / test (:func:`grouped_split`). ``imagenet``: a torchvision ImageNet
    checkpoint (bytes) of ``vgg16`` / ``resnet18`` to start from (:func:`init_from_imagenet`);
    otherwise the initial weights follow ``cfg.seed``. The returned spec carries the recipe."""
    from .zoo import IMAGE, ModelSpec, build
    if recipe is not None:
        if data.ndim_spatial != 2:
            raise NnsensError("a preprocessing recipe applies to 2-D images; these are volumes")
        if getattr(data, "originals", None) is not None or \
                tuple(data.shape) != (recipe.channels, *recipe.size):
            data = data.for_recipe(recipe)
        mean, std, resize = tuple(recipe.mean), tuple(recipe.std), recipe.resize
    else:
        resize = "letterbox"
    kw = model_kwargs(arch, len(data.class_names), tuple(data.shape), width)
    spec = ModelSpec(name=name or f"{arch} on {data.name}", arch=arch, task=IMAGE,
                     input_shape=tuple(int(s) for s in data.shape),
                     class_names=tuple(str(c) for c in data.class_names), mean=tuple(mean),
                     std=tuple(std), arch_kwargs=kw, resize=resize)
    torch.manual_seed(cfg.seed)  # the initial weights follow the seed too
    module = build(arch, **kw)
    init = None if imagenet is None else init_from_imagenet(module, arch, imagenet)
    module, report = train_cnn(module, data, cfg, groups=groups, spec=spec, device=device,
                               progress=progress)
    return TrainedModel(module, spec, report, init, str(data.name))


def cnn_training_estimate(fwd_gflop: float, n: int, cfg: CNNTrainConfig, what: str = "a CNN"):
    """The :class:`~nnsens_core.budget.Estimate` of :func:`train_cnn` on ``n`` samples of a model
    whose forward pass costs ``fwd_gflop`` per sample: epochs × (training samples × forward +
    backward + optimiser steps + one forward of the validation samples), plus the test pass."""
    from . import budget as B
    n_test = round(n * cfg.test_fraction)
    n_val = round((n - n_test) * cfg.val_fraction) if cfg.val_fraction else 0
    n_train = max(0, n - n_test - n_val)
    steps = -(-n_train // cfg.batch_size)
    gflop = (cfg.epochs * (n_train * B.BACKWARD * fwd_gflop + n_val * fwd_gflop
                           + steps * B.STEP_FLOP / 1e9) + n_test * fwd_gflop)
    return B.Estimate(f"training {what} for {cfg.epochs} epochs on {n_train} samples (+ {n_val} "
                      f"validating, {n_test} testing)", gflop,
                      "reduce the epochs, the width, the input size or the dataset")
