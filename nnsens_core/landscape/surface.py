"""Any loaded model: NeuralSens-style input-gradient summaries and a 2-D loss surface along two
filter-normalised random directions (Li et al. 2018)."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from .. import _validate as v
from .._batching import Progress, auto_batch_size, map_batches
from .._results import Result
from ..device import inference_model, resolve_device
from ..errors import NnsensError


@dataclass(frozen=True)
class SurfaceConfig:
    """2-D loss surface ``loss(theta + a*d1 + b*d2)`` for ``a, b`` on a ``grid x grid`` lattice in
    ``[-span, span]``.  ``loss``: ``"auto"`` picks BCE for one probability output and 0/1 targets,
    cross-entropy for several outputs, else MSE.  ``ignore_biasbn`` zeroes the directions of 1-D
    parameters (biases, BatchNorm), as Li et al. do by default."""
    grid: int = 21
    span: float = 1.0
    loss: str = "auto"
    seed: int = 0
    ignore_biasbn: bool = True

    def __post_init__(self):
        v.positive("grid", self.grid, integer=True)
        if self.grid < 3 or self.grid > 201:
            raise NnsensError(f"grid={self.grid} must lie in [3, 201]")
        v.positive("span", self.span)
        v.one_of("loss", self.loss, ("auto", "mse", "bce", "cross_entropy"))
        if not isinstance(self.seed, int) or self.seed < 0:
            raise NnsensError(f"seed={self.seed!r} must be a whole number >= 0")

# --------------------------------------------------------------------------- any loaded model

def _select_output(out: torch.Tensor, output: int) -> torch.Tensor:
    if out.ndim == 1:
        if output != 0:
            raise NnsensError(f"output={output} does not exist; the model has one output (use 0)")
        return out
    flat = out.reshape(out.shape[0], -1)
    if not 0 <= output < flat.shape[1]:
        raise NnsensError(f"output={output} does not exist; the model has {flat.shape[1]} outputs "
                          f"(use 0..{flat.shape[1] - 1})")
    return flat[:, output]


def input_gradients(model: nn.Module, X, output: int = 0, device="auto",
                    batch_size: int = 1024, progress: Progress | None = None) -> np.ndarray:
    """Per-sample ``d y_output / d x`` (n, d) of an eval-mode model, with ``torch.func.vjp``.

    In eval mode each row's output depends on that row only, so one VJP with a vector of ones gives
    every row's gradient at once.
    """
    dev = resolve_device(device)
    m = inference_model(model, dev)
    Xt = torch.as_tensor(np.asarray(X, np.float32))
    if Xt.ndim != 2:
        raise NnsensError(f"X has shape {tuple(Xt.shape)}; it must be 2-D (rows, features)")
    v.positive("batch_size", batch_size, integer=True)

    def one(sl):
        xb = Xt[sl].to(dev)
        f = lambda x: _select_output(m(x), output)  # noqa: E731
        try:
            out, vjp_fn = torch.func.vjp(f, xb)
            return vjp_fn(torch.ones_like(out))[0]
        except RuntimeError:  # TorchScript modules: plain autograd, still one pass per batch
            xb = xb.clone().requires_grad_(True)
            with torch.enable_grad():
                return torch.autograd.grad(f(xb).sum(), xb)[0]

    return map_batches(one, len(Xt), batch_size, progress).double().numpy()


def input_gradient_summary(model: nn.Module, X, feature_names=None, output: int = 0, device="auto",
                           batch_size: int = 1024) -> dict:
    """NeuralSens-style sensitivities of one output: per feature ``mean``, ``std`` and ``rms``
    (root mean square, NeuralSens' ``meanSensSQ``) of ``dy/dx_j`` over the rows of ``X``."""
    g = input_gradients(model, X, output, device, batch_size)
    names = tuple(feature_names) if feature_names is not None else tuple(
        f"x{j}" for j in range(g.shape[1]))
    if len(names) != g.shape[1]:
        raise NnsensError(f"{len(names)} feature names for {g.shape[1]} inputs; they must match")
    return {"feature_names": names, "mean": g.mean(0), "std": g.std(0, ddof=1) if len(g) > 1 else
            np.zeros(g.shape[1]), "rms": np.sqrt((g ** 2).mean(0)), "gradients": g}


def filter_normalized_direction(params: dict[str, torch.Tensor], generator: torch.Generator,
                                ignore_biasbn: bool = True) -> dict[str, torch.Tensor]:
    """A Gaussian random direction rescaled filter by filter to the norms of the weights (Li et al.
    2018): for each parameter with >= 2 dims, each slice along dim 0 (a Linear row / a conv filter)
    gets the norm of the matching weight slice.  1-D parameters (biases, BatchNorm) get a zero
    direction when ``ignore_biasbn``, else a copy of the weights."""
    out = {}
    for name, p in params.items():
        d = torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p)
        if p.dim() <= 1:
            d = torch.zeros_like(p) if ignore_biasbn else p.detach().clone()
        else:
            dn = d.reshape(d.shape[0], -1).norm(dim=1)
            pn = p.detach().reshape(p.shape[0], -1).norm(dim=1)
            d = d * (pn / (dn + 1e-10)).view(-1, *([1] * (p.dim() - 1)))
        out[name] = d
    return out


