"""``python -m nnsens_core robustness mask|grid|retrain``: group perturbation masks and their
robustness (Thibeau-Sutre et al. 2020) on volumes or images.

* ``mask``: one group mask over the inputs of one class (default: the last class, e.g. AD);
* ``grid``: one group mask per lambda1 x lambda2 cell and the similarity tables across lambda1
  (for each fixed lambda2) and across lambda2 (the paper's Table 1);
* ``retrain``: the architecture retrained over runs x folds, a group mask per network, the
  inter-run / inter-fold similarities and the regions the masks agree on.

Data: ``brain`` (the synthetic brain phantom, 48^3 volumes, its atlas of 14 regions), ``phantom``
(the 2-D lung-ultrasound phantom; its region map is built from its ground-truth masks, see
:func:`gt_regions`) or a path (a ZIP / folder of class folders of volumes (.nii, .nii.gz, .npy) or
images, or an ``.npz``). ``mask`` and ``grid`` take the ``test`` split of the demos, ``retrain``
the ``train`` split.
"""
from __future__ import annotations

import dataclasses
import json
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from .. import budget
from .._results import export_json
from ..data import ImageData, align_classes, load_image_folder, load_image_zip, load_npz
from ..demos import demo_cnn_names, load_demo_cnn
from ..device import resolve_device
from ..errors import NnsensError
from ..loading import load_model
from ..saliency.meaningful_mask import (
    FORMS,
    MASK_REFERENCES,
    PAPER_MASK,
    SCORES,
    MaskConfig,
    formula,
    group_mask,
)
from ..zoo import ARCHITECTURES, LoadedModel
from ..preprocess import Recipe
from ._common import (
    add_device_seed,
    add_yes,
    confirm_cost,
    load_cli_model,
    printed_progress,
    write_csv,
    write_json,
    write_npz,
)
from ._executor_opts import add_executor_args, grid_map_fn, retrain_map_fn

HELP = ("Robustness of group perturbation masks (Thibeau-Sutre et al. 2020): 'mask' (one group "
        "mask of a class), 'grid' (lambda1 x lambda2 similarity tables), 'retrain' (inter-run / "
        "inter-fold similarities); writes JSON + CSV tables, masks.npz and NIfTI masks for volumes.")
STUDIES = ("mask", "grid", "retrain")
DEMO_DATA = ("brain", "phantom")
PRESETS = ("paper", "nnsens")
GRID_METRICS_PRINTED = ("prob_cnn", "roi_cosine", "pixel_cosine")


# --------------------------------------------------------------------------- arguments

def _common(p) -> None:
    p.add_argument("--data", default="brain",
                   help="brain (brain-phantom volumes, default), phantom (2-D ultrasound phantom) "
                        "or a path: ZIP / folder of class folders of volumes (.nii/.nii.gz/.npy) "
                        "or images, or an .npz")
    p.add_argument("--n", type=int, default=None,
                   help="demo volumes / images to load (default 32 for mask and grid, 48 for "
                        "retrain)")
    p.add_argument("--atlas", default=None,
                   help="region labels (.nii/.nii.gz/.npy, the input's spatial shape), 'gt' (a "
                        "region map from the data's ground-truth masks: 1 = ground truth of the "
                        "class, 2 = the rest) or 'none'; default: the data's atlas (the brain "
                        "phantom's 14 regions), else 'gt' when the data has masks")
    p.add_argument("--atlas-names", default=None, help="CSV label,name naming the --atlas regions")
    p.add_argument("--model", default=None,
                   help=f"a demo name {demo_cnn_names(None)} or a weights file (default: "
                        "cnn3d-brain for volumes, vgg16-phantom for images)")
    p.add_argument("--arch", choices=sorted(ARCHITECTURES), help="architecture of a state_dict")
    p.add_argument("--arch-kwargs", default="{}", help='JSON, e.g. \'{"width": 8}\'')
    p.add_argument("--manifest", help="the weights file's JSON manifest (written by nnsens train): "
                                      "architecture, input size, channels, normalisation, resize "
                                      "policy and class names; 2-D images are read through its "
                                      "recipe and their classes matched to it by name")
    p.add_argument("--class", dest="cls", default=None,
                   help="class (name or index) whose inputs the group mask is optimised over and "
                        "explained for (default: the last class, e.g. AD)")
    p.add_argument("--preset", choices=PRESETS, default="paper",
                   help="mask defaults: paper (lambda1 0.005, lambda2 0.05, beta1 1, beta2 3, 200 "
                        "steps, reference max, norm form) or nnsens (the dashboard's MaskConfig)")
    for name, typ in (("lambda1", float), ("lambda2", float), ("beta1", float), ("beta2", float),
                      ("steps", int), ("lr", float), ("resolution", int), ("mask-batch", int)):
        p.add_argument(f"--{name}", type=typ, default=None, help="overrides the preset")
    p.add_argument("--reference", choices=MASK_REFERENCES, default=None,
                   help="what deleted voxels become (overrides the preset)")
    p.add_argument("--form", choices=FORMS, default=None, help="penalty form (overrides the preset)")
    p.add_argument("--score", choices=SCORES, default=None, help="score the mask drops")
    p.add_argument("--out", required=True, help="output folder")
    add_device_seed(p)
    add_yes(p)


