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
from ..zoo import module_of
from ._common import (
    add_device_seed,
    add_model_args,
    add_yes,
    confirm_cost,
    load_cli_model,
    load_cli_tabular,
    write_csv,
    write_json,
)
from ._executor_opts import add_executor_args, convergence_map_fn, uses_units

HELP = "Sobol' sensitivity indices (S1, ST, S2 with bootstrap CIs) of a tabular model"


def register(p) -> None:
    p.add_argument("--data", required=True, help="CSV (or .npz with X, y) of the features")
    p.add_argument("--target", help="target column of the CSV (default: the last column)")
    add_model_args(p)
    p.add_argument("--rows", default=None,
                   help="rows whose min/max are the Sobol bounds, e.g. 0:700 (default: all)")
    p.add_argument("--preset", choices=["paper"], default=None,
                   help="paper: the tabular paper's settings (rows 0:700 for the bounds, train 0:500 "
                        "/ test 500:700, N=1024, S2, layer act1, +1%% hidden measure, SGD lr 0.01 "
                        "weight decay 1e-3); any option given explicitly wins")
    p.add_argument("--n", type=int, default=None,
                   help="base samples N, a power of two (default 65536; paper preset 1024)")
    p.add_argument("--second-order", action="store_true", help="also compute S2 (2D+2 runs per sample)")
    p.add_argument("--resamples", type=int, default=100, help="bootstrap resamples (default 100)")
    p.add_argument("--conf-level", type=float, default=0.95, help="CI level (default 0.95)")
    p.add_argument("--layer", default=None,
                   help="also analyse every neuron of this hidden module (e.g. act1 of paper-mlp)")
    p.add_argument("--batch-size", type=int, default=None, help="rows per forward pass (default auto)")
    g = p.add_argument_group("paper studies (each adds a section to the JSON and a CSV)")
    g.add_argument("--hidden-step", type=float, default=None, metavar="STEP",
                   help="the authors' hidden-layer measure: mean norm of the change of --layer's "
                        "output when one input is raised by STEP (relative, 0.01 = +1%%) over --rows")
    g.add_argument("--convergence", default=None, metavar="NMIN:NMAX",
                   help="S1/ST of the output for every power of two from NMIN to NMAX")
    g.add_argument("--reduce", type=int, default=None, metavar="K",
                   help="retrain on the top-K and bottom-K features by ST (feature reduction)")
    g.add_argument("--train-rows", default=None, help="retraining rows (default 0:500 with the preset)")
    g.add_argument("--test-rows", default=None, help="test rows (default 500:700 with the preset)")
    g.add_argument("--epochs", type=int, default=None, help="retraining epochs (default 100)")
    g.add_argument("--lr", type=float, default=None, help="retraining SGD learning rate (default 0.01)")
    g.add_argument("--weight-decay", type=float, default=None, help="retraining weight decay (default 1e-3)")
    g.add_argument("--train-batch", type=int, default=None, help="retraining mini-batch (default 32)")
    g.add_argument("--full-batch", action="store_true", help="retrain full-batch (one step per epoch)")
    g.add_argument("--seeds", type=int, default=5, help="retraining seeds (default 5)")
    g.add_argument("--pca", action="store_true", help="compare the ST ranking with PCA loadings")
    g.add_argument("--pca-rows", default=None, help="PCA rows (default: --rows)")
    g.add_argument("--pca-class", type=float, default=None,
                   help="PCA only on rows whose target equals this (paper preset: 1)")
    g.add_argument("--pca-components", type=int, default=None, help="a fixed number of components")
    g.add_argument("--pca-share", type=float, default=0.8, help="else the variance share (default 0.8)")
    g.add_argument("--pca-importance", choices=list(sobol.PCA_IMPORTANCE), default=None,
                   help="variance (sum evr * loading^2) or abs_loading (the authors' normalised "
                        "sum |loading|; paper preset)")
    g.add_argument("--pca-raw", action="store_true", help="PCA on raw (not standardised) features")
    g.add_argument("--csv-dir", default=None, help="also write every table as CSV into this folder")
    add_executor_args(p)  # the units of --convergence: one per N
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


def _apply_preset(args) -> dict | None:
    """Fill every option left unset from the paper preset; returns the preset's record."""
    if args.preset != "paper":
        if args.n is None:
            args.n = 65536
        return None
    P = sobol.PAPER
    defaults = {"rows": P.bounds_rows, "n": P.sobol.n, "layer": P.sobol.layer,
                "hidden_step": P.step, "train_rows": P.train_rows, "test_rows": P.test_rows,
                "pca_rows": P.pca_rows, "pca_class": P.pca_class,
                "pca_importance": P.pca_importance}
    for k, val in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, val)
    args.second_order = True
    return P.as_dict()


def _train_config(args) -> sobol.FeatureReductionConfig:
    from ..training import TrainConfig
    base = sobol.PAPER.train
    tc = TrainConfig(epochs=args.epochs or base.epochs,
                     batch_size=args.train_batch or base.batch_size,
                     lr=base.lr if args.lr is None else args.lr,
                     weight_decay=base.weight_decay if args.weight_decay is None else args.weight_decay,
                     seed=args.seed)
    if args.seeds < 1:
        raise NnsensError(f"--seeds={args.seeds} must be >= 1")
    return sobol.FeatureReductionConfig(k=args.reduce, seeds=tuple(range(args.seed, args.seed + args.seeds)),
                                        train=tc, full_batch=bool(args.full_batch))


