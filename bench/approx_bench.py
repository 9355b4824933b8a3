"""Approximate incremental inference: the error-speed curve over tau, measured in one run.

Local sensitivity (demo VGG-16, 3x64x64, 12,288 single-pixel perturbations, diff_norm): the
paper's one-at-a-time loop (timed on ``--loop-pixels`` pixels, extrapolated), the exact
incremental engine (tau = 0) and the approximate one at each ``--taus`` (projective-field
thresholding, :mod:`nnsens_core._approx`). Occlusion (demo VGG-16, ``--images`` phantom test
images, window 4, stride 2, logit score): full forward passes (``incremental="off"``), the exact
incremental engine, and approximate settings: thresholding (``tau``), adaptive drill-down
(``drill_top``, coarse stride 2 x stride) and both.

For every approximate run: the error of the whole map against the exact one (relative L2 error
and Spearman, worst block), the error the result itself reports from its sample of exactly
computed perturbations, and the speed-up. ``--torchvision``: torchvision's VGG-16 (random
weights, nothing downloaded) at 224 x 224, one image; local sensitivity on 8 x 8 patches (2,352
perturbations), occlusion window 16, stride 8 (729 positions).

Last lines: ``local_speedup_approx=<x>`` (vs the loop) and ``occlusion_speedup_approx=<x>`` (vs
full forwards), each at the fastest setting whose full-map error meets the goal's bounds
(relative L2 <= 1 %, Spearman >= 0.99; tau = 0, the exact engine, always does), with that
setting named. Timings are single runs on a possibly shared CPU (1 torch thread by default).
"""
from __future__ import annotations

import argparse
import time

import torch

from nnsens_core import zoo
from nnsens_core._approx import error_report
from nnsens_core.local_sensitivity import LocalConfig, local_sensitivity
from nnsens_core.saliency.occlusion import (
    OcclusionConfig,
    occlusion,
    occlusion_positions,
)

try:                                   # run as a script from the repository root
    from local_bench import demo_model_and_image, time_loop
    from occlusion_bench import demo_setup
except ImportError:                    # pragma: no cover - imported as bench.approx_bench
    from bench.local_bench import demo_model_and_image, time_loop
    from bench.occlusion_bench import demo_setup

BOUNDS = (0.01, 0.99)   # relative L2 error at most, Spearman at least


def _ok(rep: dict) -> bool:
    return rep["rel_l2"] <= BOUNDS[0] and rep["spearman"] >= BOUNDS[1]


def _row(name, seconds, ref_seconds, full, own):
    mark = "meets" if _ok(full) else "misses"
    own_txt = (f"reported on {own['sample']}: rel {own['rel_l2']:.2%}, rho {own['spearman']:.4f}"
               if own else "exact")
    print(f"  {name:<28} {seconds:7.2f} s  {ref_seconds / seconds:6.2f}x   map rel {full['rel_l2']:.2%}, "
          f"rho {full['spearman']:.4f} ({mark} the bounds); {own_txt}", flush=True)


