"""SALib 1.6 ``analyze.sobol.analyze`` vs ``nnsens_core.sobol.analyze`` on the same Y.

Paper setting: the paper MLP trained on Pima rows 0:500 (the shipped demo data), Sobol bounds = min/max of rows 0:700, N = 2^16, D = 8, second order, 100
bootstrap resamples, the same seed for both (so the CIs must agree too).

Also, before the last line: ``sobol_sample_speedup=`` (SALib's ``sample.sobol.sample`` seconds / our
vectorised :func:`nnsens_core.sobol.sample` seconds, same problem and seed, identical matrices) and
``sobol_pipeline_overhead=`` ((sample + evaluate + analyze) / evaluate of our pipeline; goal <= 2).
Last line: ``sobol_speedup=<SALib analyze seconds / our analyze seconds>``.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from nnsens_core import sobol as S
from nnsens_core.data import demo_tabular
from nnsens_core.demos import train_paper_mlp
from nnsens_core.training import TrainConfig

N, RESAMPLES, SEED, REPEATS, SAMPLE_REPEATS = 2**16, 100, 1, 3, 7


def main() -> None:
    data = demo_tabular()
    torch.manual_seed(SEED)  # the MLP's initial weights (train_paper_mlp seeds only the training)
    model, info = train_paper_mlp(data, "0:500", cfg=TrainConfig(epochs=100), device="cpu")
    print(f"data: {data.name}, D={data.n_features}, paper MLP test acc {info.get('test_acc', float('nan')):.3f}")
    problem = S.SobolProblem.from_data(data.rows("0:700"))
    S.sample(problem, 2, True, SEED)  # imports scipy.stats.qmc outside the timings

    from SALib.sample import sobol as salib_sample
    t0 = time.perf_counter()
    X_salib = salib_sample.sample(problem.to_salib(), N, calc_second_order=True, seed=SEED)
    t_sample_salib = time.perf_counter() - t0
    sample_times = []
    for _ in range(SAMPLE_REPEATS):  # a fast step on a shared CPU: the median of more runs
        t0 = time.perf_counter()
        X = S.sample(problem, N, True, SEED)
        sample_times.append(time.perf_counter() - t0)
    t_sample = float(np.median(sample_times))
    if not np.array_equal(X, X_salib):
        raise SystemExit("samples differ from SALib")
    print(f"SALib sample: {t_sample_salib:.3f}s  nnsens sample: {t_sample:.4f}s (median of {SAMPLE_REPEATS}: "
          f"{', '.join(f'{t:.3f}' for t in sample_times)}; "
          f"identical {X.shape} matrices)")

    eval_times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        Y = S.evaluate(model, X, (S.OUTPUT,), "cpu")[S.OUTPUT][:, 0]
        eval_times.append(time.perf_counter() - t0)
    t_eval = float(np.median(eval_times))
    print(f"rows={len(X):,}  evaluate MLP: {t_eval:.3f}s (median of {REPEATS})  torch threads={torch.get_num_threads()}")

    from SALib.analyze import sobol as salib_sobol
    t0 = time.perf_counter()
    ref = salib_sobol.analyze(problem.to_salib(), Y, calc_second_order=True,
                              num_resamples=RESAMPLES, seed=SEED)
    t_salib = time.perf_counter() - t0
    print(f"SALib analyze: {t_salib:.3f}s")

    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        ours = S.analyze(problem, Y, second_order=True, num_resamples=RESAMPLES, seed=SEED, device="cpu")
        times.append(time.perf_counter() - t0)
    t_ours = float(np.median(times))  # the median, not the best: the CPU is shared
    print(f"nnsens analyze: {t_ours:.3f}s (median of {REPEATS}: {', '.join(f'{t:.3f}' for t in times)})")

    worst_point = max(float(np.abs(ref[k] - getattr(ours, k)[0]).max()) for k in ("S1", "ST"))
    worst_point = max(worst_point, float(np.nanmax(np.abs(ref["S2"] - ours.S2[0]))))
    worst_ci = max(float(np.nanmax(np.abs(ref[k] - getattr(ours, k)[0]) / np.abs(ref[k])))
                   for k in ("S1_conf", "ST_conf"))
    print(f"max |point estimate difference| = {worst_point:.2e}; max relative CI difference = {worst_ci:.2e}")
    for name, s1, st in zip(problem.names, ours.S1[0], ours.ST[0]):
        print(f"  {name:26s} S1={s1:+.4f}  ST={st:.4f}")
    if worst_point > 1e-9 or worst_ci > 0.1:
        raise SystemExit("results differ from SALib")
    total = t_sample + t_eval + t_ours
    print(f"pipeline: sample {t_sample:.3f}s + evaluate {t_eval:.3f}s + analyze {t_ours:.3f}s = {total:.3f}s "
          f"(analyze {t_ours / total:.0%} of it)")
    print(f"sobol_sample_speedup={t_sample_salib / t_sample:.1f}")
    print(f"sobol_pipeline_overhead={total / t_eval:.2f}")
    print(f"sobol_speedup={t_salib / t_ours:.1f}")


if __name__ == "__main__":
    main()
