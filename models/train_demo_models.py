"""Train the shipped demo CNNs on the lung-ultrasound phantom and write ``models/manifest.json``.

    .venv/bin/python models/train_demo_models.py            # both models
    .venv/bin/python models/train_demo_models.py --only vgg16-phantom --epochs 5

Each model is ``zoo.build(arch, num_classes=3)`` trained with Adam on ``demo_images("train")``
(900 images, seed 0) normalised by mean 0.5 / std 0.25, with random horizontal flips and small
horizontal shifts (B-lines stay vertical, the pleural line stays at its depth).  The epoch with the
best accuracy on ``demo_images("val")`` (seed 2) is kept, evaluated on ``demo_images("test")``
(seed 1) and saved as a ``state_dict``; the manifest entry is what ``nnsens_core.demos.load_demo_cnn``
reads.  Deterministic: fixed seeds, deterministic algorithms and a fixed thread count (``--threads``,
default 1: on a shared 2-core CPU one thread trains ~5x faster than two fighting for the cores).
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from nnsens_core.demos import sha256_file
from nnsens_core.phantom import demo_images
from nnsens_core.training import TrainConfig, class_accuracy, train_classifier
from nnsens_core.zoo import IMAGE, ModelSpec, build

MODELS_DIR = Path(__file__).resolve().parent  # writes the weights and manifest.json next to itself
MANIFEST = MODELS_DIR / "manifest.json"

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
TRAIN_SEED = 0
MAX_SHIFT = 3  # pixels, horizontal

# name -> (arch, arch_kwargs, epochs, learning rate)
MODELS = {
    "vgg16-phantom": ("vgg16-small", {"num_classes": 3}, 12, 1e-3),
    "resnet18-phantom": ("resnet18-small", {"num_classes": 3}, 10, 1e-3),
}


def make_augment(black: float):
    """Random horizontal flip and shift by up to MAX_SHIFT pixels (the gap filled with black)."""

    def augment(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, w = xb.shape[0], xb.shape[-1]
        flip = torch.rand(n, generator=gen) < 0.5
        shift = torch.randint(-MAX_SHIFT, MAX_SHIFT + 1, (n,), generator=gen)
        out = torch.where(flip.view(n, 1, 1, 1), xb.flip(-1), xb)
        cols = torch.arange(w).view(1, w) - shift.view(n, 1)  # source column of each output column
        valid = (cols >= 0) & (cols < w)
        idx = cols.clamp(0, w - 1).view(n, 1, 1, w).expand_as(out)
        out = torch.gather(out, -1, idx)
        return torch.where(valid.view(n, 1, 1, w), out, torch.full_like(out, black))

    return augment


def train_one(name: str, arch: str, kwargs: dict, epochs: int, lr: float, data: dict) -> dict:
    spec = ModelSpec(name=name, arch=arch, task=IMAGE, input_shape=(3, 64, 64),
                     class_names=data["train"].class_names, mean=MEAN, std=STD, arch_kwargs=kwargs)
    x = {k: spec.normalize(torch.as_tensor(d.images)) for k, d in data.items()}
    y = {k: torch.as_tensor(d.labels) for k, d in data.items()}
    black = float(spec.normalize(torch.zeros(3, 1, 1))[0])

    torch.manual_seed(TRAIN_SEED)
    model = build(arch, **kwargs)
    best = {"val": -1.0, "epoch": 0, "state": None}
    t0 = time.time()

    def on_epoch(epoch: int, total: int) -> None:  # select by validation accuracy after each epoch
        model.eval()
        acc = class_accuracy(model, x["val"], y["val"], "cpu")
        model.train()
        if acc > best["val"]:
            best.update(val=acc, epoch=epoch, state=copy.deepcopy(model.state_dict()))
        print(f"  {name} epoch {epoch}/{total}: val acc {acc:.3f} ({time.time() - t0:.0f} s)",
              flush=True)

    cfg = TrainConfig(epochs=epochs, batch_size=32, lr=lr, weight_decay=0.0, optimizer="adam",
                      seed=TRAIN_SEED)
    history = train_classifier(model, x["train"], y["train"], cfg, "cpu", on_epoch,
                               make_augment(black))
    model.load_state_dict(best["state"])
    model.eval()
    seconds = time.time() - t0
    test_acc = class_accuracy(model, x["test"], y["test"], "cpu")
    train_acc = class_accuracy(model, x["train"], y["train"], "cpu")
    path = MODELS_DIR / f"{name}.pt"
    torch.save(model.state_dict(), path)
    print(f"{name}: best epoch {best['epoch']}, val {best['val']:.3f}, test {test_acc:.3f}, "
          f"train {train_acc:.3f}, {seconds:.0f} s, {path.stat().st_size / 1024:.0f} KiB", flush=True)
    return {"file": path.name, "arch": arch, "arch_kwargs": kwargs, "input_shape": [3, 64, 64],
            "class_names": list(spec.class_names), "mean": list(MEAN), "std": list(STD),
            "sha256": sha256_file(path), "test_accuracy": round(test_acc, 4),
            "val_accuracy": round(best["val"], 4), "train_accuracy": round(train_acc, 4),
            "train_seed": TRAIN_SEED, "epochs": epochs, "best_epoch": best["epoch"],
            "train_seconds": round(seconds, 1), "final_loss": round(history[-1], 4),
            "data": "nnsens_core.phantom.demo_images: train seed 0 (900), val seed 2 (300), "
                    "test seed 1 (300)",
            "script": "models/train_demo_models.py"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=sorted(MODELS), action="append",
                    help="train only this model (repeatable)")
    ap.add_argument("--epochs", type=int, help="override the epochs of every model")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    data = {k: demo_images(k) for k in ("train", "val", "test")}
    entries = json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {}
    for name in args.only or list(MODELS):
        arch, kwargs, epochs, lr = MODELS[name]
        entries[name] = train_one(name, arch, kwargs, args.epochs or epochs, lr, data)
        entries[name]["threads"] = args.threads
        MANIFEST.write_text(json.dumps(dict(sorted(entries.items())), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
