"""One executor interface for dataset-level studies, two back-ends.

A study is a list of independent *units* (a chunk of images x methods for ``compare``, one
training per run / fold, one mask per lambda cell, one N of a convergence study) and a plain
function ``fn(unit)`` -- or ``fn(unit, shared)`` when ``shared`` is given -- that computes one.
:meth:`Executor.map` runs them and returns the results in unit order:

* :class:`InProcess` (the default): one after the other in this process, exactly as the studies
  always ran;
* :class:`RayExecutor`: as Ray tasks on a local Ray instance (``address=None``) or on an existing
  cluster (``address="ray://head:10001"`` or ``"auto"``). ``fn`` and ``shared`` (the model, the
  data) are put in Ray's object store ONCE and every task gets them by reference; a task that
  raises or whose worker dies is retried ``max_retries`` times; a unit that still fails is
  reported by its key (:class:`~nnsens_core.errors.NnsensError`) after every other unit finished.

``store`` (a :class:`ResultStore`: one ``.npz`` per finished unit, written as each unit completes,
by atomic rename) makes a run resumable: units already in the store are loaded, not recomputed.
Ray is optional: ``pip install ray==2.60.0`` (or ``pip install nnsens[ray]``); it is imported only
when a :class:`RayExecutor` first runs.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import NnsensError

__all__ = ["EXECUTORS", "Codec", "Executor", "InProcess", "RayExecutor", "ResultStore",
           "make_executor"]

EXECUTORS = ("inprocess", "ray")
RAY_REQUIREMENT = "ray==2.60.0"
RAY_INSTALL = "pip install ray==2.60.0 (or `pip install nnsens[ray]`)"
_KEY = re.compile(r"^[A-Za-z0-9_.=-]{1,120}$")
_META = "__meta__"


# --------------------------------------------------------------------------- result store

class Codec(Protocol):
    """How one unit's result goes to disk: ``encode(result) -> (arrays, meta)`` (numpy arrays
    and a JSON-able dict) and ``decode(arrays, meta) -> result``; a decoded result must equal
    the original (bit for bit for the arrays)."""

    def encode(self, result) -> tuple[dict[str, np.ndarray], dict]: ...

    def decode(self, arrays: dict[str, np.ndarray], meta: dict): ...


class ResultStore:
    """A results directory: ``<key>.npz`` per finished unit (arrays + a JSON ``__meta__``, no
    pickle), and ``study.json`` naming the study it belongs to (``study``: any string that
    identifies the settings and data, e.g. a fingerprint); a directory of another study is refused
    so a resume never mixes two studies."""

    def __init__(self, root: str | Path, codec: Codec, study: str = ""):
        self.root = Path(root)
        self.codec = codec
        self.study = str(study)
        if self.root.exists() and not self.root.is_dir():
            raise NnsensError(f"store {str(self.root)!r} is a file; give a directory")
        self.root.mkdir(parents=True, exist_ok=True)
        tag = self.root / "study.json"
        if tag.exists():
            try:
                have = json.loads(tag.read_text()).get("study")
            except (OSError, ValueError):
                have = None
            if have != self.study:
                raise NnsensError(f"store {str(self.root)!r} holds the units of another study "
                                  f"({have!r}, this one is {self.study!r}); give a new directory "
                                  "or delete it")
        else:
            self._atomic(tag, lambda f: f.write(json.dumps({"study": self.study}).encode()))

    def path(self, key: str) -> Path:
        if not isinstance(key, str) or not _KEY.match(key):
            raise NnsensError(f"unit key {key!r} must be 1-120 characters of A-Z a-z 0-9 _ . = -")
        return self.root / f"{key}.npz"

    def keys(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.npz"))

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def save(self, key: str, result) -> None:
        arrays, meta = self.codec.encode(result)
        if _META in arrays:
            raise NnsensError(f"a codec may not name an array {_META!r}")
        payload = {k: np.asarray(a) for k, a in arrays.items()}
        payload[_META] = np.array(json.dumps(meta, allow_nan=True))
        self._atomic(self.path(key), lambda f: np.savez(f, **payload))

    def load(self, key: str):
        """The stored result of ``key``, or None when its file is missing or unreadable (it is
        then recomputed)."""
        path = self.path(key)
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files if k != _META}
                meta = json.loads(str(z[_META][()]))
        except (OSError, ValueError, KeyError):
            return None
        return self.codec.decode(arrays, meta)

    def _atomic(self, path: Path, write: Callable) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=path.suffix)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


# --------------------------------------------------------------------------- executors

def map_units(work: Callable, units: Sequence, map_fn: Callable | None = None, progress=None,
              stage: str = "") -> list:
    """``[work(u) for u in units]``, in order: here with ``progress(done, total, stage=stage)``
    after each unit, or through ``map_fn(work, units)`` (e.g. an executor's ``map``) with one
    progress call at the end. The studies' one loop over their units."""
    if map_fn is None:
        out = []
        for k, u in enumerate(units):
            out.append(work(u))
            if progress is not None:
                progress(k + 1, len(units), stage=stage)
        return out
    out = list(map_fn(work, units))
    if progress is not None:
        progress(len(units), len(units), stage=stage)
    return out


def _unit_key(unit, i: int) -> str:
    key = getattr(unit, "key", None)
    return str(key) if key is not None else f"unit{i:05d}"


class Executor:
    """Base of the back-ends: :meth:`map` (resume, store, progress) around ``_run``.

    An executor is also a ``map_fn(fn, units)`` (``__call__``), the hook of
    :func:`~nnsens_core.robustness.training_robustness` and the other studies."""

    name = "executor"

    def map(self, fn: Callable, units: Sequence, *, shared: Any = None,
            key: Callable[[Any], str] | None = None, progress=None,
            store: ResultStore | None = None) -> list:
        """``[fn(u) for u in units]`` (``fn(u, shared)`` with ``shared``) in unit order.

        ``key(unit)`` names a unit in the store and in errors (default: ``unit.key``, else its
        position). ``progress(done, total, stage="units")`` after each finished (or loaded) unit.
        ``store``: units found there are loaded instead of computed; each computed one is saved
        as soon as it finishes.
        """
        if not callable(fn):
            raise NnsensError(f"fn must be callable, got {type(fn).__name__}")
        units = list(units)
        keys = [key(u) if key is not None else _unit_key(u, i) for i, u in enumerate(units)]
        if len(set(keys)) != len(keys):
            dup = sorted({k for k in keys if keys.count(k) > 1})[:3]
            raise NnsensError(f"unit keys must be distinct; {dup} repeat")
        n = len(units)
        results: list = [None] * n
        todo = []
        done = 0
        for i, k in enumerate(keys):
            got = store.load(k) if store is not None and store.has(k) else None
            if got is None:
                todo.append(i)
            else:
                results[i] = got
                done += 1
        self.loaded = done
        self.computed = 0
        if progress is not None and done:
            progress(done, n, stage="units")

        def finished(i: int, result) -> None:
            nonlocal done
            results[i] = result
            if store is not None:
                store.save(keys[i], result)
            done += 1
            self.computed += 1
            if progress is not None:
                progress(done, n, stage="units")

        if todo:
            self._run(fn, [(i, units[i], keys[i]) for i in todo], shared, shared is not None,
                      finished)
        return results

    def __call__(self, fn: Callable, units: Sequence) -> list:
        return self.map(fn, units)

    def _run(self, fn, work, shared, has_shared, finished) -> None:  # pragma: no cover
        raise NotImplementedError

    def close(self) -> None:
        """Release what the executor started (nothing for :class:`InProcess`)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class InProcess(Executor):
    """Units one after the other in this process (today's behaviour; errors propagate as they are,
    with a note naming the unit)."""

    name = "inprocess"

    def _run(self, fn, work, shared, has_shared, finished) -> None:
        for i, unit, k in work:
            try:
                result = fn(unit, shared) if has_shared else fn(unit)
            except Exception as exc:
                if hasattr(exc, "add_note"):
                    exc.add_note(f"(in unit {k})")
                raise
            finished(i, result)


def _export_package_path() -> None:
    """Local workers inherit this process's environment: make sure they can import nnsens_core
    when it runs from a checkout (not installed)."""
    root = str(Path(__file__).resolve().parent.parent)
    have = os.environ.get("PYTHONPATH", "")
    if root not in have.split(os.pathsep):
        os.environ["PYTHONPATH"] = root + (os.pathsep + have if have else "")


def _call(fn, unit, shared, has_shared: bool):
    """The Ray task body (top-level ObjectRef arguments arrive resolved)."""
    return fn(unit, shared) if has_shared else fn(unit)


def import_ray():
    """``ray``, or an NnsensError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise NnsensError(f"the Ray executor needs Ray: {RAY_INSTALL}") from None
    return ray


class RayExecutor(Executor):
    """Units as Ray tasks (see the module docstring).

    ``address``: None starts (or reuses) a local Ray instance with ``num_cpus`` CPUs (default:
    all); otherwise the address of an existing cluster (``"auto"``, ``"ray://host:10001"``).
    ``max_retries``: extra attempts of a task whose worker died or that raised.
    ``num_cpus_per_task`` / ``num_gpus_per_task``: the resources one task asks for (e.g.
    ``num_gpus_per_task=1`` puts one task on each GPU of a GPU node; the task then sees that GPU
    as ``cuda``). ``runtime_env``: passed to ``ray.init`` (e.g. ``{"py_modules": [...]}`` when the
    cluster's nodes do not have nnsens installed).
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 max_retries: int = 2, num_cpus_per_task: float = 1, num_gpus_per_task: float = 0,
                 runtime_env: dict | None = None):
        if not (isinstance(max_retries, int) and max_retries >= 0):
            raise NnsensError(f"max_retries={max_retries!r} must be an integer >= 0")
        if num_cpus is not None and not (isinstance(num_cpus, int) and num_cpus >= 1):
            raise NnsensError(f"num_cpus={num_cpus!r} must be an integer >= 1 (or None: all)")
        if address is not None and num_cpus is not None:
            raise NnsensError("num_cpus applies to a local Ray instance; with --ray-address the "
                              "cluster's own resources are used, drop num_cpus")
        if not num_cpus_per_task > 0 or num_gpus_per_task < 0:
            raise NnsensError(f"num_cpus_per_task={num_cpus_per_task!r} must be > 0 and "
                              f"num_gpus_per_task={num_gpus_per_task!r} >= 0")
        self.address = address
        self.num_cpus = num_cpus
        self.max_retries = max_retries
        self.num_cpus_per_task = num_cpus_per_task
        self.num_gpus_per_task = num_gpus_per_task
        self.runtime_env = runtime_env
        self._started = False
        self._remote = None

    def _ray(self):
        ray = import_ray()
        if not ray.is_initialized():
            kw: dict = {"include_dashboard": False, "log_to_driver": True}
            if self.address is None:
                kw["num_cpus"] = self.num_cpus
                _export_package_path()
            else:
                kw["address"] = self.address
            if self.runtime_env is not None:
                kw["runtime_env"] = self.runtime_env
            try:
                ray.init(**kw)
            except ConnectionError as exc:
                raise NnsensError(f"cannot reach the Ray cluster at {self.address!r}: "
                                  f"{str(exc)[:200]}; check --ray-address (e.g. "
                                  "ray://head-node:10001) or drop it for a local Ray") from None
            self._started = True
        if self._remote is None:
            self._remote = ray.remote(_call)
        return ray

    def _run(self, fn, work, shared, has_shared, finished) -> None:
        ray = self._ray()
        fn_ref = ray.put(fn)                     # once, whatever the number of units
        shared_ref = ray.put(shared) if has_shared else None
        task = self._remote.options(max_retries=self.max_retries, retry_exceptions=True,
                                    num_cpus=self.num_cpus_per_task,
                                    num_gpus=self.num_gpus_per_task)
        pending = {task.remote(fn_ref, unit, shared_ref, has_shared): (i, k)
                   for i, unit, k in work}
        failures = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                i, k = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    cause = getattr(exc, "cause", None) or exc
                    text = str(cause).strip().splitlines()
                    failures.append((k, f"{type(cause).__name__}: {text[-1] if text else ''}"))
                    continue
                finished(i, result)
        if failures:
            shown = "; ".join(f"unit {k}: {why[:300]}" for k, why in failures[:5])
            more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
            raise NnsensError(f"{len(failures)} of {len(work)} units failed after "
                              f"{1 + self.max_retries} attempts each: {shown}{more}; the "
                              "finished units are kept when a store (--store) is given: fix the "
                              "cause and rerun with the same --store to compute only the rest")

    def close(self) -> None:
        """Shut Ray down if this executor started it."""
        if self._started:
            import ray
            ray.shutdown()
            self._started = False
            self._remote = None


def make_executor(name: str = "inprocess", address: str | None = None, **kw) -> Executor:
    """``"inprocess"`` (default) or ``"ray"`` (``address``, ``num_cpus``, ``max_retries``, ... as
    in :class:`RayExecutor`)."""
    if name == "inprocess":
        if address is not None:
            raise NnsensError("--ray-address needs --executor ray")
        return InProcess()
    if name == "ray":
        return RayExecutor(address=address, **kw)
    raise NnsensError(f"executor {name!r} is unknown; use one of {EXECUTORS}")

