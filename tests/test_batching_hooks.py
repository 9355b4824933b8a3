import pytest
import torch
from torch import nn

from nnsens_core._batching import auto_batch_size, check_memory, map_batches
from nnsens_core._hooks import capture_outputs, forward_with_outputs, get_module, hook_count
from nnsens_core.errors import NnsensError


@pytest.mark.parametrize("bs", [1, 3, 7, 100])
def test_map_batches_is_batch_size_invariant(bs):
    x = torch.arange(20.0).reshape(10, 2)
    seen = []
    out = map_batches(lambda sl: (x[sl] * 2, x[sl].sum(1)), len(x), bs,
                      progress=lambda d, t: seen.append((d, t)))
    torch.testing.assert_close(out[0], x * 2)
    torch.testing.assert_close(out[1], x.sum(1))
    assert seen[-1] == (10, 10)


def test_memory_helpers():
    assert auto_batch_size(1024, budget=10 * 1024) == 10
    with pytest.raises(NnsensError, match="GiB"):
        check_memory(3 * 2**30, 2**30, "this run")


def test_hooks_capture_and_are_removed_even_on_error():
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0], [0, 1], [1, 1]]))
        net[0].bias.zero_()
    y, outs = forward_with_outputs(net, torch.tensor([[1.0, -2.0]]), ["0", "1"])
    torch.testing.assert_close(outs["0"], torch.tensor([[1.0, -2.0, -1.0]]))
    torch.testing.assert_close(outs["1"], torch.tensor([[1.0, 0.0, 0.0]]))
    assert hook_count(net) == 0
    with pytest.raises(RuntimeError):
        with capture_outputs(net, ["0"]):
            assert hook_count(net) == 1
            raise RuntimeError("boom")
    assert hook_count(net) == 0
    with pytest.raises(NnsensError, match="layer 'nope' does not exist"):
        get_module(net, "nope")
