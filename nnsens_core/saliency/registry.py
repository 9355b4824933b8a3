"""The one registry of saliency methods: what exists, how it is called, and how it is shown.

Each method module registers its entries (a :class:`Method`) when it is imported; importing
``nnsens_core.saliency`` (or any of its modules) imports every built-in method module once, in
display order (see ``saliency/__init__.py``). The compare engine, the saliency page and the CLI list,
label and run methods only through this module, so adding a method is one module with one
:func:`register` call (plus its import in ``saliency/__init__.py`` for a built-in one).

Every method's ``fn`` has one signature::

    fn(model, x, targets, cfg, *, spec=None, device="auto", progress=None) -> Tensor (N, H, W)

``model`` is a :class:`~nnsens_core.zoo.LoadedModel` or an ``nn.Module``; ``x`` is (N, C, H, W) in
model-input space, or volumes (N, C, D, H, W) for a 3-D model (maps (N, D, H, W); a method
registered with ``volumes=False`` refuses them); ``targets`` one class per image (or one int for all); ``cfg`` an instance of
the method's ``config_type``; ``progress(done, total)``. A method registered with
``reports=True`` also takes a keyword ``details`` (a dict, or None when the caller does not want
them) and fills it with what it measured besides the maps (occlusion: its ``engine`` and, for an
approximate config, ``approx``: the error against exact,
:func:`nnsens_core._approx.error_report`); the registry passes ``details`` only to such methods,
so a method that does not know about it keeps the one signature above. Calling a
:class:`Method` (or :func:`run`) checks the inputs once for every method (batch shape, dtype, channels, the model accepting the
images, classes in range; :func:`~nnsens_core.saliency._common.check_model_input`), puts the model in
eval mode on the device without touching the caller's (:func:`nnsens_core.device.inference_model`)
and checks the shape of the maps returned.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch

from ..device import inference_model, resolve_device
from ..errors import NnsensError
from ._common import _classes, check_model_input


@dataclass(frozen=True)
class Method:
    """One saliency method.

    ``signed``: the map is signed and keeps its positive part (evidence for the class) after
    scaling; ``class_agnostic``: the map does not depend on the explained class; ``config_type``: the
    frozen dataclass of its settings (its default instance, with ``config_method_field`` set to
    ``name`` when given, is the default config); ``family``: the key of a config shared by a family
    in :func:`config_for` (``"cam"``, ``"gradients"``); ``aliases``: other names accepted by
    :func:`get`; ``description``: one line saying what the map shows; ``volumes``: the method
    also takes volumes (N, C, D, H, W) (``False``: calling it on volumes raises
    :class:`NnsensError` naming the methods that do); ``sized``: ``sized(default_cfg, spatial,
    gflop)`` adapts the *default* config to inputs of spatial size ``spatial`` on a model whose
    forward pass of one input costs ``gflop`` GFLOP (``None``: unknown) -- defaults that scale with
    the image and the model, e.g. fewer optimisation steps on large images and heavy models;
    explicit configs are never changed; ``reports``: ``fn`` takes a keyword ``details`` (a
    dict or None) and fills it (see the module docstring and :meth:`__call__`).
    """
    name: str
    label: str
    fn: Callable[..., torch.Tensor]
    config_type: type
    signed: bool = False
    class_agnostic: bool = False
    aliases: tuple[str, ...] = ()
    description: str = ""
    family: str | None = None
    config_method_field: str | None = None
    volumes: bool = True
    sized: Callable[[object, tuple[int, ...], float | None], object] | None = None
    reports: bool = False

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip() or self.name != self.name.lower() \
                or "," in self.name:
            raise NnsensError(f"method name {self.name!r} must be a non-empty lower-case string "
                              "without commas")
        if not callable(self.fn):
            raise NnsensError(f"method {self.name!r}: fn must be callable")
        if not (isinstance(self.config_type, type) and dataclasses.is_dataclass(self.config_type)):
            raise NnsensError(f"method {self.name!r}: config_type must be a dataclass type")
        if not isinstance(self.reports, bool):
            raise NnsensError(f"method {self.name!r}: reports={self.reports!r} must be True (fn "
                              "takes details=) or False")
        object.__setattr__(self, "aliases", tuple(a.lower() for a in self.aliases))

    def bind(self, cfg):
        """``cfg`` with its ``config_method_field`` (if any) set to this method's name."""
        f = self.config_method_field
        if f is not None and getattr(cfg, f, self.name) != self.name:
            cfg = dataclasses.replace(cfg, **{f: self.name})
        return cfg

    def default_config(self, spatial=None, gflop: float | None = None):
        """The default config; with ``spatial`` (the inputs' spatial size, ``(H, W)`` or ``(D, H,
        W)``) the default for inputs of that size, with ``gflop`` (one input's forward pass, see
        :func:`~nnsens_core.saliency._common.forward_gflop`) also for a model of that cost (see
        ``sized``; configs with a ``sized(spatial)`` method, e.g. occlusion's, get their
        image-relative fields in pixels too)."""
        cfg = self.bind(self.config_type())
        if spatial is not None:
            spatial = tuple(int(s) for s in spatial)
            if self.sized is not None:
                cfg = self.sized(cfg, spatial, gflop)
            cfg = resolve(cfg, spatial)
        return cfg

    def __call__(self, model, x, targets, cfg=None, *, spec=None, device="auto",
                 progress=None, details: dict | None = None) -> torch.Tensor:
        """Raw (unscaled) maps ``(N, H, W)`` (volumes: ``(N, D, H, W)``) float32 on the CPU;
        ``cfg=None``: the default. ``details``: a dict that a method registered with
        ``reports=True`` fills (e.g. occlusion's ``approx`` error report); it stays as it is for
        other methods."""
        if details is not None and not isinstance(details, dict):
            raise NnsensError(f"details must be a dict (filled by the method) or None, got "
                              f"{type(details).__name__}")
        if not self.volumes and getattr(x, "ndim", 0) == 5:
            works = ", ".join(volume_names())
            raise NnsensError(f"method {self.name!r} works on images (N, C, H, W) only, not on "
                              f"volumes {tuple(x.shape)}; on volumes use {works}")
        spatial = tuple(getattr(x, "shape", ())[2:]) or None
        if cfg is None:
            cfg = self.default_config(spatial, _gflop(model, spatial) if self.sized else None)
        else:
            cfg = self.bind(cfg)
        if not isinstance(cfg, self.config_type):
            raise NnsensError(f"the settings of {self.name!r} must be a {self.config_type.__name__}, "
                              f"got {type(cfg).__name__}")
        if spec is None:
            spec = getattr(model, "spec", None)
        dev = resolve_device(device)
        net = inference_model(model, dev)
        x, n_out = check_model_input(net, x, spec, dev)
        cls = _classes(targets, len(x), n_out)
        extra = {"details": details} if self.reports else {}
        maps = self.fn(net, x, cls, cfg, spec=spec, device=dev, progress=progress, **extra)
        maps = torch.as_tensor(maps).detach().float().cpu()
        if maps.shape != (len(x), *x.shape[2:]):
            raise NnsensError(f"method {self.name!r} returned maps of shape {tuple(maps.shape)}; "
                              f"expected {(len(x), *x.shape[2:])}")
        return maps