def _loss_fn(kind: str):
    if kind == "bce":
        return lambda out, y: nn.functional.binary_cross_entropy(
            out.reshape(-1).clamp(1e-7, 1 - 1e-7), y.reshape(-1).float())
    if kind == "cross_entropy":
        return lambda out, y: nn.functional.cross_entropy(out.reshape(out.shape[0], -1), y.long())
    return lambda out, y: ((out.reshape(-1) - y.reshape(-1).float()) ** 2).mean()


def choose_loss(out: torch.Tensor, y: np.ndarray, loss: str = "auto") -> str:
    """The loss ``"auto"`` stands for, given the model's outputs on the data and the target."""
    flat = out.reshape(out.shape[0], -1)
    if loss == "auto":
        if flat.shape[1] > 1:
            loss = "cross_entropy"
        elif (flat.min() >= 0 and flat.max() <= 1 and np.isin(y, (0, 1)).all()):
            loss = "bce"
        else:
            loss = "mse"
    if loss == "cross_entropy":
        if flat.shape[1] < 2:
            raise NnsensError("loss='cross_entropy' needs a model with several outputs; use 'mse' or 'bce'")
        if not (np.equal(np.mod(y, 1), 0).all() and y.min() >= 0 and y.max() < flat.shape[1]):
            raise NnsensError(f"loss='cross_entropy' needs class labels 0..{flat.shape[1] - 1} as target")
    elif flat.shape[1] != 1:
        raise NnsensError(f"loss={loss!r} needs a model with one output; this one has {flat.shape[1]}")
    if loss == "bce" and not np.isin(y, (0, 1)).all():
        raise NnsensError("loss='bce' needs a 0/1 target; use 'mse'")
    return loss


@dataclass(frozen=True, eq=False)
class LossSurface(Result):
    """``loss[i, j]`` at ``theta + alphas[i] * d1 + betas[j] * d2``; ``center`` the loss at theta."""
    alphas: np.ndarray
    betas: np.ndarray
    loss: np.ndarray
    center: float
    loss_kind: str
    config: SurfaceConfig = SurfaceConfig()
    seconds: float = 0.0

    def _payload(self) -> dict:
        return {"loss_kind": self.loss_kind, "center": self.center, "alphas": self.alphas,
                "betas": self.betas, "loss": self.loss}

    def to_frame(self):
        """Long form: one row per grid point (``alpha``, ``beta``, ``loss``)."""
        import pandas as pd
        A, B = np.meshgrid(self.alphas, self.betas, indexing="ij")
        return pd.DataFrame({"alpha": A.ravel(), "beta": B.ravel(), "loss": self.loss.ravel()})

    def arrays(self) -> dict:
        return {"alphas": self.alphas, "betas": self.betas, "loss": self.loss}


