from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PIMA = ROOT.parent / "shared" / "data" / "pima" / "diabetes.csv"


@pytest.fixture
def pima_path() -> Path:
    if not PIMA.is_file():
        pytest.skip(f"{PIMA} is absent")
    return PIMA
