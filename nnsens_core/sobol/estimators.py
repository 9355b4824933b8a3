"""SALib-equal estimators on numpy/torch arrays: :func:`sample` (Saltelli matrices) and
:func:`analyze` (S1, ST, S2 with bootstrap confidence intervals). The model never enters here."""
from __future__ import annotations

import os
import statistics
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from .. import _validate as v
from .._batching import DEFAULT_MEMORY_BUDGET, Progress, batch_slices, check_memory
from ..device import resolve_device
from ..errors import NnsensError
from ._salib_adapter import scale_to_bounds, sobol_base
from .problem import _EPS, SobolProblem, rows_per_sample

# --------------------------------------------------------------------------- sampling

def sample(problem: SobolProblem, n: int, second_order: bool = True, seed: int | None = 0,
           progress: Progress | None = None) -> np.ndarray:
    """SALib 1.6's ``sample.sobol.sample(problem, n, calc_second_order=..., seed=seed)``, vectorised.

    Returns ``(n * (2D+2), D)`` (or ``n * (D+2)``) float64 rows: for each base sample A, then
    AB_1..AB_D (column j from B), then (second order) BA_1..BA_D (column j from A), then B.
    The first ``m * step`` rows for ``m < n`` equal ``sample(problem, m, ...)``.
    """
    v.power_of_two("n", n)
    D = problem.D
    # Scaling is elementwise, so scaling the (n, 2, D) base first gives the same floats as SALib's
    # scaling of the whole matrix, in 2/(2D+2) of the work; the layout below only copies.
    base = scale_to_bounds(sobol_base(n, 2 * D, seed).reshape(n, 2, D), problem.bounds)
    A, B = base[:, 0], base[:, 1]
    step = rows_per_sample(D, second_order)
    # Row r of each sample takes column j from B where from_b[r, j]: AB_j's column j, every column
    # of BA_j but j, all of B. One pass (torch.where, parallel) writes the whole matrix.
    eye = np.eye(D, dtype=bool)
    from_b = np.zeros((step, D), dtype=bool)
    from_b[1:D + 1] = eye
    if second_order:
        from_b[D + 1:2 * D + 1] = ~eye
    from_b[step - 1] = True
    tA, tB = torch.from_numpy(A), torch.from_numpy(B)
    out = torch.where(torch.from_numpy(from_b), tB[:, None, :], tA[:, None, :]).numpy()
    out = out.reshape(n * step, D)
    if progress is not None:
        progress(1, 1)
    return out

# --------------------------------------------------------------------------- analysis

@dataclass
class SobolIndices:
    """Indices for M outputs and D inputs (SALib's keys, with a leading output axis).

    ``S2``/``S2_conf`` are (M, D, D) with the upper triangle filled and NaN elsewhere (as SALib),
    or None without second order.  ``constant[m]``: output m never varied (its indices are 0).
    """
    S1: np.ndarray
    S1_conf: np.ndarray
    ST: np.ndarray
    ST_conf: np.ndarray
    S2: np.ndarray | None
    S2_conf: np.ndarray | None
    N: int
    constant: np.ndarray

    def select(self, idx) -> SobolIndices:
        idx = np.atleast_1d(np.asarray(idx))
        return SobolIndices(self.S1[idx], self.S1_conf[idx], self.ST[idx], self.ST_conf[idx],
                            None if self.S2 is None else self.S2[idx],
                            None if self.S2_conf is None else self.S2_conf[idx],
                            self.N, self.constant[idx])


def z_value(conf_level: float) -> float:
    """Two-sided normal quantile, SALib's ``norm.ppf(0.5 + conf_level / 2)``."""
    return statistics.NormalDist().inv_cdf(0.5 + conf_level / 2)


def bootstrap_indices(N: int, num_resamples: int, seed: int | None) -> np.ndarray:
    """Resample indices (N, R) drawn as SALib does for a non-zero seed.

    Drawn as int32 when N fits: NumPy's ``Generator.integers`` takes bounded values below 2**32 from
    the same 32-bit stream for either dtype, so they equal SALib's int64 draws (the SALib tests
    compare the CIs) at half the memory."""
    rng = np.random.default_rng(seed)
    return rng.integers(N, size=(N, num_resamples), dtype=np.int32 if N < 2**31 else np.int64)


