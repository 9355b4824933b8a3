"""Case and dataset reports: one document to discuss a case from, as self-contained HTML and as PDF.

A :class:`CaseReport` holds one image at its own resolution, the model's prediction, one map per
chosen saliency method (at the original's resolution, NaN where the model saw nothing), the
agreement between the maps, the model's identity (name and SHA-256 of its weights) and sanity-check
result, the settings, the nnsens version and the date. :meth:`CaseReport.to_html` embeds every
picture as a base64 PNG and escapes every text (file and class names come from users);
:meth:`CaseReport.to_pdf` writes the same sections with fpdf2.

The pictures of both documents are drawn by :mod:`nnsens_core.render` (numpy + Pillow): the
overlays, contour outlines, colour bars and the prediction bars. Plotly figures are not used in
the reports: this is the offline equivalent of exporting them with kaleido, which needs a headless
Chrome; nothing here starts a browser or downloads anything. PDF text uses fpdf's core fonts
(Latin-1): other characters are transliterated (``Ω`` -> ``Omega``, ``−`` -> ``-``) or replaced
by ``?``, never an error.

A :class:`DatasetReport` is the comparison table of a dataset evaluation
(:func:`nnsens_core.saliency.compare.evaluate_dataset`) with the sanity check, in the same formats.

The helpers :func:`case_input`, :func:`case_map`, :func:`case_probabilities` and
:func:`model_sanity` are the one way the "Read a case" page and ``nnsens report`` compute what a
report shows.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import hashlib
import html
import io
import math
import unicodedata
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from . import render
from .errors import NnsensError
from .saliency.trust import SANITY_THRESHOLD, AccuracyVerdict, SanityVerdict

DISCLAIMER = ("nnsens is research software, not a medical device: these maps show how a model "
              "reacts to the image and are not a diagnosis. Do not use them for clinical decisions.")
SECTIONS = ("Case", "Prediction", "Explanations", "Agreement", "Model", "Settings")
AGREEMENT_P = 0.1

__all__ = ["CaseReport", "DISCLAIMER", "DatasetReport", "MapEntry", "SECTIONS",
           "agreement", "case_input", "case_map", "case_probabilities",
           "case_report", "is_sequence", "load_case_image", "model_sanity", "pdf_text", "weights_sha256"]


# --------------------------------------------------------------------------- identity

def weights_sha256(model) -> str:
    """SHA-256 (hex) of a model's weights: every ``state_dict`` entry in order, as its name, dtype,
    shape and raw bytes. Equal weights give equal hashes whatever file format they came from (a
    file's own ``sha256sum`` depends on how it was saved)."""
    import torch
    module = getattr(model, "module", model)
    if not isinstance(module, torch.nn.Module):
        raise NnsensError(f"weights_sha256 takes a model (nn.Module or LoadedModel), got "
                          f"{type(model).__name__}")
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- computing a case

def case_input(image: np.ndarray, spec):
    """An original image (C, h, w) float in [0, 1] -> ``(x, placement)``: the model's normalised
    input (1, C, H, W) tensor through the model's recipe (:class:`~nnsens_core.preprocess.Recipe`)
    and where the original sits in it."""
    import torch

    from . import preprocess
    recipe = preprocess.Recipe.from_spec(spec)
    x01, place = preprocess.to_model(image, recipe)
    x = spec.normalize(torch.as_tensor(x01[None], dtype=torch.float32))
    return x, place


def case_probabilities(model, x, device="cpu") -> np.ndarray:
    """Softmax probabilities (K,) of one input ``x`` (1, C, H, W)."""
    from .saliency.compare import predict_proba
    p = predict_proba(getattr(model, "module", model), x, device).numpy()[0]
    if not np.isfinite(p).all():
        raise NnsensError("the model's outputs are NaN or infinite for this image; retrain it or "
                          "pick another model")
    return p.astype(np.float64)


def case_map(model, spec, x, placement, method: str, cfg, target: int, device="cpu",
             progress=None) -> tuple[np.ndarray, np.ndarray]:
    """One method's raw map of input ``x`` explaining class ``target``: ``(at the model input
    (H, W), on the original (h, w))``, the latter NaN where the model never saw the original."""
    from . import preprocess
    from .saliency import registry
    m = registry.run(method, model, x, [int(target)], cfg, spec=spec, device=device,
                     progress=progress)[0].numpy().astype(np.float32)
    return m, preprocess.map_to_original(m, placement)


SEQUENCE_SUFFIXES = (".dcm", ".dicom", ".mp4", ".avi", ".gif", ".mov")


def is_sequence(raw: bytes, name: str) -> bool:
    """A DICOM file or a cine loop (by suffix, or DICOM's ``DICM`` marker): read it with
    ``nnsens_core.sequences``."""
    suffix = ("." + str(name).rsplit(".", 1)[-1].lower()) if "." in str(name) else ""
    return suffix in SEQUENCE_SUFFIXES or raw[128:132] == b"DICM"


def load_case_image(raw: bytes, name: str = "image", frame: int = 0) -> np.ndarray:
    """An image file's bytes -> (C, h, w) float32 in [0, 1] at its own size (a grey image keeps
    one channel; pixel limits checked before decoding by :func:`nnsens_core.data.decode_image`).
    A DICOM file or cine loop gives its frame ``frame`` (:func:`nnsens_core.sequences.load_sequence`)."""
    from .data import decode_image
    if is_sequence(raw, name):
        from .sequences import load_sequence
        frames = load_sequence(raw, name).frames
        if not 0 <= frame < len(frames):
            raise NnsensError(f"frame {frame} is not one of the loop's frames 0..{len(frames) - 1}")
        return np.clip(frames[frame].astype(np.float32), 0, 1)
    arr, scale, _ = decode_image(raw, name, None, max_side=None)  # grey stays 1 channel
    return np.clip(arr.astype(np.float32) / np.float32(scale), 0, 1)


# --------------------------------------------------------------------------- agreement

def agreement(maps: Mapping[str, np.ndarray], signed: Mapping[str, bool] | None = None,
              p: float = AGREEMENT_P) -> dict:
    """Agreement of every pair of maps of one image (same shape, NaN = not computed).

    Compared on the pixels every map covers; a signed map keeps its positive part (evidence for
    the class), as in :func:`nnsens_core.saliency.compare.explain`. Returns ``{"p", "pairs":
    [{"a", "b", "top_p_iou", "spearman"}], "chance": {"top_p_iou": p/(2-p), "spearman": 0}}``
    where chance is the expected value for two independent maps (a random region of p of the
    pixels overlaps another with IoU p/(2-p) on average; independent rankings correlate 0).
    """
    from .saliency import metrics as mt
    names = list(maps)
    signed = dict(signed or {})
    if len(names) < 2:
        return {"p": p, "pairs": [], "chance": {"top_p_iou": p / (2 - p), "spearman": 0.0}}
    shapes = {np.shape(maps[n]) for n in names}
    if len(shapes) != 1:
        raise NnsensError(f"the maps have different shapes {sorted(shapes)}; bring them to the "
                          "same image first")
    stack = np.stack([np.asarray(maps[n], np.float64) for n in names])
    ok = np.isfinite(stack).all(0)
    if ok.sum() < 2:
        raise NnsensError("the maps share fewer than 2 computed pixels; nothing to compare")
    flat = {n: (np.clip(stack[k][ok], 0, None) if signed.get(n) else stack[k][ok])[None, None]
            for k, n in enumerate(names)}
    table = mt.pairwise_agreement(flat, p)
    pairs = [{"a": a, "b": b, "top_p_iou": float(table["top_p_iou"][i, j]),
              "spearman": float(table["spearman"][i, j])}
             for i, a in enumerate(names) for j, b in enumerate(names) if j > i]
    return {"p": p, "pairs": pairs, "chance": {"top_p_iou": p / (2 - p), "spearman": 0.0}}


# --------------------------------------------------------------------------- model checks

def model_sanity(model, spec, x, classes, methods: Sequence[str], cfgs=None, device="cpu",
                 seed: int = 0, threshold: float = SANITY_THRESHOLD,
                 progress=None, within=None) -> SanityVerdict:
    """A short sanity check of ``model`` with ``methods`` on inputs ``x`` (N, C, H, W): the maps of
    the trained model, of the model with its output layer re-initialised, and with every layer
    re-initialised (:func:`nnsens_core.saliency.compare.sanity_check` with two cascade steps; the
    caller's model is never changed); ``within``: a region of interest per input (similarities
    inside it only)."""
    from .saliency import compare
    from .saliency import metrics as mt
    module = getattr(model, "module", model)
    layers = mt.randomizable_layers(module)
    if not layers:
        raise NnsensError("the model has no Conv/Linear layer to randomize")
    res = compare.sanity_check(module, spec, x, classes, methods, cfgs, layers=[layers[-1], ""],
                               metric="spearman", seed=seed, device=device, progress=progress,
                               within=within)
    s = SanityVerdict.from_result(res, threshold)
    return dataclasses.replace(s, steps=("original", layers[-1], "every layer"), images=len(x))


# --------------------------------------------------------------------------- text and pictures

_TRANSLIT = {"Ω": "Omega", "ω": "omega", "α": "alpha", "β": "beta", "γ": "gamma", "δ": "delta",
             "λ": "lambda", "σ": "sigma", "ε": "eps", "π": "pi", "μ": "\u00b5", "−": "-",
             "–": "-", "—": "-", "‘": "'", "’": "'", "“": '"', "”": '"', "…": "...", "≥": ">=",
             "≤": "<=", "≈": "~", "→": "->", "←": "<-", "∩": "n", "∪": "u", "‖": "||", "∇": "grad",
             "•": "\u00b7", "\u2009": " ", "\u202f": " ", "\u00a0": " "}


def pdf_text(text) -> str:
    """``text`` with only Latin-1 characters (fpdf's core fonts): common symbols transliterated,
    accents kept where Latin-1 has them, anything else ``?``; control characters become spaces."""
    out = []
    for ch in str(text):
        if ch in _TRANSLIT:
            out.append(_TRANSLIT[ch])
        elif ch in "\t\r\n" or unicodedata.category(ch).startswith("C"):
            out.append(" ")
        else:
            try:
                ch.encode("latin-1")
                out.append(ch)
            except UnicodeEncodeError:
                base = unicodedata.normalize("NFKD", ch).encode("latin-1", "ignore").decode("latin-1")
                base = "".join(c for c in base if not unicodedata.combining(c))
                out.append(base if base.strip() else "?")
    return "".join(out)


def _fit(img: np.ndarray, max_side: int = 720, min_side: int = 240) -> np.ndarray:
    """uint8 RGB scaled for a document: small images enlarged by whole factors (nearest: pixels
    stay sharp), large ones reduced (antialiased) to at most ``max_side``."""
    from PIL import Image
    h, w = img.shape[:2]
    if max(h, w) < min_side:
        k = max(1, min_side // max(h, w))
        return np.repeat(np.repeat(img, k, 0), k, 1)
    if max(h, w) > max_side:
        s = max_side / max(h, w)
        return np.asarray(Image.fromarray(img).resize((max(1, round(w * s)), max(1, round(h * s))),
                                                      Image.LANCZOS))
    return img


def _png(img: np.ndarray) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.asarray(img, np.uint8)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def prediction_bars(probabilities, class_names, highlight: int | None = None,
                    width: int = 520) -> np.ndarray:
    """Horizontal probability bars (uint8 RGB) named with the class names (Pillow)."""
    from PIL import Image, ImageDraw
    p = np.asarray(probabilities, np.float64)
    row, label_w, pad = 22, 170, 8
    img = Image.new("RGB", (width, row * len(p) + 2 * pad), (255, 255, 255))
    d = ImageDraw.Draw(img)
    bar_w = width - label_w - 70
    for k, v in enumerate(p):
        y = pad + k * row
        name = pdf_text(class_names[k]) if k < len(class_names) else f"class {k}"
        while d.textlength(name) > label_w - 8 and len(name) > 3:
            name = name[:-2] + "…" if not name.endswith("…") else name[:-3] + "…"
        d.text((4, y + 5), name, fill=(0, 0, 0))
        colour = (186, 54, 85) if k == highlight else (120, 120, 120)
        d.rectangle([label_w, y + 3, label_w + bar_w, y + row - 5], outline=(200, 200, 200))
        d.rectangle([label_w, y + 3, label_w + max(1, round(bar_w * float(v))), y + row - 5],
                    fill=colour)
        d.text((label_w + bar_w + 6, y + 5), f"{v:.1%}", fill=(0, 0, 0))
    return np.asarray(img)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _config_lines(settings: Mapping[str, object]) -> list[tuple[str, str]]:
    from ._results import jsonable
    out = []
    for k, v in settings.items():
        doc = jsonable(v)
        if isinstance(doc, dict):
            doc = ", ".join(f"{a}={b}" for a, b in doc.items() if b not in (None, "", [], {}))
        out.append((str(k), str(doc)))
    return out


# --------------------------------------------------------------------------- the case report

@dataclass(frozen=True, eq=False)
class MapEntry:
    """One method's map of the case: ``map`` (h, w) raw values at the original's resolution (NaN
    where not computed), whether the method is ``signed`` (its map is drawn diverging around 0
    when it has negative values: :attr:`diverging`), its display ``label`` and one-line
    ``description``."""
    method: str
    label: str
    map: np.ndarray
    signed: bool = False
    description: str = ""

    @property
    def diverging(self) -> bool:
        """Drawn on the diverging colour map centred at 0: a signed method's map with negative
        values (a signed method whose map is >= 0, e.g. ``|x_AM - x|``, uses the sequential one)."""
        return bool(self.signed and np.nanmin(np.where(np.isfinite(self.map), self.map, 0)) < 0)

    def scale(self) -> tuple[float, float]:
        return render.scale_of(self.map, self.diverging)

    def scale_text(self) -> str:
        lo, hi = self.scale()
        how = ("diverging around 0: red = positive, white = 0, blue = negative"
               if self.diverging else "low = dark, high = bright (inferno)")
        return f"raw values {lo:.3g} to {hi:.3g}, {how}; {render.SCALE_NOTE}"

    def pictures(self, image: np.ndarray, alpha: float = 0.5) -> dict[str, np.ndarray]:
        """``{"wash", "contours", "colorbar"}`` uint8 RGB pictures of this map over ``image``."""
        lo, hi = self.scale()
        return {"wash": render.overlay(image, self.map, alpha, self.diverging, lo, hi),
                "contours": render.contours(image, self.map),
                "colorbar": render.colorbar(lo, hi, "raw value", self.diverging)}


@dataclass(frozen=True, eq=False)
class CaseReport:
    """Everything a case report shows (see the module docstring); build it with
    :func:`case_report`."""
    image: np.ndarray
    case: str
    model_name: str
    model_sha256: str
    class_names: tuple
    probabilities: np.ndarray
    explained: int
    maps: tuple = ()
    agreement: dict = field(default_factory=dict)
    sanity: SanityVerdict | None = None
    chance: AccuracyVerdict | None = None
    settings: dict = field(default_factory=dict)
    model_info: dict = field(default_factory=dict)
    true_label: int | None = None
    warnings: tuple = ()
    version: str = ""
    date: str = ""
    alpha: float = 0.5

    def __post_init__(self):
        img = np.asarray(self.image)
        if img.ndim != 3 or img.shape[0] not in (1, 3):
            raise NnsensError(f"the case image has shape {img.shape}; expected (C, h, w), C = 1 or 3")
        p = np.asarray(self.probabilities, np.float64).reshape(-1)
        if len(p) != len(self.class_names):
            raise NnsensError(f"{len(p)} probabilities for {len(self.class_names)} class names; give "
                              "one probability per class")
        if not 0 <= int(self.explained) < len(p):
            raise NnsensError(f"explained class {self.explained} is not one of 0..{len(p) - 1}")
        for e in self.maps:
            if np.shape(e.map) != img.shape[1:]:
                raise NnsensError(f"the {e.method} map is {np.shape(e.map)} but the image is "
                                  f"{img.shape[1:]}; give maps at the original's resolution")
        object.__setattr__(self, "probabilities", p)

    @property
    def predicted(self) -> int:
        return int(np.argmax(self.probabilities))

    def all_warnings(self) -> list[str]:
        w = list(self.warnings)
        if self.chance is not None and self.chance.at_chance:
            w.append("The model's accuracy is at chance (" + self.chance.text() + "); its maps "
                     "do not explain a working classifier.")
        if self.sanity is not None and self.sanity.overall != "pass":
            w.append("The sanity check did not pass for every method (" + self.sanity.text()
                     + "): maps of a failing method look the same for an untrained model.")
        return w

    def to_dict(self) -> dict:
        """The case as JSON-safe data (``case.json``; the maps go to :meth:`arrays`)."""
        from ._results import jsonable
        return jsonable({
            "nnsens_version": self.version, "date": self.date, "case": self.case,
            "image_shape": list(np.shape(self.image)),
            "model": {"name": self.model_name, "sha256": self.model_sha256, **self.model_info},
            "class_names": list(self.class_names),
            "probabilities": {c: float(v) for c, v in zip(self.class_names, self.probabilities)},
            "predicted": self.class_names[self.predicted],
            "explained": self.class_names[int(self.explained)],
            "true_label": None if self.true_label is None else self.class_names[int(self.true_label)],
            "maps": [{"method": e.method, "label": e.label, "signed": e.signed,
                      "diverging": e.diverging,
                      "description": e.description, "scale": list(e.scale())} for e in self.maps],
            "agreement": self.agreement,
            "sanity": None if self.sanity is None else {
                "overall": self.sanity.overall, "metric": self.sanity.metric,
                "threshold": self.sanity.threshold, "final": self.sanity.final,
                "steps": list(self.sanity.steps), "images": self.sanity.images},
            "chance": None if self.chance is None else {**dataclasses.asdict(self.chance),
                                                        "at_chance": self.chance.at_chance},
            "settings": self.settings, "warnings": self.all_warnings(), "disclaimer": DISCLAIMER})

    def arrays(self) -> dict[str, np.ndarray]:
        """``image`` (C, h, w), ``probabilities`` and ``map_<method>`` (h, w) float32 (NaN =
        not computed), for ``maps.npz``."""
        return {"image": np.asarray(self.image, np.float32),
                "probabilities": np.asarray(self.probabilities, np.float64),
                **{f"map_{e.method}": np.asarray(e.map, np.float32) for e in self.maps}}

    # ------------------------------------------------------------------ shared content
    def _facts(self) -> list[tuple[str, str]]:
        c, h, w = np.shape(self.image)
        names = self.class_names
        out = [("Case", self.case), ("Image", f"{w} × {h} px, {'grey' if c == 1 else 'RGB'}"),
               ("Predicted", f"{names[self.predicted]} ({self.probabilities[self.predicted]:.1%})"),
               ("Explained class", str(names[int(self.explained)]))]
        if self.true_label is not None:
            out.append(("True label", str(names[int(self.true_label)])))
        out += [("Date", self.date), ("nnsens version", self.version)]
        return out

    def _model_rows(self) -> list[tuple[str, str]]:
        rows = [("Model", self.model_name), ("SHA-256 of the weights", self.model_sha256)]
        rows += [(str(k), str(v)) for k, v in self.model_info.items()]
        rows.append(("Class names", ", ".join(str(c) for c in self.class_names)))
        rows.append(("Sanity check", "not run" if self.sanity is None else self.sanity.text()))
        if self.chance is not None:
            rows.append(("Accuracy", self.chance.text()))
        return rows

    def _agreement_rows(self) -> list[tuple[str, str, str, str]]:
        from .saliency.registry import label
        return [(label(r["a"]), label(r["b"]), _fmt(r["top_p_iou"]), _fmt(r["spearman"]))
                for r in self.agreement.get("pairs", [])]

    def _agreement_note(self) -> str:
        a = self.agreement
        if not a:
            return "No agreement measured."
        ch = a.get("chance", {})
        return (f"IoU of the top {a.get('p', AGREEMENT_P):.0%} regions and Spearman rank correlation "
                "over the pixels both maps cover (signed maps: their positive part). Chance level "
                f"for independent maps: IoU {ch.get('top_p_iou', float('nan')):.3f}, Spearman "
                f"{ch.get('spearman', 0.0):.1f}.")

    # ------------------------------------------------------------------ HTML
    def to_html(self) -> str:
        """One self-contained HTML page (pictures as base64 PNG, every text escaped)."""
        e = lambda t: html.escape(str(t), quote=True)  # noqa: E731
        img = lambda a, alt: (f'<img alt="{e(alt)}" src="data:image/png;base64,'  # noqa: E731
                              f'{base64.b64encode(_png(_fit(a))).decode()}">')
        rows = lambda pairs: "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>"  # noqa: E731
                                     for k, v in pairs)
        parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
                 f"<title>nnsens case report: {e(self.case)}</title><style>"
                 "body{font-family:sans-serif;max-width:1100px;margin:auto;color:#222}"
                 "img{max-width:100%;image-rendering:pixelated;border:1px solid #ccc}"
                 "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:3px 8px;"
                 "text-align:left;vertical-align:top}.warn{background:#fde2e1;border:1px solid #c00;"
                 "padding:6px}.row{display:flex;gap:12px;flex-wrap:wrap;align-items:flex-start}"
                 ".row figure{margin:0;max-width:32%}footer{margin-top:2em;font-size:90%;color:#555}"
                 "</style></head><body>",
                 "<h1>nnsens case report</h1>"]
        for w in self.all_warnings():
            parts.append(f"<p class='warn'><b>Warning:</b> {e(w)}</p>")
        parts.append(f"<h2>Case</h2><table>{rows(self._facts())}</table>"
                     f"<div class='row'><figure>{img(render.to_rgb(self.image), 'original')}"
                     "<figcaption>original image (own resolution)</figcaption></figure></div>")
        parts.append("<h2>Prediction</h2>" + img(prediction_bars(
            self.probabilities, self.class_names, self.predicted), "prediction")
                     + "<table><tr><th>class</th><th>probability</th></tr>" + "".join(
            f"<tr><td>{e(c)}</td><td>{p:.1%}</td></tr>"
            for c, p in zip(self.class_names, self.probabilities)) + "</table>")
        parts.append(f"<h2>Explanations</h2><p>Explaining the class <b>"
                     f"{e(self.class_names[int(self.explained)])}</b>. Contours: the top 5 % "
                     "(white), 10 % (amber) and 20 % (cyan) of each map.</p>")
        for m in self.maps:
            pics = m.pictures(self.image, self.alpha)
            parts.append(f"<h3>{e(m.label)}</h3><p>{e(m.description)}</p><div class='row'>"
                         f"<figure>{img(render.to_rgb(self.image), 'original')}<figcaption>"
                         "original</figcaption></figure>"
                         f"<figure>{img(pics['wash'], m.label)}<figcaption>colour wash"
                         f"</figcaption></figure><figure>{img(pics['contours'], m.label)}"
                         "<figcaption>contours</figcaption></figure></div>"
                         f"<p>{img(pics['colorbar'], 'colour bar')}<br><small>{e(m.scale_text())}"
                         "</small></p>")
        parts.append("<h2>Agreement</h2>")
        ag = self._agreement_rows()
        if ag:
            parts.append("<table><tr><th>method A</th><th>method B</th><th>top-region IoU</th>"
                         "<th>Spearman</th></tr>" + "".join(
                "<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in ag) + "</table>")
        parts.append(f"<p>{e(self._agreement_note())}</p>")
        parts.append(f"<h2>Model</h2><table>{rows(self._model_rows())}</table>")
        parts.append("<h2>Settings</h2><table>" + rows(_config_lines(self.settings)) + "</table>")
        parts.append(f"<footer>{e(DISCLAIMER)} Made with nnsens {e(self.version)} on "
                     f"{e(self.date)}.</footer></body></html>")
        return "".join(parts)

    # ------------------------------------------------------------------ PDF
    def to_pdf(self) -> bytes:
        """The report as PDF bytes (fpdf2, A4, offline)."""
        pdf = _Pdf(f"nnsens case report: {self.case}")
        pdf.heading("nnsens case report", 1)
        for w in self.all_warnings():
            pdf.warning(w)
        pdf.heading("Case")
        pdf.pairs(self._facts())
        pdf.picture(render.to_rgb(self.image), 80, 70, "original image (own resolution)")
        pdf.heading("Prediction")
        pdf.bars(self.probabilities, self.class_names, self.predicted)
        pdf.heading("Explanations")
        pdf.para(f"Explaining the class {self.class_names[int(self.explained)]}. Each method: the "
                 "original, the map as a colour wash, and contours of its top 5 % (white), 10 % "
                 "(amber) and 20 % (cyan); the colour bar states the scale.")
        for m in self.maps:
            pics = m.pictures(self.image, self.alpha)
            pdf.method_block(m.label, m.description, [render.to_rgb(self.image), pics["wash"],
                                                      pics["contours"]], pics["colorbar"],
                             m.scale_text())
        pdf.heading("Agreement")
        ag = self._agreement_rows()
        if ag:
            pdf.table(("method A", "method B", "top-region IoU", "Spearman"), ag, (50, 50, 40, 40))
        pdf.para(self._agreement_note())
        pdf.heading("Model")
        pdf.pairs(self._model_rows())
        pdf.heading("Settings")
        pdf.pairs(_config_lines(self.settings) or [("settings", "defaults")])
        return pdf.bytes()


def case_report(image: np.ndarray, model, probabilities, maps: Mapping[str, np.ndarray], *,
                case: str = "image", explained: int | None = None, true_label: int | None = None,
                settings: Mapping[str, object] | None = None, sanity: SanityVerdict | None = None,
                chance: AccuracyVerdict | None = None, warnings: Sequence[str] = (),
                model_sha256: str | None = None, date: str | None = None, alpha: float = 0.5,
                p: float = AGREEMENT_P) -> CaseReport:
    """A :class:`CaseReport` of ``image`` (C, h, w) in [0, 1] and ``model`` (a LoadedModel: its
    spec names the classes and the recipe) with ``maps`` ``{method: (h, w) raw map at the
    original's resolution}``; signs, labels and descriptions come from the saliency registry, the
    agreement from :func:`agreement`. ``explained`` defaults to the predicted class."""
    from . import __version__, preprocess
    from .saliency import registry
    spec = model.spec
    probs = np.asarray(probabilities, np.float64).reshape(-1)
    names = tuple(spec.class_names) or tuple(f"class {k}" for k in range(len(probs)))
    entries = []
    for name, m in maps.items():
        meth = registry.get(name)
        entries.append(MapEntry(meth.name, meth.label, np.asarray(m, np.float32), meth.signed,
                                meth.description))
    ag = agreement({e.method: e.map for e in entries}, {e.method: e.signed for e in entries}, p)
    info = {"architecture": spec.arch,
            "input": preprocess.Recipe.from_spec(spec).describe() if len(spec.input_shape) == 3
            else str(tuple(spec.input_shape))}
    return CaseReport(
        image=np.asarray(image, np.float32), case=str(case), model_name=str(spec.name),
        model_sha256=model_sha256 or weights_sha256(model), class_names=names,
        probabilities=probs, explained=int(np.argmax(probs)) if explained is None else int(explained),
        maps=tuple(entries), agreement=ag, sanity=sanity, chance=chance,
        settings={k: v for k, v in (settings or {}).items()},
        model_info=info, true_label=true_label, warnings=tuple(warnings), version=__version__,
        date=date or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        alpha=float(alpha))


# --------------------------------------------------------------------------- the dataset report

@dataclass(frozen=True, eq=False)
class DatasetReport:
    """The comparison table of a dataset evaluation (mean ± std of GT IoU, pointing game and
    relevance mass per method and class) with the sanity check, as HTML or PDF."""
    summary: object              # DataFrame of Evaluation.summary()
    n_images: int
    accuracy: float
    model_name: str
    model_sha256: str
    data_name: str
    class_names: tuple
    settings: dict = field(default_factory=dict)
    sanity: object | None = None  # metrics.RandomizationResult
    version: str = ""
    date: str = ""

    @classmethod
    def from_evaluation(cls, ev, model, data_name: str, sanity=None,
                        date: str | None = None) -> "DatasetReport":
        from . import __version__
        acc = float(ev.records["correct"].to_numpy()[:len(ev.indices)].mean())
        settings = {"methods": ", ".join(ev.config.methods), "target": ev.config.target,
                    "GT IoU region": "top-k (k = mask area)" if ev.config.p is None
                    else f"top {ev.config.p:.0%}",
                    "pointing tolerance (px)": ev.config.tolerance, **ev.config.configs}
        from ._approx import describe_error
        settings.update({f"{m} maps": describe_error(r) + f", the worst over {r.get('parts', 1)} "
                         "batch(es)" for m, r in getattr(ev, "approx", {}).items()})
        return cls(ev.summary(), len(ev.indices), acc, str(model.spec.name), weights_sha256(model),
                   str(data_name), tuple(model.spec.class_names), settings, sanity, __version__,
                   date or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))

    def _table(self) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
        from .saliency.registry import label
        head = ("method", "class", "GT IoU", "pointing", "mass", "n")
        rows = []
        for (m, c), r in self.summary.iterrows():
            cell = lambda k: ("n/a" if not np.isfinite(r[f"{k}_mean"])  # noqa: E731
                              else f"{r[f'{k}_mean']:.3f} ± {r[f'{k}_std']:.3f}")
            rows.append((label(m), str(c), cell("iou"), cell("pointing"), cell("mass"),
                         str(int(r["iou_n"]))))
        return head, rows

    def _sanity_table(self):
        from .saliency.registry import label
        if self.sanity is None:
            return None
        methods = list(self.sanity.mean)
        head = ("randomized up to", *[label(m) for m in methods])
        rows = [(str(s) or "every layer", *[f"{self.sanity.mean[m][k]:.3f}" for m in methods])
                for k, s in enumerate(self.sanity.steps)]
        return head, rows

    def _facts(self) -> list[tuple[str, str]]:
        return [("Data", self.data_name), ("Images", str(self.n_images)),
                ("Accuracy on them", f"{self.accuracy:.1%}"), ("Model", self.model_name),
                ("SHA-256 of the weights", self.model_sha256),
                ("Class names", ", ".join(map(str, self.class_names))),
                ("Date", self.date), ("nnsens version", self.version)]

    def to_html(self) -> str:
        e = lambda t: html.escape(str(t), quote=True)  # noqa: E731

        def table(head, rows):
            return ("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>" + "".join(
                "<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>")
        parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>nnsens dataset "
                 f"report: {e(self.data_name)}</title><style>body{{font-family:sans-serif;max-width:"
                 "1100px;margin:auto}table{border-collapse:collapse}th,td{border:1px solid #ccc;"
                 "padding:3px 8px}footer{margin-top:2em;color:#555}</style></head><body>",
                 "<h1>nnsens dataset report</h1><h2>Data and model</h2>",
                 "<table>" + "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>"
                                     for k, v in self._facts()) + "</table>",
                 "<h2>Comparison table</h2>", table(*self._table()),
                 "<p>GT IoU: the map's top-k pixels (k = mask area) vs the ground-truth mask; "
                 "pointing game: 1 when the map's maximum lies in the mask; relevance mass: share "
                 "of the map inside it. Mean ± std over the images; n: images with a non-empty "
                 "mask.</p>", "<h2>Sanity check</h2>"]
        st = self._sanity_table()
        parts.append("<p>Not run.</p>" if st is None else
                     f"<p>Mean {e(self.sanity.metric)} similarity to the trained model's maps as "
                     "layers are re-initialised from the output down; a method that explains the "
                     "model falls toward 0.</p>" + table(*st))
        parts.append("<h2>Settings</h2><table>" + "".join(
            f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _config_lines(self.settings))
                     + f"</table><footer>{e(DISCLAIMER)}</footer></body></html>")
        return "".join(parts)

    def to_pdf(self) -> bytes:
        pdf = _Pdf(f"nnsens dataset report: {self.data_name}")
        pdf.heading("nnsens dataset report", 1)
        pdf.heading("Data and model")
        pdf.pairs(self._facts())
        pdf.heading("Comparison table")
        head, rows = self._table()
        pdf.table(head, rows, (34, 26, 34, 34, 34, 12))
        pdf.para("GT IoU: the map's top-k pixels (k = mask area) vs the ground-truth mask; pointing "
                 "game: 1 when the map's maximum lies in the mask; relevance mass: share of the "
                 "map inside it. Mean ± std over the images.")
        pdf.heading("Sanity check")
        st = self._sanity_table()
        if st is None:
            pdf.para("Not run.")
        else:
            n = len(st[0]) - 1
            pdf.table(st[0], st[1], (50, *([min(35, 130 / max(n, 1))] * n)))
        pdf.heading("Settings")
        pdf.pairs(_config_lines(self.settings))
        return pdf.bytes()


