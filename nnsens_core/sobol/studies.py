"""The paper's follow-up studies: convergence of the indices vs N, retraining on the top-k /
bottom-k features, and the comparison with PCA loadings."""
from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

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
from ..executor import map_units
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


def analyze_prefix(n: int, problem: SobolProblem, Y: np.ndarray, cfg: SobolConfig,
                   device="cpu") -> tuple[np.ndarray, ...]:
    """S1, S1_conf, ST, ST_conf of the first ``n`` Saltelli blocks of ``Y`` (one unit of a
    convergence study: a plain function, any executor can run it)."""
    step = rows_per_sample(problem.D, False)
    ind = analyze(problem, Y[:n * step], second_order=False, num_resamples=cfg.num_resamples,
                  conf_level=cfg.conf_level, seed=cfg.seed, device=device)
    return tuple(getattr(ind, k)[0] for k in ("S1", "S1_conf", "ST", "ST_conf"))


def convergence(model, problem: SobolProblem, ns: Sequence[int], cfg: SobolConfig = SobolConfig(),
                device="auto", batch_size: int | None = None,
                progress: Progress | None = None, output_column: int = 0,
                memory_limit: float | None = None,
                map_fn: Callable[[Callable, Sequence[int]], Iterable] | None = None
                ) -> ConvergenceResult:
    """S1/ST of the output vs N: one sample at max(ns) (its first n blocks ARE the sample for n),
    evaluated once, then analysed on each prefix.  ``cfg.n``/``cfg.layer`` are ignored.
    ``map_fn(fn, ns)`` runs the analyses (one unit per N, :func:`analyze_prefix`) elsewhere, e.g.
    on an :mod:`~nnsens_core.executor` (default: here, in order)."""
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
    work = functools.partial(analyze_prefix, problem=problem, Y=Y, cfg=cfg, device=device)
    res = {k: [] for k in ("S1", "S1_conf", "ST", "ST_conf")}
    got = map_units(work, list(ns), map_fn, progress, "analysis")
    for parts in got:
        for k, a in zip(res, parts):
            res[k].append(a)
    return ConvergenceResult(problem.names, ns, *(np.stack(res[k]) for k in ("S1", "S1_conf", "ST", "ST_conf")),
                             config=big, seconds=time.perf_counter() - t0)


# --------------------------------------------------------------------------- feature reduction

@dataclass(frozen=True)
class FeatureReductionConfig:
    """Retrain on the top-k and bottom-k features (by ST) over ``seeds``; paper training defaults."""
    k: int = 4
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    train: TrainConfig = TrainConfig(epochs=100)
    full_batch: bool = False  # one step per epoch on all training rows (train.batch_size ignored)

    def __post_init__(self):
        v.positive("k", self.k, integer=True)
        if not isinstance(self.full_batch, bool):
            raise NnsensError(f"full_batch={self.full_batch!r} must be True or False")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise NnsensError(f"seeds={self.seeds!r} must be distinct whole numbers (at least one)")
        if not isinstance(self.train, TrainConfig):
            raise NnsensError("train must be a TrainConfig")


