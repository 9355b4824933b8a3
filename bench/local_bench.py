"""Local-sensitivity throughput on the demo VGG-16 (3x64x64, 12,288 single-pixel perturbations).

Measured in one run, in interleaved rounds (medians reported):
  * ours: ``local_sensitivity`` with the library defaults (on the demo VGG the exact incremental
    engine: each layer computes only the activation box a perturbed pixel reaches, from the stored
    unperturbed activations around it), at the automatic batch size unless ``--batch-size``;
  * off: the same call with ``incremental="off"``: batched perturbations, one full forward per
    perturbation, hooks reduce the block norms (the previous default);
  * loop: the paper's method, one perturbed image per forward pass (timed on a subset of pixels and
    extrapolated per perturbation, as printed);
  * raw: plain batched forward passes of the full path's batch size (the ceiling for ``off``).
Last line: ``local_speedup=<ours vs loop> efficiency=<raw forward per image / ours per
perturbation>`` (goals >= 50, >= 0.8). Efficiency above 1 means a perturbation costs less than a
full forward, which only the incremental engine can do.

On a CPU, batching alone is bounded by how much faster a batched forward is per image than a
single-image one (about 1.6-1.9x for the demo VGG-16 on one core): each perturbation still costs a
full forward's arithmetic. The incremental engine cuts the arithmetic instead: on the demo VGG
(64x64, width 1/8) about 9.5M instead of 20M multiply-adds per perturbation, because blocks 4-5
(8x8 and 4x4 maps) are reached entirely by every pixel; the gain grows with the image size (the
reached boxes stay small while the maps grow). The large batching speedups come from devices where
a single-image forward is launch-bound (GPUs). Use ``--threads 0`` for torch's default threads.
``--device`` (default ``auto``: cuda, else mps, else cpu) runs all four on that device; GPU timings
synchronise the device before reading the clock.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from nnsens_core import zoo
from nnsens_core._hooks import forward_with_outputs
from nnsens_core.device import resolve_device
from nnsens_core.local_sensitivity import (
    LocalConfig,
    _auto_batch,
    _bytes_per_item,
    local_sensitivity,
)


def demo_model_and_image():
    from nnsens_core import demos
    name = next((n for n in demos.demo_cnn_names() if "vgg" in n), None)
    if name is not None:
        lm = demos.load_demo_cnn(name)
        model, spec, what = lm.module, lm.spec, f"demo model {name!r}"
    else:
        torch.manual_seed(0)
        model = zoo.build("vgg16-small").eval()
        spec = zoo.ModelSpec("vgg16-small", "vgg16-small", "image", (3, 64, 64))
        what = "vgg16-small with random weights (no demo model shipped yet)"
    try:
        from nnsens_core.phantom import demo_images
        img = torch.as_tensor(demo_images("test", n=1).images[0])
        if tuple(img.shape) != tuple(spec.input_shape):
            raise ValueError
        x = spec.normalize(img)
    except Exception:  # noqa: BLE001 - any image will do for timing
        x = spec.normalize(torch.rand(spec.input_shape, generator=torch.Generator().manual_seed(0)))
    return model.eval(), x, what


def sync(dev: torch.device) -> None:
    """Wait for queued device work, so the clock measures it (a no-op on the CPU)."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


def clock(dev: torch.device) -> float:
    sync(dev)
    return time.perf_counter()


def time_raw(model, x, bs, reps):
    xb = x[None].repeat(bs, 1, 1, 1)
    with torch.inference_mode():
        model(xb)
        t = clock(x.device)
        for _ in range(reps):
            model(xb)
        return (clock(x.device) - t) / (reps * bs)