def run(args) -> int:
    if uses_units(args) and not args.convergence:
        raise NnsensError("--executor ray / --store run the units of --convergence (one per N); "
                          "add --convergence NMIN:NMAX or drop them")
    preset = _apply_preset(args)
    data = load_cli_tabular(args.data, args.target)
    rows = data.rows(args.rows)
    problem = sobol.SobolProblem.from_data(rows)
    device = resolve_device(args.device)
    _paper_mlp_kwargs(args)
    # a state_dict's width comes from its architecture (so a mismatch is named); TorchScript: the data's
    shape = None if args.arch else (data.n_features,)
    model = load_cli_model(args, input_shape=shape, device=device)
    sobol.check_width(model, problem.D)
    for w in sobol.target_warnings(data, model):
        print(f"warning: {w}", file=sys.stderr)
    if args.layer is not None and args.layer not in sobol.hidden_layers(model, problem.D):
        if preset is not None and args.layer == sobol.PAPER.sobol.layer:
            args.layer = sobol.default_layer(model, problem.D)  # a model without act1
        # else: sobol.run names the layers
    cfg = sobol.SobolConfig(n=args.n, second_order=args.second_order, seed=args.seed,
                            num_resamples=args.resamples, conf_level=args.conf_level, layer=args.layer)
    confirm_cost(args, budget.sobol(model, problem.D, cfg))

    def progress(done, total, stage=""):
        if done == total:
            print(f"  {stage}: done", file=sys.stderr)

    res = sobol.run(model, problem, cfg, device, args.batch_size, progress)
    studies: dict = {}
    tables: dict = {}  # the CSV tables (pandas), built only for --csv-dir and the printed studies
    if args.csv_dir:
        tables.update(res.to_frames())
        if cfg.layer is not None:
            tables[f"{cfg.layer} summary"] = res.layer_summary()
    if args.hidden_step is not None:
        step = sobol.step_sensitivity(model, rows.X, rows.feature_names, cfg.layer or sobol.OUTPUT,
                                      args.hidden_step, device)
        studies["hidden_step"] = step.to_dict()
        tables["hidden step"] = step.to_frame()
    if args.convergence:
        try:
            lo, hi = (int(x) for x in args.convergence.split(":"))
        except ValueError:
            raise NnsensError(f"--convergence={args.convergence!r} must be NMIN:NMAX, e.g. 128:4096") from None
        ns = sobol.powers_of_two(lo, hi)
        map_fn = convergence_map_fn(args, module_of(model), problem, ns[-1], cfg.seed,
                                    cfg.num_resamples, cfg.conf_level, args.batch_size, str(device))
        conv = sobol.convergence(model, problem, ns, cfg, device, args.batch_size, map_fn=map_fn)
        studies["convergence"] = conv.to_dict()
        tables["convergence"] = conv.to_frame()
    if args.reduce is not None:
        fcfg = _train_config(args)
        train = data.rows(args.train_rows or args.rows)
        confirm_cost(args, budget.feature_reduction(model, len(train.X), fcfg))
        fr = sobol.feature_reduction(model, train, data.rows(args.test_rows), res.output().ST[0],
                                     fcfg, device)
        studies["feature_reduction"] = fr.to_dict()
        tables["feature reduction"] = fr.to_frame()
    if args.pca:
        prow = sobol.pca_rows(data, args.pca_rows or args.rows, args.pca_class)
        pca = sobol.pca_comparison(prow.X, prow.feature_names, res.output().ST[0], args.pca_share,
                                   not args.pca_raw, args.pca_components,
                                   args.pca_importance or "variance", args.pca_rows or args.rows,
                                   args.pca_class)
        studies["pca"] = pca.to_dict()
        tables["pca ranking"] = pca.to_frame()
        tables["pca loadings"] = pca.loadings_frame()
    extra = {"preset": preset} if preset is not None else {}
    doc = export_json(res, model=model.spec.name, data=data.name, rows=args.rows,
                      estimators=sobol.ESTIMATORS, **extra, **studies)
    path = write_json(args.out, doc)
    if args.csv_dir:
        for name, frame in tables.items():
            write_csv(Path(args.csv_dir) / f"sobol_{name.replace(' ', '_')}.csv", frame)
    out = res.output()
    print(f"Sobol N={cfg.n} D={problem.D} second_order={cfg.second_order} "
          f"({sum(res.timings.values()):.2f}s) -> {path}")
    for name, s1, c1, st, ct in zip(problem.names, out.S1[0], out.S1_conf[0], out.ST[0], out.ST_conf[0]):
        print(f"  {name:28s} S1={s1:+.4f} ±{c1:.4f}  ST={st:.4f} ±{ct:.4f}")
    if "hidden_step" in studies:
        print(f"  +{args.hidden_step:.0%} step, mean ||Δ {step.layer}||:")
        for name, val in zip(step.names, step.values):
            print(f"  {name:28s} {val:.6g}")
    if "feature_reduction" in studies:
        for sub, row in tables["feature reduction"].iterrows():
            print(f"  {sub:12s} test acc {row['acc_mean']:.3f} ± {row['acc_std']:.3f}")
    return 0
