"""Bytes of the files a user uploads, built in memory for the tests (PNG, ZIP, NPZ, ``torch.save``),
and a pickle payload that the loaders must refuse without running it."""
from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import torch
from PIL import Image


def png_bytes(a: np.ndarray) -> bytes:
    """A PNG of ``a`` (uint8; (H, W) gives a grayscale image, (H, W, 3) an RGB one)."""
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def zip_bytes(files: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    """A ZIP archive holding ``{name: content}`` (stored; ``zipfile.ZIP_DEFLATED`` compresses)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, blob in files.items():
            zf.writestr(name, blob)
    return buf.getvalue()


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def torch_bytes(obj) -> bytes:
    """What ``torch.save(obj, file)`` writes."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


class TouchOnUnpickle:
    """Unpickling it runs ``touch <marker>`` (``os.system``): a loader that runs pickled code
    creates the file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def uploaded_paper_mlp(seed: int, name: str = "model.pt"):
    """A paper MLP for the demo data (Pima) with seed-``seed`` weights, as the dashboard holds an
    uploaded tabular model called ``name`` (tests give several sessions the same name)."""
    from nnsens_core.data import demo_tabular
    from nnsens_core.zoo import TABULAR, LoadedModel, ModelSpec, PaperMLP

    demo = demo_tabular()
    torch.manual_seed(seed)
    module = PaperMLP(demo.n_features, 10).eval()
    spec = ModelSpec(name=name, arch="paper-mlp", task=TABULAR, input_shape=(demo.n_features,),
                     feature_names=demo.feature_names,
                     arch_kwargs={"n_inputs": demo.n_features, "hidden": 10})
    return LoadedModel(module, spec, "uploaded")
