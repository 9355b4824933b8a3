"""``python -m nnsens_core compare``: saliency methods scored against ground-truth masks."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from .._results import export_json
from ..data import ImageData, align_classes, load_report
from .. import budget
from ..device import resolve_device
from ..errors import NnsensError
from ..saliency import registry
from ..saliency.cam import CamConfig
from ..saliency.compare import DEFAULT_METHODS
from ..saliency.gradients import GradientConfig
from ..saliency.io import markdown_table
from ..saliency.meaningful_mask import MaskConfig
from ..saliency.occlusion import OcclusionConfig
from ._common import (
    add_device_seed,
    add_image_input_args,
    add_yes,
    cli_recipe,
    confirm_cost,
    add_model_args,
    load_cli_images,
    load_cli_model,
    printed_progress,
    write_csv,
    write_json,
    write_npz,
)
from ._executor_opts import add_executor_args, compare_fn

PHANTOM_FEATURES = {"regular": "A-lines (regular)", "covid": "B-lines (covid)",
                    "pneumonia": "consolidation (pneumonia)"}
HELP = ("Compare saliency maps (Grad-CAM family, AM difference, occlusion, local sensitivity, "
        "perturbation mask, gradient methods; see --methods) against ground-truth masks; writes "
        "metrics.json, summary.csv, records.csv, table.md (markdown IoU / pointing per method and "
        "class) and maps.npz.")


def register(p) -> None:
    add_model_args(p, required=False)
    add_image_input_args(p)
    p.add_argument("--data", default="phantom",
                   help="image folder / .zip / .npz with masks, or 'phantom' (default: the phantom "
                        "test set)")
    p.add_argument("--masks", help=".npy/.npz (key 'masks') of (N, H, W) ground-truth masks when "
                                   "--data has none")
    p.add_argument("--n", type=int, default=60, help="phantom test images (default 60)")
    default = ",".join(DEFAULT_METHODS)
    p.add_argument("--methods", default=default, metavar="M1,M2,...",
                   help=f"comma list of methods or 'all' (default {default}); choices: "
                        + ", ".join(f"{m.name} ({m.label}"
                                    + (f"; also {'/'.join(m.aliases)}" if m.aliases else "") + ")"
                                    for m in registry.methods()))
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--preset", choices=("paper",),
                   help="paper: the AM vs Grad-CAM figures' settings: methods gradcam,am (unless "
                        "--methods is given) and AM with the paper's update rule (eps1 = eps2 = 0.1, "
                        "raw gradient)")
    p.add_argument("--target", choices=("label", "pred"), default="label",
                   help="class to explain: the true label (default) or the prediction")
    p.add_argument("--target-layer", help="CAM target layer (default: the deepest conv with an "
                                          "8x8 or finer grid)")
    p.add_argument("--p", type=float, help="use the top-p fraction for GT IoU instead of k = mask area")
    p.add_argument("--tolerance", type=float, default=0.0, help="pointing-game tolerance in pixels")
    p.add_argument("--batch-size", type=int, default=32, help="images explained at a time")
    p.add_argument("--scorecam-batch", type=int, default=64, help="ScoreCAM masked inputs per pass")
    p.add_argument("--occlusion-window", type=int, default=None,
                   help="occlusion patch side in pixels (default: 1/8 of the image side, 8 at 64 px)")
    p.add_argument("--occlusion-stride", type=int, default=None,
                   help="occlusion stride in pixels (default: 1/16 of the image side, 4 at 64 px)")
    p.add_argument("--occlusion-score", choices=("prob", "logit"), default=OcclusionConfig().score,
                   help="score whose drop occlusion measures (logit does not saturate on confident "
                        "models)")
    p.add_argument("--occlusion-reference", choices=("constant", "blur"),
                   default=OcclusionConfig().reference)
    p.add_argument("--occlusion-tau", type=float, default=OcclusionConfig().tau,
                   help="occlusion: approximate incremental inference (0 = exact, the default; see "
                        "nnsens local --tau)")
    p.add_argument("--occlusion-drill", type=float, default=OcclusionConfig().drill_top,
                   help="occlusion: adaptive drill-down, the top fraction of positions computed at "
                        "the fine stride after a pass at twice the stride (1 = off, the default)")
    p.add_argument("--mask-steps", type=int, default=None,
                   help=f"mask optimisation steps (default: {MaskConfig().steps} up to 64x64 images, "
                        "fewer on larger ones, at least 32)")
    p.add_argument("--mask-resolution", type=int, default=MaskConfig().resolution)
    p.add_argument("--mask-lambda1", type=float, default=MaskConfig().lambda1)
    p.add_argument("--mask-lambda2", type=float, default=MaskConfig().lambda2)
    p.add_argument("--mask-beta1", type=float, default=MaskConfig().beta1)
    p.add_argument("--mask-beta2", type=float, default=MaskConfig().beta2)
    p.add_argument("--mask-lr", type=float, default=MaskConfig().lr)
    p.add_argument("--mask-reference", choices=("blur", "constant"), default=MaskConfig().reference)
    p.add_argument("--smoothgrad-samples", type=int, default=GradientConfig().samples,
                   help="SmoothGrad: noisy copies per image")
    p.add_argument("--smoothgrad-sigma", type=float, default=GradientConfig().sigma,
                   help="SmoothGrad: noise std as a fraction of the input range")
    p.add_argument("--ig-steps", type=int, default=GradientConfig().steps,
                   help="Integrated Gradients: points on the path from the reference")
    p.add_argument("--gradient-score", choices=("logit", "prob"), default=GradientConfig().score,
                   help="score the gradient methods differentiate (default: the logit)")
    p.add_argument("--gradient-reference", choices=("constant", "blur"),
                   default=GradientConfig().reference,
                   help="reference of gradient x input, IG and SmoothGrad (default: black)")
    p.add_argument("--no-maps", action="store_true", help="do not write maps.npz")
    add_device_seed(p)
    add_yes(p)
    add_executor_args(p, chunk=True)
    p.set_defaults(run=run)


def _load_masks(path: str, data: ImageData) -> ImageData:
    try:
        obj = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise NnsensError(f"--masks {path!r} is not a readable .npy/.npz: {str(exc)[:200]}") from None
    arr = obj["masks"] if hasattr(obj, "files") and "masks" in obj.files else (
        obj if isinstance(obj, np.ndarray) else None)
    if arr is None:
        raise NnsensError(f"--masks {path!r} has no array named 'masks'")
    expect = (len(data), *data.images.shape[2:])
    if arr.shape != expect:
        raise NnsensError(f"--masks has shape {arr.shape}; expected {expect} (one HxW mask per image)")
    return dataclasses.replace(data, masks=arr.astype(bool))


PAPER_METHODS = "gradcam,am"


def run(args) -> int:
    from ..activation_max import AMConfig, preset, update_rule_text
    t0 = time.perf_counter()
    if args.preset == "paper" and args.methods == ",".join(DEFAULT_METHODS):
        args.methods = PAPER_METHODS
    methods = registry.parse_methods(args.methods)
    dev = resolve_device(args.device)
    lm = load_cli_model(args, device=dev, names_from_data=True)
    data = load_cli_images(args.data, n_demo=args.n, recipe=cli_recipe(lm.spec))
    for line in load_report(data):
        print(line)
    if args.masks:
        data = _load_masks(args.masks, data)
    if lm.spec.class_names:  # matched by name, never by position
        data, how = align_classes(data, lm.spec.class_names)
        if how:
            print(how)
    else:
        lm.spec = lm.spec.replace(class_names=tuple(data.class_names))
    if tuple(lm.spec.input_shape) != tuple(data.shape):
        raise NnsensError(f"the model takes {tuple(lm.spec.input_shape)} images but the data are "
                          f"{tuple(data.shape)}; resize the images or pick another model")
    cfgs = {"cam": CamConfig("gradcam", args.target_layer, score_batch_size=args.scorecam_batch),
            "occlusion": OcclusionConfig(window=args.occlusion_window, stride=args.occlusion_stride,
                                         score=args.occlusion_score,
                                         reference=args.occlusion_reference,
                                         tau=args.occlusion_tau, drill_top=args.occlusion_drill),
            "mask": dataclasses.replace(registry.default_config("mask", data.shape[1:], lm),
                                        steps=args.mask_steps or registry.default_config(
                                            "mask", data.shape[1:], lm).steps,
                                        resolution=args.mask_resolution, lambda1=args.mask_lambda1,
                                        lambda2=args.mask_lambda2, beta1=args.mask_beta1,
                                        beta2=args.mask_beta2, lr=args.mask_lr,
                                        reference=args.mask_reference),
            "gradients": GradientConfig(samples=args.smoothgrad_samples, sigma=args.smoothgrad_sigma,
                                        steps=args.ig_steps, score=args.gradient_score,
                                        reference=args.gradient_reference, seed=args.seed)}
    if args.preset == "paper":
        am = AMConfig()
        cfgs["am"] = preset("paper", steps=am.steps, seed=args.seed, preview_every=0)
        print(f"preset paper: methods {','.join(methods)}; AM {update_rule_text(cfgs['am'])}")
    import torch
    torch.manual_seed(args.seed)

    from ..studies_dist import CHANCE_STAGE  # the executor path's second stage: named, not a 2nd "100 %"
    progress = printed_progress(
        lambda done, total, stage, sec: f"  {100 * done / max(total, 1):5.1f}%  {sec:6.1f}s"
        + (f"  {stage}" if stage == CHANCE_STAGE else ""), t0)

    confirm_cost(args, budget.compare(lm, tuple(lm.spec.input_shape), methods,
                                      {m: registry.config_for(m, cfgs, data.shape[1:]) for m in methods}, len(data)))
    extra = {}
    if getattr(data, "roi", None) is not None:  # a dataset that carries a region of interest
        from ._executor_opts import uses_units
        if uses_units(args):
            raise NnsensError("this dataset carries a region of interest, which the chunked run "
                              "(--executor ray / --store) does not apply; run it without them")
        extra["roi"] = data.roi
        print(f"metrics inside the region of interest: {data.roi.mean():.0%} of the image")
    ev = compare_fn(args)(lm.module, lm.spec, data, methods, cfgs, target=args.target, p=args.p,
                          tolerance=args.tolerance, batch_size=args.batch_size, device=dev,
                          progress=progress, **extra)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = export_json(ev, model=lm.spec.name, data=data.name, device=str(dev),
                       class_names=list(data.class_names))
    write_json(out / "metrics.json", info)
    write_csv(out / "summary.csv", ev.summary())
    order = [c for c in ("covid", "pneumonia", "regular") if c in data.class_names] \
        if args.data == "phantom" else list(data.class_names)
    (out / "table.md").write_text(markdown_table(
        info, order or list(data.class_names), PHANTOM_FEATURES if args.data == "phantom" else None))
    write_csv(out / "records.csv", ev.records, index=False)
    if not args.no_maps:
        write_npz(out / "maps.npz", {**{k: a.astype(np.float16) if k.startswith("map_") else a
                                        for k, a in ev.arrays().items()},
                                     "labels": data.labels[ev.indices], "masks": data.masks[ev.indices]})
    print(f"{'method':<12} {'IoU':>6} {'pointing':>9} {'mass':>6}")
    for m, e in info["methods"].items():
        fmt = lambda x: "  n/a" if x is None else f"{x:.3f}"  # noqa: E731
        print(f"{m:<12} {fmt(e['iou']):>6} {fmt(e['pointing']):>9} {fmt(e['mass']):>6}")
    for m, rep in ev.approx.items():   # approximate maps: what the speed cost (also in metrics.json)
        from .._approx import describe_error
        print(f"{m}: {describe_error(rep)}; the worst over {rep['parts']} batch(es)")
    print(f"wrote {out / 'metrics.json'} ({time.perf_counter() - t0:.2f} s)")
    return 0
