"""``python -m nnsens_core sobol``: Sobol' indices of a tabular model, written as JSON."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .. import budget, sobol
from .._results import export_json
from ..device import resolve_device
from ..errors import NnsensError
from ..loading import DEFAULT_MAX_BYTES, is_torchscript, read_state_dict
from ._common import (
    add_device_seed,
    add_model_args,
    add_yes,
    confirm_cost,
    load_cli_model,
    load_cli_tabular,
    write_json,
)

HELP = "Sobol' sensitivity indices (S1, ST, S2 with bootstrap CIs) of a tabular model"


def register(p) -> None:
    p.add_argument("--data", required=True, help="CSV (or .npz with X, y) of the features")
    p.add_argument("--target", help="target column of the CSV (default: the last column)")
    add_model_args(p)
    p.add_argument("--rows", default=None,
                   help="rows whose min/max are the Sobol bounds, e.g. 0:700 (default: all)")
    p.add_argument("--n", type=int, default=65536, help="base samples N, a power of two (default 65536)")
    p.add_argument("--second-order", action="store_true", help="also compute S2 (2D+2 runs per sample)")
    p.add_argument("--resamples", type=int, default=100, help="bootstrap resamples (default 100)")
    p.add_argument("--conf-level", type=float, default=0.95, help="CI level (default 0.95)")
    p.add_argument("--layer", default=None,
                   help="also analyse every neuron of this hidden module (e.g. act1 of paper-mlp)")
    p.add_argument("--batch-size", type=int, default=None, help="rows per forward pass (default auto)")
    add_device_seed(p)
    add_yes(p)
    p.add_argument("--out", required=True, help="output JSON file")
    p.set_defaults(run=run)


def _paper_mlp_kwargs(args) -> None:
    """Read the sizes of a paper-MLP state_dict (n_inputs, hidden, batchnorm) unless given."""
    if args.arch != "paper-mlp" or not Path(args.model).is_file():
        return
    try:
        kwargs = json.loads(args.arch_kwargs)
    except json.JSONDecodeError:
        raise NnsensError(f"--arch-kwargs={args.arch_kwargs!r} is not JSON") from None
    path = Path(args.model)
    if path.stat().st_size > DEFAULT_MAX_BYTES:
        return  # load_model refuses it with the size
    data = path.read_bytes()
    if is_torchscript(data):
        return
    tensors = [t for k, t in read_state_dict(data).items() if not k.endswith("num_batches_tracked")]
    first = next((t for t in tensors if t.ndim == 2), None)
    if first is None:
        raise NnsensError("the state_dict has no weight matrix; is it a paper-mlp state_dict?")
    kwargs.setdefault("hidden", int(first.shape[0]))
    kwargs.setdefault("n_inputs", int(first.shape[1]))
    kwargs.setdefault("batchnorm", len(tensors) != 4)  # Linear, Linear (+ 2 BatchNorm x 4 tensors)
    args.arch_kwargs = json.dumps(kwargs)


def run(args) -> int:
    data = load_cli_tabular(args.data, args.target)
    rows = data.rows(args.rows)
    problem = sobol.SobolProblem.from_data(rows)
    cfg = sobol.SobolConfig(n=args.n, second_order=args.second_order, seed=args.seed,
                            num_resamples=args.resamples, conf_level=args.conf_level, layer=args.layer)
    device = resolve_device(args.device)
    _paper_mlp_kwargs(args)
    # a state_dict's width comes from its architecture (so a mismatch is named); TorchScript: the data's
    shape = None if args.arch else (data.n_features,)
    model = load_cli_model(args, input_shape=shape, device=device)
    sobol.check_width(model, problem.D)
    confirm_cost(args, budget.sobol(model, problem.D, cfg))

    def progress(done, total, stage=""):
        if done == total:
            print(f"  {stage}: done", file=sys.stderr)

    res = sobol.run(model, problem, cfg, device, args.batch_size, progress)
    path = write_json(args.out, export_json(res, model=model.spec.name, data=data.name, rows=args.rows))
    out = res.output()
    print(f"Sobol N={cfg.n} D={problem.D} second_order={cfg.second_order} "
          f"({sum(res.timings.values()):.2f}s) -> {path}")
    for name, s1, c1, st, ct in zip(problem.names, out.S1[0], out.S1_conf[0], out.ST[0], out.ST_conf[0]):
        print(f"  {name:28s} S1={s1:+.4f} ±{c1:.4f}  ST={st:.4f} ±{ct:.4f}")
    return 0