def register(p) -> None:
    sub = p.add_subparsers(dest="study", required=True, metavar="{mask,grid,retrain}")
    pm = sub.add_parser("mask", help="one group mask over the inputs of a class",
                        description="One group mask over the inputs of --class; writes mask.json, "
                                    "scores.csv, top_regions.csv (with regions), masks.npz and "
                                    "mask.nii.gz (volumes).")
    _common(pm)
    pm.add_argument("--top", type=int, default=5, help="most-masked regions listed (default 5)")
    pm.set_defaults(run=run)

    pg = sub.add_parser("grid", help="group masks over a lambda1 x lambda2 grid and their "
                                     "similarity tables",
                        description="One group mask per lambda1 x lambda2 cell; writes grid.json, "
                                    "tables.csv (every table, long form), masks.npz and one NIfTI "
                                    "per cell (volumes).")
    _common(pg)
    pg.add_argument("--lambda1s", default="0.001,0.005,0.01", help="comma list (default "
                                                                   "0.001,0.005,0.01)")
    pg.add_argument("--lambda2s", default="0.01,0.05,0.1", help="comma list (default 0.01,0.05,0.1)")
    pg.add_argument("--p", type=float, default=0.1, help="top-p fraction of top_p_iou")
    pg.add_argument("--combine", choices=("max", "product"), default="max",
                    help="how prob_CNN combines two masks")
    add_executor_args(pg)
    pg.set_defaults(run=run)

    pr = sub.add_parser("retrain", help="retrain runs x folds, one group mask per network, "
                                        "inter-run / inter-fold similarities",
                        description="Retrain the model's architecture over runs (seeds) x folds; "
                                    "writes retrain.json, summary.csv, pairs.csv, units.csv, "
                                    "agreement_*.csv, masks.npz and one NIfTI per network.")
    _common(pr)
    pr.add_argument("--runs", type=int, default=3, help="seeds (default 3)")
    pr.add_argument("--folds", type=int, default=3, help="cross-validation folds (default 3)")
    pr.add_argument("--design", choices=("cross", "full"), default="cross",
                    help="cross: every run on fold 0 + run 0 on every fold (runs + folds - 1 "
                         "trainings); full: runs x folds")
    pr.add_argument("--epochs", type=int, default=5)
    pr.add_argument("--train-lr", type=float, default=1e-3)
    pr.add_argument("--batch-size", type=int, default=16)
    pr.add_argument("--patience", type=int, default=3, help="early stopping (0: never)")
    pr.add_argument("--val-fraction", type=float, default=0.2,
                    help="share of each training fold used to pick the epoch (0: the last epoch)")
    pr.add_argument("--mask-on", choices=("all", "val"), default="all",
                    help="the mask's inputs: every input of --class, or those of the held-out fold")
    pr.add_argument("--top", type=int, default=5, help="most-masked regions per mask (default 5)")
    pr.add_argument("--combine", choices=("max", "product"), default="max")
    add_executor_args(pr)
    pr.set_defaults(run=run)