_METHODS: dict[str, Method] = {}
_ALIASES: dict[str, str] = {}


def register(method: Method) -> Method:
    """Add ``method``; a name or alias already taken raises :class:`NnsensError`."""
    if not isinstance(method, Method):
        raise NnsensError(f"register() takes a Method, got {type(method).__name__}")
    for key in (method.name, *method.aliases):
        if key in _METHODS or key in _ALIASES or key == "all":
            raise NnsensError(f"saliency method name {key!r} is already taken; pick another name")
    if len(set(method.aliases)) != len(method.aliases) or method.name in method.aliases:
        raise NnsensError(f"method {method.name!r} lists an alias twice")
    _METHODS[method.name] = method
    _ALIASES.update({a: method.name for a in method.aliases})
    return method


def unregister(name: str) -> None:
    """Remove a method (and its aliases); used by tests that register a toy method."""
    m = get(name)
    del _METHODS[m.name]
    for a in m.aliases:
        _ALIASES.pop(a, None)


def get(name: str) -> Method:
    """The method called ``name`` or one of its aliases (case and surrounding spaces ignored)."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _METHODS:
        raise NnsensError(f"method {name!r} is unknown; use one of {', '.join(_METHODS)}")
    return _METHODS[key]


def names() -> tuple[str, ...]:
    """Every method name, in display order."""
    return tuple(_METHODS)


def volume_names() -> tuple[str, ...]:
    """The methods that take volumes (N, C, D, H, W), in display order."""
    return tuple(n for n, m in _METHODS.items() if m.volumes)


def methods() -> tuple[Method, ...]:
    """Every method, in display order."""
    return tuple(_METHODS.values())


def label(name: str) -> str:
    """The display label of ``name`` (the name itself when it is not registered)."""
    key = str(name).strip().lower()
    m = _METHODS.get(_ALIASES.get(key, key))
    return m.label if m is not None else str(name)


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """``"gradcam,am"`` or a list -> method names (aliases resolved, duplicates dropped, order
    kept; ``"all"`` adds every method)."""
    if not isinstance(text, str) and not (isinstance(text, Sequence) and
                                          all(isinstance(s, str) for s in text)):
        raise NnsensError(f"methods must be a comma list or a list of names, got {text!r}")
    items = [s.strip().lower() for s in (text.split(",") if isinstance(text, str) else text)]
    out: list[str] = []
    for s in (s for s in items if s):
        if s == "all":
            out += [m for m in _METHODS if m not in out]
            continue
        if _ALIASES.get(s, s) not in _METHODS:
            raise NnsensError(f"method {s!r} is unknown; use a comma list of {', '.join(_METHODS)} "
                              "or 'all'")
        m = _ALIASES.get(s, s)
        if m not in out:
            out.append(m)
    if not out:
        raise NnsensError(f"no method given; use e.g. {','.join(list(_METHODS)[:3])} or 'all'")
    return out


def _gflop(model, spatial) -> float | None:
    """One input's forward GFLOP where a default may depend on it (images above the reference
    size, :func:`~nnsens_core.saliency._common.scaled_steps`), else None (nothing counted)."""
    from ._common import REFERENCE_PIXELS, forward_gflop
    if model is None or spatial is None or len(spatial) != 2 or \
            int(spatial[0]) * int(spatial[1]) <= REFERENCE_PIXELS:
        return None
    return forward_gflop(model, spatial)


def default_config(name: str, spatial=None, model=None):
    """The default config object of ``name``; with ``spatial`` (``(H, W)`` or ``(D, H, W)``) the
    default for inputs of that size, with ``model`` (a module or LoadedModel) also for that
    model's cost per forward pass (:meth:`Method.default_config`)."""
    m = get(name)
    return m.default_config(spatial, _gflop(model, spatial) if m.sized else None)


