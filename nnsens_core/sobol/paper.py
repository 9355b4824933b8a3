"""What the tabular paper's authors computed: their preset (rows, bounds, training, Sobol settings),
their hidden-layer measure (mean norm of the change of a layer's output when one input is raised by
a relative step), and the checks that catch a wrong target before any analysis."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .._batching import Progress
from .._results import Result
from ..data import TabularData
from ..device import inference_model, resolve_device
from ..errors import NnsensError
from ..training import TrainConfig
from ..zoo import module_of
from .._hooks import forward_with_outputs
from .problem import OUTPUT, SobolConfig
from .run import _param_dtype, check_width

# --------------------------------------------------------------------------- the preset

ESTIMATORS = ("SALib 1.6 estimators: S1 = Saltelli (2010) mean(f_B (f_ABi - f_A)) / Var, "
              "ST = Jansen (1999) mean((f_A - f_ABi)^2) / (2 Var), S2 = Saltelli (2002); "
              "Y standardised per output; CIs = z * std of bootstrap resamples")
"""The estimators :func:`~nnsens_core.sobol.analyze` actually uses (named in captions/exports)."""


@dataclass(frozen=True)
class PaperPreset:
    """The tabular paper's settings, one object for the page and the CLI (``--preset paper``).

    ``source`` says, per setting, whether it is the paper's own value or nnsens's choice where the
    paper does not state one."""
    train_rows: str = "0:500"
    test_rows: str = "500:700"
    bounds_rows: str = "0:700"        # bounds = min/max of the train + test rows
    sobol: SobolConfig = SobolConfig(n=1024, second_order=True, seed=0, num_resamples=100,
                                     conf_level=0.95, layer="act1")
    train: TrainConfig = TrainConfig(epochs=100, batch_size=32, lr=0.01, weight_decay=1e-3)
    hidden: int = 10
    step: float = 0.01                # +1 % relative step of the hidden-layer measure
    pca_rows: str = "0:700"
    pca_class: float | None = 1.0     # PCA on the Outcome = 1 rows only, as the authors did
    pca_importance: str = "abs_loading"
    clip_s2: bool = True              # negative S2 estimates shown as 0, as the authors did
    source: dict = field(default_factory=lambda: {
        "train_rows": "paper", "test_rows": "paper", "bounds_rows": "paper (min/max of those rows)",
        "architecture": "paper (8 -> 10 BatchNorm ReLU -> 1 BatchNorm -> sigmoid)",
        "optimizer": "paper (SGD lr 0.01, weight decay 1e-3)", "features": "paper (raw, unscaled)",
        "second_order": "paper (S2 heatmap)", "step": "paper (+1 % of each input)",
        "pca_class": "paper (Outcome = 1)", "pca_importance": "paper (normalised sum |loading|)",
        "clip_s2": "paper (negative S2 set to 0)",
        "n": "nnsens choice (SALib's N = 1024; not stated in the paper)",
        "num_resamples": "nnsens choice (SALib default 100)",
        "epochs": "nnsens choice (the demo's 100 mini-batch epochs of 32 rows)"})

    def as_dict(self) -> dict:
        """Every value of the preset with where it comes from (shown on the page, exported)."""
        s, t = self.sobol, self.train
        return {"train_rows": self.train_rows, "test_rows": self.test_rows,
                "bounds_rows": self.bounds_rows, "n": s.n, "second_order": s.second_order,
                "num_resamples": s.num_resamples, "conf_level": s.conf_level, "layer": s.layer,
                "hidden": self.hidden, "optimizer": t.optimizer, "lr": t.lr,
                "weight_decay": t.weight_decay, "epochs": t.epochs, "batch_size": t.batch_size,
                "step": self.step, "pca_rows": self.pca_rows, "pca_class": self.pca_class,
                "pca_importance": self.pca_importance, "clip_s2": self.clip_s2,
                "estimators": ESTIMATORS, "source": dict(self.source)}


PAPER = PaperPreset()


# --------------------------------------------------------------------------- target checks

def _is_binary(y: np.ndarray) -> bool:
    return bool(np.isin(np.unique(np.asarray(y, float)), (0.0, 1.0)).all())


def target_warnings(data: TabularData, model=None) -> list[str]:
    """Plain-text warnings about a target that does not fit the paper's binary sigmoid/BCE model:

    * a target that is not 0/1 (e.g. ``Age``) while the model has one output;
    * a 0/1 feature column while the target is not 0/1: the model's width then matches only because
      the true target (e.g. ``Outcome``) became an input;
    * a target the model was trained to take as an input (its ``feature_names``).
    """
    out: list[str] = []
    width = None
    if model is not None:
        try:
            module = module_of(model)
            x = torch.zeros(2, data.n_features, dtype=_param_dtype(module),
                            device=next(iter(module.parameters())).device)
            was = module.training
            module.eval()
            with torch.no_grad():
                width = int(module(x).reshape(2, -1).shape[1])
            module.train(was)
        except Exception:  # noqa: BLE001 - a width mismatch is reported by check_width
            width = None
    binary = _is_binary(data.y)
    if not binary and width in (None, 1):
        vals = np.unique(data.y)
        shown = ", ".join(f"{x:g}" for x in vals[:5]) + (", ..." if len(vals) > 5 else "")
        out.append(f"The target column '{data.target_name}' has {len(vals)} distinct values "
                   f"({shown}), not 0/1: the paper MLP (sigmoid output, BCE loss) is a binary "
                   "classifier, so its accuracy and any retraining are meaningless. Pick a 0/1 "
                   "target column (e.g. Outcome on Pima).")
        flags = [n for n, col in zip(data.feature_names, data.X.T) if len(np.unique(col)) == 2
                 and _is_binary(col)]
        if flags:
            out.append(f"The 0/1 column(s) {', '.join(repr(f) for f in flags)} are used as model "
                       f"INPUTS while '{data.target_name}' is the target: the model's input width "
                       "may match only because the true target became an input. Choose "
                       f"{flags[0]!r} as the target column.")
    names = getattr(getattr(model, "spec", None), "feature_names", ()) or ()
    if names and data.target_name in names:
        out.append(f"The model takes '{data.target_name}' as an input, but it is the data's target "
                   "column: pick the target column the model was trained to predict.")
    return out


# --------------------------------------------------------------------------- +1 % hidden measure

@dataclass
class StepSensitivity(Result):
    """The authors' hidden-layer measure: ``values[d]`` = mean over rows of
    ``|| h(x with x_d * (1 + step)) - h(x) ||_2`` for the layer ``layer`` (``std`` over rows)."""
    names: tuple[str, ...]
    layer: str
    step: float
    values: np.ndarray
    std: np.ndarray
    n_rows: int
    zero_share: np.ndarray   # share of rows where the feature is 0 (a relative step leaves it)
    config: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_frame(self):
        import pandas as pd
        return pd.DataFrame({"mean_norm_change": self.values, "std": self.std,
                             "share_of_zero_rows": self.zero_share},
                            index=pd.Index(self.names, name="feature"))

    def _payload(self) -> dict:
        return {"names": list(self.names), "layer": self.layer, "step": self.step,
                "values": self.values, "std": self.std, "n_rows": self.n_rows,
                "zero_share": self.zero_share}


@torch.no_grad()
def step_sensitivity(model, X: np.ndarray, names, layer: str = OUTPUT, step: float = 0.01,
                     device="auto", progress: Progress | None = None) -> StepSensitivity:
    """Raise each input in turn by the relative ``step`` (``x_d -> x_d (1 + step)``) on every row
    of ``X`` and average the Euclidean norm of the change of ``layer``'s output (a module name, or
    ``"output"``). The model is not modified (eval mode, hooks removed)."""
    t0 = time.perf_counter()
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not np.isfinite(step) \
            or step == 0 or abs(step) >= 10:
        raise NnsensError(f"step={step!r} must be a non-zero relative change such as 0.01 (+1 %)")
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or len(X) == 0:
        raise NnsensError(f"X has shape {X.shape}; give (rows >= 1, features)")
    names = tuple(str(n) for n in names)
    if len(names) != X.shape[1]:
        raise NnsensError(f"{len(names)} names for {X.shape[1]} features")
    if not isinstance(layer, str) or not layer:
        raise NnsensError(f"layer={layer!r} must be a module name or 'output'")
    check_width(model, X.shape[1])
    dev = resolve_device(device)
    module = inference_model(model, dev)
    dtype = _param_dtype(module)

    def h(x: np.ndarray) -> torch.Tensor:
        xb = torch.as_tensor(x, dtype=dtype, device=dev)
        y, outs = forward_with_outputs(module, xb, [] if layer == OUTPUT else [layer])
        o = y if layer == OUTPUT else outs.get(layer)
        if o is None:
            raise NnsensError(f"layer {layer!r} did not run in the forward pass; pick another layer")
        return o.reshape(len(xb), -1).to(torch.float64)

    try:
        base = h(X)
        vals, sds = [], []
        for d in range(X.shape[1]):
            Xp = X.copy()
            Xp[:, d] *= 1.0 + step
            norm = torch.linalg.vector_norm(h(Xp) - base, dim=1).cpu().numpy()
            vals.append(norm.mean())
            sds.append(norm.std(ddof=1) if len(norm) > 1 else 0.0)
            if progress is not None:
                progress(d + 1, X.shape[1], stage="perturbing")
    except NnsensError:
        raise
    except RuntimeError as exc:
        raise NnsensError(f"the model failed on inputs of shape (rows, {X.shape[1]}): "
                          f"{str(exc)[:200]}") from None
    return StepSensitivity(names, layer, float(step), np.asarray(vals), np.asarray(sds), len(X),
                           (X == 0).mean(axis=0), {"layer": layer, "step": float(step)},
                           time.perf_counter() - t0)


def model_accuracy(model, data: TabularData, train_rows: str | None, test_rows: str | None,
                   device="cpu") -> dict[str, float]:
    """Train and test accuracy of a tabular classifier (probability, logit or multi-class output,
    as the retraining scores it): ``{"train": ..., "test": ...}`` for the rows given."""
    from .studies import _Task
    dev = resolve_device(device)
    module = inference_model(model, dev)
    check_width(model, data.n_features)
    task = _Task(module, data.X, dev)
    out = {}
    for name, spec in (("train", train_rows), ("test", test_rows)):
        if spec:
            sub = data.rows(spec)
            out[name] = task.accuracy(module, sub.X, sub.y, dev)
    return out
