"""``python -m nnsens_core landscape``: loss-landscape sensitivity of a tabular dataset (one tanh
unit, K retrains): per-feature 2nd-derivative trend, Spearman correlation with the target and their
agreement, written as JSON."""
from __future__ import annotations

import sys
import time

from .. import budget
from .. import landscape as L
from ..data import demo_tabular
from ..device import resolve_device
from ..errors import NnsensError
from .._results import export_json
from ._common import add_yes, confirm_cost, load_cli_tabular, write_json

HELP = ("Loss-landscape sensitivity (one tanh unit, MSE, Xavier-normal init, K retrains): per-feature "
        "2nd-derivative trend while the loss falls, Spearman correlation with the target and their "
        "agreement, as JSON")

_D = L.LandscapeConfig()


def register(p) -> None:
    p.add_argument("--data", default=None,
                   help="CSV (or .npz with X, y); default: the demo data (Pima diabetes, shipped)")
    p.add_argument("--target", help="target column of the CSV (default: the last column)")
    p.add_argument("--rows", default=None, help="row range to use, e.g. 0:500 (default: all rows)")
    p.add_argument("--epochs", type=int, default=_D.epochs, help=f"training epochs (default {_D.epochs})")
    p.add_argument("--retrains", type=int, default=_D.retrains,
                   help=f"runs K with seeds seed..seed+K-1 (default {_D.retrains})")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default=_D.optimizer)
    p.add_argument("--lr", type=float, default=_D.lr, help=f"learning rate (default {_D.lr})")
    p.add_argument("--momentum", type=float, default=_D.momentum, help="SGD momentum (default 0)")
    p.add_argument("--batch-size", type=int, default=None, help="mini-batch size (default: full batch)")
    p.add_argument("--no-standardize", action="store_true", help="train on the raw features "
                                                                 "(default: z-scored)")
    p.add_argument("--target-scaling", choices=("none", "minmax"), default=_D.target_scaling,
                   help="'minmax' maps the target onto [-1, 1], the range of tanh (default none)")
    p.add_argument("--record-every", type=int, default=_D.record_every,
                   help="record the derivatives every N epochs (default 1)")
    p.add_argument("--flat-tol", type=float, default=_D.flat_tol,
                   help=f"|rho| below this is a 'flat' trend (default {_D.flat_tol})")
    p.add_argument("--descent-share", type=float, default=_D.descent_share,
                   help="use only the falling-loss epochs until the loss has made this share of its "
                        "total drop (default 1 = every epoch where the loss falls)")
    p.add_argument("--histories", action="store_true",
                   help="also write the per-epoch loss and mean 1st/2nd/3rd derivative histories")
    p.add_argument("--device", default="auto", help="auto, cuda, mps or cpu (default auto)")
    add_yes(p)
    p.add_argument("--seed", type=int, default=_D.seed)
    p.add_argument("--out", required=True, help="output JSON file")
    p.set_defaults(run=run)


def _data(args):
    if args.data is None:
        data = demo_tabular()
        if args.target is not None and args.target != data.target_name:
            raise NnsensError(f"--target {args.target!r} is not the demo data's target "
                              f"({data.target_name!r}); give --data CSV to choose another target")
        return data
    return load_cli_tabular(args.data, args.target)


def run(args) -> int:
    cfg = L.LandscapeConfig(epochs=args.epochs, retrains=args.retrains, optimizer=args.optimizer,
                            lr=args.lr, momentum=args.momentum, batch_size=args.batch_size,
                            standardize=not args.no_standardize, target_scaling=args.target_scaling,
                            record_every=args.record_every, flat_tol=args.flat_tol, seed=args.seed,
                            descent_share=args.descent_share)
    data = _data(args)
    device = resolve_device(args.device)
    t0 = time.perf_counter()

    def progress(done, total, stage=""):
        if done == total:
            print("  training and derivatives: done", file=sys.stderr)

    confirm_cost(args, budget.landscape(len(data.rows(args.rows).X), data.n_features, cfg))
    res = L.run_landscape_tabular(data, cfg, rows=args.rows, device=device, progress=progress)
    extra = {"histories": res.histories()} if args.histories else {}
    doc = export_json(res, data=data.name, rows=args.rows, n_rows=int(res.history.final[1].shape[1]),
                      **extra)
    path = write_json(args.out, doc)
    rate0, rate = doc["agreement_rate_run0"], doc["agreement_rate_all_runs"]
    fmt = lambda r: "n/a" if r is None else f"{r:.3f}"  # noqa: E731
    print(f"landscape {data.name}: {len(res.feature_names)} features, {cfg.epochs} epochs, "
          f"K={cfg.retrains} ({time.perf_counter() - t0:.1f}s) -> {path}")
    print(f"  agreement with the Spearman sign: run 0 {fmt(rate0)}, all runs {fmt(rate)}")
    for f in doc["features"]:
        agrees = {True: "yes", False: "no", None: "-"}[f["agrees"]]
        share = "n/a" if f["share_agreeing"] is None else f"{f['share_agreeing']:.2f}"
        print(f"  {f['feature']:28s} spearman={f['spearman']:+.3f}  trend={f['trend']:12s} "
              f"agrees={agrees:3s}  majority={f['majority_trend']:12s} "
              f"consistency={f['consistency']:.2f}  share_agreeing={share}")
    return 0