def time_loop(model, x, blocks, n_pixels, eps):
    """The paper's method: perturb one pixel, run one forward, take the block norms, repeat."""
    names = list(blocks.values())
    c, h, w = x.shape
    with torch.no_grad():
        _, base = forward_with_outputs(model, x[None], names)
        base = {n: o.clone() for n, o in base.items()}
        t = clock(x.device)
        for p in range(n_pixels):
            ch, rem = divmod(p * 37 % (c * h * w), h * w)
            xp = x.clone()
            xp[ch, rem // w, rem % w] += eps
            _, out = forward_with_outputs(model, xp[None], names)
            [float(torch.linalg.vector_norm(out[n] - base[n])) for n in names]
    return (clock(x.device) - t) / n_pixels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch-size", type=int, default=0,
                    help="perturbations per batch for ours, off and raw (0 = the library's automatic "
                         "choice; for raw the full path's)")
    ap.add_argument("--loop-pixels", type=int, default=300, help="pixels timed for the loop, in total")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="auto", help="auto (cuda, else mps, else cpu), cuda, mps or cpu")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a shared machine, OpenMP threads that wait for "
                         "each other make small-batch timings, i.e. the loop, erratic; 0 = torch's "
                         "default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    dev = resolve_device(args.device)
    model, x, what = demo_model_and_image()
    model, x = model.to(dev), x.to(dev)
    blocks = zoo.image_blocks(model)
    n_pert = x.numel()
    bs = args.batch_size or _auto_batch(_bytes_per_item(model, x), dev)
    cfg = LocalConfig(epsilon=0.1, batch_size=args.batch_size or None)
    cfg_off = LocalConfig(epsilon=0.1, batch_size=bs, incremental="off")
    print(f"model: {what}; input {tuple(x.shape)}; {n_pert:,} single-pixel perturbations; "
          f"{len(blocks)} blocks; full-forward batch {bs}{' (automatic)' if not args.batch_size else ''}; "
          f"device {dev}; torch threads {torch.get_num_threads()}")
    raw_t, ours_t, off_t, loop_t = [], [], [], []
    per_round = max(1, args.loop_pixels // args.rounds)
    time_loop(model, x, blocks, 3, 0.1)  # warm-up
    for r in range(args.rounds):  # interleaved so a busy machine hurts all three the same way
        loop_t.append(time_loop(model, x, blocks, per_round, 0.1))
        raw_t.append(time_raw(model, x, bs, max(2, n_pert // bs // 4)))
        t = clock(dev)
        res = local_sensitivity(model, x, blocks, cfg, dev)
        ours_t.append((clock(dev) - t) / n_pert)
        t = clock(dev)
        res_off = local_sensitivity(model, x, blocks, cfg_off, dev)
        off_t.append((clock(dev) - t) / n_pert)
        err = float((res.maps - res_off.maps).abs().max() / res_off.maps.abs().max())
        engine = res.extra.get("engine", "?") + (f", batch {res.extra['batch_size']}"
                                                 if "batch_size" in res.extra else "")
        print(f"round {r + 1}: loop {loop_t[-1] * 1e6:.0f} us/perturbation ({per_round} pixels), "
              f"raw forward {raw_t[-1] * 1e6:.0f} us/image, ours ({engine}) {ours_t[-1] * 1e6:.0f} "
              f"us/perturbation ({ours_t[-1] * n_pert:.1f} s total, {res.n_forward:,} forward passes), "
              f"off {off_t[-1] * 1e6:.0f} us/perturbation; max |ours - off| / max |off| = {err:.1e}",
              flush=True)
    ours, off, raw, loop = (statistics.median(v) for v in (ours_t, off_t, raw_t, loop_t))
    print(f"ours {ours * n_pert:.1f} s vs off {off * n_pert:.1f} s (incremental='off', {off / ours:.2f}x "
          f"slower) vs loop {loop * n_pert:.1f} s (the paper's one perturbation per forward, "
          f"extrapolated from {per_round * args.rounds} pixels) vs raw batched forward "
          f"{raw * n_pert:.1f} s for {n_pert:,} images")
    print(f"local_speedup={loop / ours:.1f} efficiency={raw / ours:.3f}")


if __name__ == "__main__":
    main()
