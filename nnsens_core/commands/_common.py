"""Argument handling shared by the sub-commands: models, data, devices and output files."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import budget
from .._results import csv_bytes, dumps, npz_bytes
from ..data import (
    ImageData,
    TabularData,
    load_csv,
    load_image_folder,
    load_image_zip,
    load_npz,
)
from ..demos import demo_cnn_names, load_demo_cnn
from ..errors import NnsensError
from ..loading import load_model
from ..zoo import ARCHITECTURES, LoadedModel


def add_device_seed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto, cuda, mps or cpu (default auto)")
    p.add_argument("--seed", type=int, default=0)


def add_yes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--yes", action="store_true",
                   help=f"run even when the cost estimate is over the budget ({budget.BUDGET_ENV} "
                        f"GFLOP, default {budget.DEFAULT_BUDGET:,.0f})")


def confirm_cost(args, est: budget.Estimate) -> None:
    """Print ``est``; above the budget run only with ``--yes`` (or an interactive 'y'), else
    refuse with one line naming ``--yes`` (exit 2)."""
    budget.confirm(est, bool(getattr(args, "yes", False)))


def add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--model", required=required,
                   help=f"weights file (TorchScript or state_dict) or a demo name: {demo_cnn_names()}"
                        + ("" if required else " (default: the demo VGG-16)"))
    p.add_argument("--arch", choices=sorted(ARCHITECTURES), help="architecture of a state_dict")
    p.add_argument("--arch-kwargs", default="{}", help='JSON, e.g. \'{"hidden": 10}\'')


def default_demo_cnn() -> str:
    """The model used when --model is omitted: the first demo CNN (the demo VGG-16)."""
    names = demo_cnn_names()
    if not names:
        raise NnsensError("--model is missing and no demo CNN is shipped (models/manifest.json); "
                          "pass --model WEIGHTS --arch ARCH")
    return names[0]


def load_cli_model(args, input_shape=None, class_names=(), device="cpu") -> LoadedModel:
    """``--model`` (a demo name or a weights file); when omitted, the demo CNN."""
    if not args.model:
        args.model = default_demo_cnn()
    if args.model in demo_cnn_names():
        return load_demo_cnn(args.model, device=device)
    try:
        kwargs = json.loads(args.arch_kwargs)
    except json.JSONDecodeError:
        raise NnsensError(f"--arch-kwargs={args.arch_kwargs!r} is not JSON") from None
    return load_model(args.model, arch=args.arch, arch_kwargs=kwargs, input_shape=input_shape,
                      class_names=class_names, name=Path(args.model).stem, device=device,
                      allow_code=True)  # the user's own file on the user's machine


def load_cli_tabular(path: str, target: str | None) -> TabularData:
    if path.endswith(".npz"):
        data = load_npz(path, target)
        if not isinstance(data, TabularData):
            raise NnsensError(f"{path} holds images; give a CSV or an .npz with X and y")
        return data
    return load_csv(path, target)


def load_cli_images(path: str | None, size=None, channels: int = 3, n_demo: int = 60,
                    seed: int = 1) -> ImageData:
    """A folder / ZIP / NPZ of images, or the phantom test set when ``path`` is None/'phantom'."""
    if path in (None, "phantom"):
        from ..phantom import demo_images
        return demo_images("test", n=n_demo)
    if path.endswith(".npz"):
        data = load_npz(path)
        if not isinstance(data, ImageData):
            raise NnsensError(f"{path} holds tabular data; give images+labels")
        return data
    if path.endswith(".zip"):
        return load_image_zip(path, size=size, channels=channels)
    return load_image_folder(path, size=size, channels=channels)


def write_json(path: str | Path, doc) -> Path:
    """Write an export document (:func:`nnsens_core._results.dumps`: the same text the dashboard
    offers for download)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(doc))
    return path


def write_npz(path: str | Path, arrays: dict) -> Path:
    """Write arrays as a compressed ``.npz`` (the same bytes the dashboard offers)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(npz_bytes(arrays))
    return path


def write_csv(path: str | Path, frame, index: bool = True) -> Path:
    """Write a table as :func:`nnsens_core._results.csv_bytes` (formula cells neutralised; the
    same text the dashboard offers)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(csv_bytes(frame, index=index))
    return path
