"""``python -m nnsens_core report``: a case report (PDF + HTML) of one image."""
from __future__ import annotations

import time
from pathlib import Path

HELP = ("Case report of one image: the model's prediction and saliency maps (at the image's own "
        "resolution, with colour bars), their agreement, the model's SHA-256 and optional sanity "
        "check; writes report.pdf, report.html, maps.npz and case.json.")

def register(p) -> None:
    from ..saliency import registry
    from ..saliency.compare import DEFAULT_METHODS
    from ._common import add_device_seed, add_image_input_args, add_model_args, add_yes
    p.add_argument("image", help="the image file (PNG, JPEG, BMP, TIFF, WebP; a DICOM or cine "
                                 "loop gives its frame --frame)")
    add_model_args(p, required=False)
    add_image_input_args(p)
    default = ",".join(DEFAULT_METHODS)
    p.add_argument("--methods", default=default, metavar="M1,M2,...",
                   help=f"comma list of methods or 'all' (default {default}); choices: "
                        + ", ".join(registry.names()))
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--class", dest="explain", help="class to explain, by name or index (default: "
                                                   "the predicted class)")
    p.add_argument("--true-label", help="the case's known class, by name or index (shown only)")
    p.add_argument("--frame", type=int, default=0, help="frame of a DICOM / cine loop (default 0)")
    p.add_argument("--target-layer", help="CAM target layer (default: the deepest conv with an "
                                          "8x8 or finer grid)")
    p.add_argument("--occlusion-window", type=int, help="occlusion patch side in model pixels")
    p.add_argument("--occlusion-stride", type=int, help="occlusion stride in model pixels")
    p.add_argument("--am-steps", type=int, help="activation-maximization steps of the AM map")
    p.add_argument("--mask-steps", type=int, help="optimisation steps of the perturbation mask")
    p.add_argument("--sanity", action="store_true",
                   help="run a short sanity check (maps of the model with its output layer and "
                        "then every layer re-initialised) and report its verdict")
    p.add_argument("--alpha", type=float, default=0.5, help="opacity of the colour wash (0..1)")
    add_device_seed(p)
    add_yes(p)
    p.set_defaults(run=run)


def _class_index(text: str | None, names, flag: str) -> int | None:
    from ..errors import NnsensError
    if text is None:
        return None
    low = [str(n).strip().lower() for n in names]
    if text.strip().lower() in low:
        return low.index(text.strip().lower())
    if text.strip().isdigit() and int(text) < len(names):
        return int(text)
    raise NnsensError(f"{flag} {text!r} is not one of the model's classes {list(names)} (or an "
                      f"index 0..{len(names) - 1})")


def read_case_image(path: str | Path, frame: int = 0):
    """An image file -> (C, h, w) float32 in [0, 1] at its own size
    (:func:`nnsens_core.report.load_case_image`)."""
    from ..report import load_case_image
    path = Path(path)
    return load_case_image(path.read_bytes(), path.name, frame)


def _load_model(args, dev):
    from ..errors import NnsensError
    from ._common import load_cli_model
    lm = load_cli_model(args, device=dev)  # --manifest / --class-names / --resize: _common
    if len(lm.spec.input_shape) != 3:
        raise NnsensError(f"the model takes volumes {tuple(lm.spec.input_shape)}; a case report "
                          "explains 2-D images")
    return lm


def run(args) -> int:
    import dataclasses

    import numpy as np
    import torch

    from .. import budget
    from .. import report as RP
    from .._results import dumps
    from ..device import resolve_device
    from ..errors import NnsensError
    from ..saliency import registry
    from ._common import confirm_cost, printed_progress, write_npz
    t0 = time.perf_counter()
    if not 0 <= args.alpha <= 1:
        raise NnsensError(f"--alpha {args.alpha} must lie in 0..1")
    dev = resolve_device(args.device)
    torch.manual_seed(args.seed)
    image = read_case_image(args.image, args.frame)
    lm = _load_model(args, dev)
    methods = registry.parse_methods(args.methods)
    cfgs = {}
    for m in methods:
        cfg = registry.default_config(m, lm.spec.input_shape[1:], lm)  # sized to the model
        changes = {}
        fields = {f.name for f in dataclasses.fields(cfg)}
        for flag, fld in (("target_layer", "target_layer"), ("occlusion_window", "window"),
                          ("occlusion_stride", "stride"), ("am_steps", "steps"),
                          ("mask_steps", "steps")):
            val = getattr(args, flag)
            owner = {"occlusion_window": "occlusion", "occlusion_stride": "occlusion",
                     "am_steps": "am", "mask_steps": "mask"}.get(flag)
            if val is not None and fld in fields and (owner is None or owner == m):
                changes[fld] = val
        if "seed" in fields:
            changes["seed"] = args.seed
        cfgs[m] = dataclasses.replace(cfg, **changes) if changes else cfg
    x, place = RP.case_input(image, lm.spec)
    probs = RP.case_probabilities(lm, x, dev)
    if len(lm.spec.class_names) != len(probs):
        lm.spec = lm.spec.replace(class_names=tuple(f"class {k}" for k in range(len(probs))))
    names = tuple(lm.spec.class_names)
    explained = _class_index(args.explain, names, "--class")
    explained = int(np.argmax(probs)) if explained is None else explained
    true_label = _class_index(args.true_label, names, "--true-label")
    rounds = 3 if args.sanity else 1
    confirm_cost(args, budget.compare(lm, tuple(lm.spec.input_shape), methods, cfgs, 1, rounds))
    progress = printed_progress(
        lambda done, total, stage, sec: f"  {stage or 'maps'}: {100 * done / max(total, 1):5.1f}%"
                                        f"  {sec:6.1f}s", t0)
    maps, timings = {}, {}
    for m in methods:
        t = time.perf_counter()
        maps[m] = RP.case_map(lm, lm.spec, x, place, m, cfgs[m], explained, dev,
                              lambda d, n, stage="", _m=m: progress(d, n, _m))[1]
        timings[m] = round(time.perf_counter() - t, 2)
    sanity = None
    if args.sanity:
        sanity = RP.model_sanity(lm, lm.spec, x, [explained], methods, cfgs, dev, args.seed)
    rep = RP.case_report(image, lm, probs, maps, case=Path(args.image).name, explained=explained,
                         true_label=true_label, settings=cfgs, sanity=sanity, alpha=args.alpha)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    (out / "report.pdf").write_bytes(rep.to_pdf())
    (out / "report.html").write_text(rep.to_html(), encoding="utf-8")
    pdf_s = time.perf_counter() - t
    write_npz(out / "maps.npz", rep.arrays())
    doc = rep.to_dict()
    doc["seconds"] = {"maps": timings, "reports": round(pdf_s, 2),
                      "total": round(time.perf_counter() - t0, 2)}
    (out / "case.json").write_text(dumps(doc), encoding="utf-8")
    print(f"{names[rep.predicted]} ({probs[rep.predicted]:.1%}); explaining {names[explained]}")
    if sanity is not None:
        print(sanity.text())
    for w in rep.all_warnings():
        print(f"warning: {w}")
    print(f"wrote {out / 'report.pdf'}, report.html, maps.npz, case.json "
          f"({time.perf_counter() - t0:.1f} s)")
    return 0