# --------------------------------------------------------------------------- inputs

def _has_volumes(names) -> bool:
    return any(n.lower().endswith((".nii.gz", ".nii", ".npy")) for n in names)


def load_data(source: str, split: str, n: int) -> ImageData:
    """``brain`` / ``phantom`` (the demo ``split``, first ``n``) or a path."""
    if n is not None and n < 2:
        raise NnsensError(f"--n={n} must be at least 2")
    if source == "brain":
        from ..brain_phantom import demo_volumes
        return demo_volumes(split, n)
    if source == "phantom":
        from ..phantom import demo_images
        return demo_images(split, n)
    path = Path(source)
    if not path.exists():
        raise NnsensError(f"--data {source!r}: no such file or folder; give brain, phantom or a "
                          "ZIP / folder / .npz")
    from .. import volumes
    if path.is_dir():
        files = [f.name for f in path.rglob("*") if f.is_file()]
        return volumes.load_volume_folder(path) if _has_volumes(files) else load_image_folder(path)
    if path.suffix.lower() == ".npz":
        data = load_npz(path)
        if not isinstance(data, ImageData):
            raise NnsensError(f"--data {source!r} holds tabular data; give images or volumes")
        return data
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        return volumes.load_volume_zip(str(path)) if _has_volumes(names) else load_image_zip(str(path))
    raise NnsensError(f"--data {source!r} is neither a folder, a ZIP nor an .npz")


def load_model_for(args, data: ImageData, device) -> tuple[LoadedModel, ImageData]:
    """``--model``: a demo name (2-D or 3-D) or a weights file; default by the data's dimension.
    With ``--manifest`` the weights file is described by it, images with originals are rebuilt
    through its recipe and every dataset is renumbered to its classes by name. Returns the model
    and the data as the model takes them."""
    manifest = getattr(args, "manifest", None)
    if manifest:
        if not args.model:
            raise NnsensError("--manifest describes a weights file; give it with --model FILE")
        lm = load_cli_model(args, device=device)  # refuses a demo name with --manifest
        if data.originals is not None and len(lm.spec.input_shape) == 3:
            data = data.for_recipe(Recipe.from_spec(lm.spec))
        data, how = align_classes(data, lm.spec.class_names)
        if how:
            print(how)
        return _checked(lm, data), data
    if not args.model:
        args.model = "cnn3d-brain" if data.ndim_spatial == 3 else demo_cnn_names(2)[0]
    if args.model in demo_cnn_names(None):
        lm = load_demo_cnn(args.model, device=device)
    else:
        try:
            kwargs = json.loads(args.arch_kwargs)
        except json.JSONDecodeError:
            raise NnsensError(f"--arch-kwargs={args.arch_kwargs!r} is not JSON") from None
        if not Path(args.model).is_file():
            raise NnsensError(f"--model {args.model!r} is neither a demo ({demo_cnn_names(None)}) "
                              "nor a file")
        lm = load_model(args.model, arch=args.arch, arch_kwargs=kwargs, input_shape=data.shape,
                        class_names=data.class_names, name=Path(args.model).stem, device=device,
                        allow_code=True)  # the user's own file on the user's machine
    return _checked(lm, data), data


def _checked(lm: LoadedModel, data: ImageData) -> LoadedModel:
    if tuple(lm.spec.input_shape) != tuple(data.shape):
        raise NnsensError(f"the model takes inputs of shape {tuple(lm.spec.input_shape)} but the "
                          f"data are {tuple(data.shape)}; pick a matching model or data")
    if len(lm.spec.class_names) and len(lm.spec.class_names) != len(data.class_names):
        raise NnsensError(f"the model has {len(lm.spec.class_names)} classes "
                          f"{list(lm.spec.class_names)} but the data {len(data.class_names)} "
                          f"{list(data.class_names)}")
    return lm


