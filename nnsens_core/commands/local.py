"""``python -m nnsens_core local``: per-block pixel-perturbation sensitivity maps of one image
(or the first K images of a class)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from .._validate import check_images
from ..data import ImageData
from .. import budget
from ..device import resolve_device
from ..errors import NnsensError
from .._results import export_json, image_context
from ..local_sensitivity import (
    LocalBatchResult,
    PRESETS,
    LocalConfig,
    count_forwards,
    describe,
    local_sensitivity_many,
    resolve_blocks,
)
from ._executor_opts import add_executor_args, executor_from_args, uses_units
from ._common import (
    add_device_seed,
    add_image_input_args,
    cli_recipe,
    resolve_preset,
    show_preset,
    add_yes,
    confirm_cost,
    add_model_args,
    load_cli_images,
    load_cli_model,
    write_json,
    write_npz,
)

HELP = ("Local sensitivity of CNN blocks to single-pixel (or k x k patch) perturbations; writes "
        "maps.npz (maps: blocks x channels x H x W) and summary.json. Without --model/--data: the "
        "demo VGG-16 on the phantom test set.")


FLAGS = {"epsilon": "epsilon", "noise": "noise", "formula": "formula", "patch": "patch",
         "method": "method"}
"""LocalConfig fields a preset sets -> the flags that override them."""


def register(p) -> None:
    add_model_args(p, required=False)
    add_image_input_args(p)
    p.add_argument("--data", default="phantom",
                   help="image folder / .zip / .npz, or 'phantom' (default: the phantom test set)")
    p.add_argument("--index", type=int, default=0, help="image index (default 0)")
    p.add_argument("--class", dest="cls", help="use the first --count images of this class (name or "
                                               "index) instead of --index")
    p.add_argument("--count", type=int, default=1, help="images of --class (default 1)")
    p.add_argument("--blocks", default="auto",
                   help="'auto' (VGG: after each max-pool; ResNet: layer1..4; a TorchScript model "
                        "without either: its output) or a comma list of module names ('output': the "
                        "model output). TorchScript models are read stage by stage along their "
                        "forward chain (checked against the model output)")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="paper: ||B(x+d)||-||B(x)||, fixed eps 0.1, single pixels, finite "
                        "differences; nnsens (the default): ||B(x+d)-B(x)|| with the same "
                        "perturbation. Flags given as well override the preset")
    p.add_argument("--epsilon", type=float, help=f"fixed perturbation (default {LocalConfig().epsilon})")
    p.add_argument("--noise", choices=("fixed", "gaussian"), help="default fixed")
    p.add_argument("--sigma", type=float, default=LocalConfig().sigma, help="std of Gaussian noise")
    p.add_argument("--formula", choices=("diff_norm", "norm_diff"),
                   help="diff_norm: ||B(x+d)-B(x)|| (default); norm_diff: ||B(x+d)||-||B(x)|| (paper)")
    p.add_argument("--patch", type=int, help="perturb k x k patches (default 1 = pixels)")
    p.add_argument("--method", choices=("finite", "gradient"),
                   help="finite differences (default) or the fast gradient estimate")
    p.add_argument("--probes", type=int, default=LocalConfig().n_probes,
                   help="random probes of the gradient estimate of diff_norm")
    p.add_argument("--batch-size", type=int, help="perturbations per forward pass (default: auto)")
    p.add_argument("--incremental", choices=("auto", "off"), default=LocalConfig().incremental,
                   help="auto (default): exact incremental inference where the model allows it "
                        "(VGG-like chains); off: full forward passes")
    p.add_argument("--tau", type=float, default=LocalConfig().tau,
                   help="approximate incremental inference: 0 (default) = exact; in (0, 1) each "
                        "layer recomputes only the box where a perturbation's change exceeded tau x "
                        "its largest change on a calibration sample; the error measured against "
                        "exact values is printed and written to summary.json")
    p.add_argument("--approx-sample", type=int, default=LocalConfig().approx_sample,
                   help="perturbations run exactly to calibrate, and as many to measure the error")
    p.add_argument("--out", required=True, help="output folder")
    add_device_seed(p)
    add_yes(p)
    add_executor_args(p)
    p.add_argument("--block", type=int, default=None, metavar="N",
                   help="perturbations per unit of the executor (rounded up to whole batches; "
                        "default: all of an image's in one unit when --executor ray or --store is "
                        "given); exact finite differences only (no --method gradient, no --tau)")
    p.set_defaults(run=run)


def select_images(data: ImageData, index: int, cls: str | None, count: int) -> np.ndarray:
    """Indices of the images to analyse (one ``index``, or the first ``count`` of class ``cls``)."""
    if cls is None:
        if not 0 <= index < len(data):
            raise NnsensError(f"--index {index} is out of range; the data have {len(data)} images "
                              f"(0..{len(data) - 1})")
        return np.array([index])
    names = list(data.class_names)
    k = names.index(cls) if cls in names else (int(cls) if cls.isdigit() else None)
    if k is None or not 0 <= k < len(names):
        raise NnsensError(f"--class {cls!r} is unknown; use one of {names} or 0..{len(names) - 1}")
    if count < 1:
        raise NnsensError(f"--count {count} must be >= 1")
    idx = np.flatnonzero(data.labels == k)[:count]
    if len(idx) == 0:
        raise NnsensError(f"class {names[k]!r} has no images in the data")
    return idx


def model_inputs(data: ImageData, idx, spec) -> torch.Tensor:
    """Images ``idx`` in model-input space, with clear errors when they do not fit the model."""
    x = torch.as_tensor(data.images[idx], dtype=torch.float32)
    check_images(x, spec.input_shape, what="the image", finite=True)
    return spec.normalize(x)


def run(args) -> int:
    t0 = time.perf_counter()
    dev = resolve_device(args.device)
    lm = load_cli_model(args, device=dev)
    spec = lm.spec
    data = load_cli_images(args.data, size=tuple(spec.input_shape[1:]), channels=spec.input_shape[0],
                               recipe=cli_recipe(spec))
    idx = select_images(data, args.index, args.cls, args.count)
    x = model_inputs(data, idx, spec)
    blocks = None if args.blocks == "auto" else [b.strip() for b in args.blocks.split(",") if b.strip()]
    mapping = resolve_blocks(lm.module, blocks)
    fields, overridden = resolve_preset(args, PRESETS, PRESETS["nnsens"], FLAGS)
    show_preset("local", args.preset, PRESETS[args.preset] if args.preset else {}, overridden)
    cfg = LocalConfig(**fields, sigma=args.sigma, seed=args.seed, n_probes=args.probes,
                      batch_size=args.batch_size, incremental=args.incremental, tau=args.tau,
                      approx_sample=args.approx_sample)
    shown = ", ".join(f"{k} = {v or 'the model output'}" for k, v in mapping.items())
    print(describe(cfg) + f"; blocks: {shown}")
    total = count_forwards(tuple(spec.input_shape), cfg, len(idx), len(mapping))
    print(f"{len(idx)} image(s) x {len(mapping)} blocks: {total:,} forward passes")
    confirm_cost(args, budget.local(lm, tuple(spec.input_shape), cfg, len(idx), len(mapping)))
    if uses_units(args) or args.block is not None:
        results = _run_blocks(args, lm.module, x, mapping, cfg, dev, spec)
    else:
        results = local_sensitivity_many(lm.module, x, mapping, cfg, dev,
                                         expected_shape=spec.input_shape)
    batch = LocalBatchResult(tuple(results))
    out = Path(args.out)
    context = image_context(data, idx)
    write_npz(out / "maps.npz", {**batch.arrays(), "image_indices": idx, "labels": data.labels[idx]})
    doc = export_json(batch, model=spec.name, **context)
    write_json(out / "summary.json", doc)
    for lb, s in doc["blocks"].items():
        print(f"{lb:>8} ({s['module'] or 'model output'}): max {s['max']:.3e}  mean {s['mean']:.3e}")
    if doc.get("approx"):
        from .._approx import describe_error
        print(f"tau = {cfg.tau:g}: " + describe_error(doc["approx"]) + " (worst over the images)")
    print(f"wrote {out / 'maps.npz'} and {out / 'summary.json'} in {time.perf_counter() - t0:.1f}s")
    return 0


def _run_blocks(args, module, x, mapping, cfg, dev, spec):
    """The run as units of ``--block`` perturbations on the chosen executor (``--store``: each
    finished block written there; a rerun with ``--resume`` computes only the rest)."""
    from ..local_sensitivity import n_perturbations
    from ..perturb_dist import local_distributed
    block = args.block if args.block is not None else n_perturbations(tuple(x.shape[1:]), cfg)
    device = args.device if args.executor == "ray" else dev  # a GPU node resolves its own
    with executor_from_args(args) as ex:
        results = local_distributed(module, x, mapping, cfg, device, block_size=block,
                                    executor=ex, store=args.store,
                                    expected_shape=spec.input_shape)
        units = results[0].extra["blocks"] * len(results)
        where = f"; {ex.loaded} loaded from {args.store}" if args.store else ""
        print(f"{units} units of {results[0].extra['block_size']:,} perturbations on {ex.name}: "
              f"{ex.computed} computed{where}")
    return results
