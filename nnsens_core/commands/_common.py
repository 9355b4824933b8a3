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
from ..loading import check_forward, check_input_size, load_model
from ..model_manifest import spec_from_manifest
from ..preprocess import RESIZE_POLICIES, Recipe
from ..zoo import ARCHITECTURES, NORMALISATIONS, LoadedModel, normalisation


def printed_progress(line, t0: float, every: float = 10.0):
    """A ``progress(done, total, stage="")`` callback for long CLI runs: prints
    ``line(done, total, stage, seconds)`` (``seconds`` since ``t0``, a ``time.perf_counter()``) at
    most every ``every`` seconds, and always at the end of a stage."""
    import time
    last = [0.0]

    def progress(done, total, stage=""):
        now = time.perf_counter()
        if now - last[0] > every or done == total:
            last[0] = now
            print(line(done, total, stage, now - t0), flush=True)
    return progress


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
    p.add_argument("--manifest", help="the model's JSON manifest (written next to the weights by "
                                      "training, or an entry like models/manifest.json's): "
                                      "architecture, input size, channels, normalisation, resize "
                                      "policy and class names; images are read through it")


def add_image_input_args(p: argparse.ArgumentParser) -> None:
    """``--input-shape`` (any size the architecture allows; needed for TorchScript) and the input
    normalisation of a weights file (``--norm`` preset or ``--mean``/``--std``)."""
    p.add_argument("--input-shape", help="C,H,W of the model input, e.g. 3,128,128 (default: "
                                         "64x64 for the small built-ins, 224 for vgg16/resnet18; "
                                         "required for a TorchScript file)")
    p.add_argument("--norm", choices=sorted(NORMALISATIONS),
                   help="input normalisation of a weights file: "
                        + "; ".join(f"{k}: {v}" for k, v in NORMALISATIONS.items())
                        + " (default none)")
    p.add_argument("--mean", help="per-channel mean, comma list (overrides --norm)")
    p.add_argument("--std", help="per-channel std, comma list (overrides --norm)")
    p.add_argument("--class-names", help="the model's class names in output order, comma list "
                                         "(default: the data's class folders in name order)")
    p.add_argument("--resize", choices=sorted(RESIZE_POLICIES),
                   help="how images of other sizes reach the input size: "
                        + "; ".join(RESIZE_POLICIES.values()) + " (default letterbox)")


def parse_floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise NnsensError(f"{flag} {text!r} must be a comma list of numbers, e.g. 0.5,0.5,0.5") from None
    if not vals:
        raise NnsensError(f"{flag} is empty; give one number per channel")
    return vals


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """``"3,128,128"`` -> ``(3, 128, 128)`` (None stays None)."""
    if text is None:
        return None
    try:
        shape = tuple(int(t) for t in text.replace("x", ",").split(",") if t.strip())
    except ValueError:
        shape = ()
    if len(shape) not in (3, 4) or min(shape) < 1:
        raise NnsensError(f"--input-shape {text!r} must be C,H,W (or C,D,H,W) whole numbers >= 1, "
                          "e.g. 3,128,128")
    return shape


def _cli_norm(args, channels: int):
    """``(mean, std)`` from ``--norm``/``--mean``/``--std`` (None when none is given)."""
    norm, mean, std = (getattr(args, k, None) for k in ("norm", "mean", "std"))
    if norm is None and mean is None and std is None:
        return None
    m, s = normalisation(norm or "none", channels)
    if mean is not None:
        m = parse_floats(mean, "--mean")
    if std is not None:
        s = parse_floats(std, "--std")
    if bool(m) != bool(s):
        raise NnsensError("give both --mean and --std (or a --norm preset)")
    return m, s


def _is_torchscript_file(path: str) -> bool:
    """A TorchScript archive (a zip holding compiled ``code/``), read from the zip directory only."""
    import zipfile
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as zf:
            return any("/code/" in n for n in zf.namelist())
    except OSError:
        return False


def show_preset(kind: str, name: str | None, values: dict, overridden: dict) -> None:
    """Print which values a ``--preset`` set and which flags overrode them."""
    if name is None:
        return
    text = ", ".join(f"{k}={v}" for k, v in values.items())
    print(f"{kind} preset {name!r}: {text}")
    if overridden:
        print("  overridden by flags: " + ", ".join(f"{k}={v}" for k, v in overridden.items()))