def loss_surface(model: nn.Module, X, y, cfg: SurfaceConfig = SurfaceConfig(), device="auto",
                 batch_size: int | None = None, progress: Progress | None = None) -> LossSurface:
    """Loss on a 2-D grid around the trained weights, along two filter-normalised random directions.

    The grid points are evaluated in batches: ``vmap`` of ``functional_call`` over stacked parameter
    sets (one forward per batch).  The model runs in eval mode (BatchNorm uses its running statistics,
    :func:`~nnsens_core.device.inference_model`); the caller's model is never modified.
    """
    t0 = time.perf_counter()
    dev = resolve_device(device)
    m = inference_model(model, dev)
    Xt = torch.as_tensor(np.asarray(X, np.float32), device=dev)
    y = np.asarray(y, np.float64)
    if Xt.ndim < 2 or len(y) != len(Xt):
        raise NnsensError(f"X has shape {tuple(Xt.shape)} and y {y.shape}; give one target per row")
    if not np.isfinite(y).all():
        raise NnsensError("the target has NaN/inf values; fill or drop those rows")
    yt = torch.as_tensor(y, device=dev)
    params = {k: p.detach() for k, p in m.named_parameters()}
    if not params:
        raise NnsensError("the model has no parameters; a loss surface needs trainable weights")
    buffers = {k: b.detach() for k, b in m.named_buffers()}
    with torch.no_grad():
        out0 = m(Xt)
    kind = choose_loss(out0, y, cfg.loss)
    lf = _loss_fn(kind)
    gen = torch.Generator().manual_seed(cfg.seed)
    d1 = filter_normalized_direction(params, gen, cfg.ignore_biasbn)
    d2 = filter_normalized_direction(params, gen, cfg.ignore_biasbn)
    axis = torch.linspace(-cfg.span, cfg.span, cfg.grid, dtype=torch.float64)
    A, B = torch.meshgrid(axis, axis, indexing="ij")
    coords = torch.stack([A.reshape(-1), B.reshape(-1)], 1).to(dev)
    G = len(coords)
    if batch_size is None:
        per_point = out0.numel() * 4 * 8 + sum(p.numel() for p in params.values()) * 4 * 3
        batch_size = auto_batch_size(per_point, hi=G)

    def at(a, b_):
        return {k: params[k] + a.to(params[k].dtype) * d1[k] + b_.to(params[k].dtype) * d2[k]
                for k in params}

    def loss_at(p):
        return lf(functional_call(m, (p, buffers), (Xt,)), yt)

    def one(sl):
        c = coords[sl]
        try:
            return vmap(lambda ab: loss_at(at(ab[0], ab[1])))(c)
        except RuntimeError:  # modules functorch cannot batch (e.g. TorchScript): one grid point at a time
            work = copy.deepcopy(m)  # its parameters are overwritten point by point
            return torch.stack([_loss_by_copy(work, at(ab[0], ab[1]), Xt, yt, lf) for ab in c])

    with torch.no_grad():
        vals = map_batches(one, G, batch_size, progress)
        center = float(lf(out0, yt))
    return LossSurface(axis.numpy(), axis.numpy(), vals.double().numpy().reshape(cfg.grid, cfg.grid),
                       center, kind, cfg, time.perf_counter() - t0)


def _loss_by_copy(m: nn.Module, p: dict, X, y, lf) -> torch.Tensor:
    saved = {k: t.detach().clone() for k, t in m.named_parameters()}
    try:
        for k, t in m.named_parameters():
            t.data.copy_(p[k])
        return lf(m(X), y)
    finally:
        for k, t in m.named_parameters():
            t.data.copy_(saved[k])

