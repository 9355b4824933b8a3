"""budget.forward_flop's hand count for Linear chains equals the dispatch counter's."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from nnsens_core import budget
from nnsens_core.zoo import PaperMLP


def _counted(module, shape) -> float:
    counter = budget._FlopCount()
    with torch.no_grad(), counter:
        module(torch.zeros((1, *shape)))
    return float(counter.total)


@pytest.mark.parametrize("module,shape", [
    (PaperMLP(8, 10).eval(), (8,)),
    (PaperMLP(5, 3, batchnorm=False).eval(), (5,)),
    (nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 16), nn.Tanh(),
                   nn.Linear(16, 3), nn.Softmax(-1)).eval(), (6,)),
])
def test_chain_count_equals_the_dispatch_counter(module, shape):
    hand = budget._chain_flop(module, shape)
    assert hand is not None and hand == _counted(module, shape) > 0
    assert budget.forward_flop(module, shape) == max(hand, budget.MIN_FLOP_PER_SAMPLE)


def test_other_models_are_left_to_the_counter():
    class Twice(PaperMLP):  # a subclass may run fc1 twice: not a chain
        pass
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 14 * 14, 2))
    nested = nn.Sequential(nn.Sequential(nn.Linear(4, 4)), nn.Linear(4, 1))
    assert budget._chain_flop(Twice(4, 3), (4,)) is None
    assert budget._chain_flop(conv, (3, 16, 16)) is None
    assert budget._chain_flop(nested, (4,)) is None
    assert budget._chain_flop(nn.Sequential(nn.Linear(4, 3)), (5,)) is None  # width mismatch
