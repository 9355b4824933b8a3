"""``python -m nnsens_core am``: activation maximisation of classes (or neurons) of a CNN."""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from .._results import export_json, image_context
from ..activation_max import PRESETS, AMConfig, AMTarget, maximize, update_rule_text
from .. import budget
from ..device import resolve_device
from ..errors import NnsensError
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

HELP = ("Activation maximisation (TV or blur regularised) of class logits or a layer's channels; "
        "writes one PNG per target and activations.json. Without --model: the demo VGG-16.")


FLAGS = {"rule": "rule", "lr": "lr", "tv_weight": "tv_weight", "normalize_grad": "normalize_grad",
         "jitter": "jitter"}
"""AMConfig fields a preset sets -> the flags that override them."""


def register(p) -> None:
    add_model_args(p, required=False)
    add_image_input_args(p)
    p.add_argument("--classes", default="all",
                   help="'all' or a comma list of class names/indices (default all)")
    p.add_argument("--layer", help="maximise channels of this module instead of class logits "
                                   "(TorchScript: a stage of the model's forward chain)")
    p.add_argument("--channels", default="0", help="comma list of channels of --layer (default 0)")
    p.add_argument("--steps", type=int, default=AMConfig().steps)
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="paper: x <- x + 0.1*da/dx - 0.1*dTV/dx with the raw gradient (eqs. 1-5); "
                        "nnsens (the default): normalised gradient, 0.05 / 0.02. Flags given as well "
                        "override the preset")
    p.add_argument("--rule", choices=("tv", "blur", "none"), help="default tv")
    p.add_argument("--lr", type=float, help=f"epsilon1 (step on da/dx; default {AMConfig().lr})")
    p.add_argument("--tv-weight", type=float,
                   help=f"epsilon2 (TV step; default {AMConfig().tv_weight})")
    p.add_argument("--sigma", type=float, default=AMConfig().blur_sigma, help="blur sigma (pixels)")
    p.add_argument("--jitter", type=int, help="random roll of up to N pixels per step (default 0)")
    p.add_argument("--normalize-grad", action=argparse.BooleanOptionalAction, default=None,
                   help="divide each gradient by its mean |value| (default on; --no-normalize-grad: "
                        "raw gradients, lr then scales da/dx directly)")
    p.add_argument("--grey", action=argparse.BooleanOptionalAction, default=None,
                   help="optimise one grey channel repeated to the model's channels (default: on "
                        "when the images are grey: --data, else the demo phantom, as on the page; "
                        "off with --preset paper)")
    p.add_argument("--data", help="start from an image of this folder / .zip / .npz / 'phantom' "
                                  "(default: seeded noise)")
    p.add_argument("--index", type=int, default=0, help="start image index in --data")
    p.add_argument("--out", required=True, help="output folder")
    add_device_seed(p)
    add_yes(p)
    p.set_defaults(run=run)


def n_outputs(model, spec, device) -> int:
    """Number of classes: the spec's class names, else the width of the model's output."""
    if spec.class_names:
        return len(spec.class_names)
    with torch.no_grad():  # the model's own output: no hooks (TorchScript has none)
        out = model(torch.zeros((1, *spec.input_shape), device=device))
    return math.prod(tuple(out.shape)[1:])


def parse_classes(text: str, class_names, n_classes: int | None = None) -> list[int]:
    names = list(class_names) or [str(i) for i in range(n_classes or 0)]
    if text == "all":
        if not names:
            raise NnsensError("--classes all needs the model's class names; list indices instead")
        return list(range(len(names)))
    out = []
    for tok in (t.strip() for t in text.split(",") if t.strip()):
        if tok in names:
            out.append(names.index(tok))
        elif tok.isdigit() and (not names or int(tok) < len(names)):
            out.append(int(tok))
        else:
            raise NnsensError(f"--classes item {tok!r} is unknown; use one of {names} or "
                              f"0..{len(names) - 1}")
    if not out:
        raise NnsensError("--classes is empty; give 'all' or class names/indices")
    return out


def _png(path: Path, img01: torch.Tensor) -> None:
    from PIL import Image
    a = (img01.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    a = a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)
    Image.fromarray(a).save(path)


def run(args) -> int:
    t0 = time.perf_counter()
    dev = resolve_device(args.device)
    lm = load_cli_model(args, device=dev)
    spec = lm.spec
    if args.layer:
        try:
            chans = [int(c) for c in args.channels.split(",") if c.strip()]
        except ValueError:
            raise NnsensError(f"--channels {args.channels!r} must be a comma list of integers") from None
        targets = [AMTarget(c, args.layer) for c in chans]
    else:
        targets = [AMTarget(c) for c in parse_classes(args.classes, spec.class_names,
                                                           n_outputs(lm.module, spec, dev))]
    start, start_ctx = None, "noise"
    if args.data:
        from .local import model_inputs
        data = load_cli_images(args.data, size=tuple(spec.input_shape[1:]), channels=spec.input_shape[0],
                               recipe=cli_recipe(spec))
        if not 0 <= args.index < len(data):
            raise NnsensError(f"--index {args.index} is out of range; the data have {len(data)} images")
        start = model_inputs(data, np.array([args.index]), spec)[0]
        start_ctx = image_context(data, [args.index])
    fields, overridden = resolve_preset(args, PRESETS, PRESETS["nnsens"], FLAGS)
    show_preset("am", args.preset, PRESETS[args.preset] if args.preset else {}, overridden)
    grey = args.grey
    if grey is None:  # the page's default: grey images give grey AM (the paper preset: off)
        grey = False if args.preset == "paper" else (
            data if args.data else load_cli_images(None, n_demo=3)).is_grey()
    cfg = AMConfig(steps=args.steps, blur_sigma=args.sigma, seed=args.seed, grey=bool(grey),
                   **fields)
    print(update_rule_text(cfg))
    confirm_cost(args, budget.am(lm, len(targets), cfg))
    res = maximize(lm.module, spec, targets, cfg, dev, start=start)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = res.file_names(start_image=start is not None)
    pngs = list(res.images01(spec))
    if start is not None:
        pngs.insert(0, spec.denormalize(start).clamp(0, 1))
        write_npz(out / "difference.npz", {"difference": res.difference().numpy(),
                                           "targets": np.array(res.labels)})
    for f, img in zip(files, pngs):
        _png(out / f, img)
    write_npz(out / "am_images.npz", res.arrays())
    write_json(out / "activations.json", export_json(res, model=spec.name, start=start_ctx, files=files))
    for label, a0, a1 in zip(res.labels, res.start_activations.tolist(), res.activations.tolist()):
        print(f"{label}: {a0:.4g} -> {a1:.4g}")
    print(f"wrote {len(files)} PNGs and activations.json to {out} in {time.perf_counter() - t0:.1f}s")
    return 0
