"""Large perturbation jobs as units for an :mod:`~nnsens_core.executor`: blocks of perturbations.

* local sensitivity: :func:`local_distributed` splits each image's finite differences (every
  pixel or k x k tile of every channel, :func:`~nnsens_core.local_sensitivity.local_sensitivity`)
  into blocks of consecutive perturbations; a unit (:func:`local_block`) computes one block's
  values for every block of the network (:func:`~nnsens_core.local_sensitivity.finite_values`);
* occlusion: :func:`occlusion_distributed` splits the (image, position) pairs of
  :func:`~nnsens_core.saliency.occlusion.occlusion` (2-D images or volumes) into blocks; a unit
  (:func:`occlusion_block`) computes one block's score drops
  (:func:`~nnsens_core.saliency.occlusion.occlusion_drops`).

The batch size is fixed once by the driver (the config's, else the one the single run would pick
on the driver's device) and every block is a whole number of batches, so each perturbation is
computed in the same batch as in the single call: the merged maps are those of the single call,
bit for bit where the computation is deterministic (one torch thread per process on CPU). Exact
configs only: the gradient estimate has no perturbations to split, and approximate inference
(``tau``, drill-down) calibrates over all of them.

Each unit returns raw values (:class:`BlockValues`), written to a
:class:`~nnsens_core.executor.ResultStore` by :class:`BlockCodec` as it finishes; the model and
the inputs travel once in ``shared``. Every unit repeats the unperturbed pass of its image(s)
(local: one forward pass and the engine's plan; occlusion: the N unoccluded inputs), the price of
independent units.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch

from .errors import NnsensError
from .executor import Executor, InProcess, ResultStore

__all__ = ["Block", "BlockCodec", "BlockValues", "block_ranges", "local_block", "local_distributed",
           "occlusion_block", "occlusion_distributed"]


@dataclass(frozen=True)
class Block:
    """Perturbations ``start`` .. ``stop - 1`` (block ``number``; for local sensitivity of image
    ``image``, for occlusion of the flat (image, position) list)."""
    number: int
    start: int
    stop: int
    image: int | None = None

    @property
    def key(self) -> str:
        head = "" if self.image is None else f"img{self.image:05d}_"
        return f"{head}blk{self.number:06d}"


@dataclass(frozen=True, eq=False)
class BlockValues:
    """One unit's result: ``values`` (local: ``(perturbations, blocks)``; occlusion: the drops),
    ``base`` (local: the base norms per block; occlusion: empty), the forward passes it made, the
    engine it ran (``extra``) and its seconds."""
    values: torch.Tensor
    base: torch.Tensor
    n_forward: int
    extra: dict
    seconds: float


class BlockCodec:
    """A block on disk: values and base as arrays (bit for bit), the rest as JSON."""

    def encode(self, r: BlockValues):
        return ({"values": r.values.numpy(), "base": r.base.numpy()},
                {"n_forward": r.n_forward, "extra": r.extra, "seconds": r.seconds})

    def decode(self, arrays, meta) -> BlockValues:
        extra = dict(meta["extra"])
        if "head_layers" in extra:
            extra["head_layers"] = tuple(extra["head_layers"])
        return BlockValues(torch.from_numpy(arrays["values"]), torch.from_numpy(arrays["base"]),
                           int(meta["n_forward"]), extra, float(meta["seconds"]))


def block_ranges(total: int, block_size: int, batch_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive blocks covering ``range(total)``: ``block_size`` rounded up
    to a multiple of ``batch_size`` (so every block is a whole number of the single run's
    batches)."""
    if not (isinstance(block_size, int) and not isinstance(block_size, bool) and block_size >= 1):
        raise NnsensError(f"block_size={block_size!r} must be a whole number >= 1 (perturbations "
                          "per unit)")
    size = -(-block_size // batch_size) * batch_size
    return [(s, min(s + size, total)) for s in range(0, total, size)]


def _study(*parts) -> str:
    from .studies_dist import study_id
    return study_id(*parts)


def _run(executor, fn, units, shared, store, codec_study, progress):
    st = ResultStore(store, BlockCodec(), codec_study) if store is not None else None
    ex = executor or InProcess()
    if not isinstance(ex, Executor):
        raise NnsensError(f"executor must be an Executor (InProcess, RayExecutor), got "
                          f"{type(ex).__name__}")
    return ex.map(fn, units, shared=shared, store=st, progress=progress)


# --------------------------------------------------------------------------- local sensitivity

def local_block(unit: Block, shared: dict) -> BlockValues:
    """The finite-difference values of one block of perturbations of image ``unit.image`` (a plain
    function: any executor can run it)."""
    from .local_sensitivity import finite_values
    t0 = time.perf_counter()
    vals, base, n_fwd, extra = finite_values(shared["model"], shared["xs"][unit.image],
                                             shared["mapping"], shared["cfg"], unit.start,
                                             unit.stop, shared["device"],
                                             expected_shape=shared["expected_shape"])
    return BlockValues(vals, base, n_fwd, extra, time.perf_counter() - t0)


def local_distributed(model, xs: torch.Tensor, blocks, cfg=None, device="auto", *,
                      block_size: int, executor: Executor | None = None, store=None,
                      progress=None, expected_shape=None) -> list:
    """:func:`~nnsens_core.local_sensitivity.local_sensitivity_many` in units of ``block_size``
    perturbations of one image (rounded up to whole batches) on ``executor`` (default
    in-process): the same maps and base norms (bit for bit where deterministic). ``store``: a
    directory where each finished block is written; a rerun with the same directory computes
    only the missing blocks. ``progress(done, total, stage="units")`` counts blocks.

    Each result's ``n_forward`` counts the passes the blocks made (one unperturbed pass per
    block), ``seconds`` the blocks' compute time, and ``extra`` adds ``blocks`` and
    ``block_size``."""
    from . import _validate as v
    from ._local_results import LocalResult
    from .device import resolve_device
    from .local_sensitivity import (
        LocalConfig,
        _spread,
        finite_batch_size,
        n_perturbations,
        resolve_blocks,
    )
    from .zoo import module_of
    cfg = LocalConfig() if cfg is None else cfg
    if not isinstance(cfg, LocalConfig):
        raise NnsensError(f"cfg must be a LocalConfig, got {type(cfg).__name__}")
    if cfg.method != "finite" or cfg.tau > 0:
        raise NnsensError(f"blocks of perturbations need exact finite differences (method='finite', "
                          f"tau=0), not method={cfg.method!r}, tau={cfg.tau!r}; run the gradient "
                          "estimate or approximate inference in one piece (no --block)")
    v.check_images(xs, expected_shape, what="xs")
    net = module_of(model)
    mapping = resolve_blocks(net, blocks)
    xs = xs.detach().to("cpu", torch.float32).contiguous()
    shape = tuple(xs.shape[1:])
    bs = finite_batch_size(net, xs[0], mapping, cfg, resolve_device(device)) if len(xs) else 1
    run_cfg = dataclasses.replace(cfg, batch_size=bs)
    ranges = block_ranges(n_perturbations(shape, cfg), block_size, bs)
    units = [Block(k, s, e, i) for i in range(len(xs)) for k, (s, e) in enumerate(ranges)]
    shared = {"model": net, "xs": xs, "mapping": mapping, "cfg": run_cfg,
              "device": device if isinstance(device, str) else str(device),
              "expected_shape": None if expected_shape is None else tuple(expected_shape)}
    study = _study("local-blocks", net, xs, sorted(mapping.items()), run_cfg, len(ranges))
    parts = _run(executor, local_block, units, shared, store, study, progress)
    out = []
    for i in range(len(xs)):
        mine = parts[i * len(ranges):(i + 1) * len(ranges)]
        vals = torch.cat([p.values for p in mine])
        maps = _spread(vals.T, shape, cfg.patch).float().cpu()
        extra = {**mine[0].extra, "blocks": len(mine), "block_size": ranges[0][1] - ranges[0][0]}
        out.append(LocalResult(maps, tuple(mapping), tuple(mapping.values()), mine[0].base, cfg,
                               sum(p.n_forward for p in mine), sum(p.seconds for p in mine),
                               extra))
    return out


# --------------------------------------------------------------------------- occlusion

def occlusion_block(unit: Block, shared: dict) -> BlockValues:
    """The score drops of one block of (image, position) pairs (a plain function)."""
    from .saliency.occlusion import occlusion_drops
    t0 = time.perf_counter()
    d, details = occlusion_drops(shared["model"], shared["x"], shared["classes"], shared["cfg"],
                                 unit.start, unit.stop, shared["device"], shared["spec"])
    n_fwd = (unit.stop - unit.start) + len(shared["x"])
    return BlockValues(d, torch.zeros(0), n_fwd, details, time.perf_counter() - t0)


def occlusion_distributed(model, x: torch.Tensor, classes, cfg=None, device="auto", spec=None, *,
                          block_size: int, executor: Executor | None = None, store=None,
                          progress=None, return_details: bool = False):
    """:func:`~nnsens_core.saliency.occlusion.occlusion` (exact configs; images or volumes) in
    units of ``block_size`` (image, position) pairs (rounded up to whole ``cfg.batch_size``
    batches) on ``executor``: the same maps (bit for bit where deterministic). ``store`` /
    ``progress`` as in :func:`local_distributed`. ``return_details``: also the engine details of
    the single call, plus ``blocks``, ``block_size`` and ``n_forward`` (the passes the blocks
    made, each scoring the N unoccluded inputs again)."""
    from .device import inference_model, resolve_device
    from .saliency._common import _classes, check_model_input
    from .saliency.occlusion import (
        OcclusionConfig,
        occlusion_from_drops,
        occlusion_positions,
    )
    from .zoo import module_of
    cfg = OcclusionConfig() if cfg is None else cfg
    if not isinstance(cfg, OcclusionConfig):
        raise NnsensError(f"cfg must be an OcclusionConfig, got {type(cfg).__name__}")
    if cfg.approximate:
        raise NnsensError(f"blocks of occlusion positions need an exact config; tau={cfg.tau!r}, "
                          f"drill_top={cfg.drill_top!r}, coarse_stride={cfg.coarse_stride!r} "
                          "calibrate or drill down over all positions: set tau=0, drill_top=1, "
                          "coarse_stride=None, or run it in one piece with occlusion()")
    net = module_of(model)
    x, n_out = check_model_input(inference_model(net, resolve_device(device)), x, spec,
                                 resolve_device(device))
    x = x.to("cpu").contiguous()
    cls = list(_classes(classes, len(x), n_out)) if len(x) else []
    sized = cfg.sized(x.shape[2:])
    total = len(x) * len(occlusion_positions(x.shape, sized, spatial=x.ndim - 2))
    ranges = block_ranges(total, block_size, cfg.batch_size)
    units = [Block(k, s, e) for k, (s, e) in enumerate(ranges)]
    shared = {"model": net, "x": x, "classes": cls, "cfg": sized, "spec": spec,
              "device": device if isinstance(device, str) else str(device)}
    study = _study("occlusion-blocks", net, x, np.asarray(cls, dtype=np.int64), sized,
                   repr(spec), len(ranges))
    parts = _run(executor, occlusion_block, units, shared, store, study, progress)
    drops = torch.cat([p.values for p in parts]) if parts else torch.zeros(0)
    maps = occlusion_from_drops(drops, tuple(x.shape), sized)
    if not return_details:
        return maps
    details = {**(parts[0].extra if parts else {"engine": "full"}), "blocks": len(parts),
               "block_size": ranges[0][1] - ranges[0][0] if ranges else 0,
               "n_forward": sum(p.n_forward for p in parts)}
    return maps, details