# --------------------------------------------------------------------------- PDF writer

def _pdf_class():
    from fpdf import FPDF

    class Pdf(FPDF):
        def footer(self):  # every page: the disclaimer and the page number
            self.set_y(-16)
            self.set_font("helvetica", "I", 7)
            self.set_text_color(90, 90, 90)
            self.multi_cell(0, 3.2, pdf_text(DISCLAIMER) + f"   Page {self.page_no()}/{{nb}}",
                            align="C")
            self.set_text_color(0, 0, 0)
    return Pdf


class _Pdf:
    """A thin writer over fpdf2: headings, key-value rows, tables, pictures, bars; all text
    through :func:`pdf_text`."""

    def __init__(self, title: str):
        self.pdf = _pdf_class()(orientation="P", unit="mm", format="A4")
        self.pdf.set_auto_page_break(True, margin=20)
        self.pdf.set_margins(15, 15, 15)
        self.pdf.set_title(pdf_text(title))
        self.pdf.set_creator(pdf_text("nnsens"))
        self.pdf.alias_nb_pages()
        self.pdf.add_page()
        self.width = self.pdf.w - self.pdf.l_margin - self.pdf.r_margin

    def _room(self, h: float) -> None:
        if self.pdf.get_y() + h > self.pdf.h - 20:
            self.pdf.add_page()

    def heading(self, text: str, level: int = 2) -> None:
        self._room(14)
        self.pdf.set_font("helvetica", "B", 16 if level == 1 else 13)
        self.pdf.ln(2)
        self.pdf.cell(0, 8, pdf_text(text), new_x="LMARGIN", new_y="NEXT")
        self.pdf.set_font("helvetica", "", 9)

    def para(self, text: str, size: float = 9, style: str = "") -> None:
        self.pdf.set_font("helvetica", style, size)
        self.pdf.multi_cell(self.width, 4.2, pdf_text(text), new_x="LMARGIN", new_y="NEXT")
        self.pdf.set_font("helvetica", "", 9)

    def warning(self, text: str) -> None:
        self.pdf.set_fill_color(253, 226, 225)
        self.pdf.set_text_color(150, 0, 0)
        self.pdf.set_font("helvetica", "B", 9)
        self.pdf.multi_cell(self.width, 4.5, pdf_text("Warning: " + text), border=1, fill=True,
                            new_x="LMARGIN", new_y="NEXT")
        self.pdf.set_text_color(0, 0, 0)
        self.pdf.ln(1)

    def pairs(self, rows) -> None:
        """Key-value rows: the key in bold on the left, the value wrapped on the right (a hex
        digest in a fixed-width font)."""
        kw = 48
        for k, v in rows:
            v = str(v)
            mono = len(v) == 64 and set(v) <= set("0123456789abcdef")
            self.pdf.set_font("courier" if mono else "helvetica", "", 9)
            lines = max(1, len(self.pdf.multi_cell(self.width - kw, 4.5, pdf_text(v),
                                                   dry_run=True, output="LINES")))
            self._room(4.5 * lines + 1)
            y = self.pdf.get_y()
            self.pdf.set_font("helvetica", "B", 9)
            self.pdf.multi_cell(kw, 4.5, pdf_text(k), new_x="LMARGIN", new_y="NEXT")
            y_key = self.pdf.get_y()
            self.pdf.set_xy(self.pdf.l_margin + kw, y)
            self.pdf.set_font("courier" if mono else "helvetica", "", 9)
            self.pdf.multi_cell(self.width - kw, 4.5, pdf_text(v), new_x="LMARGIN", new_y="NEXT")
            self.pdf.set_y(max(y_key, self.pdf.get_y()))
        self.pdf.set_font("helvetica", "", 9)

    def table(self, head, rows, widths) -> None:
        self.pdf.set_font("helvetica", "B", 8)
        self._room(6 * min(len(rows) + 1, 4))
        for h, w in zip(head, widths):
            self.pdf.cell(w, 5, pdf_text(h), border=1)
        self.pdf.ln()
        self.pdf.set_font("helvetica", "", 8)
        for r in rows:
            self._room(5)
            for c, w in zip(r, widths):
                text = pdf_text(c)
                while self.pdf.get_string_width(text) > w - 2 and len(text) > 2:
                    text = text[:-2] + "~"
                self.pdf.cell(w, 5, text, border=1)
            self.pdf.ln()
        self.pdf.set_font("helvetica", "", 9)

    def _image(self, arr: np.ndarray, x: float, y: float, w: float, h: float) -> tuple[float, float]:
        """Draw ``arr`` inside the box (keeping its aspect ratio); returns the size drawn."""
        from PIL import Image
        ih, iw = arr.shape[:2]
        s = min(w / iw, h / ih)
        self.pdf.image(Image.fromarray(_fit(np.asarray(arr, np.uint8))), x=x, y=y, w=iw * s, h=ih * s)
        return iw * s, ih * s

    def picture(self, arr: np.ndarray, w: float, h: float, caption: str = "") -> None:
        ih, iw = arr.shape[:2]
        s = min(w / iw, h / ih)
        self._room(ih * s + 8)
        y = self.pdf.get_y()
        _, dh = self._image(arr, self.pdf.l_margin, y, w, h)
        self.pdf.set_y(y + dh + 1)
        if caption:
            self.para(caption, 8, "I")

    def bars(self, probs, names, highlight: int) -> None:
        """Probability bars drawn with fpdf rectangles, named with the class names."""
        row = 6
        self._room(row * len(probs) + 4)
        x0, label_w, bar_w = self.pdf.l_margin, 55, 90
        for k, v in enumerate(probs):
            y = self.pdf.get_y()
            self.pdf.set_font("helvetica", "B" if k == highlight else "", 9)
            name = pdf_text(names[k])
            while self.pdf.get_string_width(name) > label_w - 2 and len(name) > 2:
                name = name[:-2] + "~"
            self.pdf.set_xy(x0, y)
            self.pdf.cell(label_w, row - 1, name)
            self.pdf.set_draw_color(190, 190, 190)
            self.pdf.rect(x0 + label_w, y + 0.8, bar_w, row - 2.6)
            fill = (186, 54, 85) if k == highlight else (130, 130, 130)
            self.pdf.set_fill_color(*fill)
            if v > 0:
                self.pdf.rect(x0 + label_w, y + 0.8, max(0.3, bar_w * float(v)), row - 2.6, style="F")
            self.pdf.set_xy(x0 + label_w + bar_w + 3, y)
            self.pdf.cell(20, row - 1, f"{float(v):.1%}")
            self.pdf.set_xy(x0, y + row)
        self.pdf.set_draw_color(0, 0, 0)
        self.pdf.set_font("helvetica", "", 9)
        self.pdf.ln(2)

    def method_block(self, title: str, description: str, images, colorbar, scale: str) -> None:
        ih, iw = images[0].shape[:2]
        col = (self.width - 8) / 3
        s = min(col / iw, 60 / ih)
        self._room(ih * s + 40)
        self.pdf.set_font("helvetica", "B", 11)
        self.pdf.cell(0, 6, pdf_text(title), new_x="LMARGIN", new_y="NEXT")
        self.para(description, 9, "I")
        y = self.pdf.get_y() + 1
        for k, im in enumerate(images):
            self._image(im, self.pdf.l_margin + k * (col + 4), y, col, 60)
        y += ih * s + 2
        cw, ch = self._image(colorbar, self.pdf.l_margin, y, 80, 14)
        self.pdf.set_y(y + ch + 1)
        self.para(scale, 7.5)
        self.pdf.ln(2)

    def bytes(self) -> bytes:
        return bytes(self.pdf.output())
