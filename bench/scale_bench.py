"""The saliency comparison on Ray with 1 and 2 workers vs in-process, measured in one run.

Default: the demo VGG-16 (``vgg16-phantom``, 3x64x64) on the 90 phantom test images, every
registered method with the registry's default settings (the Grad-CAM family, ScoreCAM, AM,
occlusion, local sensitivity, the perturbation mask, the gradient methods), 1 torch thread per
process. ``--quick``: 16 images.

  * in-process: one ``evaluate_dataset`` call (batches of ``--chunk`` images);
  * Ray, 1 and 2 workers: ``evaluate_distributed`` on a fresh local Ray with ``num_cpus`` = 1 / 2,
    one task per chunk of ``--chunk`` images; the model and the images go to the object store once.
    Workers are started (and import torch / nnsens) before the clock starts; that start-up is
    printed separately.

Also printed: the per-task overhead (200 no-op tasks that receive the same shared model + data by
reference, per task), the bytes put in the object store once and the bytes sent per task, and the
largest difference between the Ray and in-process maps. Last line:
``ray_scaling_2w=<t_1worker / t_2workers>``.

Also printed: the time of the chance levels, which need all the merged maps (as the single call
computes them) and so run after the chunks, on Ray as one unit per method.

Measured 2026-12-01 on the quiet 2-core CPU, full 90 images (45 tasks): in-process 261.4 s, Ray
1 worker 292.0 s, 2 workers 164.7 s, maps identical, 8.9 ms per task: ``ray_scaling_2w=1.77``.
Before the chance levels got 9x cheaper the same run gave 412.2 / 433.7 / 298.6 s, 1.45: the
serial part at the driver was ~3 minutes. See docs/scale.md.
"""
from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nnsens_core import demos
from nnsens_core.executor import RayExecutor
from nnsens_core.phantom import demo_images
from nnsens_core.saliency import registry
from nnsens_core.saliency.compare import chance_levels, evaluate_dataset
from nnsens_core.studies_dist import CompareChunk, _Images, evaluate_distributed


def _noop(unit, shared):
    return unit


def _warm(unit):
    """Start a worker and import what a compare unit imports."""
    import pytorch_grad_cam  # noqa: F401

    import nnsens_core.saliency.compare  # noqa: F401
    time.sleep(2.0)  # keep this worker busy so the next warm-up lands on another one
    return os.getpid()


def ray_run(workers: int, lm, data, methods, chunk: int, overhead_tasks: int):
    import ray
    t0 = time.perf_counter()
    ex = RayExecutor(num_cpus=workers)
    pids = ex.map(_warm, range(workers), shared=None)
    t_start = time.perf_counter() - t0
    t0 = time.perf_counter()
    ev = evaluate_distributed(lm.module, lm.spec, data, methods, None, batch_size=chunk,
                              device="cpu", chunk_size=chunk, executor=ex)
    t = time.perf_counter() - t0
    over = None
    if overhead_tasks:
        shared = {"model": lm.module, "data": _Images(data.images, data.labels, data.masks,
                                                        tuple(data.class_names), data.name)}
        t0 = time.perf_counter()
        ex.map(_noop, range(overhead_tasks), shared=shared)
        over = (time.perf_counter() - t0) / overhead_tasks
    ex.close()
    assert not ray.is_initialized()
    return ev, t, t_start, len(set(pids)), over


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=90, help="phantom test images (default 90)")
    ap.add_argument("--quick", action="store_true", help="16 images")
    ap.add_argument("--chunk", type=int, default=2, help="images per task (default 2)")
    ap.add_argument("--methods", default="all", help="comma list or 'all' (default)")
    ap.add_argument("--overhead-tasks", type=int, default=200)
    args = ap.parse_args()
    n = 16 if args.quick else args.n
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    lm = demos.load_demo_cnn("vgg16-phantom")
    data = demo_images("test", n=n)
    methods = registry.parse_methods(args.methods)
    n_units = -(-n // args.chunk)
    model_bytes = len(pickle.dumps(lm.module))
    data_bytes = data.images.nbytes + data.labels.nbytes + data.masks.nbytes
    task_bytes = len(pickle.dumps(CompareChunk(0, np.arange(args.chunk))))
    print(f"{n} images x {len(methods)} methods ({','.join(methods)}); {n_units} tasks of "
          f"{args.chunk} images; object store once: model {model_bytes / 1e6:.1f} MB + images/"
          f"masks {data_bytes / 1e6:.1f} MB; per task: {task_bytes} B of arguments + a result of "
          f"~{(len(methods) * 64 * 64 * 4 * args.chunk) / 1e3:.0f} kB of maps", flush=True)
    # warm this process (grad-cam import, first-call costs) on one image, then time
    evaluate_dataset(lm.module, lm.spec, data, methods, None, indices=[0], batch_size=1,
                     device="cpu")
    t0 = time.perf_counter()
    ref = evaluate_dataset(lm.module, lm.spec, data, methods, None, batch_size=args.chunk,
                           device="cpu")
    t_in = time.perf_counter() - t0
    print(f"in-process: {t_in:.1f} s ({t_in / n:.2f} s per image)", flush=True)
    t0 = time.perf_counter()  # the part that waits for every chunk: computed from all the maps
    chance_levels(ref.maps, np.asarray(data.masks[:n], dtype=bool), None, 0.0)
    t_chance = time.perf_counter() - t0
    print(f"chance levels (from all the maps, after the chunks; part of every run): {t_chance:.1f} s "
          "in one process (on Ray: one unit per method)", flush=True)
    res = {}
    for w in (1, 2):
        ev, t, t_start, seen, over = ray_run(w, lm, data, methods, args.chunk,
                                             args.overhead_tasks if w == 2 else 0)
        diff = max(float((ev.maps[m] - ref.maps[m]).abs().max()) for m in methods)
        res[w] = t
        print(f"ray {w} worker(s): {t:.1f} s (start-up {t_start:.1f} s, {seen} worker "
              f"process(es) warmed); max |ray - in-process| over the maps = {diff:.2g}", flush=True)
        if over is not None:
            print(f"per-task overhead: {1e3 * over:.1f} ms (no-op task with the shared model + "
                  f"data by reference, 2 workers); (ray 1 worker - in-process) / tasks = "
                  f"{1e3 * (res[1] - t_in) / n_units:.0f} ms (on a shared machine this is mostly "
                  "noise)",
                  flush=True)
    print(f"ray_scaling_2w={res[1] / res[2]:.2f}")


if __name__ == "__main__":
    main()