def pick_class(cls, class_names) -> int:
    names = list(class_names)
    if cls is None:
        return len(names) - 1
    if cls in names:
        return names.index(cls)
    try:
        k = int(cls)
    except ValueError:
        k = -1
    if not 0 <= k < len(names):
        raise NnsensError(f"--class {cls!r} is not a class; use one of {names} or 0..{len(names) - 1}")
    return k


def gt_regions(data: ImageData, cls: int) -> tuple[np.ndarray, dict[int, str]]:
    """A region map from ground-truth masks: 1 = every pixel / voxel inside the ground-truth mask
    of at least one input of class ``cls`` (the union), 2 = the rest; for data without a shared
    atlas (e.g. the ultrasound phantom, whose B-lines and consolidations move between images)."""
    if data.masks is None:
        raise NnsensError("--atlas gt needs ground-truth masks; this data has none (give --atlas "
                          "PATH or --atlas none)")
    union = np.asarray(data.masks)[data.labels == cls].any(axis=0)
    if not union.any():
        raise NnsensError(f"the inputs of class {data.class_names[cls]!r} have empty ground-truth "
                          "masks; give --atlas PATH or --atlas none")
    return np.where(union, 1, 2).astype(np.int64), {1: "ground truth", 2: "rest"}


def load_regions(args, data: ImageData, cls: int):
    """``(labels, names)`` of the region map, or ``(None, {})``."""
    spatial = tuple(data.images.shape[2:])
    choice = args.atlas
    if choice is None:
        if data.atlas is not None:
            labels, names = np.asarray(data.atlas.labels), dict(data.atlas.names)
        elif data.masks is not None and np.asarray(data.masks)[data.labels == cls].any():
            labels, names = gt_regions(data, cls)
        else:
            return None, {}
    elif choice == "none":
        return None, {}
    elif choice == "gt":
        labels, names = gt_regions(data, cls)
    else:
        if data.ndim_spatial == 2:
            from ..volumes import load_npy
            labels = np.asarray(load_npy(Path(choice).read_bytes(), name=choice, dims=0))
            names = {}
            if args.atlas_names:
                from ..volumes import _read_names
                names = _read_names(args.atlas_names)
        else:
            from ..volumes import load_atlas
            at = load_atlas(choice, args.atlas_names)
            labels, names = np.asarray(at.labels), dict(at.names)
    if labels.shape != spatial:
        raise NnsensError(f"the atlas has shape {labels.shape} but the inputs are {spatial}; give "
                          "an atlas in the inputs' voxel grid")
    from ..robustness.metrics import check_atlas
    return check_atlas(labels, spatial), {int(k): str(v) for k, v in names.items()}


