"""A model's description next to its weights: one JSON entry with what
:func:`~nnsens_core.loading.load_model` needs besides the state_dict (architecture and its keyword
arguments, input shape, class names, normalisation), in the format of the shipped
``models/manifest.json`` (``{name: {file, arch, arch_kwargs, input_shape, class_names, mean, std,
resize, ...}}``; a single entry without the name level is accepted too).

The dashboard's "Train a CNN" writes such an entry with the trained weights, and its "Add a CNN"
reads it back, so a trained model reloads with the same classes and normalisation.
"""
from __future__ import annotations

import json
import math

from .errors import NnsensError
from .zoo import ARCHITECTURES, IMAGE, ModelSpec

MAX_MANIFEST_BYTES = 1 << 20
_REQUIRED = ("arch", "input_shape", "class_names")


def manifest_entry(spec: ModelSpec, file: str, **extra) -> dict:
    """The manifest entry of an image model described by ``spec`` whose state_dict is saved as
    ``file``; ``extra`` (numbers / text, e.g. ``balanced_accuracy``) is added as is."""
    doc = {"file": file, "arch": spec.arch, "arch_kwargs": dict(spec.arch_kwargs),
           "input_shape": [int(s) for s in spec.input_shape],
           "class_names": [str(c) for c in spec.class_names],
           "mean": [float(m) for m in spec.mean], "std": [float(s) for s in spec.std],
           "resize": spec.resize}
    doc.update(extra)
    return doc


def _entry(doc, file_name: str | None) -> tuple[str | None, dict]:
    """(name, entry) of a manifest: a single entry, or the one of ``{name: entry}`` whose ``file``
    is ``file_name`` (or the only one)."""
    if not isinstance(doc, dict):
        raise NnsensError("the manifest is not a JSON object; give {\"arch\": ..., \"input_shape\": "
                          "..., \"class_names\": ...} or {name: {...}} as models/manifest.json")
    if "arch" in doc:
        return None, doc
    entries = {k: e for k, e in doc.items() if isinstance(e, dict) and "arch" in e}
    if not entries:
        raise NnsensError("the manifest has no model entry (an object with 'arch', 'input_shape' "
                          "and 'class_names')")
    if len(entries) == 1:
        return next(iter(entries.items()))
    match = [(k, e) for k, e in entries.items() if file_name and e.get("file") == file_name]
    if len(match) != 1:
        raise NnsensError(f"the manifest describes {len(entries)} models ({sorted(entries)}) and "
                          f"{'none' if not match else 'several'} has file {file_name!r}; upload a "
                          "manifest with the one entry of these weights")
    return match[0]


def _floats(entry: dict, key: str, n: int) -> tuple[float, ...]:
    v = entry.get(key, [])
    if not isinstance(v, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                          and math.isfinite(x) for x in v):
        raise NnsensError(f"the manifest's {key} is {v!r}; give a list of numbers, one per channel")
    if v and len(v) != n:
        raise NnsensError(f"the manifest's {key} has {len(v)} value(s) for {n} input channel(s)")
    return tuple(float(x) for x in v)


def spec_from_manifest(source: bytes | str | dict, *, file_name: str | None = None,
                       name: str | None = None) -> ModelSpec:
    """The :class:`~nnsens_core.zoo.ModelSpec` of an image model from its manifest (JSON bytes /
    text or the parsed object; see the module docstring); ``file_name``: the weights' file name,
    to pick the entry of a manifest of several models; ``name``: the spec's name (default: the
    entry's name or ``file_name``). Every field is checked, with one message naming the bad one."""
    doc = source
    if isinstance(source, (bytes, bytearray, str)):
        if len(source) > MAX_MANIFEST_BYTES:
            raise NnsensError(f"the manifest is {len(source) / 2**20:.1f} MiB, over the 1 MiB limit "
                              "for a JSON model description")
        try:
            doc = json.loads(source)
        except (ValueError, UnicodeDecodeError) as exc:
            raise NnsensError(f"the manifest is not valid JSON ({str(exc)[:120]})") from None
    key, e = _entry(doc, file_name)
    missing = [k for k in _REQUIRED if k not in e]
    if missing:
        raise NnsensError(f"the manifest entry lacks {', '.join(missing)}; it needs arch, "
                          "input_shape and class_names (arch_kwargs, mean, std optional)")
    arch = e["arch"]
    if arch not in ARCHITECTURES or ARCHITECTURES[arch][0] != IMAGE:
        archs = sorted(a for a, (task, _) in ARCHITECTURES.items() if task == IMAGE)
        raise NnsensError(f"the manifest's arch {arch!r} is not an image architecture; use one of "
                          f"{archs}")
    shape = e["input_shape"]
    if not isinstance(shape, list) or len(shape) not in (3, 4) or not all(
            isinstance(s, int) and not isinstance(s, bool) and 0 < s <= 4096 for s in shape):
        raise NnsensError(f"the manifest's input_shape is {shape!r}; give [C, H, W] or "
                          "[C, D, H, W] of whole numbers in 1..4096")
    if (arch == "cnn3d-small") != (len(shape) == 4):
        takes = "volumes [C, D, H, W]" if arch == "cnn3d-small" else "images [C, H, W]"
        raise NnsensError(f"arch {arch!r} takes {takes}; the manifest's input_shape is {shape}")
    classes = e["class_names"]
    if not isinstance(classes, list) or len(classes) < 2 or not all(
            isinstance(c, str) and c for c in classes):
        raise NnsensError(f"the manifest's class_names is {classes!r}; give a list of at least two "
                          "names")
    kwargs = e.get("arch_kwargs", {})
    if not isinstance(kwargs, dict) or not all(
            isinstance(v, (int, float, bool)) for v in kwargs.values()):
        raise NnsensError(f"the manifest's arch_kwargs is {kwargs!r}; give an object of numbers "
                          "(e.g. {\"num_classes\": 2, \"width\": 8})")
    kwargs = dict(kwargs)
    if kwargs.setdefault("num_classes", len(classes)) != len(classes):
        raise NnsensError(f"the manifest's arch_kwargs has num_classes={kwargs['num_classes']} but "
                          f"{len(classes)} class_names")
    c = shape[0]
    if "in_channels" in kwargs and kwargs["in_channels"] != c:
        raise NnsensError(f"the manifest's arch_kwargs has in_channels={kwargs['in_channels']} but "
                          f"input_shape has {c} channel(s)")
    if c != (1 if arch == "cnn3d-small" else 3) or "in_channels" in kwargs:
        kwargs["in_channels"] = c
    resize = e.get("resize", "letterbox")
    if resize not in ("letterbox", "crop", "stretch"):
        raise NnsensError(f"the manifest's resize is {resize!r}; give 'letterbox', 'crop' or "
                          "'stretch' (how images of other sizes reach the input size)")
    return ModelSpec(name=name or key or file_name or arch, arch=arch, task=IMAGE,
                     input_shape=tuple(shape), class_names=tuple(classes),
                     mean=_floats(e, "mean", c), std=_floats(e, "std", c), arch_kwargs=kwargs,
                     resize=resize)


__all__ = ["MAX_MANIFEST_BYTES", "manifest_entry", "spec_from_manifest"]
