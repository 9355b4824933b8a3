"""Safe model loading: ``state_dict`` files (data) or, where allowed, TorchScript archives (code).

* A TorchScript archive is **code**: its ``forward`` and ``__setstate__`` run at load and at every
  call, and can read and write files (``torch.from_file``). It is refused unless the caller allows
  code models: ``allow_code=True`` (the CLI, which runs the user's own files on the user's machine)
  or the server setting ``NNSENS_ALLOW_CODE_MODELS=1`` (for dashboards whose every user is trusted;
  off by default). A state_dict is only tensors and is always accepted.

* ``torch.load(..., weights_only=True)`` only: a pickle that tries to build any object other than
  tensors and plain containers is refused before anything in it runs.
* A ``state_dict`` whose key names differ from the architecture's still loads when its tensors, in
  order, have the same shapes; the mapping is reported.
* Files above ``max_bytes`` are refused before they are read.
"""
from __future__ import annotations

import io
import os
import re
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

from .deployment import CODE_MODELS_ENV, MAX_WEIGHTS_MB, code_models_allowed, public_mode
from .errors import NnsensError
from .zoo import ARCHITECTURES, IMAGE, TABULAR, LoadedModel, ModelSpec, build

DEFAULT_MAX_BYTES = MAX_WEIGHTS_MB * 2**20

Source = str | os.PathLike | bytes | BinaryIO


def _read(source: Source, max_bytes: int) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    elif hasattr(source, "read"):
        data = source.read(max_bytes + 1)
    else:
        path = Path(source)
        if not path.is_file():
            raise NnsensError(f"model file {str(path)!r} does not exist")
        size = path.stat().st_size
        if size > max_bytes:
            raise NnsensError(f"model file {path.name!r} is {size / 2**20:.1f} MiB, over the "
                              f"{max_bytes / 2**20:.0f} MiB limit; upload a smaller model")
        data = path.read_bytes()
    if len(data) > max_bytes:
        raise NnsensError(f"model file is over the {max_bytes / 2**20:.0f} MiB limit; "
                          "upload a smaller model")
    if not data:
        raise NnsensError("model file is empty; upload a TorchScript (.pt) or state_dict file")
    return data


