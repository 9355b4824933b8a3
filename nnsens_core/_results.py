"""The one result convention of nnsens_core.

Every result type has ``.config`` (the frozen config dataclass that produced it, or a small frozen
dataclass of the settings), ``.seconds`` (wall time of the computation), ``.to_dict()`` (JSON-safe:
dict / list / str / int / float / bool / None only, NaN and inf as None; with ``config``,
``seconds`` and ``nnsens_version``), ``.to_frame()`` where the result is tabular, and ``.arrays()``
(``{name: numpy array}`` for an ``.npz``) where it holds maps; big arrays never go into ``to_dict``.

:func:`export_json` / :func:`dumps` build the JSON document that both the CLI writes and the
dashboard offers for download, so the two are the same bytes for the same run.
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON types: numpy / torch arrays and scalars, dataclasses, tuples, sets and
    paths converted; non-finite floats become None; anything else becomes its ``repr``."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if type(obj).__module__.startswith("torch") and hasattr(obj, "tolist"):
        return jsonable(obj.detach().cpu().tolist())
    return repr(obj)


class Result:
    """Mixin of every result type: subclasses define ``config``, ``seconds`` and ``_payload()``
    (the numbers, as a dict); ``arrays()`` and ``to_frame()`` where they apply."""

    def _payload(self) -> dict:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def to_dict(self) -> dict:
        """JSON-safe document: ``config``, ``seconds``, ``nnsens_version`` and the numbers."""
        from . import __version__
        return jsonable({"nnsens_version": __version__, "config": self.config,
                         "seconds": self.seconds, **self._payload()})

    def arrays(self) -> dict[str, np.ndarray]:
        """The big arrays of the result, for an ``.npz`` (empty for results without maps)."""
        return {}


def export_json(result: Result, **context) -> dict:
    """The exported document: ``result.to_dict()`` plus what the caller adds (model and data
    names, image indices, ...). The CLI writes it and the dashboard offers it for download."""
    doc = result.to_dict()
    doc.update(jsonable(context))
    return doc


def dumps(doc: dict) -> str:
    """The one JSON text of an export (2-space indent, strict JSON: no NaN)."""
    return json.dumps(jsonable(doc), indent=2, allow_nan=False)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """``arrays`` as the bytes of a compressed ``.npz``."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula (it starts with ``= + - @``, a tab or
    a carriage return) prefixed with ``'``; anything else (numbers too) unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


_MARKDOWN_SPECIALS = re.compile(r"([\\`*_\[\]#|~$@])")
_SCHEME_COLON = re.compile(r"(?<=[A-Za-z]):")   # http: javascript: mailto: (autolinks)
_WWW = re.compile(r"(?i)\b(www)\.")


def markdown_text(text, html: bool = True) -> str:
    """``text`` (a user-provided name: class folder, file, feature, model) escaped so that markdown
    shows it literally: no links or autolinks, images, emphasis, code, table cells (``|``), colour
    directives or LaTeX; newlines become spaces. With ``html`` (for markdown files, which renderers
    such as GitHub's show with some HTML) ``&``, ``<`` and ``>`` become entities too; the dashboard
    (whose markdown never renders raw HTML) uses ``html=False`` so messages read as they were."""
    out = " ".join(str(text).split())
    if html:
        out = out.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    out = _MARKDOWN_SPECIALS.sub(r"\\\1", out)
    return _WWW.sub(r"\1\\.", _SCHEME_COLON.sub(r"\\:", out))


def csv_bytes(frame, index: bool = True) -> bytes:
    """The one CSV text of an export (UTF-8): ``frame`` with its text cells, column names and
    index labels neutralised by :func:`safe_cell` (formula injection); numbers stay numbers.
    The CLI writes it and the dashboard offers it for download."""
    import pandas as pd
    df = frame.copy()
    text = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])
            or pd.api.types.is_bool_dtype(df[c])]
    for c in text:
        df[c] = df[c].map(safe_cell)

    def rename(labels):
        if isinstance(labels, pd.MultiIndex):
            return pd.MultiIndex.from_tuples([tuple(safe_cell(v) for v in t) for t in labels],
                                             names=[safe_cell(n) for n in labels.names])
        return pd.Index([safe_cell(v) for v in labels], name=safe_cell(labels.name))

    df.columns = rename(df.columns)
    df.index = rename(df.index)
    return df.to_csv(index=index).encode()


def image_context(data, indices) -> dict:
    """Context of images taken from a dataset: its name, the indices, their labels and the class
    names (the same keys for the CLI and the dashboard)."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    return {"data": data.name, "image_indices": idx.tolist(),
            "labels": np.asarray(data.labels)[idx].tolist(), "class_names": list(data.class_names)}