def local_part(args, model, x, patch):
    blocks = zoo.image_blocks(model)
    n = LocalConfig(patch=patch)
    n_pert = x.shape[0] * (-(-x.shape[1] // patch)) * (-(-x.shape[2] // patch))
    print(f"local sensitivity: {n_pert:,} perturbations ({patch}x{patch}), {len(blocks)} blocks",
          flush=True)
    time_loop(model, x, blocks, 3, 0.1)
    loop = time_loop(model, x, blocks, args.loop_pixels, 0.1) * n_pert
    t = time.perf_counter()
    exact = local_sensitivity(model, x, blocks, n, "cpu")
    t_exact = time.perf_counter() - t
    print(f"  {'one-at-a-time loop':<28} {loop:7.2f} s  (extrapolated from {args.loop_pixels} pixels)")
    _row("exact incremental (tau 0)", t_exact, loop, {"rel_l2": 0.0, "spearman": 1.0}, None)
    best = ("tau 0 (exact)", loop / t_exact)
    for tau in args.taus:
        t = time.perf_counter()
        a = local_sensitivity(model, x, blocks, LocalConfig(patch=patch, tau=tau), "cpu")
        sec = time.perf_counter() - t
        full = error_report(a.maps.reshape(len(blocks), -1).T, exact.maps.reshape(len(blocks), -1).T)
        _row(f"tau {tau:g}", sec, loop, full, a.extra.get("approx"))
        if _ok(full) and loop / sec > best[1]:
            best = (f"tau {tau:g}", loop / sec)
    return best


def occlusion_part(args, model, x, classes, spec, window, stride):
    kw = dict(window=window, stride=stride, score="logit", reference="constant")
    n_occ = len(x) * len(occlusion_positions(x.shape, OcclusionConfig(**kw)))
    print(f"occlusion: {len(x)} image(s), window {window}, stride {stride}: {n_occ:,} occluded images",
          flush=True)
    t = time.perf_counter()
    off = occlusion(model, x, classes, OcclusionConfig(incremental="off", **kw), "cpu", spec)
    t_off = time.perf_counter() - t
    t = time.perf_counter()
    exact = occlusion(model, x, classes, OcclusionConfig(**kw), "cpu", spec)
    t_exact = time.perf_counter() - t
    print(f"  {'full forwards':<28} {t_off:7.2f} s")
    _row("exact incremental (tau 0)", t_exact, t_off,
         error_report(exact.reshape(-1), off.reshape(-1)), None)
    best = ("tau 0 (exact)", t_off / t_exact)
    settings = [{"tau": tau} for tau in args.taus[:3]]
    settings += [{"drill_top": f} for f in args.drill]
    settings += [{"tau": args.taus[0], "drill_top": args.drill[0]}]
    for extra in settings:
        t = time.perf_counter()
        a, det = occlusion(model, x, classes, OcclusionConfig(**kw, **extra), "cpu", spec,
                           return_details=True)
        sec = time.perf_counter() - t
        full = error_report(a.reshape(-1), off.reshape(-1))
        name = ", ".join(f"{k} {v:g}" for k, v in extra.items())
        _row(name, sec, t_off, full, det.get("approx"))
        if _ok(full) and t_off / sec > best[1]:
            best = (name, t_off / sec)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--torchvision", action="store_true", help="torchvision VGG-16 at 224 instead")
    ap.add_argument("--taus", type=float, nargs="+", default=[0.05, 0.2, 0.4, 0.6])
    ap.add_argument("--drill", type=float, nargs="+", default=[0.5, 0.25],
                    help="drill-down top fractions")
    ap.add_argument("--images", type=int, default=4, help="occlusion images (demo)")
    ap.add_argument("--loop-pixels", type=int, default=150)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default)")
    ap.add_argument("--skip-local", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    if args.torchvision:
        torch.manual_seed(0)
        model = zoo.build("vgg16").eval()
        x = torch.randn(3, 224, 224, generator=torch.Generator().manual_seed(0))
        what, patch, window, stride = "torchvision VGG-16 (random weights) at 224", 8, 16, 8
        occ = (model, x[None], [0], None)
    else:
        model, x, what = demo_model_and_image()
        patch, window, stride = 1, 4, 2
        m2, xs, classes, spec, _ = demo_setup(args.images)
        occ = (m2, xs, classes, spec)
    print(f"model: {what}; torch threads {torch.get_num_threads()}; bounds: rel L2 <= "
          f"{BOUNDS[0]:.0%}, Spearman >= {BOUNDS[1]}", flush=True)
    local = None if args.skip_local else local_part(args, model, x, patch)
    occl = occlusion_part(args, *occ, window, stride)
    if local:
        print(f"local_speedup_approx={local[1]:.1f} ({local[0]})")
    print(f"occlusion_speedup_approx={occl[1]:.2f} ({occl[0]})")


if __name__ == "__main__":
    main()
