"""Content fingerprints: what identifies a dataset or a model in caches shared by many users.

An uploaded file must never be identified by its name: two users who each upload a different
``model.pt`` would otherwise share one cache entry (and one user would see the other's model and
results). :func:`fingerprint` hashes what was loaded (every tensor and array, names, shapes, dtypes,
the model's class and spec), so it covers the file's bytes and the load options that shaped them
(input size, channels, target column, ...). Equal content gives equal fingerprints in any process.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import torch

from .errors import NnsensError


def _feed(h, obj) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"tensor{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        h.update(f"array{a.dtype.str}{a.shape}".encode())
        if a.dtype != object:
            h.update(a.tobytes())
            return
        for v in a.reshape(-1):  # e.g. a text column: its values, one by one
            if not (v is None or isinstance(v, (str, int, float, bool, np.generic))):
                raise NnsensError(f"an array holding {type(v).__name__} objects cannot be "
                                  "fingerprinted; use numbers or text")
            _feed(h, v.item() if isinstance(v, np.generic) else v)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        h.update(b"bytes%d" % len(obj))
        h.update(bytes(obj))
    elif isinstance(obj, torch.nn.Module):
        h.update(f"module:{type(obj).__module__}.{type(obj).__qualname__}".encode())
        for k, v in obj.state_dict().items():
            h.update(k.encode())
            _feed(h, v)
        h.update(b"training" if obj.training else b"eval")
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        h.update(f"dataclass:{type(obj).__qualname__}".encode())
        for f in dataclasses.fields(obj):
            h.update(f.name.encode())
            _feed(h, getattr(obj, f.name))
    elif isinstance(obj, dict):
        h.update(b"dict%d" % len(obj))
        for k in sorted(obj, key=str):
            h.update(str(k).encode())
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(b"seq%d" % len(obj))
        for v in obj:
            _feed(h, v)
    elif obj is None or isinstance(obj, (str, int, float, bool)):
        h.update(json.dumps(obj).encode())
    else:
        h.update(f"{type(obj).__qualname__}:{obj!r}".encode())


def fingerprint(obj) -> str:
    """``"sha256:<hex>"`` of ``obj``'s content: a model (``nn.Module`` / ``LoadedModel``: class,
    state_dict, spec), a dataset (``TabularData`` / ``ImageData``: arrays and names), raw bytes, or
    arrays / tensors and containers of them."""
    h = hashlib.sha256()
    _feed(h, obj)
    return "sha256:" + h.hexdigest()
