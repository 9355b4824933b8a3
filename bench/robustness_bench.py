"""Group perturbation masks and the lambda grid (Thibeau-Sutre et al. 2020), measured in one run.

Default: the demo 3-D CNN ``cnn3d-brain`` on brain-phantom test volumes (1 x 48^3), paper mask
settings (``PAPER_MASK``: 8^3 mask, reference max, norm form) with **8 Adam steps** (not 200: the
cost per step is what is compared, and it does not change with the step count), 1 torch thread.

  (a) one group mask over 32 volumes (``group_mask``; each step sends the 32 volumes through the
      network) vs 32 separate per-volume masks with the same steps, computed (i) batched
      (``perturbation_mask``, 32 masks optimised together, one pass of the 32 volumes per step)
      and (ii) one volume at a time (a loop of 32 ``perturbation_mask`` calls). The group mask
      costs what one batched pass of per-volume masks costs: it has one loss for the whole set;
  (b) a 2 x 2 lambda grid (``lambda_grid`` on 16 volumes: 4 group masks + the similarity tables)
      vs one group mask on the same volumes times the 4 cells: the ratio is the grid's overhead
      (the prob_CNN forward passes of the mask pairs and the metrics).

Each timing is the median of ``--rounds`` rounds. Last line:
``group_vs_separate_loop=<loop / group> grid_overhead=<grid / (one mask x cells)>``.

Measured 2026-11-30 on the 2-core CPU shared with two other jobs (95 s wall): group mask 12.4 s
(1.5 s per step over 32 volumes), 32 per-volume masks batched 14.7 s, one at a time 17.4 s; one
group mask on 16 volumes 7.7 s, the 2 x 2 grid 36.9 s:
``group_vs_separate_loop=1.41 grid_overhead=1.207``.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from nnsens_core.brain_phantom import demo_volumes
from nnsens_core.demos import load_demo_cnn
from nnsens_core.robustness import PAPER_MASK, group_mask, lambda_grid
from nnsens_core.saliency.meaningful_mask import perturbation_mask


def timed(fn, rounds: int) -> float:
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--volumes", type=int, default=32, help="volumes of (a) (default 32)")
    ap.add_argument("--grid-volumes", type=int, default=16, help="volumes of (b) (default 16)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lm = load_demo_cnn("cnn3d-brain")
    net, spec = lm.module.eval(), lm.spec
    data = demo_volumes("test", args.volumes)
    x = spec.normalize(torch.as_tensor(data.images))
    cls = [int(c) for c in data.labels]  # every volume explained for its own class
    cfg = dataclasses.replace(PAPER_MASK, steps=args.steps, batch_size=32)
    print(f"model: cnn3d-brain {tuple(spec.input_shape)}; {len(x)} volumes; {args.steps} steps; "
          f"mask {cfg.resolution}^3; torch threads {torch.get_num_threads()}", flush=True)
    warm = dataclasses.replace(cfg, steps=1)  # first calls pay one-time kernel setup: not timed
    group_mask(net, x[:2], cls[:2], warm, spec=spec, device="cpu")
    perturbation_mask(net, x[:2], cls[:2], warm, "cpu", spec)

    t_group = timed(lambda: group_mask(net, x, cls, cfg, spec=spec, device="cpu"), args.rounds)
    print(f"(a) group mask over {len(x)} volumes: {t_group:.2f} s "
          f"({1000 * t_group / args.steps:.0f} ms/step)", flush=True)
    t_batched = timed(lambda: perturbation_mask(net, x, cls, cfg, "cpu", spec), args.rounds)
    print(f"(a) {len(x)} per-volume masks, batched: {t_batched:.2f} s", flush=True)
    one = dataclasses.replace(cfg, batch_size=1)
    t_loop = timed(lambda: [perturbation_mask(net, x[i:i + 1], cls[i], one, "cpu", spec)
                            for i in range(len(x))], args.rounds)
    print(f"(a) {len(x)} per-volume masks, one at a time: {t_loop:.2f} s", flush=True)
    print(f"(a) separate batched / group = {t_batched / t_group:.2f}; separate loop / group = "
          f"{t_loop / t_group:.2f}", flush=True)

    xg = x[: args.grid_volumes]
    ad = [1] * len(xg)  # the class the study explains (AD) for every volume of the set
    l1s, l2s = (0.001, 0.01), (0.01, 0.1)
    t_one = timed(lambda: group_mask(net, xg, ad, cfg, spec=spec, device="cpu"), args.rounds)
    t_grid = timed(lambda: lambda_grid(net, xg, ad, l1s, l2s, cfg, spec=spec, device="cpu"),
                   args.rounds)
    cells = len(l1s) * len(l2s)
    print(f"(b) one group mask over {len(xg)} volumes: {t_one:.2f} s; {len(l1s)}x{len(l2s)} grid "
          f"(masks + tables): {t_grid:.2f} s = {t_grid / t_one:.2f} masks", flush=True)
    print(f"group_vs_separate_loop={t_loop / t_group:.2f} grid_overhead={t_grid / (t_one * cells):.3f}")


if __name__ == "__main__":
    main()
