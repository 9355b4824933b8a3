"""``python -m nnsens_core landscape``: loss-landscape sensitivity of a tabular dataset (one tanh
unit, K retrains): per-feature derivative trends under each reading of the paper's derivatives,
Spearman correlation with the target and their agreement per (reading, order), written as JSON (and
the agreement table as CSV)."""
from __future__ import annotations

import sys
import time

from .. import budget
from .. import landscape as L
from ..data import demo_rows, demo_tabular
from ..device import resolve_device
from ..errors import NnsensError
from .._results import export_json
from ._common import add_yes, confirm_cost, load_cli_tabular, write_csv, write_json

HELP = ("Loss-landscape sensitivity (one tanh unit, MSE, Xavier-normal init, K retrains): per-feature "
        "1st/2nd/3rd-derivative trends while the loss falls under four readings of the paper's "
        "derivatives, Spearman correlation with the target and their agreement, as JSON/CSV")

_D = L.LandscapeConfig()


def register(p) -> None:
    p.add_argument("--data", default=None,
                   help="CSV (or .npz with X, y); default: the demo data (Pima diabetes, shipped)")
    p.add_argument("--target", help="target column of the CSV (default: the last column)")
    p.add_argument("--rows", default=None,
                   help="row range to use, e.g. 0:500, or 'all' (default: the train rows the other "
                        "commands use, 0:500 on Pima, else the first ~65%%)")
    p.add_argument("--preset", choices=("paper",), default=None,
                   help="'paper': the paper's settings (weight-diagonal reading); prints which values "
                        "come from the paper and which are nnsens defaults")
    p.add_argument("--reading", choices=L.READINGS, default=None,
                   help="the reading shown per feature (default input_diagonal, or the preset's); "
                        "the agreement of every reading is always computed")
    p.add_argument("--orders", default="1,2,3",
                   help="derivative orders in the agreement table, e.g. 2 or 1,2,3 (default 1,2,3)")
    p.add_argument("--csv", default=None, help="also write the agreement table (reading x order) as CSV")
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


def _orders(text: str) -> tuple[int, ...]:
    try:
        orders = tuple(sorted({int(t) for t in str(text).split(",") if t.strip()}))
    except ValueError:
        orders = ()
    if not orders or not set(orders) <= set(L.ORDERS):
        raise NnsensError(f"--orders {text!r} is not a list of derivative orders; use 1, 2 and/or 3, "
                          "e.g. --orders 1,2,3")
    return orders


def run(args) -> int:
    orders = _orders(args.orders)
    preset_rows = None
    reading = args.reading or L.LandscapeConfig().reading
    if args.preset == "paper":
        pcfg, preset_rows = L.paper_preset()
        reading = args.reading or pcfg.reading
    cfg = L.LandscapeConfig(epochs=args.epochs, retrains=args.retrains, optimizer=args.optimizer,
                            lr=args.lr, momentum=args.momentum, batch_size=args.batch_size,
                            standardize=not args.no_standardize, target_scaling=args.target_scaling,
                            record_every=args.record_every, flat_tol=args.flat_tol, seed=args.seed,
                            descent_share=args.descent_share, reading=reading)
    data = _data(args)
    if args.rows is None:
        args.rows = demo_rows(data)[0]
    elif args.rows.strip().lower() == "all":
        args.rows = None
    device = resolve_device(args.device)
    t0 = time.perf_counter()

    def progress(done, total, stage=""):
        if done == total:
            print("  training and derivatives: done", file=sys.stderr)

    confirm_cost(args, budget.landscape(len(data.rows(args.rows).X), data.n_features, cfg))
    res = L.run_landscape_tabular(data, cfg, rows=args.rows, device=device, progress=progress)
    extra = {"histories": res.histories()} if args.histories else {}
    if preset_rows is not None:
        extra["preset"] = {"name": args.preset, "settings": preset_rows}
    doc = export_json(res, data=data.name, rows=args.rows, n_rows=int(len(res.history.final_rows)),
                      orders=list(orders), **extra)
    doc["agreement_by_reading"] = [a for a in doc["agreement_by_reading"] if a["order"] in orders]
    path = write_json(args.out, doc)
    table = res.agreement_table()
    table = table[table["order"].isin(orders)].reset_index(drop=True)
    if args.csv:
        write_csv(args.csv, table, index=False)
    rate0, rate = doc["agreement_rate_run0"], doc["agreement_rate_all_runs"]
    fmt = lambda r: "n/a" if r is None or r != r else f"{r:.3f}"  # noqa: E731
    print(f"landscape {data.name}: {len(res.feature_names)} features, {cfg.epochs} epochs, "
          f"K={cfg.retrains} ({time.perf_counter() - t0:.1f}s) -> {path}")
    if preset_rows is not None:
        print(f"  preset {args.preset}:")
        for r in preset_rows:
            print(f"    {r['setting']:18s} {str(r['value']):48s} [{r['source']}]")
    print(f"  rows {args.rows or 'all'}; reading {cfg.reading}: {L.READING_FORMULAS[cfg.reading][2]}")
    print(f"  agreement with the Spearman sign ({cfg.reading}, 2nd derivative): run 0 {fmt(rate0)}, "
          f"all runs {fmt(rate)}")
    print("  agreement per reading (all runs):  " + "  ".join(f"order {k}" for k in orders))
    for r in L.READINGS:
        vals = [table[(table.reading == r) & (table.order == k)].iloc[0]["rate"] for k in orders]
        print(f"    {r:22s} " + "  ".join(f"{fmt(x):>7s}" for x in vals))
    print("  " + res.verdict())
    for f in doc["features"]:
        agrees = {True: "yes", False: "no", None: "-"}[f["agrees"]]
        share = "n/a" if f["share_agreeing"] is None else f"{f['share_agreeing']:.2f}"
        print(f"  {f['feature']:28s} spearman={f['spearman']:+.3f}  trend={f['trend']:12s} "
              f"agrees={agrees:3s}  majority={f['majority_trend']:12s} "
              f"consistency={f['consistency']:.2f}  share_agreeing={share}")
    return 0