@dataclass
class FeatureReductionResult(Result):
    """Test (and train) accuracy per subset (``all``, ``top-k``, ``bottom-k``) and seed, and the
    per-epoch training loss of every retrained model (``losses[subset][seed_index]``)."""
    subsets: dict[str, tuple[str, ...]]  # subset -> feature names
    accuracy: dict[str, list[float]]     # subset -> one test accuracy per seed
    seeds: tuple[int, ...]
    original_accuracy: float | None
    config: FeatureReductionConfig | None = None
    seconds: float = 0.0
    train_accuracy: dict[str, list[float]] = field(default_factory=dict)
    losses: dict[str, list[list[float]]] = field(default_factory=dict)
    original_train_accuracy: float | None = None

    def to_frame(self):
        import pandas as pd
        rows = [{"subset": s, "features": ", ".join(f), "n_features": len(f),
                 "acc_mean": float(np.mean(self.accuracy[s])),
                 "acc_std": float(np.std(self.accuracy[s], ddof=1)) if len(self.accuracy[s]) > 1 else 0.0,
                 **({"train_acc_mean": float(np.mean(self.train_accuracy[s])),
                     "train_acc_std": float(np.std(self.train_accuracy[s], ddof=1))
                     if len(self.train_accuracy[s]) > 1 else 0.0}
                    if self.train_accuracy.get(s) else {}),
                 **{f"seed {sd}": a for sd, a in zip(self.seeds, self.accuracy[s])}}
                for s, f in self.subsets.items()]
        return pd.DataFrame(rows).set_index("subset")

    def _payload(self) -> dict:
        c = self.config
        training = None if c is None else {**asdict(c.train), "full_batch": c.full_batch,
                                           "k": c.k}
        return {"subsets": self.subsets, "accuracy": self.accuracy, "seeds": list(self.seeds),
                "original_accuracy": self.original_accuracy,
                "original_train_accuracy": self.original_train_accuracy,
                "train_accuracy": self.train_accuracy, "losses": self.losses,
                "training": training}


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
    if task.classes == 1 and not bool(np.isin(np.unique(train.y), (0.0, 1.0)).all()):
        vals = np.unique(train.y)
        raise NnsensError(f"the target '{train.target_name}' has {len(vals)} distinct values (e.g. "
                          f"{', '.join(f'{x:g}' for x in vals[:4])}), not 0/1; a one-output model "
                          "is trained as a binary classifier (BCE loss). Pick a 0/1 target column")
    original = task.accuracy(shared, test.X, test.y, dev)
    original_train = task.accuracy(shared, train.X, train.y, dev)
    means = train.X.mean(axis=0)
    acc: dict[str, list[float]] = {s: [] for s in subsets}
    tr_acc: dict[str, list[float]] = {s: [] for s in subsets}
    losses: dict[str, list[list[float]]] = {s: [] for s in subsets}
    epochs = cfg.train.epochs
    total, done = len(subsets) * len(cfg.seeds) * epochs, 0
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
            bs = len(Xtr) if cfg.full_batch else cfg.train.batch_size
            tc = TrainConfig(**{**asdict(cfg.train), "seed": seed, "batch_size": bs})

            def per_epoch(e, _t, base=done):
                if progress is not None:
                    progress(base + e, total, stage="retraining")
            try:
                hist = fit(net, torch.as_tensor(Xtr, dtype=torch.float32), task.targets(train.y),
                           task.loss(), tc, dev, progress=per_epoch)
            except RuntimeError as exc:
                raise NnsensError(f"retraining on {name} ({', '.join(train.feature_names[i] for i in cols)}) "
                                  f"failed: {str(exc).strip().splitlines()[0][:200]}; check that "
                                  "the target column is the one the model predicts") from None
            done += epochs
            losses[name].append([float(x) for x in hist])
            if not np.all(np.isfinite(hist)):
                raise NnsensError(f"retraining on {name} diverged (loss {hist[-1]}); lower the "
                                  "learning rate")
            acc[name].append(task.accuracy(net.eval(), Xte, test.y, dev))
            tr_acc[name].append(task.accuracy(net, Xtr, train.y, dev))
    names = np.asarray(train.feature_names)
    return FeatureReductionResult({s: tuple(names[c]) for s, c in subsets.items()}, acc,
                                  tuple(cfg.seeds), original, cfg, time.perf_counter() - t0,
                                  tr_acc, losses, original_train)


# --------------------------------------------------------------------------- PCA comparison

PCA_IMPORTANCE = {
    "variance": "sum_c evr_c * loading_cd^2 / sum_c evr_c (variance-weighted squared loadings)",
    "abs_loading": "sum_c |loading_cd| / sum_d sum_c |loading_cd| (the authors' normalised "
                   "sum of absolute loadings)",
}


@dataclass(frozen=True)
class PCASettings:
    """Settings of :func:`pca_comparison`: ``n_components`` (a fixed number) wins over ``share``
    (the leading components reaching that explained-variance share); ``importance`` is a key of
    :data:`PCA_IMPORTANCE`; ``rows`` / ``class_value`` record which rows were used."""
    share: float = 0.8
    standardize: bool = True
    n_components: int | None = None
    importance: str = "variance"
    rows: str | None = None
    class_value: float | None = None

    def __post_init__(self):
        v.in_range("share", self.share, 0, 1, lo_open=True)
        if self.n_components is not None:
            v.positive("n_components", self.n_components, integer=True)
        v.one_of("importance", self.importance, tuple(PCA_IMPORTANCE))