def resolve(cfg, spatial):
    """``cfg.sized(spatial)`` for configs whose fields may be relative to the image (e.g.
    :class:`~nnsens_core.saliency.occlusion.OcclusionConfig`'s window ``None``), else ``cfg``."""
    fn = getattr(cfg, "sized", None)
    return fn(tuple(int(s) for s in spatial)) if callable(fn) and spatial is not None else cfg


def config_for(name: str, cfgs: Mapping[str, object] | None, spatial=None, model=None):
    """``cfgs[name]``, else the config of its family (``cfgs["cam"]`` for a CAM method, with its
    ``method`` replaced; ``cfgs["gradients"]`` for a gradient method) when it has the method's
    config type, else the default. With ``spatial`` (the inputs' ``(H, W)`` or ``(D, H, W)``):
    the default is the one for that size (and, with ``model``, for that model's cost), and
    image-relative fields are given in pixels."""
    m = get(name)
    cfgs = cfgs or {}
    cfg = cfgs.get(m.name)
    if cfg is None and m.family is not None and isinstance(cfgs.get(m.family), m.config_type):
        cfg = cfgs[m.family]
    if cfg is None:
        return m.default_config(spatial, _gflop(model, spatial) if m.sized else None)
    return resolve(m.bind(cfg), spatial)


def run(name: str, model, x, targets, cfg=None, *, spec=None, device="auto",
        progress=None, details: dict | None = None) -> torch.Tensor:
    """Raw maps ``(N, H, W)`` of method ``name`` (see :meth:`Method.__call__`; ``details``
    filled by methods that report)."""
    return get(name)(model, x, targets, cfg, spec=spec, device=device, progress=progress,
                     details=details)
