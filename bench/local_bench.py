"""Local-sensitivity throughput on the demo VGG-16 (3x64x64, 12,288 single-pixel perturbations).

Measured in one run:
  * ours: ``local_sensitivity`` (batched perturbations, one forward per batch, hooks reduce norms);
  * loop: the paper's method, one perturbed image per forward pass (timed on a subset of pixels and
    extrapolated per perturbation, as printed);
  * raw: plain batched forward passes of the same batch size (the ceiling for ours).
Last line: ``local_speedup=<ours vs loop> efficiency=<ours / raw forward>`` (goals >= 50, >= 0.8).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nnsens_core import zoo  # noqa: E402
from nnsens_core._hooks import forward_with_outputs  # noqa: E402
from nnsens_core.perturbation import LocalConfig, local_sensitivity  # noqa: E402


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


def time_raw(model, x, bs, reps):
    xb = x[None].repeat(bs, 1, 1, 1)
    with torch.inference_mode():
        model(xb)
        t = time.perf_counter()
        for _ in range(reps):
            model(xb)
    return (time.perf_counter() - t) / (reps * bs)


def time_loop(model, x, blocks, n_pixels, eps):
    """The paper's method: perturb one pixel, run one forward, take the block norms, repeat."""
    names = list(blocks.values())
    c, h, w = x.shape
    with torch.no_grad():
        _, base = forward_with_outputs(model, x[None], names)
        base = {n: o.clone() for n, o in base.items()}
        t = time.perf_counter()
        for p in range(n_pixels):
            ch, rem = divmod(p * 37 % (c * h * w), h * w)
            xp = x.clone()
            xp[ch, rem // w, rem % w] += eps
            _, out = forward_with_outputs(model, xp[None], names)
            [float(torch.linalg.vector_norm(out[n] - base[n])) for n in names]
    return (time.perf_counter() - t) / n_pixels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--loop-pixels", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    model, x, what = demo_model_and_image()
    blocks = zoo.image_blocks(model)
    n_pert = x.numel()
    bs = args.batch_size
    cfg = LocalConfig(epsilon=0.1, batch_size=bs)
    print(f"model: {what}; input {tuple(x.shape)}; {n_pert:,} single-pixel perturbations; "
          f"{len(blocks)} blocks; batch {bs}; torch threads {torch.get_num_threads()}")
    raw_t, ours_t = [], []
    for r in range(args.rounds):  # interleaved so a busy machine hurts both the same way
        raw_t.append(time_raw(model, x, bs, max(2, n_pert // bs // 3)))
        t = time.perf_counter()
        res = local_sensitivity(model, x, blocks, cfg, "cpu")
        ours_t.append((time.perf_counter() - t) / n_pert)
        print(f"round {r + 1}: raw forward {raw_t[-1] * 1e6:.1f} us/image, "
              f"ours {ours_t[-1] * 1e6:.1f} us/perturbation ({ours_t[-1] * n_pert:.1f} s total, "
              f"{res.n_forward:,} forward passes)")
    loop_t = time_loop(model, x, blocks, args.loop_pixels, 0.1)
    print(f"loop (paper, one perturbation per forward): {loop_t * 1e6:.1f} us/perturbation, measured "
          f"on {args.loop_pixels} pixels and extrapolated to {n_pert:,}: {loop_t * n_pert:.1f} s")
    ours, raw = statistics.median(ours_t), statistics.median(raw_t)
    print(f"ours {ours * n_pert:.1f} s vs loop {loop_t * n_pert:.1f} s (extrapolated) vs raw batched "
          f"forward {raw * n_pert:.1f} s for {n_pert:,} images")
    print(f"local_speedup={loop_t / ours:.1f} efficiency={raw / ours:.3f}")


if __name__ == "__main__":
    main()
