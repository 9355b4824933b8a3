"""The paper's follow-up studies: convergence of the indices vs N, retraining on the top-k /
bottom-k features, and the comparison with PCA loadings."""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .. import _validate as v
from .. import stats
from .._batching import Progress, check_memory, sub_progress
from .._results import Result
from ..data import TabularData
from ..device import inference_model, resolve_device
from ..errors import NnsensError
from ..training import TrainConfig, fit
from ..zoo import PaperMLP, module_of
from .estimators import analyze, default_memory_limit, sample
from .problem import OUTPUT, SobolConfig, SobolProblem, rows_per_sample
from .run import _param_dtype, check_width, estimate_bytes, evaluate

# --------------------------------------------------------------------------- convergence

@dataclass
class ConvergenceResult(Result):
    """S1/ST (and CIs) of the model output for each N in ``ns``: arrays (len(ns), D).

    ``config``: the study's Sobol settings (``n`` = the largest N, first order only)."""
    names: tuple[str, ...]
    ns: tuple[int, ...]
    S1: np.ndarray
    S1_conf: np.ndarray
    ST: np.ndarray
    ST_conf: np.ndarray
    config: SobolConfig | None = None
    seconds: float = 0.0

    def to_frame(self):
        import pandas as pd
        rows = []
        for i, n in enumerate(self.ns):
            for d, name in enumerate(self.names):
                rows.append({"N": n, "feature": name, "S1": self.S1[i, d], "S1_conf": self.S1_conf[i, d],
                             "ST": self.ST[i, d], "ST_conf": self.ST_conf[i, d]})
        return pd.DataFrame(rows)

    def _payload(self) -> dict:
        return {"names": list(self.names), "N": list(self.ns), "S1": self.S1,
                "S1_conf": self.S1_conf, "ST": self.ST, "ST_conf": self.ST_conf}


def powers_of_two(lo: int, hi: int) -> tuple[int, ...]:
    v.power_of_two("n_min", lo)
    v.power_of_two("n_max", hi)
    if lo > hi:
        raise NnsensError(f"n_min={lo} is above n_max={hi}; swap them")
    return tuple(2**k for k in range(lo.bit_length() - 1, hi.bit_length()))


def convergence(model, problem: SobolProblem, ns: Sequence[int], cfg: SobolConfig = SobolConfig(),
                device="auto", batch_size: int | None = None,
                progress: Progress | None = None, output_column: int = 0,
                memory_limit: float | None = None) -> ConvergenceResult:
    """S1/ST of the output vs N: one sample at max(ns) (its first n blocks ARE the sample for n),
    evaluated once, then analysed on each prefix.  ``cfg.n``/``cfg.layer`` are ignored."""
    ns = tuple(sorted(set(int(n) for n in ns)))
    if not ns:
        raise NnsensError("ns is empty; give powers of two such as (128, 256, 512)")
    for n in ns:
        v.power_of_two("n", n)
        if n < 4:
            raise NnsensError(f"n={n} is too small for a bootstrap; use n >= 4")
    check_width(model, problem.D)
    t0 = time.perf_counter()
    big = SobolConfig(n=ns[-1], second_order=False, seed=cfg.seed, num_resamples=cfg.num_resamples,
                      conf_level=cfg.conf_level)
    limit = default_memory_limit() if memory_limit is None else memory_limit
    check_memory(estimate_bytes(problem, big, 1), limit, f"the convergence study up to N={ns[-1]}")
    X = sample(problem, ns[-1], False, cfg.seed, sub_progress(progress, "sampling"))
    Y = evaluate(model, X, (OUTPUT,), device, batch_size, sub_progress(progress, "evaluation"))[OUTPUT]
    Y = Y[:, output_column]
    step = rows_per_sample(problem.D, False)
    res = {k: [] for k in ("S1", "S1_conf", "ST", "ST_conf")}
    for i, n in enumerate(ns):
        ind = analyze(problem, Y[:n * step], second_order=False, num_resamples=cfg.num_resamples,
                      conf_level=cfg.conf_level, seed=cfg.seed, device=device)
        for k in res:
            res[k].append(getattr(ind, k)[0])
        if progress is not None:
            progress(i + 1, len(ns), stage="analysis")
    return ConvergenceResult(problem.names, ns, *(np.stack(res[k]) for k in ("S1", "S1_conf", "ST", "ST_conf")),
                             config=big, seconds=time.perf_counter() - t0)


# --------------------------------------------------------------------------- feature reduction

@dataclass(frozen=True)
class FeatureReductionConfig:
    """Retrain on the top-k and bottom-k features (by ST) over ``seeds``; paper training defaults."""
    k: int = 4
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    train: TrainConfig = TrainConfig(epochs=100)

    def __post_init__(self):
        v.positive("k", self.k, integer=True)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise NnsensError(f"seeds={self.seeds!r} must be distinct whole numbers (at least one)")
        if not isinstance(self.train, TrainConfig):
            raise NnsensError("train must be a TrainConfig")


