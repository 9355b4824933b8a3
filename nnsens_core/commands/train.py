"""``python -m nnsens_core train DATA``: train a CNN on a labelled image set (a ZIP / folder of
class folders, or an ``.npz``) with grouped train / validation / test splits, class balancing and
ultrasound augmentation, the same :func:`~nnsens_core.training.train_image_model` as the
dashboard's "Train a CNN". Writes ``model.pt`` (state_dict), ``model.json`` (manifest entry: arch,
class names, preprocessing recipe, test metrics; reload with ``--model model.pt`` + the manifest,
or the dashboard's "Add a CNN") and ``report.json`` (history, split, confusion matrix)."""
from __future__ import annotations

from pathlib import Path

from ..errors import NnsensError
from ._common import add_device_seed, add_yes, parse_floats

HELP = "Train a CNN on labelled images (grouped splits, balancing, augmentation); writes model.pt + model.json."


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("×", "x").replace(",", "x").split("x")
    try:
        hw = tuple(int(p) for p in parts)
    except ValueError:
        hw = ()
    if len(hw) == 1:
        hw = hw * 2
    if len(hw) != 2 or min(hw) < 1 or max(hw) > 4096:
        raise NnsensError(f"--size {text!r} must be HxW pixels (e.g. 128x128 or 96x128) or one side")
    return hw


def register(p) -> None:
    p.add_argument("data", help="ZIP or folder of class folders of images (class/image.png or "
                                "class/patient/image.png), or an .npz of images + labels")
    p.add_argument("--out", required=True, help="output folder (model.pt, model.json, report.json)")
    p.add_argument("--arch", default="resnet18-small",
                   choices=("vgg16-small", "resnet18-small", "vgg16", "resnet18"),
                   help="architecture (default resnet18-small)")
    p.add_argument("--width", type=float, default=0.125,
                   help="width multiplier of the -small variants (default 0.125)")
    p.add_argument("--size", default="64x64", help="input H x W in pixels, e.g. 128x128 (default 64x64)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=3)
    p.add_argument("--resize", choices=("letterbox", "crop", "stretch"), default="letterbox",
                   help="how images of other sizes reach the input (default letterbox)")
    p.add_argument("--norm", choices=("demo", "paper", "imagenet", "none"), default="demo",
                   help="input normalisation: demo (0.5/0.25, default), paper (0.5/0.5), imagenet, none")
    p.add_argument("--mean", help="per-channel mean, comma list (with --std; overrides --norm)")
    p.add_argument("--std", help="per-channel std, comma list")
    p.add_argument("--groups", default="names",
                   help="patient / video of each image, kept within one split: 'names' (from the "
                        "loader's folders, else the file-name stem before its frame number; "
                        "default), 'none' (split by image) or a CSV file of file,group rows")
    p.add_argument("--group-pattern", help="regex whose first group is the id in each file name "
                                           "(with --groups names), e.g. '(patient\\d+)'")
    p.add_argument("--balance", choices=("none", "weights", "sampler"), default="none",
                   help="class balancing: weighted cross-entropy or a weighted sampler")
    p.add_argument("--augment", action="store_true",
                   help="ultrasound augmentation of training batches (rotation about the probe apex, "
                        "scale, shift, brightness / contrast / gamma, speckle; no vertical flip)")
    p.add_argument("--hflip", action="store_true", help="with --augment: random horizontal flips too")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--patience", type=int, default=5, help="early stopping (0: never)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--imagenet", help="torchvision ImageNet state_dict of vgg16 / resnet18 to start "
                                      "from (a local file; nothing is downloaded)")
    add_device_seed(p)
    add_yes(p)
    p.set_defaults(run=run)


def _load(path: str, channels: int):
    from ..data import ImageData, load_image_folder, load_image_zip, load_npz
    if path.endswith(".npz"):
        data = load_npz(path)
        if not isinstance(data, ImageData):
            raise NnsensError(f"{path} holds tabular data; give images + labels")
        return data
    if not Path(path).exists():
        raise NnsensError(f"{path} does not exist; give a ZIP or folder of class folders")
    loader = load_image_zip if path.endswith(".zip") else load_image_folder
    data = loader(path, channels=channels)
    if getattr(data, "files", None) is None:
        import dataclasses
        files = _member_names(path, data)
        if files is not None:
            data = dataclasses.replace(data, files=files)
    return data