def resolve_preset(args, presets: dict, defaults: dict, flags: dict) -> tuple[dict, dict]:
    """Config fields from ``--preset`` (or ``defaults`` without one), then every flag the user
    gave (``flags`` = ``{field: args attribute}``; an attribute left at None was not given).
    Returns ``(fields, overridden)``."""
    name = getattr(args, "preset", None)
    fields = dict(presets[name] if name else defaults)
    given = {f: getattr(args, a) for f, a in flags.items() if getattr(args, a) is not None}
    overridden = {f: v for f, v in given.items() if name and f in fields and fields[f] != v}
    fields.update(given)
    return fields, overridden


def default_demo_cnn() -> str:
    """The model used when --model is omitted: the first demo CNN (the demo VGG-16)."""
    names = demo_cnn_names()
    if not names:
        raise NnsensError("--model is missing and no demo CNN is shipped (models/manifest.json); "
                          "pass --model WEIGHTS --arch ARCH")
    return names[0]


def load_cli_model(args, input_shape=None, class_names=(), device="cpu",
                   names_from_data: bool = False) -> LoadedModel:
    """``--model`` (a demo name or a weights file); when omitted, the demo CNN. ``--manifest``
    describes a weights file; without it, what is assumed is printed in one line
    (``names_from_data``: the command names the classes after the data's folders)."""
    if not args.model:
        args.model = default_demo_cnn()
    shape = parse_shape(getattr(args, "input_shape", None)) or input_shape
    if args.model in demo_cnn_names():
        lm = load_demo_cnn(args.model, device=device)
        if _cli_norm(args, lm.spec.input_shape[0]) is not None:
            raise NnsensError(f"the demo {args.model!r} has its own normalisation; --norm/--mean/"
                              "--std are for weights files")
        if getattr(args, "manifest", None) or getattr(args, "class_names", None) or \
                getattr(args, "resize", None):
            raise NnsensError(f"the demo {args.model!r} has its own class names and recipe; "
                              "--manifest/--class-names/--resize are for weights files")
        if shape is not None and tuple(shape) != tuple(lm.spec.input_shape):
            want = int(lm.spec.input_shape[0])
            if int(shape[0]) != want:  # the demo's channels are fixed by its weights
                from .._validate import _kind
                raise NnsensError(f"the data are {_kind(shape[0])} images {tuple(shape)} but the demo "
                                  f"{args.model!r} takes {_kind(want)} {tuple(lm.spec.input_shape)}; "
                                  f"convert the images to {want} channel(s) or give your own model")
            lm.spec = lm.spec.replace(input_shape=tuple(shape))
            check_input_size(lm.spec)
            check_forward(lm.module, lm.spec, device)
        return lm
    manifest = getattr(args, "manifest", None)
    if manifest:
        return _load_with_manifest(args, manifest, device)
    if shape is None and _is_torchscript_file(args.model):
        raise NnsensError(f"{args.model} is a TorchScript model, whose input shape is unknown; give "
                          "it with --input-shape C,H,W, e.g. --input-shape 3,64,64")
    try:
        kwargs = json.loads(args.arch_kwargs)
    except json.JSONDecodeError:
        raise NnsensError(f"--arch-kwargs={args.arch_kwargs!r} is not JSON") from None
    given_names = getattr(args, "class_names", None)
    if given_names:
        class_names = tuple(c.strip() for c in given_names.split(",") if c.strip())
    lm = load_model(args.model, arch=args.arch, arch_kwargs=kwargs, input_shape=shape,
                    class_names=class_names, name=Path(args.model).stem, device=device,
                    allow_code=True)  # the user's own file on the user's machine
    norm = _cli_norm(args, lm.spec.input_shape[0])
    if norm is not None:
        lm.spec = lm.spec.replace(mean=norm[0], std=norm[1])
    if getattr(args, "resize", None):
        lm.spec = lm.spec.replace(resize=args.resize)
    _say_assumed(args, lm, shape is not None, norm is not None, bool(class_names), names_from_data)
    return lm


