"""Built-in demos that work offline: tabular data + paper MLP, phantom images + shipped CNNs."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from .data import TabularData, demo_rows, demo_tabular
from .errors import NnsensError
from .loading import load_model
from .resources import models_dir
from .training import TrainConfig, binary_accuracy, train_binary
from .zoo import TABULAR, LoadedModel, ModelSpec, PaperMLP



def train_paper_mlp(data: TabularData, train_rows: str | None = None, hidden: int = 10,
                    cfg: TrainConfig = TrainConfig(epochs=100), device="cpu",
                    progress=None) -> tuple[LoadedModel, dict]:
    """The paper's MLP trained on ``train_rows`` of raw (unscaled) features.

    Returns the model and ``{"train_rows", "test_rows", "train_acc", "test_acc", "loss"}``.
    """
    default_train, default_test = demo_rows(data)
    train_rows = train_rows or default_train
    test_rows = default_test if train_rows == default_train else None
    tr = data.rows(train_rows)
    torch.manual_seed(cfg.seed)  # the initial weights, so one seed gives one model in any process
    model = PaperMLP(data.n_features, hidden)
    history = train_binary(model, tr.X, tr.y, cfg, device, progress)
    info = {"train_rows": train_rows, "test_rows": test_rows, "loss": history,
            "train_acc": binary_accuracy(model, tr.X, tr.y, device)}
    if test_rows:
        te = data.rows(test_rows)
        info["test_acc"] = binary_accuracy(model, te.X, te.y, device)
    spec = ModelSpec(name=f"Paper MLP ({data.name})", arch="paper-mlp", task=TABULAR,
                     input_shape=(data.n_features,), feature_names=data.feature_names,
                     arch_kwargs={"n_inputs": data.n_features, "hidden": hidden})
    return LoadedModel(model.cpu().eval(), spec, "trained here"), info


SHIPPED_MLP = "paper-mlp-pima"
"""``models/paper-mlp-pima.pt`` (+ ``.json``): the demo MLP trained with seed 0 on the shipped Pima
CSV by ``models/train_paper_mlp.py``, so the dashboard's first page does not wait for training."""


def _shipped_mlp(data: TabularData, seed: int) -> tuple[LoadedModel, dict] | None:
    """The shipped demo MLP when it is what :func:`train_paper_mlp` would train here (seed 0, the
    shipped CSV, recorded by its SHA-256), else None."""
    from .data import pima_path
    try:
        folder = models_dir()
    except NnsensError:
        return None
    meta_path, weights = folder / f"{SHIPPED_MLP}.json", folder / f"{SHIPPED_MLP}.pt"
    if seed != 0 or not (meta_path.is_file() and weights.is_file()):
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("seed") != seed or meta.get("data_sha256") != sha256_file(pima_path()) \
            or meta.get("weights_sha256") != sha256_file(weights):
        return None
    spec = ModelSpec(name=f"Paper MLP ({data.name})", arch="paper-mlp", task=TABULAR,
                     input_shape=(data.n_features,), feature_names=data.feature_names,
                     arch_kwargs={"n_inputs": data.n_features, "hidden": meta["hidden"]})
    lm = load_model(weights, arch="paper-mlp", arch_kwargs=dict(spec.arch_kwargs), spec=spec)
    lm.report = f"shipped weights ({weights.name}, trained by models/train_paper_mlp.py)"
    return lm, {k: meta[k] for k in ("train_rows", "test_rows", "loss", "train_acc", "test_acc")}


def demo_tabular_model(seed: int = 0, device="cpu") -> tuple[TabularData, LoadedModel, dict]:
    """The demo data and the paper MLP trained on it with ``seed``: the shipped weights for seed 0
    (the same model, without the wait), a training here for any other seed."""
    data = demo_tabular()
    shipped = _shipped_mlp(data, seed)
    if shipped is not None:
        return data, shipped[0], shipped[1]
    model, info = train_paper_mlp(data, cfg=TrainConfig(epochs=100, seed=seed), device=device)
    return data, model, info


def manifest() -> dict:
    """``models/manifest.json``: ``{name: {file, arch, arch_kwargs, input_shape, class_names, mean,
    std, sha256, test_accuracy, ...}}``."""
    return json.loads((models_dir() / "manifest.json").read_text())


def demo_cnn_names(ndim_spatial: int | None = 2) -> list[str]:
    """Shipped CNNs, the default first: the demo VGG-16 (the paper's model), then the rest sorted.

    ``ndim_spatial=2`` (the default) lists the 2-D image models, ``3`` the volume models (input
    (C, D, H, W)), ``None`` all. The dashboard's model menu and the CLI's missing ``--model`` both
    take the first 2-D one.
    """
    entries = manifest()
    return sorted((n for n, e in entries.items()
                   if ndim_spatial is None or len(e["input_shape"]) - 1 == ndim_spatial),
                  key=lambda n: ("vgg" not in n, n))


def load_demo_cnn(name: str, device="cpu") -> LoadedModel:
    """A shipped CNN from ``models/`` (checked against its sha256 in the manifest): the 2-D
    phantom CNNs and the 3-D ``cnn3d-brain`` (input (1, 48, 48, 48), classes control / AD)."""
    entries = manifest()
    if name not in entries:
        raise NnsensError(f"demo model {name!r} is not shipped; choose one of {sorted(entries)}")
    e = entries[name]
    path = models_dir() / e["file"]
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != e["sha256"]:
        raise NnsensError(f"{path.name} does not match its sha256 in the manifest; re-run "
                          f"{e.get('script', 'models/train_demo_models.py')}")
    spec = ModelSpec(name=name, arch=e["arch"], task="image", input_shape=tuple(e["input_shape"]),
                     class_names=tuple(e["class_names"]), mean=tuple(e.get("mean", ())),
                     std=tuple(e.get("std", ())), arch_kwargs=e.get("arch_kwargs", {}))
    return load_model(data, arch=e["arch"], arch_kwargs=e.get("arch_kwargs", {}), spec=spec,
                      device=device)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


__all__ = ["train_paper_mlp", "demo_tabular_model", "manifest", "demo_cnn_names", "load_demo_cnn",
           "sha256_file"]