def bootstrap_indices_T(N: int, num_resamples: int, seed: int | None) -> np.ndarray:
    """:func:`bootstrap_indices` transposed to (R, N), contiguous: resample b draws rows ``[b]``.

    For N a power of two (every Saltelli design from :func:`sample`) the draws are computed from the
    raw generator output: ``Generator.integers(N)`` on 32-bit values is Lemire's method, which for
    ``N = 2**k`` never rejects and returns the top k bits of each 32-bit word, the words taken low
    half first from each 64-bit output. That is the same stream at a third of the cost
    (``tests/test_sobol.py`` checks the equality); the transpose is torch's blocked copy."""
    R = num_resamples
    if N & (N - 1) or N > 2**31 or (N * R) % 2:
        return np.ascontiguousarray(bootstrap_indices(N, R, seed).T)
    words = np.random.default_rng(seed).bit_generator.random_raw(N * R // 2).view(np.uint32)
    np.right_shift(words, 32 - N.bit_length() + 1, out=words)
    return torch.from_numpy(words.view(np.int32)).reshape(N, R).t().contiguous().numpy()


def bootstrap_counts(rT: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[j, i]`` = how often resample j drew row i, for the resamples ``rT`` (n, N) (rows of the
    transposed :func:`bootstrap_indices`); resample j's mean of per-row values ``F`` is
    ``out[j] @ F / N``. One ``bincount`` per resample: each scatter stays in an N-wide stretch that
    fits the cache. Returns ``out``."""
    N = rT.shape[1]
    for j, row in enumerate(rT):
        out[j] = np.bincount(row, minlength=N)
    return out


def analysis_bytes(N: int, D: int, M: int, second_order: bool, num_resamples: int) -> int:
    """Memory :func:`analyze` needs beyond its chunked work space (counts, Y, results)."""
    step = rows_per_sample(D, second_order)
    K = _n_terms(D, second_order)
    # int32 resample indices twice (drawn, transposed), Y twice, G and the indices per resample
    return int(8 * (num_resamples * N + N * step * M * 2 + (num_resamples + 1) * K * M * 2)
               + DEFAULT_MEMORY_BUDGET // 4)


def _n_terms(D: int, second_order: bool) -> int:
    return 4 + 2 * D + ((D * (D - 1)) // 2 + 1 if second_order else 0)


def default_memory_limit() -> float:
    """Half the physical memory (capped at 16 GiB): what one run may take."""
    try:
        phys = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        phys = 8 * 2**30
    return float(min(16 * 2**30, phys / 2))


def _analysis_device(device) -> torch.device:
    dev = resolve_device(device)
    return dev if dev.type == "cuda" else torch.device("cpu")  # float64: not on mps


def analyze(problem: SobolProblem | int, Y, *, second_order: bool = True, num_resamples: int = 100,
            conf_level: float = 0.95, seed: int | None = None, device="cpu",
            progress: Progress | None = None, chunk_bytes: int = 64 * 2**20,
            memory_limit: float | None = None) -> SobolIndices:
    """SALib 1.6 ``analyze.sobol.analyze`` for every column of ``Y`` (n_rows,) or (n_rows, M).

    Same estimators and output standardisation as SALib; bootstrap indices are drawn like SALib's
    with ``seed`` (``None``: fresh entropy), so for the same non-zero seed the CIs equal SALib's.
    ``seed=0`` is reproducible here (``default_rng(0)``), whereas SALib treats 0 like None and draws
    from NumPy's global state: point estimates still agree exactly, CIs only statistically.
    """
    D = problem.D if isinstance(problem, SobolProblem) else int(problem)
    v.positive("num_resamples", num_resamples, integer=True)
    if num_resamples < 2:
        raise NnsensError(f"num_resamples={num_resamples} must be >= 2 for a bootstrap CI")
    v.in_range("conf_level", conf_level, 0, 1, lo_open=True, hi_open=True)
    dev = _analysis_device(device)
    Yt = torch.as_tensor(np.asarray(Y) if not isinstance(Y, torch.Tensor) else Y)
    if Yt.ndim == 1:
        Yt = Yt[:, None]
    if Yt.ndim != 2:
        raise NnsensError(f"Y has shape {tuple(Yt.shape)}; give (rows,) or (rows, outputs)")
    n_rows, M = Yt.shape
    step = rows_per_sample(D, second_order)
    if n_rows == 0 or n_rows % step:
        raise NnsensError(f"Y has {n_rows} rows, not a multiple of {step} (= {'2D+2' if second_order else 'D+2'}"
                          f" for D={D}); confirm second_order matches the option used in sample()")
    N = n_rows // step
    if N < 2:
        raise NnsensError(f"only N={N} base sample; use N >= 2")
    if memory_limit is not None:
        check_memory(analysis_bytes(N, D, M, second_order, num_resamples), memory_limit,
                     "the Sobol analysis")
    Yt = Yt.to(device=dev, dtype=torch.float64)
    if not torch.isfinite(Yt).all():
        raise NnsensError("Y holds NaN or infinite values; the model output is not finite on the samples")
    R = num_resamples
    # The resample indices depend on (N, R, seed) only: a worker thread draws them (and transposes
    # them to (R, N), resample b's rows contiguous) while the outputs are standardised and the
    # per-row terms built; NumPy draws and copies without holding the GIL.
    pool = ThreadPoolExecutor(1, thread_name_prefix="nnsens-bootstrap")
    draws = pool.submit(bootstrap_indices_T, N, R, seed)
    pool.shutdown(wait=False)
    # SALib: Y = (Y - Y.mean()) / Y.std()  (population std), per output here.
    mean = Yt.mean(0)
    std = Yt.std(0, correction=0)
    constant = std <= 0
    Yt = (Yt - mean) / torch.where(constant, torch.ones_like(std), std)
    Yr = Yt.reshape(N, step, M)
    A, B = Yr[:, 0], Yr[:, step - 1]
    AB = Yr[:, 1:D + 1]
    BA = Yr[:, D + 1:2 * D + 1] if second_order else None

    pairs = torch.triu_indices(D, D, 1, device=dev) if second_order else None
    K = _n_terms(D, second_order)

    def terms(sl: slice) -> torch.Tensor:  # (n, K * M): the per-row terms whose means G holds
        a, b, ab = A[sl], B[sl], AB[sl]  # (n, M), (n, M), (n, D, M)
        F = torch.empty(a.shape[0], K, M, dtype=torch.float64, device=dev)
        F[:, 0], F[:, 1] = a, b
        torch.mul(a, a, out=F[:, 2])
        torch.mul(b, b, out=F[:, 3])
        diff = F[:, 4 + D:4 + 2 * D]
        torch.sub(ab, a[:, None], out=diff)  # ab_j - a
        torch.mul(diff, b[:, None], out=F[:, 4:4 + D])  # b (ab_j - a)
        diff.square_()  # (a - ab_j)^2
        if second_order:
            ba, o = BA[sl], 4 + 2 * D
            for j in range(D - 1):  # pairs (j, k > j) in triu_indices order
                torch.mul(ba[:, j:j + 1], ab[:, j + 1:], out=F[:, o:o + D - 1 - j])
                o += D - 1 - j
            torch.mul(a, b, out=F[:, o])
        return F.reshape(-1, K * M)

    # G[0, k, m]: mean of per-row term k of output m over the sample (the point estimate);
    # G[1 + b, k, m]: the same mean over resample b = (its counts of each row) @ terms / N.
    # Resamples go in blocks of a few MiB of counts (a reused float64 buffer, no page faults);
    # the terms are built once when they fit ``chunk_bytes``, else per block of rows.
    G = torch.zeros(R + 1, K, M, dtype=torch.float64, device=dev)
    rows_per_chunk = max(1, int(chunk_bytes // (8 * max(1, K * M) * 2)))
    slices = list(batch_slices(N, rows_per_chunk))
    F_all = terms(slices[0]) if len(slices) == 1 else None
    if F_all is not None:
        G[0] = F_all.sum(0).reshape(K, M)
    block = max(1, min(R, (8 * 2**20) // (8 * N)))
    rT = draws.result()  # (R, N): resample b draws rows rT[b]
    cnp = np.empty((block, N), dtype=np.float64)
    cbuf = torch.from_numpy(cnp).to(dev)  # the same memory on the CPU
    used = np.zeros(N, dtype=bool)  # rows some resample drew (SALib's ptp runs over those)
    all_used = False
    blocks = list(range(0, R, block))
    for i, b0 in enumerate(blocks):
        b1 = min(R, b0 + block)
        bootstrap_counts(rT[b0:b1], cnp[:b1 - b0])
        if not all_used:  # after the first block of ~16 resamples, almost always all rows
            used |= cnp[:b1 - b0].any(0)
            all_used = bool(used.all())
        c = cbuf[:b1 - b0]
        if c.device.type != "cpu":
            c.copy_(torch.from_numpy(cnp[:b1 - b0]))
        for sl in slices:
            F = F_all if F_all is not None else terms(sl)
            if F_all is None and i == 0:
                G[0] += F.sum(0).reshape(K, M)
            G[1 + b0:1 + b1] += (c[:, sl] @ F).reshape(b1 - b0, K, M)
        if progress is not None:
            progress(i + 1, len(blocks))
    del rT, cbuf, cnp
    used = torch.from_numpy(used).to(dev)
    G /= N

    mA, mB, mA2, mB2 = G[:, 0], G[:, 1], G[:, 2], G[:, 3]  # (R+1, M)
    var = (mA2 + mB2) / 2 - ((mA + mB) / 2) ** 2  # np.var(np.r_[A, B]) per resample
    ok = var > _EPS
    safe = torch.where(ok, var, torch.ones_like(var))[:, None, :]
    zero = torch.zeros((), dtype=torch.float64, device=dev)
    S1 = torch.where(ok[:, None, :], G[:, 4:4 + D] / safe, zero)  # (R+1, D, M)
    ST = torch.where(ok[:, None, :], 0.5 * G[:, 4 + D:4 + 2 * D] / safe, zero)
    # SALib returns zeros when np.ptp(np.r_[A, B]) <= eps (here over the rows the resamples drew).
    ab_all = torch.cat([A, B], 0)
    ptp_point = ab_all.amax(0) - ab_all.amin(0)
    if bool(used.all()):  # the rule for N >= ~5: all rows are drawn
        ptp_used = ptp_point
    else:
        ab_used = torch.cat([A[used], B[used]], 0)
        ptp_used = ab_used.amax(0) - ab_used.amin(0)
    flat = torch.stack([ptp_point <= _EPS] + [ptp_used <= _EPS] * R)  # (R+1, M)
    S1 = torch.where(flat[:, None, :], zero, S1)
    ST = torch.where(flat[:, None, :], zero, ST)
    Z = z_value(conf_level)

    def conf(x):  # (R+1, ..., M) -> Z * std over the R resamples
        return Z * x[1:].std(0, correction=1)

    out = {"S1": S1[0], "S1_conf": conf(S1), "ST": ST[0], "ST_conf": conf(ST)}
    out["S1_conf"] = torch.where((ptp_used <= _EPS)[None, :], zero, out["S1_conf"])
    out["ST_conf"] = torch.where((ptp_used <= _EPS)[None, :], zero, out["ST_conf"])
    S2 = S2c = None
    if second_order:
        P = pairs.shape[1]
        o = 4 + 2 * D
        Vjk = torch.where(ok[:, None, :], (G[:, o:o + P] - G[:, o + P:o + P + 1]) / safe, zero)
        S2p = Vjk - S1[:, pairs[0]] - S1[:, pairs[1]]
        S2p = torch.where(flat[:, None, :], zero, S2p)  # (R+1, P, M)
        S2 = np.full((M, D, D), np.nan)
        S2c = np.full((M, D, D), np.nan)
        j, k = pairs.cpu().numpy()
        S2[:, j, k] = S2p[0].T.cpu().numpy()
        S2c[:, j, k] = conf(S2p).T.cpu().numpy()
    res = {key: val.T.cpu().numpy() for key, val in out.items()}  # (M, D)
    return SobolIndices(res["S1"], res["S1_conf"], res["ST"], res["ST_conf"], S2, S2c, N,
                        constant.cpu().numpy())

