"""Input-derivative histories of the one-tanh-unit network: torch.func (vectorised) vs a per-sample loop.

Both compute, for ``P`` parameter sets (recorded epochs x runs), the 1st, 2nd and 3rd derivatives of
every sample's loss with respect to every input, on the same data:
  * ours: :func:`nnsens_core.landscape.derivative_histories` (nested ``torch.func.jvp`` in ``z``,
    ``vmap`` over parameter sets, the chain rule to every input; plus mean and quantiles);
  * loop: the obvious autograd code, a Python loop over samples with ``torch.autograd.grad``
    (``create_graph=True``) for the gradient and then, per input, the 2nd and 3rd diagonal entries.
The answers are checked equal first. Rounds are interleaved and the median ratio is reported.
Last line: ``landscape_speedup=<loop seconds / ours seconds>``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from nnsens_core import landscape as L


def loop(W, b, X, y):
    """Per-sample, per-input autograd: means over samples of d1, d2, d3 (P, d) each."""
    P, d = W.shape
    out = {k: torch.zeros(P, d, dtype=X.dtype) for k in L.ORDERS}
    for p in range(P):
        for i in range(len(X)):
            x = X[i].clone().requires_grad_(True)
            loss = (torch.tanh(x @ W[p] + b[p]) - y[i]) ** 2
            (g1,) = torch.autograd.grad(loss, x, create_graph=True)
            out[1][p] += g1.detach()
            for j in range(d):
                (g2,) = torch.autograd.grad(g1[j], x, create_graph=True)
                (g3,) = torch.autograd.grad(g2[j], x, retain_graph=True)
                out[2][p, j] += g2[j].detach()
                out[3][p, j] += g3[j]
    return {k: v / len(X) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200, help="samples")
    ap.add_argument("--d", type=int, default=8, help="inputs")
    ap.add_argument("--sets", type=int, default=4, help="parameter sets (epochs x runs)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    X = torch.tensor(rng.normal(size=(args.n, args.d)))
    y = torch.tensor((rng.uniform(size=args.n) > 0.5).astype(float))
    W = torch.tensor(rng.normal(size=(args.sets, args.d)) * 0.5)
    b = torch.tensor(rng.normal(size=args.sets) * 0.1)

    ours_mean, _ = L.derivative_histories(W, b, X, y)
    ref = loop(W, b, X, y)
    for k in L.ORDERS:
        np.testing.assert_allclose(ours_mean[k].numpy(), ref[k].numpy(), rtol=1e-9, atol=1e-12)
    print(f"n={args.n} d={args.d} sets={args.sets}: means of d1/d2/d3 equal (float64)")

    ratios = []
    for r in range(args.rounds):
        t = time.perf_counter()
        loop(W, b, X, y)
        t_loop = time.perf_counter() - t
        t = time.perf_counter()
        reps = 0
        while True:  # repeat ours for at least 0.2 s to time it reliably
            L.derivative_histories(W, b, X, y)
            reps += 1
            if time.perf_counter() - t > 0.2:
                break
        t_ours = (time.perf_counter() - t) / reps
        ratios.append(t_loop / t_ours)
        print(f"round {r}: loop {t_loop:.3f}s  ours {t_ours * 1e3:.2f}ms  ratio {ratios[-1]:.0f}")
    print(f"landscape_speedup={statistics.median(ratios):.1f}")


if __name__ == "__main__":
    main()