@dataclass
class FeatureReductionResult(Result):
    """Test accuracy per subset (``all``, ``top-k``, ``bottom-k``) and seed."""
    subsets: dict[str, tuple[str, ...]]  # subset -> feature names
    accuracy: dict[str, list[float]]     # subset -> one accuracy per seed
    seeds: tuple[int, ...]
    original_accuracy: float | None
    config: FeatureReductionConfig | None = None
    seconds: float = 0.0

    def to_frame(self):
        import pandas as pd
        rows = [{"subset": s, "features": ", ".join(f), "n_features": len(f),
                 "acc_mean": float(np.mean(self.accuracy[s])),
                 "acc_std": float(np.std(self.accuracy[s], ddof=1)) if len(self.accuracy[s]) > 1 else 0.0,
                 **{f"seed {sd}": a for sd, a in zip(self.seeds, self.accuracy[s])}}
                for s, f in self.subsets.items()]
        return pd.DataFrame(rows).set_index("subset")

    def _payload(self) -> dict:
        return {"subsets": self.subsets, "accuracy": self.accuracy, "seeds": list(self.seeds),
                "original_accuracy": self.original_accuracy}


class _Task:
    """How a tabular model is trained/scored: probability, logit or multi-class output."""

    def __init__(self, module: nn.Module, X: np.ndarray, dev: torch.device):
        with torch.no_grad():
            x = torch.as_tensor(X[: min(len(X), 256)], dtype=_param_dtype(module), device=dev)
            y = module(x).reshape(len(x), -1)
        self.classes = int(y.shape[1])
        self.prob = self.classes == 1 and bool(((y >= 0) & (y <= 1)).all())

    def loss(self):
        if self.classes > 1:
            return nn.CrossEntropyLoss()
        return nn.BCELoss() if self.prob else nn.BCEWithLogitsLoss()

    def targets(self, y: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(y, dtype=torch.long if self.classes > 1 else torch.float32)

    @torch.no_grad()
    def accuracy(self, module, X, y, dev) -> float:
        out = module(torch.as_tensor(X, dtype=_param_dtype(module), device=dev)).reshape(len(X), -1).cpu()
        if self.classes > 1:
            pred = out.argmax(1).numpy()
            return float((pred == np.asarray(y).astype(int)).mean())
        thr = 0.5 if self.prob else 0.0
        return float(((out[:, 0].numpy() >= thr) == (np.asarray(y) >= 0.5)).mean())


def _fresh_model(template: nn.Module, n_inputs: int, seed: int) -> tuple[nn.Module, bool]:
    """A re-initialised copy of the architecture; ``(model, takes_only_kept_columns)``.

    The paper MLP is rebuilt with ``n_inputs`` inputs; any other model keeps its width and is fed
    the dropped columns fixed at their training mean."""
    torch.manual_seed(seed)
    if isinstance(template, PaperMLP):
        bn = isinstance(template.bn1, nn.BatchNorm1d)
        return PaperMLP(n_inputs, template.fc1.out_features, bn), True
    try:
        model = copy.deepcopy(template)
    except Exception as exc:  # noqa: BLE001
        raise NnsensError(f"the model cannot be copied for retraining ({exc}); feature reduction "
                          "needs a rebuildable architecture such as paper-mlp") from None
    if isinstance(model, torch.jit.ScriptModule):
        raise NnsensError("a TorchScript model cannot be re-initialised for retraining; load the "
                          "weights as a state_dict with an architecture (e.g. paper-mlp)")
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return model, False


def feature_reduction(model, train: TabularData, test: TabularData, ranking: Sequence[float],
                      cfg: FeatureReductionConfig = FeatureReductionConfig(), device="auto",
                      progress: Progress | None = None) -> FeatureReductionResult:
    """Retrain the model's architecture (fresh weights, never the shared model) on all features,
    the ``k`` with the highest ``ranking`` (e.g. ST) and the ``k`` lowest; test accuracy per seed."""
    t0 = time.perf_counter()
    dev = resolve_device(device)
    D = train.n_features
    ranking = np.asarray(ranking, dtype=float).reshape(-1)
    if len(ranking) != D:
        raise NnsensError(f"ranking has {len(ranking)} values for {D} features; give one per feature")
    if cfg.k >= D:
        raise NnsensError(f"k={cfg.k} must be < the {D} features (top-k of all features is the full model)")
    if test.n_features != D:
        raise NnsensError(f"train data has {D} features but test data has {test.n_features}")
    check_width(model, D)
    template = module_of(model)
    order = np.argsort(-ranking, kind="stable")
    subsets = {f"all {D}": np.arange(D), f"top-{cfg.k}": np.sort(order[:cfg.k]),
               f"bottom-{cfg.k}": np.sort(order[-cfg.k:])}
    shared = inference_model(model, dev)
    task = _Task(shared, train.X, dev)
    original = task.accuracy(shared, test.X, test.y, dev)
    means = train.X.mean(axis=0)
    acc: dict[str, list[float]] = {s: [] for s in subsets}
    total, done = len(subsets) * len(cfg.seeds), 0
    for seed in cfg.seeds:
        for name, cols in subsets.items():
            net, narrow = _fresh_model(template, len(cols), seed)
            if narrow:
                Xtr, Xte = train.X[:, cols], test.X[:, cols]
            else:
                drop = np.setdiff1d(np.arange(D), cols)
                Xtr, Xte = train.X.copy(), test.X.copy()
                Xtr[:, drop] = means[drop]
                Xte[:, drop] = means[drop]
            tc = TrainConfig(**{**asdict(cfg.train), "seed": seed})
            fit(net, torch.as_tensor(Xtr, dtype=torch.float32), task.targets(train.y), task.loss(),
                tc, dev)
            acc[name].append(task.accuracy(net.eval(), Xte, test.y, dev))
            done += 1
            if progress is not None:
                progress(done, total, stage="retraining")
    names = np.asarray(train.feature_names)
    return FeatureReductionResult({s: tuple(names[c]) for s, c in subsets.items()}, acc,
                                  tuple(cfg.seeds), original, cfg, time.perf_counter() - t0)


# --------------------------------------------------------------------------- PCA comparison

@dataclass(frozen=True)
class PCASettings:
    """Settings of :func:`pca_comparison`."""
    share: float = 0.8
    standardize: bool = True


@dataclass
class PCAComparison(Result):
    """PCA of the data vs the Sobol ranking.

    ``loadings`` (c, D) of the ``c`` leading components reaching ``share`` of the variance
    (sign: largest |loading| positive); ``importance[d] = sum_c evr_c * loading_cd**2 / sum_c evr_c``.
    """
    names: tuple[str, ...]
    explained: np.ndarray      # explained-variance ratio of every component
    loadings: np.ndarray       # (c, D)
    importance: np.ndarray     # (D,)
    sobol: np.ndarray          # (D,) the Sobol measure ranked against
    spearman: float
    config: PCASettings = PCASettings()
    seconds: float = 0.0

    @property
    def n_components(self) -> int:
        return len(self.loadings)

    def to_frame(self):
        import pandas as pd
        df = pd.DataFrame({"sobol": self.sobol, "sobol_rank": _ranks(self.sobol),
                           "pca_importance": self.importance, "pca_rank": _ranks(self.importance)},
                          index=pd.Index(self.names, name="feature"))
        return df.sort_values("sobol_rank", kind="stable")

    def loadings_frame(self):
        import pandas as pd
        return pd.DataFrame(self.loadings, columns=list(self.names),
                            index=[f"PC{i + 1} ({self.explained[i]:.1%})" for i in range(self.n_components)])

    def _payload(self) -> dict:
        return {"names": list(self.names), "explained": self.explained, "loadings": self.loadings,
                "importance": self.importance, "sobol": self.sobol, "spearman": self.spearman}


def _ranks(x: np.ndarray) -> np.ndarray:
    """1 = largest value; tied values share the mean of their ranks (as in the Spearman)."""
    return stats.rank(-np.asarray(x, dtype=float))


def pca_comparison(X: np.ndarray, names: Sequence[str], sobol: Sequence[float], share: float = 0.8,
                   standardize: bool = True) -> PCAComparison:
    """Leading principal components reaching ``share`` of the variance, ranked against ``sobol``."""
    v.in_range("share", share, 0, 1, lo_open=True)
    t0 = time.perf_counter()
    X = torch.as_tensor(np.asarray(X, dtype=np.float64))
    if X.ndim != 2 or X.shape[0] < 2:
        raise NnsensError(f"X has shape {tuple(X.shape)}; PCA needs (rows >= 2, features)")
    sobol = np.asarray(sobol, dtype=float).reshape(-1)
    if len(sobol) != X.shape[1] or len(names) != X.shape[1]:
        raise NnsensError(f"{len(names)} names and {len(sobol)} Sobol values for {X.shape[1]} features")
    Xc = X - X.mean(0)
    if standardize:
        sd = Xc.std(0, correction=1)
        if (sd <= 0).any():
            bad = [names[i] for i in torch.nonzero(sd <= 0).flatten().tolist()]
            raise NnsensError(f"features {bad} are constant; drop them before PCA")
        Xc = Xc / sd
    _, s, Vt = torch.linalg.svd(Xc, full_matrices=False)
    var = s**2
    evr = (var / var.sum()).numpy()
    c = int(np.searchsorted(np.cumsum(evr), share - 1e-12) + 1)
    c = min(c, len(evr))
    L = Vt[:c].numpy().copy()
    for i in range(c):
        if L[i, np.argmax(np.abs(L[i]))] < 0:
            L[i] = -L[i]
    w = evr[:c]
    imp = (w[:, None] * L**2).sum(0) / w.sum()
    # ties get average ranks (the textbook 1 - 6 sum d^2 / (n (n^2 - 1)) is wrong with ties);
    # NaN when either ranking is constant
    rho = 1.0 if len(sobol) < 2 else stats.spearman(sobol, imp)
    return PCAComparison(tuple(names), evr, L, imp, sobol, rho, PCASettings(float(share), bool(standardize)),
                         time.perf_counter() - t0)

