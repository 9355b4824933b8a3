"""Train the demo paper MLP (seed 0) on the shipped Pima CSV and write
``models/paper-mlp-pima.pt`` + ``models/paper-mlp-pima.json``.

    .venv/bin/python models/train_paper_mlp.py

The dashboard and the CLI load these for seed 0 instead of training on every start (the first page
shows at once); any other seed still trains. ``tests/test_demo_models.py`` retrains with seed 0 and
checks the shipped weights give the same outputs.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from nnsens_core.data import demo_tabular, pima_path
from nnsens_core.demos import SHIPPED_MLP, sha256_file, train_paper_mlp
from nnsens_core.training import TrainConfig

MODELS_DIR = Path(__file__).resolve().parent


def main() -> None:
    torch.set_num_threads(1)
    data = demo_tabular()
    cfg = TrainConfig(epochs=100, seed=0)
    model, info = train_paper_mlp(data, cfg=cfg, device="cpu")
    weights = MODELS_DIR / f"{SHIPPED_MLP}.pt"
    torch.save({k: v.detach().cpu() for k, v in model.module.state_dict().items()}, weights)
    meta = {"seed": cfg.seed, "epochs": cfg.epochs, "lr": cfg.lr, "weight_decay": cfg.weight_decay,
            "optimizer": cfg.optimizer, "batch_size": cfg.batch_size,
            "hidden": model.spec.arch_kwargs["hidden"], "data": pima_path().name,
            "data_sha256": sha256_file(pima_path()), "weights_sha256": sha256_file(weights),
            "torch": torch.__version__, **info}
    (MODELS_DIR / f"{SHIPPED_MLP}.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {weights.name}: train accuracy {info['train_acc']:.3f}, test {info['test_acc']:.3f}")


if __name__ == "__main__":
    main()
