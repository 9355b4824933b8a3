from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The tests run tiny networks; one intra-op thread avoids threads fighting over the cores (with the
# streamlit server of the browser tests, or other jobs on a shared machine), which made them ~10x slower.
torch.set_num_threads(1)
PIMA = ROOT.parent / "shared" / "data" / "pima" / "diabetes.csv"


@pytest.fixture
def pima_path() -> Path:
    if not PIMA.is_file():
        pytest.skip(f"{PIMA} is absent")
    return PIMA