def is_torchscript(data: bytes) -> bool:
    """True for a TorchScript archive (a zip holding compiled ``code/``)."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return False
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return any("/code/" in n for n in zf.namelist())


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_FIX = ("Save the weights with torch.save(model.state_dict(), path) and load that file (or export "
        "TorchScript, torch.jit.script(model).save(path), where a TorchScript model is accepted)")


def unsafe_pickle_message(exc: BaseException) -> str:
    """Plain-text refusal of a file the weights-only unpickler rejects: no terminal colour codes,
    no torch advice to disable the check, whole sentences, and the fix."""
    text = _ANSI.sub("", str(exc))
    found = _GLOBAL.search(text)
    if found:
        cls = found.group(1)
        return ("the file is not a safe weights file: it is a pickled object that needs the class "
                f"{cls} (e.g. a whole model saved with torch.save(model)), and pickled code is "
                f"refused, never run. {_FIX}.")
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    if "weights_only" in first or len(first) > 160:
        first = type(exc).__name__
    return ("the file is not a safe weights file (only tensors and plain containers are accepted; "
            f"pickled code is refused; the reader said: {first.rstrip('.')}). {_FIX}.")


def read_state_dict(data: bytes) -> "OrderedDict[str, torch.Tensor]":
    """Tensors of a ``torch.save``d state_dict (optionally under a ``"state_dict"`` key), safely."""
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the restricted unpickler raises many types on bad input
        raise NnsensError(unsafe_pickle_message(exc)) from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise NnsensError(f"the file holds a {type(obj).__name__}, not a state_dict; save "
                          "model.state_dict() or export TorchScript")
    tensors = OrderedDict((k, v) for k, v in obj.items() if isinstance(v, torch.Tensor))
    if not tensors:
        raise NnsensError("the state_dict holds no tensors")
    return tensors


def match_state_dict(model: nn.Module, state: "OrderedDict[str, torch.Tensor]") -> tuple[dict, str]:
    """Map ``state`` onto ``model``'s keys: by name when all names match, else by order and shape.

    Returns ``(state_dict_for_model, report)``; raises :class:`NnsensError` naming the first
    mismatch when neither works.
    """
    target = model.state_dict()
    if set(target) == set(state):
        bad = [k for k in target if target[k].shape != state[k].shape]
        if bad:
            k = bad[0]
            raise NnsensError(f"tensor {k!r} has shape {tuple(state[k].shape)} but the architecture "
                              f"needs {tuple(target[k].shape)}; check the architecture's sizes")
        return dict(state), "keys matched by name"
    # Ignore BatchNorm's num_batches_tracked (a 0-d integer counter, whatever its key is called)
    # on both sides when aligning by order.
    def counter(k, t):
        return k.endswith("num_batches_tracked") or (t.ndim == 0 and not t.is_floating_point())

    t_keys = [k for k, t in target.items() if not counter(k, t)]
    s_keys = [k for k, t in state.items() if not counter(k, t)]
    if len(t_keys) != len(s_keys):
        raise NnsensError(f"the file has {len(s_keys)} tensors but the architecture needs "
                          f"{len(t_keys)}; choose the matching architecture or sizes")
    mapped, lines = {}, []
    for tk, sk in zip(t_keys, s_keys):
        if target[tk].shape != state[sk].shape:
            raise NnsensError(f"tensor #{len(mapped) + 1} {sk!r} has shape {tuple(state[sk].shape)} "
                              f"but {tk!r} needs {tuple(target[tk].shape)}; choose the matching "
                              "architecture or sizes")
        mapped[tk] = state[sk]
        if tk != sk:
            lines.append(f"{sk} -> {tk}")
    for k in target:
        if k not in mapped:
            mapped[k] = target[k]
    report = "keys matched by order and shape" + (":\n" + "\n".join(lines) if lines else "")
    return mapped, report


def load_model(source: Source, *, arch: str | None = None, arch_kwargs: dict | None = None,
               spec: ModelSpec | None = None, name: str = "uploaded",
               input_shape: tuple[int, ...] | None = None, class_names: tuple[str, ...] = (),
               max_bytes: int = DEFAULT_MAX_BYTES, device: str | torch.device = "cpu",
               allow_code: bool | None = None) -> LoadedModel:
    """Load a state_dict into ``arch`` or, when code models are allowed (``allow_code``; ``None``
    reads :func:`code_models_allowed`), a TorchScript archive; returns an eval-mode model.

    ``spec`` (or ``input_shape``/``class_names``) describes the model for the pages; for a
    TorchScript file without them the input shape must be given.
    """
    data = _read(source, max_bytes)
    arch_kwargs = dict(arch_kwargs or {})
    if is_torchscript(data):
        if not (code_models_allowed() if allow_code is None else allow_code):
            who = ("a public server never runs uploaded code" if public_mode() else
                   f"an administrator can allow code models with {CODE_MODELS_ENV}=1 where every "
                   "user is trusted")
            raise NnsensError(
                "this is a TorchScript file, which is code (it can read and write files on the "
                "server), and this server does not run uploaded code; save the weights instead with "
                "torch.save(model.state_dict(), 'model.pt') and upload them for a built-in "
                f"architecture ({who})")
        try:
            module = torch.jit.load(io.BytesIO(data), map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt archives
            raise NnsensError(f"the TorchScript archive could not be loaded: {str(exc)[:300]}") from None
        report = "TorchScript archive"
        arch_name = "torchscript"
    else:
        if arch is None:
            raise NnsensError("a state_dict needs an architecture; pass arch= one of "
                              f"{sorted(ARCHITECTURES)} (or upload TorchScript)")
        state = read_state_dict(data)
        module = build(arch, **arch_kwargs)
        mapped, report = match_state_dict(module, state)
        module.load_state_dict(mapped)
        arch_name = arch
    module = module.to(device).eval()
    if spec is None:
        task = ARCHITECTURES[arch_name][0] if arch_name in ARCHITECTURES else (
            TABULAR if input_shape is not None and len(input_shape) == 1 else IMAGE)
        if input_shape is None:
            input_shape = _default_input_shape(arch_name, arch_kwargs)
        if input_shape is None:
            raise NnsensError("the input shape of a TorchScript model is unknown; give input_shape, "
                              "e.g. (8,) for tabular or (3, 64, 64) for images")
        spec = ModelSpec(name=name, arch=arch_name, task=task, input_shape=tuple(input_shape),
                         class_names=tuple(class_names), arch_kwargs=arch_kwargs)
    check_input_size(spec)
    check_forward(module, spec, device)
    return LoadedModel(module=module, spec=spec, report=report)


def _default_input_shape(arch: str, kwargs: dict) -> tuple[int, ...] | None:
    if arch == "paper-mlp":
        return (int(kwargs.get("n_inputs", 8)),)
    if arch in ("vgg16", "resnet18"):
        return (int(kwargs.get("in_channels", 3)), 224, 224)
    if arch in ("vgg16-small", "resnet18-small"):
        return (int(kwargs.get("in_channels", 3)), 64, 64)
    if arch == "cnn3d-small":
        return (int(kwargs.get("in_channels", 1)), 48, 48, 48)
    return None


def min_input_size(arch: str, kwargs: dict | None = None) -> int | None:
    """Smallest side (pixels; voxels for ``cnn3d-small``) a built-in architecture accepts: VGG's
    5 max-pools need 32, ``cnn3d-small`` 2**blocks; the ResNets take any size (None: unknown)."""
    kwargs = kwargs or {}
    if arch in ("vgg16", "vgg16-small"):
        return 32
    if arch in ("resnet18", "resnet18-small"):
        return 1
    if arch == "cnn3d-small":
        return 2 ** int(kwargs.get("blocks", 4))
    return None


def check_input_size(spec: ModelSpec) -> None:
    """Refuse an image size below what the built-in architecture allows, naming the minimum.
    Any size above it is fine (the models end with adaptive pooling)."""
    if spec.task != IMAGE:
        return
    low = min_input_size(spec.arch, spec.arch_kwargs)
    spatial = tuple(spec.input_shape[1:])
    if low is not None and min(spatial) < low:
        what = "voxels" if len(spatial) == 3 else "pixels"
        raise NnsensError(f"input size {'x'.join(map(str, spatial))} is too small for {spec.arch}: "
                          f"it needs at least {low} {what} per side (any larger size works, e.g. "
                          f"{'x'.join([str(max(low, 64))] * len(spatial))})")


def check_outputs(out, spec: ModelSpec, n: int) -> None:
    """Refuse model outputs the pages and core functions cannot use, naming the fix.

    A tensor of ``n`` rows, finite; image models give ``(n, classes)`` logits (``classes`` =
    ``len(spec.class_names)`` when the spec names them), tabular models ``(n,)``, ``(n, 1)`` or
    ``(n, k)``."""
    if not isinstance(out, torch.Tensor):
        raise NnsensError(f"the model returns {type(out).__name__}; it must return a tensor")
    shape = tuple(out.shape)
    if spec.task == IMAGE:
        k = len(spec.class_names)
        want = f"(N, {k}) (one logit per class: {', '.join(map(str, spec.class_names))})" if k \
            else "(N, classes) logits"
        if out.ndim != 2 or shape[0] != n or shape[1] < 1 or (k and shape[1] != k):
            raise NnsensError(f"the model returns outputs of shape {shape} for {n} images but the "
                              f"pages need {want}; choose the matching architecture and number of "
                              "classes, or give as many class names as the model has outputs")
    elif out.ndim not in (1, 2) or shape[0] != n or (out.ndim == 2 and shape[1] < 1):
        raise NnsensError(f"the model returns outputs of shape {shape} for {n} rows but a tabular "
                          "model must return (N,), (N, 1) or (N, k); check the architecture")
    if not torch.isfinite(out).all():
        raise NnsensError("the model's outputs are NaN or infinite on a plain probe input (its "
                          "weights hold NaN/inf values, or it overflows); retrain it or upload "
                          "other weights")


def probe_input(spec: ModelSpec, device: str | torch.device = "cpu") -> torch.Tensor:
    """Two rows in model-input space: zeros and a mid-grey image (all 0.5 for tabular models)."""
    x = torch.zeros((2, *spec.input_shape), device=device)
    x[1] = spec.normalize(torch.full(tuple(spec.input_shape), 0.5)).to(device) \
        if spec.task == IMAGE else 0.5
    return x


def check_forward(module: nn.Module, spec: ModelSpec, device: str | torch.device = "cpu") -> None:
    """Run a probe batch (:func:`probe_input`) through the model at load time: it must accept
    ``spec.input_shape`` and give usable, finite outputs (:func:`check_outputs`)."""
    x = probe_input(spec, device)
    try:
        with torch.no_grad():
            out = module(x)
    except Exception as exc:  # noqa: BLE001 - any failure here means the shapes do not fit
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise NnsensError(f"the model does not accept inputs of shape {tuple(spec.input_shape)}: "
                          f"{first[:300]}") from None
    check_outputs(out, spec, len(x))


def save_state_dict(model: nn.Module, path: str | os.PathLike) -> None:
    torch.save(model.state_dict(), path)
