"""The executor options every dataset-level command shares: ``--executor inprocess|ray``,
``--ray-address``, ``--ray-cpus``, ``--store DIR`` (alias ``--resume DIR``), ``--chunk``.

Nothing heavy is imported here (``nnsens --help`` stays fast): Ray is imported when a Ray run
starts."""
from __future__ import annotations


def add_executor_args(p, chunk: bool = False) -> None:
    g = p.add_argument_group("executor (see docs/scale.md)")
    g.add_argument("--executor", choices=("inprocess", "ray"), default="inprocess",
                   help="inprocess (default): one unit after the other here; ray: the units as "
                        "Ray tasks (pip install ray==2.60.0, or nnsens[ray])")
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="an existing Ray cluster (e.g. ray://head:10001 or auto); default: a "
                        "local Ray instance on this machine")
    g.add_argument("--ray-cpus", type=int, default=None, metavar="N",
                   help="CPUs of the local Ray instance (default: all)")
    g.add_argument("--ray-gpus-per-task", type=float, default=0.0, metavar="G",
                   help="GPUs each Ray task asks for (e.g. 1 on GPU nodes; default 0)")
    g.add_argument("--store", "--resume", dest="store", default=None, metavar="DIR",
                   help="write each finished unit to DIR as it completes; a rerun with the same "
                        "DIR loads those units and computes only the rest")
    if chunk:
        g.add_argument("--chunk", type=int, default=None, metavar="N",
                       help="images per unit (rounded up to a multiple of --batch-size; default: "
                            "--batch-size)")


def executor_from_args(args):
    """The executor the options name (an :class:`~nnsens_core.executor.InProcess` by default)."""
    from ..errors import NnsensError
    from ..executor import make_executor
    name = getattr(args, "executor", "inprocess")
    address = getattr(args, "ray_address", None)
    if name != "ray":
        if address is not None or getattr(args, "ray_cpus", None) is not None:
            raise NnsensError("--ray-address / --ray-cpus need --executor ray")
        return make_executor("inprocess")
    return make_executor("ray", address, num_cpus=getattr(args, "ray_cpus", None),
                         num_gpus_per_task=getattr(args, "ray_gpus_per_task", 0.0))


def uses_units(args) -> bool:
    """True when the options ask for the unit path (another executor or a store)."""
    return getattr(args, "executor", "inprocess") != "inprocess" or \
        getattr(args, "store", None) is not None


def compare_fn(args):
    """``evaluate_dataset``, or (with ``--executor ray`` / ``--store``) its chunked form
    :func:`~nnsens_core.studies_dist.evaluate_distributed` on the chosen executor; same call."""
    if not uses_units(args):
        from ..saliency.compare import evaluate_dataset
        return evaluate_dataset

    def run(*a, **kw):
        from ..studies_dist import evaluate_distributed
        if args.executor == "ray":
            kw["device"] = args.device  # resolved on each worker (a GPU node has cuda)
        with executor_from_args(args) as ex:
            return evaluate_distributed(*a, executor=ex, store=args.store,
                                        chunk_size=getattr(args, "chunk", None),
                                        seed=getattr(args, "seed", 0), **kw)
    return run


def grid_map_fn(args, cfg, *study):
    """The ``map_fn`` of ``lambda_grid`` for these options (None: in-process, as before)."""
    if not uses_units(args):
        return None
    from ..studies_dist import grid_map, study_id
    return grid_map(executor_from_args(args), args.store, cfg=cfg,
                    study=study_id("grid", cfg, *study))


def retrain_map_fn(args, build, settings, *study):
    """The ``map_fn`` of ``training_robustness`` for these options (None: in-process)."""
    if not uses_units(args):
        return None
    from ..studies_dist import retrain_map, study_id
    return retrain_map(executor_from_args(args), args.store, build=build, settings=settings,
                       study=study_id("retrain", settings, *study))


def convergence_map_fn(args, *study):
    """The ``map_fn`` of ``sobol.convergence`` for these options (None: in-process, as before);
    ``study``: what determines the units (model, problem, settings), fingerprinted for the store."""
    if not uses_units(args):
        return None
    from ..studies_dist import convergence_map, study_id
    return convergence_map(executor_from_args(args), args.store,
                           study=study_id("sobol-convergence", *study))
