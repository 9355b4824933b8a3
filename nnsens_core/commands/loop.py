"""``python -m nnsens_core loop``: one saliency method on every frame of a cine loop or DICOM."""
from __future__ import annotations

import json
import time
from pathlib import Path

HELP = ("Explain every frame of a cine loop (MP4 / AVI / MOV / GIF / DICOM / .npy) with one "
        "saliency method; writes maps.npz (maps at model and original resolution), frames.json "
        "(per-frame predictions), summary.json and the annotated loop overlay.mp4 / overlay.gif. "
        "Patient identifiers are never written unless --include-identifiers is given.")


def register(p) -> None:
    from ..saliency import registry
    from ..sequences import MAX_FRAMES
    from ._common import add_device_seed, add_image_input_args, add_model_args, add_yes
    p.add_argument("file", help="the loop: .mp4 / .avi / .mov / .gif / .dcm / .npy")
    add_model_args(p, required=False)
    add_image_input_args(p)
    p.add_argument("--method", default="gradcam",
                   help="saliency method (default gradcam); one of "
                        + ", ".join(m.name for m in registry.methods()))
    p.add_argument("--options", default="{}",
                   help='JSON settings of the method, e.g. \'{"window": 16, "stride": 8}\'')
    p.add_argument("--target", default="pred",
                   help="class to explain: 'pred' (each frame's prediction, default), a class "
                        "name or index")
    p.add_argument("--every", type=int, default=1, help="keep every k-th frame (default 1: all)")
    p.add_argument("--max-frames", type=int, default=MAX_FRAMES,
                   help=f"refuse loops with more frames (default {MAX_FRAMES})")
    p.add_argument("--batch-size", type=int, default=8, help="frames explained at a time")
    p.add_argument("--formats", default="mp4,gif", help="annotated loop formats: mp4, gif or both "
                                                        "(default mp4,gif); 'none' writes none")
    p.add_argument("--alpha", type=float, default=0.5, help="opacity of the map (default 0.5)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--include-identifiers", action="store_true",
                   help="also write the DICOM's patient identifiers (name, ID, birth date, ...) to "
                        "summary.json, maps.npz and the videos' metadata (off by default)")
    add_device_seed(p)
    add_yes(p)
    p.set_defaults(run=run)


def _target(text: str):
    text = text.strip()
    if text.lower() == "pred":
        return None
    return int(text) if text.isdigit() else text


def run(args) -> int:
    import dataclasses

    import torch

    from .. import budget
    from .._results import export_json
    from ..device import resolve_device
    from ..errors import NnsensError
    from ..preprocess import Recipe
    from ..saliency import registry
    from ..sequences import (
        explain_frames,
        export_loop,
        load_sequence,
        maps_npz,
        subsample,
    )
    from ._common import (
        confirm_cost,
        load_cli_model,
        printed_progress,
        write_csv,
        write_json,
    )

    t0 = time.perf_counter()
    formats = [f.strip().lower() for f in args.formats.split(",") if f.strip()]
    if formats == ["none"]:
        formats = []
    bad = [f for f in formats if f not in ("mp4", "gif")]
    if bad:
        raise NnsensError(f"--formats {args.formats!r}: {bad} unknown; use mp4, gif, both or none")
    try:
        options = json.loads(args.options)
    except json.JSONDecodeError:
        raise NnsensError(f"--options {args.options!r} is not JSON; e.g. '{{\"window\": 16}}'") from None
    if not isinstance(options, dict):
        raise NnsensError(f"--options {args.options!r} must be a JSON object of settings")
    path = Path(args.file)
    seq = subsample(load_sequence(path.read_bytes(), path.name, max_frames=args.max_frames),
                    args.every)
    print(f"{path.name}: {len(seq)} frames of {seq.size[1]} x {seq.size[0]} px "
          f"({'grey' if seq.channels == 1 else 'RGB'}) at {seq.fps:g} frames/s"
          + (f", pixel spacing {seq.pixel_spacing[0]:g} x {seq.pixel_spacing[1]:g} mm"
             if seq.pixel_spacing else "")
          + ("; patient identifiers present and hidden" if seq.identifiers and
             not args.include_identifiers else ""))
    dev = resolve_device(args.device)
    torch.manual_seed(args.seed)
    lm = load_cli_model(args, device=dev)  # --manifest / --class-names / --resize: _common
    recipe = Recipe.from_spec(lm.spec)
    method = registry.get(args.method)
    cfg = registry.default_config(method.name, lm.spec.input_shape[1:], lm)  # sized to the model
    try:
        cfg = method.bind(dataclasses.replace(cfg, **options))
    except TypeError:
        known = sorted(f.name for f in dataclasses.fields(cfg))
        raise NnsensError(f"--options {sorted(options)} are not all settings of {method.name!r}; "
                          f"its settings are {known}") from None
    print(f"model {lm.spec.name}: {recipe.describe()}; method {method.label}")
    confirm_cost(args, budget.compare(lm, tuple(lm.spec.input_shape), [method.name],
                                      {method.name: cfg}, len(seq)))
    progress = printed_progress(
        lambda done, total, stage, sec: f"  {100 * done / max(total, 1):5.1f}%  {sec:6.1f}s", t0)
    fm = explain_frames(lm, seq, method.name, target=_target(args.target),
                        batch_size=args.batch_size, progress=progress, config=cfg, device=dev)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    context = {"device": str(dev)}  # the file name often carries the patient's name: opt-in
    if args.include_identifiers:
        context["file"] = path.name
        if seq.identifiers:
            context["identifiers"] = seq.identifiers
    write_json(out / "summary.json", export_json(fm, **context))
    strip = fm.to_frame()
    write_json(out / "frames.json", {"method": fm.method, "class_names": list(fm.class_names),
                                     "frames": strip.to_dict(orient="records")})
    write_csv(out / "frames.csv", strip, index=False)
    (out / "maps.npz").write_bytes(maps_npz(fm, seq, include_identifiers=args.include_identifiers))
    for fmt in formats:
        t1 = time.perf_counter()
        (out / f"overlay.{fmt}").write_bytes(export_loop(seq, fm, fmt=fmt, alpha=args.alpha,
                                                         include_identifiers=args.include_identifiers))
        print(f"wrote {out / f'overlay.{fmt}'} ({time.perf_counter() - t1:.2f} s)")
    s = fm.summary()
    shares = ", ".join(f"{c} {v:.0%}" for c, v in s["class_fractions"].items())
    print(f"predicted per frame: {shares}; majority {s['majority']}")
    print(f"wrote {out / 'summary.json'} ({time.perf_counter() - t0:.2f} s)")
    return 0
