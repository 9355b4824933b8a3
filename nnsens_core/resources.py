"""Where the files nnsens ships are read from (read-only; never a writable cache).

* :func:`models_dir`: the demo CNN weights and their ``manifest.json``. In a source checkout or an
  editable install this is the repository's top-level ``models/`` folder; a wheel carries the same
  files as the package data ``nnsens_core/_models/``. ``$NNSENS_MODELS_DIR`` overrides both.
* :func:`pima_csv`: the Pima Indians Diabetes CSV shipped as package data
  (``nnsens_core/datasets/pima_diabetes.csv``, 768 rows, 8 features + ``Outcome``).
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import NnsensError

PACKAGE_DIR = Path(__file__).resolve().parent


def models_dir() -> Path:
    """The folder holding the shipped demo models and ``manifest.json``."""
    env = os.environ.get("NNSENS_MODELS_DIR")
    candidates = [Path(env)] if env else []
    candidates += [PACKAGE_DIR / "_models", PACKAGE_DIR.parent / "models"]
    for path in candidates:
        if (path / "manifest.json").is_file():
            return path
    raise NnsensError(f"no demo models found (looked in {', '.join(map(str, candidates))}); "
                      "reinstall nnsens or set NNSENS_MODELS_DIR to a folder with manifest.json")


def pima_csv() -> Path:
    """The shipped Pima diabetes CSV."""
    return PACKAGE_DIR / "datasets" / "pima_diabetes.csv"
