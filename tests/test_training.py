import numpy as np
import torch
import pytest

from nnsens_core.data import load_breast_cancer, load_pima
from nnsens_core.demos import train_paper_mlp
from nnsens_core.errors import NnsensError
from nnsens_core.training import TrainConfig


def test_paper_mlp_on_pima_reference_case(pima_path):
    data = load_pima(pima_path)
    model, info = train_paper_mlp(data, "0:500", cfg=TrainConfig(epochs=100, seed=0))
    assert info["test_rows"] == "500:700"
    assert info["test_acc"] > 0.7  # a majority-class guess gives 0.67 on rows 500:700
    assert np.isfinite(info["loss"]).all() and info["loss"][-1] < info["loss"][0]


def test_paper_mlp_trains_on_breast_cancer():
    data = load_breast_cancer()
    model, info = train_paper_mlp(data, cfg=TrainConfig(epochs=30, seed=0))
    assert info["test_acc"] > 0.85
    assert not model.module.training


def test_train_config_validation():
    with pytest.raises(NnsensError, match="epochs=0"):
        TrainConfig(epochs=0)
    with pytest.raises(NnsensError, match="optimizer="):
        TrainConfig(optimizer="lbfgs")


def test_demo_mlp_depends_on_its_seed_only():
    """The seed fixes the initial weights too, whatever the global RNG state was before."""
    from nnsens_core.data import load_breast_cancer
    from nnsens_core.demos import train_paper_mlp
    data = load_breast_cancer()
    sums = []
    for outer in (123, 999):
        torch.manual_seed(outer)
        m, _ = train_paper_mlp(data, cfg=TrainConfig(epochs=1, seed=5))
        sums.append([p.detach().clone() for p in m.module.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*sums))