def parse_floats(name: str, text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise NnsensError(f"{name}={text!r} must be a comma list of numbers, e.g. 0.001,0.005,0.01") \
            from None
    if not vals:
        raise NnsensError(f"{name} is empty; give a comma list of numbers, e.g. 0.001,0.005,0.01")
    return vals


def mask_config(args) -> MaskConfig:
    base = PAPER_MASK if args.preset == "paper" else MaskConfig()
    over = {f: getattr(args, f) for f in ("lambda1", "lambda2", "beta1", "beta2", "steps", "lr",
                                          "resolution", "reference", "form", "score")
            if getattr(args, f) is not None}
    if args.mask_batch is not None:
        over["batch_size"] = args.mask_batch
    return dataclasses.replace(base, **over)


# --------------------------------------------------------------------------- outputs

def gt_overlap(mask: np.ndarray, data: ImageData, idx: np.ndarray) -> dict | None:
    """Share of a mask's deletion ``1 - M`` inside the union of the ground-truth masks of the
    inputs ``idx``, and that union's share of the image (what a uniform deletion would score)."""
    if data.masks is None:
        return None
    union = np.asarray(data.masks)[idx].any(axis=0)
    if not union.any():
        return None
    d = 1.0 - np.asarray(mask, np.float64)
    total = d.sum()
    return {"deletion_in_gt": float((d * union).sum() / total) if total > 0 else float("nan"),
            "gt_area": float(union.mean())}


def write_nifti(out: Path, name: str, mask: np.ndarray) -> None:
    from ..volumes import save_nifti
    save_nifti(np.asarray(mask, np.float32), out / f"{name}.nii.gz")


def _fmt(x) -> str:
    return "  nan" if x is None or not np.isfinite(x) else f"{x:.3f}"


def _print_table(title: str, frame) -> None:
    print(title)
    cols = [f"{c:g}" for c in frame.columns]
    print(f"  {frame.index.name:>9} " + " ".join(f"{c:>7}" for c in cols))
    for v, row in frame.iterrows():
        print(f"  {v:>9g} " + " ".join(f"{_fmt(x):>7}" for x in row.to_numpy()))


def _progress(t0: float):
    return printed_progress(
        lambda done, total, stage, sec: f"  {stage + ' ' if stage else ''}{done}/{total}  {sec:6.1f}s", t0)


# --------------------------------------------------------------------------- run

def run(args) -> int:
    t0 = time.perf_counter()
    study = args.study
    dev = resolve_device(args.device)
    torch.manual_seed(args.seed)
    n = args.n if args.n is not None else (48 if study == "retrain" else 32)
    data = load_data(args.data, "train" if study == "retrain" else "test", n)
    present = sorted(set(np.asarray(data.labels).tolist()))
    if len(present) < 2 and study == "retrain":
        raise NnsensError(f"the data hold one class only ({data.class_names[present[0]]!r}); "
                          "retraining needs at least two")
    lm, data = load_model_for(args, data, dev)
    cls = pick_class(args.cls, data.class_names)
    idx = np.flatnonzero(np.asarray(data.labels) == cls)
    if len(idx) == 0:
        raise NnsensError(f"no input of class {data.class_names[cls]!r} among the {len(data)} "
                          f"loaded; raise --n or pick another --class")
    regions, names = load_regions(args, data, cls)
    cfg = mask_config(args)
    x_all = lm.spec.normalize(torch.as_tensor(np.asarray(data.images), dtype=torch.float32))
    out = Path(args.out)
    ctx = {"model": lm.spec.name, "data": data.name, "class": data.class_names[cls],
           "n_inputs": len(idx), "device": str(dev), "seed": args.seed,
           "formula": formula(cfg, group=True)}
    progress = _progress(t0)
    one = budget.masks(lm.module, cfg, len(idx), tuple(lm.spec.input_shape))
    print(f"{study}: {lm.spec.name} on {data.name}, class {data.class_names[cls]!r} "
          f"({len(idx)} of {len(data)} inputs {tuple(data.shape)})")
    print(f"objective: {formula(cfg, group=True)}")
    if study == "mask":
        confirm_cost(args, one)
        res = group_mask(lm.module, x_all[torch.as_tensor(idx)], cls, cfg, spec=lm.spec,
                         device=dev, progress=lambda d, t: progress(d, t, "steps"))
        _write_mask(args, out, res, data, idx, regions, names, ctx)
    elif study == "grid":
        from ..robustness import lambda_grid
        l1 = parse_floats("--lambda1s", args.lambda1s)
        l2 = parse_floats("--lambda2s", args.lambda2s)
        from ..robustness.grid import GridSettings
        GridSettings(l1, l2, mask=cfg)  # validate the lists before the cost line
        confirm_cost(args, one.times(len(l1) * len(l2),
                                     f"{len(l1)}x{len(l2)} group masks ({cfg.steps} steps x "
                                     f"{len(idx)} inputs each)"))
        res = lambda_grid(lm.module, x_all[torch.as_tensor(idx)], cls, l1, l2, cfg, atlas=regions,
                          p=args.p, combine=args.combine, spec=lm.spec, device=dev,
                          progress=progress, map_fn=grid_map_fn(args, cfg, lm.module, x_all[idx], cls,
                                                                l1, l2))
        _write_grid(out, res, data, idx, regions, names, ctx)
    else:
        _retrain(args, out, lm, data, x_all, cls, cfg, regions, names, ctx, dev, progress, one)
    print(f"wrote {out} ({time.perf_counter() - t0:.1f} s)")
    return 0


def _top_rows(mask, regions, names, n) -> list[dict]:
    from ..robustness import top_regions
    return top_regions(mask, regions, n, names).to_dict("records")


def _write_mask(args, out, res, data, idx, regions, names, ctx) -> None:
    out.mkdir(parents=True, exist_ok=True)
    gt = gt_overlap(res.mask, data, idx)
    top = _top_rows(res.mask, regions, names, args.top) if regions is not None else []
    write_json(out / "mask.json", export_json(res, **ctx, ground_truth=gt, top_regions=top))
    write_csv(out / "scores.csv", res.to_frame())
    if top:
        import pandas as pd
        write_csv(out / "top_regions.csv", pd.DataFrame(top), index=False)
    write_npz(out / "masks.npz", res.arrays())
    if data.ndim_spatial == 3:
        write_nifti(out, "mask", res.mask)
    print(f"mean score before {np.mean(res.score_before):.3f} -> after {np.mean(res.score_after):.3f}; "
          f"deleted fraction {np.mean(1 - res.mask):.3f}; {res.seconds:.1f} s")
    if gt:
        print(f"deletion inside the ground truth: {gt['deletion_in_gt']:.3f} "
              f"(ground truth = {gt['gt_area']:.3f} of the input)")
    for r in top:
        print(f"  {r['rank']}. {r['name']:<20} density {r['density']:.3f}")


def _write_grid(out, res, data, idx, regions, names, ctx) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cells = {}
    for i, a in enumerate(res.lambda1s):
        for j, b in enumerate(res.lambda2s):
            cell = {"lambda1": a, "lambda2": b,
                    "score_after": float(np.mean(res.score_after[i, j])),
                    "deleted_fraction": float(np.mean(1 - res.masks[i, j])),
                    "ground_truth": gt_overlap(res.masks[i, j], data, idx)}
            if regions is not None:
                cell["top_regions"] = _top_rows(res.masks[i, j], regions, names, 3)
            cells[f"{i},{j}"] = cell
    write_json(out / "grid.json", export_json(res, **ctx, cells=cells))
    write_csv(out / "tables.csv", res.to_frame(), index=False)
    write_npz(out / "masks.npz", res.arrays())
    if data.ndim_spatial == 3:
        for i, a in enumerate(res.lambda1s):
            for j, b in enumerate(res.lambda2s):
                write_nifti(out, f"mask_l1={a:g}_l2={b:g}", res.masks[i, j])
    print(f"mean score before {np.mean(res.score_before):.3f}; {res.seconds:.1f} s")
    for c in cells.values():
        gt = c["ground_truth"]
        extra = f", deletion in GT {gt['deletion_in_gt']:.3f}" if gt else ""
        tops = ", ".join(r["name"] for r in c.get("top_regions", []))
        print(f"  lambda1 {c['lambda1']:g} lambda2 {c['lambda2']:g}: score after "
              f"{c['score_after']:.3f}, deleted {c['deleted_fraction']:.3f}{extra}"
              + (f"; top: {tops}" if tops else ""))
    for metric in GRID_METRICS_PRINTED:
        if metric not in res.tables:
            continue
        for b in res.lambda2s:
            _print_table(f"{metric} across lambda1 (lambda2 = {b:g})",
                         res.table(metric, "lambda1", b))
        for a in res.lambda1s:
            _print_table(f"{metric} across lambda2 (lambda1 = {a:g})",
                         res.table(metric, "lambda2", a))


def _retrain(args, out, lm, data, x_all, cls, cfg, regions, names, ctx, dev, progress, one):
    from .. import zoo
    from ..robustness import RetrainSettings, training_robustness
    from ..training import CNNTrainConfig, train_cnn
    spec = lm.spec
    if not spec.arch or spec.arch not in zoo.ARCHITECTURES:
        raise NnsensError(f"retraining needs the model's architecture; {spec.name!r} has "
                          f"{spec.arch or 'none'} (give a state_dict with --arch)")
    settings = RetrainSettings(n_runs=args.runs, k_folds=args.folds, design=args.design,
                               split_seed=args.seed, mask_class=cls, mask_on=args.mask_on,
                               top_n=args.top, combine=args.combine, mask=cfg)
    tcfg = CNNTrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.train_lr,
                          patience=args.patience, val_fraction=args.val_fraction)
    n_units = (args.runs * args.folds if args.design == "full" else args.runs + args.folds - 1)
    n_train = round(len(data) * (1 - 1 / args.folds))
    est = budget.training(lm.module, n_train, tcfg, n_units, tuple(spec.input_shape)) + \
        one.times(n_units)
    confirm_cost(args, dataclasses.replace(est, what=f"{n_units} trainings ({tcfg.epochs} epochs "
                                                     f"on ~{n_train} inputs) + {n_units} group "
                                                     f"masks ({cfg.steps} steps)"))

    def train_fn(seed, train_idx, val_idx):
        torch.manual_seed(seed)
        model = zoo.build(spec.arch, **dict(spec.arch_kwargs))
        model, rep = train_cnn(model, data, dataclasses.replace(tcfg, seed=int(seed)),
                               train_idx=train_idx, spec=spec, device=dev)
        print(f"  trained seed {seed} on {len(train_idx)} inputs: {rep.epochs_run} epoch(s), "
              f"kept {rep.best_epoch}", flush=True)
        return model

    res = training_robustness(x_all, data.labels, train_fn, settings, atlas=regions, names=names,
                              spec=spec, device=dev, progress=progress,
                              map_fn=retrain_map_fn(args, lambda: zoo.build(spec.arch, **dict(
                                  spec.arch_kwargs)), settings, lm.module, x_all, data.labels, tcfg))
    out.mkdir(parents=True, exist_ok=True)
    idx = np.flatnonzero(np.asarray(data.labels) == cls)
    gts = [gt_overlap(m, data, idx) for m in res.masks]
    write_json(out / "retrain.json", export_json(res, **ctx, ground_truth=gts))
    write_csv(out / "summary.csv", res.to_frame())
    write_csv(out / "pairs.csv", res.pairs_frame(), index=False)
    write_csv(out / "units.csv", res.units_frame(), index=False)
    for k, df in res.agreement.items():
        write_csv(out / f"agreement_{k}.csv", df, index=False)
    write_npz(out / "masks.npz", res.arrays())
    if data.ndim_spatial == 3:
        for u in res.units:
            write_nifti(out, f"mask_run{u.run}_fold{u.fold}", u.mask.mask)
    print("units:")
    for u, gt in zip(res.units, gts):
        extra = f", deletion in GT {gt['deletion_in_gt']:.3f}" if gt else ""
        print(f"  run {u.run} fold {u.fold}: balanced accuracy {u.balanced_accuracy:.3f}, score "
              f"after {np.mean(u.mask.score_after):.3f}, deleted {np.mean(1 - u.mask.mask):.3f}"
              f"{extra}")
    print("similarities (mean +- std over pairs, n pairs):")
    for kind, by in res.summary.items():
        print(f"  {kind}: " + "; ".join(f"{mt} {_fmt(m)} +- {_fmt(s)} (n={k})"
                                        for mt, (m, s, k) in by.items()))
    if "all" in res.agreement:
        print(f"regions in the top-{args.top} of the masks (count of {len(res.units)}):")
        for r in res.agreement["all"].to_dict("records"):
            print(f"  {r['name']:<20} {r['count']}  mean density {r['mean_density']:.3f}")
