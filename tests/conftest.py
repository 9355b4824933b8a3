from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
# The tests run tiny networks; one intra-op thread avoids threads fighting over the cores (with the
# streamlit server of the browser tests, or other jobs on a shared machine), which made them ~10x slower.
torch.set_num_threads(1)


@pytest.fixture
def pima_path() -> Path:
    """The Pima CSV the library uses: $NNSENS_PIMA_CSV when set, else the copy nnsens ships."""
    from nnsens_core.data import pima_path as library_pima_path
    path = library_pima_path()
    assert path.is_file(), f"{path} is missing (NNSENS_PIMA_CSV points nowhere?)"
    return path


@pytest.fixture(scope="session")
def tiny_vgg_weights(tmp_path_factory) -> str:
    """Path of a state_dict file of an untrained VGG-16-small (width 1/16), for CLI tests."""
    from nnsens_core import zoo
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "vgg.pt"
    torch.save(zoo.build("vgg16-small", width=0.0625).state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def rx():
    """One local Ray (2 CPUs) per test module (tests/test_*_ray.py), as a RayExecutor; workers
    import nnsens_core and tests from the repository root."""
    import os

    import ray

    from nnsens_core import executor as E
    ROOT = str(Path(__file__).resolve().parent.parent)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = ROOT + (os.pathsep + old if old else "")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield E.RayExecutor(max_retries=2)
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