@dataclass
class PCAComparison(Result):
    """PCA of the data vs the Sobol ranking.

    ``loadings`` (c, D) of the ``c`` leading components (sign: largest |loading| positive);
    ``importance`` per :data:`PCA_IMPORTANCE` ``[config.importance]``, summing to 1.
    """
    names: tuple[str, ...]
    explained: np.ndarray      # explained-variance ratio of every component
    loadings: np.ndarray       # (c, D)
    importance: np.ndarray     # (D,)
    sobol: np.ndarray          # (D,) the Sobol measure ranked against
    spearman: float
    config: PCASettings = PCASettings()
    seconds: float = 0.0
    n_rows: int = 0

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
                "importance": self.importance, "sobol": self.sobol, "spearman": self.spearman,
                "n_rows": self.n_rows, "formula": PCA_IMPORTANCE[self.config.importance]}


def _ranks(x: np.ndarray) -> np.ndarray:
    """1 = largest value; tied values share the mean of their ranks (as in the Spearman)."""
    return stats.rank(-np.asarray(x, dtype=float))


def pca_rows(data: TabularData, rows: str | None = None,
             class_value: float | None = None) -> TabularData:
    """The rows PCA runs on: a row range (independent of the Sobol bounds), then optionally only
    the rows whose target equals ``class_value`` (the authors: Outcome = 1)."""
    sub = data.rows(rows)
    if class_value is None:
        return sub
    keep = np.asarray(sub.y, float) == float(class_value)
    if keep.sum() < 2:
        have = ", ".join(f"{c:g}" for c in np.unique(sub.y)[:10])
        raise NnsensError(f"{int(keep.sum())} row(s) of {rows or 'all rows'} have "
                          f"{data.target_name} = {class_value:g}; PCA needs at least 2 (the "
                          f"target takes the values {have})")
    return TabularData(sub.X[keep], sub.y[keep], sub.feature_names, sub.target_name, sub.name)


def pca_comparison(X: np.ndarray, names: Sequence[str], sobol: Sequence[float], share: float = 0.8,
                   standardize: bool = True, n_components: int | None = None,
                   importance: str = "variance", rows: str | None = None,
                   class_value: float | None = None) -> PCAComparison:
    """Leading principal components (``n_components``, else those reaching ``share`` of the
    variance), ranked against ``sobol``; ``importance`` picks the formula
    (:data:`PCA_IMPORTANCE`); ``rows`` / ``class_value`` are only recorded (see :func:`pca_rows`)."""
    cfg = PCASettings(float(share), bool(standardize), n_components, importance, rows,
                      None if class_value is None else float(class_value))
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
            raise NnsensError(f"features {bad} are constant in the selected rows; drop them, "
                              "select other rows or turn standardisation off before PCA")
        Xc = Xc / sd
    _, s, Vt = torch.linalg.svd(Xc, full_matrices=False)
    var = s**2
    evr = (var / var.sum()).numpy()
    if n_components is not None:
        if n_components > len(evr):
            raise NnsensError(f"n_components={n_components} is more than the {len(evr)} components "
                              f"of {X.shape[0]} rows x {X.shape[1]} features; use at most {len(evr)}")
        c = int(n_components)
    else:
        c = min(int(np.searchsorted(np.cumsum(evr), share - 1e-12) + 1), len(evr))
    L = Vt[:c].numpy().copy()
    for i in range(c):
        if L[i, np.argmax(np.abs(L[i]))] < 0:
            L[i] = -L[i]
    if importance == "abs_loading":
        a = np.abs(L).sum(0)
        imp = a / a.sum()
    else:
        w = evr[:c]
        imp = (w[:, None] * L**2).sum(0) / w.sum()
    # ties get average ranks (the textbook 1 - 6 sum d^2 / (n (n^2 - 1)) is wrong with ties);
    # NaN when either ranking is constant
    rho = 1.0 if len(sobol) < 2 else stats.spearman(sobol, imp)
    return PCAComparison(tuple(names), evr, L, imp, sobol, rho, cfg, time.perf_counter() - t0,
                         int(X.shape[0]))