def _member_names(path: str, data):
    """The file name of each image for a loader that keeps none: the image members of the ZIP /
    folder in the loader's order (classes sorted, names sorted within a class); None unless their
    count and their class folders agree with ``data``'s images and labels."""
    import zipfile

    from ..data import IMAGE_SUFFIXES
    if path.endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            names = [i.filename for i in zf.infolist() if not i.is_dir()]
    else:
        root = Path(path)
        names = [str(f.relative_to(root).as_posix()) for f in root.rglob("*") if f.is_file()]
    names = [n for n in names if Path(n).suffix.lower() in IMAGE_SUFFIXES
             and not Path(n).name.startswith(".") and "__MACOSX" not in n and len(Path(n).parts) >= 2]
    by_class: dict[str, list[str]] = {}
    for n in names:
        by_class.setdefault(Path(n).parts[-2], []).append(n)
    classes = sorted(by_class)
    files = [n for c in classes for n in sorted(by_class[c], key=lambda m: Path(m).name)]
    labels = [k for k, c in enumerate(classes) for _ in by_class[c]]
    if tuple(classes) != tuple(data.class_names) or labels != [int(x) for x in data.labels]:
        return None
    return tuple(files)


def _groups(args, data):
    from .. import training as T
    if args.groups == "none":
        return None, "none (split by image)"
    if args.groups == "names":
        if args.group_pattern is None and getattr(data, "groups", None) is not None:
            by_folder = data.meta.get("group_source") == "folders"
            return tuple(data.groups), ("from the folders (class/patient/image)" if by_folder
                                        else "from the file-name stems")
        if not getattr(data, "files", None):
            raise NnsensError("this dataset keeps no file names to take groups from; give "
                              "--groups none or a CSV")
        how = f"pattern {args.group_pattern!r}" if args.group_pattern else "file-name stems"
        return T.groups_from_names(data.files, args.group_pattern), f"from the {how}"
    csv = Path(args.groups)
    if not csv.is_file():
        raise NnsensError(f"--groups {args.groups!r} is neither 'names', 'none' nor a CSV file")
    return T.groups_from_csv(data, csv.read_bytes()), f"from {csv.name}"


def run(args) -> int:
    import time

    from .. import training as T
    from .._results import export_json
    from ..budget import forward_flop
    from ..device import resolve_device
    from ..preprocess import Recipe
    from ..zoo import build, normalisation
    from ._common import confirm_cost, printed_progress, write_json

    size = _size(args.size)
    mean, std = normalisation(args.norm, args.channels)
    if args.mean is not None or args.std is not None:
        if args.mean is None or args.std is None:
            raise NnsensError("give both --mean and --std (or a --norm preset)")
        mean, std = parse_floats(args.mean, "--mean"), parse_floats(args.std, "--std")
    recipe = Recipe(size, args.channels, args.resize, tuple(mean), tuple(std))
    aug = (T.AugmentConfig(hflip=args.hflip) if args.augment else None)
    if args.hflip and not args.augment:
        raise NnsensError("--hflip is part of the augmentation; add --augment")
    cfg = T.CNNTrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                           patience=args.patience, val_fraction=args.val_fraction,
                           test_fraction=args.test_fraction, seed=args.seed, balance=args.balance,
                           augment=aug)
    imagenet = None
    if args.imagenet:
        imagenet = Path(args.imagenet).read_bytes()
    data = _load(args.data, args.channels)
    groups, how = _groups(args, data)
    shape = (recipe.channels, *recipe.size)
    kw = T.model_kwargs(args.arch, len(data.class_names), shape, args.width)
    fwd = forward_flop(build(args.arch, **kw), shape) / 1e9
    confirm_cost(args, T.cnn_training_estimate(fwd, len(data), cfg, args.arch))
    print(f"{len(data)} images, classes {', '.join(data.class_names)}; groups {how}; "
          f"recipe {recipe.describe()}")
    t0 = time.perf_counter()
    line = printed_progress(lambda d, t, stage, s: f"  batch {d}/{t} ({s:.0f} s)", t0)
    tm = T.train_image_model(data, args.arch, cfg, recipe=recipe, width=args.width, groups=groups,
                             imagenet=imagenet, name=f"{args.arch} on {Path(args.data).name}",
                             device=resolve_device(args.device), progress=line)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.pt").write_bytes(tm.state_dict_bytes())
    write_json(out / "model.json", {tm.spec.name: tm.manifest("model.pt", groups_from=how)})
    write_json(out / "report.json", export_json(
        tm.report, model=tm.spec.name, data=str(args.data), recipe=recipe.describe(),
        groups_from=how, imagenet_init=None if tm.init is None else tm.init.describe(),
        train_idx=tm.report.train_idx, val_idx=tm.report.val_idx, test_idx=tm.report.test_idx))
    if tm.init is not None:
        print(tm.init.describe())
    print(tm.summary())
    if tm.report.confusion is not None:
        names = tm.report.class_names
        print("confusion matrix (rows: true, columns: predicted): " + "; ".join(
            f"{names[i]}: {list(map(int, row))}" for i, row in enumerate(tm.report.confusion)))
    print(f"wrote model.pt, model.json and report.json to {out}")
    return 0