def _load_with_manifest(args, manifest: str, device) -> LoadedModel:
    """``--model`` weights described by ``--manifest`` (the flags that describe a model are then
    refused: the manifest is what the model was trained with)."""
    clash = [f for f, a in (("--input-shape", "input_shape"), ("--norm", "norm"), ("--mean", "mean"),
                            ("--std", "std"), ("--class-names", "class_names"), ("--resize", "resize"),
                            ("--arch", "arch")) if getattr(args, a, None)]
    if clash:
        raise NnsensError(f"--manifest describes the model; drop {', '.join(clash)} (or the "
                          "manifest)")
    try:
        text = Path(manifest).read_bytes()
    except OSError as exc:
        raise NnsensError(f"--manifest {manifest!r} cannot be read ({exc.strerror})") from None
    spec = spec_from_manifest(text, file_name=Path(args.model).name, name=Path(args.model).stem)
    lm = load_model(args.model, arch=spec.arch, arch_kwargs=spec.arch_kwargs, spec=spec,
                    device=device, allow_code=True)
    print(f"model {spec.name} from {Path(manifest).name}: {spec.arch}, classes "
          f"{', '.join(spec.class_names)}; input "
          + (Recipe.from_spec(spec).describe() if len(spec.input_shape) == 3 else
             "×".join(map(str, spec.input_shape))))
    return lm


def _say_assumed(args, lm: LoadedModel, shape_given: bool, norm_given: bool,
                 names_given: bool, names_from_data: bool) -> None:
    """One line naming what was assumed about a weights file given without a manifest."""
    spec = lm.spec
    if spec.task != "image":
        return
    assumed = []
    if not shape_given:
        assumed.append("input " + "×".join(map(str, spec.input_shape)) + f" (the {spec.arch} default)")
    if len(spec.input_shape) == 3 and not getattr(args, "resize", None):
        assumed.append("images letterboxed to it")
    if not norm_given:
        assumed.append("no normalisation (inputs in [0, 1])")
    if not names_given:
        assumed.append("class names = the data's class folders in name order" if names_from_data
                       else "classes known by number only")
    if assumed:
        print(f"no --manifest for {Path(args.model).name}; assuming " + ", ".join(assumed)
              + ". Pass --manifest MODEL.json (or --input-shape, --norm/--mean/--std, --resize, "
              "--class-names) if it was trained otherwise.")


def cli_recipe(spec) -> Recipe | None:
    """The preprocessing recipe of a 2-D image model (None for volume models)."""
    return Recipe.from_spec(spec) if len(spec.input_shape) == 3 else None


def load_cli_tabular(path: str, target: str | None) -> TabularData:
    if path.endswith(".npz"):
        data = load_npz(path, target)
        if not isinstance(data, TabularData):
            raise NnsensError(f"{path} holds images; give a CSV or an .npz with X and y")
        return data
    return load_csv(path, target)


def load_cli_images(path: str | None, size=None, channels: int = 3, n_demo: int = 60,
                    seed: int = 1, recipe: Recipe | None = None) -> ImageData:
    """A folder / ZIP / NPZ of images, or the phantom test set when ``path`` is None/'phantom'.

    ``recipe`` (the model's :class:`~nnsens_core.preprocess.Recipe`): folders and ZIPs keep their
    originals and give the model its input through it; the phantom is drawn at a square model's
    size, else letterboxed from 64 x 64. Without a recipe, ``size`` / ``channels`` stretch."""
    if recipe is not None:
        size, channels = recipe.size, recipe.channels
    if path in (None, "phantom"):
        from ..phantom import DEMO_SPLITS, demo_images, make_phantom
        if size is None or (tuple(size) == (64, 64) and channels == 3):
            return demo_images("test", n=n_demo)
        if channels not in (1, 3):
            raise NnsensError(f"the phantom has 1 or 3 channels; the model takes {channels}: give "
                              "--data")
        if size[0] == size[1] and 32 <= size[0] <= 1024:
            # the test phantom drawn at the model's size (the same seed as the 64x64 demo set)
            return make_phantom(n_demo, size=int(size[0]), seed=DEMO_SPLITS["test"][0],
                                channels=channels)
        return demo_images("test", n=n_demo).for_recipe(
            recipe or Recipe(tuple(size), channels, "stretch"))
    if path.endswith(".npz"):
        data = load_npz(path)
        if not isinstance(data, ImageData):
            raise NnsensError(f"{path} holds tabular data; give images+labels")
        return data
    if path.endswith(".zip"):
        return load_image_zip(path, size=size, channels=channels, recipe=recipe)
    return load_image_folder(path, size=size, channels=channels, recipe=recipe)


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
