"""Train the shipped 3-D demo CNN on the brain phantom and add it to ``models/manifest.json``.

    .venv/bin/python models/train_brain_cnn.py                # cnn3d-brain, ~4 min on 1 thread
    .venv/bin/python models/train_brain_cnn.py --epochs 3     # a quick run (overwrites the model)

``zoo.build("cnn3d-small", num_classes=2, width=WIDTH)`` trained by
``nnsens_core.training.train_cnn`` (Adam, lr 1e-3, batch 16) on
``brain_phantom.demo_volumes("train")`` (seed 0), validated after every epoch on
``demo_volumes("val")`` (seed 2): the epoch with the best validation balanced accuracy is kept and
training stops after ``PATIENCE`` epochs without improvement. The kept model is evaluated on
``demo_volumes("test")`` (seed 1) and saved as a ``state_dict``; its manifest entry is what
``nnsens_core.demos.load_demo_cnn("cnn3d-brain")`` reads. Deterministic: fixed seeds, deterministic
algorithms and a fixed thread count (``--threads``, default 1).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from nnsens_core.brain_phantom import CLASSES, DEMO_SPLITS, demo_volumes
from nnsens_core.data import ImageData
from nnsens_core.demos import sha256_file
from nnsens_core.training import CNNTrainConfig, balanced_accuracy, predict, train_cnn
from nnsens_core.zoo import IMAGE, ModelSpec, build

MODELS_DIR = Path(__file__).resolve().parent
MANIFEST = MODELS_DIR / "manifest.json"
NAME, ARCH = "cnn3d-brain", "cnn3d-small"
WIDTH, EPOCHS, PATIENCE, TRAIN_SEED = 8, 15, 5, 0
MEAN, STD = (0.5,), (0.25,)
SIZE = 48


def scores(model, spec, data: ImageData) -> tuple[float, float]:
    """(accuracy, balanced accuracy) of ``model`` on ``data``."""
    pred = predict(model, spec.normalize(torch.as_tensor(data.images)), "cpu", 16).argmax(1).numpy()
    return float((pred == data.labels).mean()), balanced_accuracy(data.labels, pred)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=EPOCHS, help=f"most epochs (default {EPOCHS})")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    data = {k: demo_volumes(k) for k in ("train", "val", "test")}
    tr, va = data["train"], data["val"]
    both = ImageData(np.concatenate([tr.images, va.images]), np.concatenate([tr.labels, va.labels]),
                     CLASSES, name="brain phantom (train + val)")
    kwargs = {"num_classes": 2, "width": WIDTH}
    spec = ModelSpec(name=NAME, arch=ARCH, task=IMAGE, input_shape=(1, SIZE, SIZE, SIZE),
                     class_names=CLASSES, mean=MEAN, std=STD, arch_kwargs=kwargs)
    torch.manual_seed(TRAIN_SEED)
    model = build(ARCH, **kwargs)
    cfg = CNNTrainConfig(epochs=args.epochs, batch_size=16, lr=1e-3, patience=PATIENCE,
                         seed=TRAIN_SEED)
    t0 = time.time()
    last = [0]

    def progress(done: int, total: int) -> None:
        per = total // args.epochs
        if done // per > last[0]:
            last[0] = done // per
            print(f"  epoch {last[0]}/{args.epochs} ({time.time() - t0:.0f} s)", flush=True)

    model, report = train_cnn(model, both, cfg, train_idx=np.arange(len(tr)),
                              val_idx=np.arange(len(tr), len(both)), spec=spec, device="cpu",
                              progress=progress)
    seconds = time.time() - t0
    print(report.to_frame().to_string(index=False), flush=True)
    acc = {k: scores(model, spec, d) for k, d in data.items()}
    path = MODELS_DIR / f"{NAME}.pt"
    torch.save(model.state_dict(), path)
    print(f"{NAME}: best epoch {report.best_epoch}, test accuracy {acc['test'][0]:.3f}, balanced "
          f"{acc['test'][1]:.3f}, {seconds:.0f} s, {path.stat().st_size / 1024:.0f} KiB", flush=True)
    splits = ", ".join(f"{k} seed {s} ({n})" for k, (s, n) in DEMO_SPLITS.items())
    entry = {"file": path.name, "arch": ARCH, "arch_kwargs": kwargs,
             "input_shape": [1, SIZE, SIZE, SIZE], "class_names": list(CLASSES),
             "mean": list(MEAN), "std": list(STD), "sha256": sha256_file(path),
             "test_accuracy": round(acc["test"][0], 4),
             "test_balanced_accuracy": round(acc["test"][1], 4),
             "val_accuracy": round(acc["val"][0], 4),
             "val_balanced_accuracy": round(acc["val"][1], 4),
             "train_accuracy": round(acc["train"][0], 4), "train_seed": TRAIN_SEED,
             "epochs": args.epochs, "epochs_run": report.epochs_run,
             "best_epoch": report.best_epoch, "patience": PATIENCE,
             "train_seconds": round(seconds, 1),
             "final_loss": round(report.train_loss[report.best_epoch - 1], 4),
             "data": f"nnsens_core.brain_phantom.demo_volumes: {splits}",
             "script": "models/train_brain_cnn.py", "threads": args.threads}
    entries = json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {}
    entries[NAME] = entry
    MANIFEST.write_text(json.dumps(dict(sorted(entries.items())), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
