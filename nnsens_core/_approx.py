"""Approximate incremental inference: the settings shared by local sensitivity and occlusion,
the perturbation samples they calibrate on and measure their error on, and the error report.

Projective-field thresholding (after Nakandala et al., SIGMOD 2019): a perturbation's change
spreads box by box through the layers, but far from its centre it is often tiny. With a
threshold ``tau`` > 0, an exact run of a small sample of perturbations finds, after every
sliding-window layer, how far from each perturbation's centre the change still exceeds ``tau``
times that layer's largest change for that perturbation; every layer then computes at most that
box (the rest: the unperturbed activations). ``tau = 0`` is the exact engine.

Every approximate result reports its error against the exact values on another sample of
perturbations: the relative L2 error and the Spearman rank correlation (:func:`error_report`).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from . import stats
from .errors import NnsensError


def check_tau(tau) -> None:
    """``tau`` must be a number in [0, 1)."""
    if (isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau)
            or not 0 <= tau < 1):
        raise NnsensError(f"tau={tau!r} must be a number in [0, 1): 0 = exact, larger = a smaller "
                          "box per layer (faster, less exact); e.g. 0.05")


def check_sample(name: str, value, lo: int = 4) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise NnsensError(f"{name}={value!r} must be a whole number >= {lo} (perturbations run "
                          "exactly to measure the approximation's error)")


def samples(total: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint random samples of ``min(size, total // 2)`` indices of ``range(total)``
    (seeded, sorted): one to calibrate on, one to measure the error on. Random rather than
    evenly spaced, so that they do not line up with a row or a column of the image."""
    size = min(size, total // 2)
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    return perm[:size].sort().values, perm[size:2 * size].sort().values


def error_report(approx: torch.Tensor, exact: torch.Tensor, labels=None, **info) -> dict:
    """The error of ``approx`` against ``exact`` values of the same sampled perturbations,
    ``(S,)`` or ``(S, Q)`` (Q maps, e.g. blocks): ``rel_l2`` = ||approx - exact|| / ||exact||
    and ``spearman`` of the two (worst over the Q maps; per map under ``maps`` when Q > 1),
    ``sample`` = S, plus ``info`` (e.g. ``tau``)."""
    a = approx.detach().double().cpu().reshape(len(approx), -1).numpy()
    e = exact.detach().double().cpu().reshape(len(exact), -1).numpy()
    per = []
    for q in range(a.shape[1]):
        rel = float(np.linalg.norm(a[:, q] - e[:, q]) / max(np.linalg.norm(e[:, q]), 1e-30))
        rho = float(stats.spearman(a[:, q], e[:, q])) if len(a) > 1 else float("nan")
        if math.isnan(rho) and np.array_equal(a[:, q], e[:, q]):
            rho = 1.0        # identical (e.g. constant) values rank identically
        per.append({"rel_l2": rel, "spearman": rho})
    out = {**info, "sample": len(a),
           "rel_l2": max((p["rel_l2"] for p in per), default=0.0),
           "spearman": min((p["spearman"] for p in per if not math.isnan(p["spearman"])),
                           default=float("nan"))}
    if labels is not None and len(per) > 1:
        out["maps"] = dict(zip(labels, per))
    return out


def describe_error(report: dict | None) -> str:
    """One line for captions and the CLI: the measured error of an approximate result."""
    if not report:
        return ""
    text = (f"approximate (measured on {report['sample']} exactly computed perturbations: "
            f"relative L2 error {report['rel_l2']:.2%}, Spearman {report['spearman']:.4f})")
    if report.get("tau_ignored"):  # thresholding asked for, but the model ran without it
        text += f"; tau not applied: {report['tau_ignored']}"
    return text


def combine(reports) -> dict | None:
    """One report from the reports of several parts of one result (batches of images, chunks of
    a distributed run, earlier combined reports): the worst ``rel_l2`` and the lowest
    ``spearman`` (NaN only when every part's is NaN), ``sample`` summed, ``parts`` = how many
    parts were measured (a report without ``parts`` counts as one), and the first part's
    settings (``tau``, ``drill_top``, ...). Associative: combining the combined reports of
    consecutive groups gives the report of combining every part at once. Per-part details
    (``caps``, ``maps``) are dropped. None when no part is approximate."""
    reports = [r for r in reports if r]
    if not reports:
        return None
    skip = ("caps", "maps", "rel_l2", "spearman", "sample", "parts")
    out = {k: v for k, v in reports[0].items() if k not in skip}
    rhos = [float(r["spearman"]) for r in reports
            if r.get("spearman") is not None and not math.isnan(float(r["spearman"]))]
    out.update(sample=sum(int(r["sample"]) for r in reports),
               rel_l2=max(float(r["rel_l2"]) for r in reports),
               spearman=min(rhos) if rhos else float("nan"),
               parts=sum(int(r.get("parts", 1)) for r in reports))
    return out
