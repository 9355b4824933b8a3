"""_hooks.probe_outputs, the one probe pass, and the callers built on it."""
import pytest
import torch
from torch import nn

from nnsens_core._blocks import _bytes_per_item
from nnsens_core._hooks import hook_count, probe_outputs


class Net(nn.Module):
    """Registered: act, fc2, fc1, pair, unused, bn; executed: fc1, act, bn, fc2, act, pair."""

    def __init__(self):
        super().__init__()
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(5, 2)
        self.fc1 = nn.Linear(3, 5)
        self.pair = Pair()
        self.unused = nn.Linear(1, 1)
        self.bn = nn.BatchNorm1d(5)

    def forward(self, x):
        h = self.bn(self.act(self.fc1(x)))
        y = self.act(self.fc2(h))
        return self.pair(y)[0]


class Pair(nn.Module):
    def forward(self, y):
        return y * 2, "not a tensor"


class Text(nn.Module):
    def forward(self, y):
        return "text"


def test_execution_order_last_call_wins_and_all_calls():
    net = Net().eval()
    shapes = probe_outputs(net, torch.zeros(4, 3))
    # act runs twice: it reports its last call (4, 2) and sits where that call happened
    assert list(shapes) == ["fc1", "bn", "fc2", "act", "pair"]
    assert shapes == {"fc1": (4, 5), "bn": (4, 5), "fc2": (4, 2), "act": (4, 2), "pair": (4, 2)}
    every = probe_outputs(net, torch.zeros(4, 3), ["act", "fc2", "unused"], all_calls=True)
    assert every == {"act": [(4, 5), (4, 2)], "fc2": [(4, 2)]}  # unused: missing
    assert hook_count(net) == 0


def test_non_tensor_output_and_named_root():
    net = nn.Sequential(nn.Linear(3, 2), Text())
    assert probe_outputs(net, torch.zeros(1, 3)) == {"0": (1, 2), "1": ()}
    assert probe_outputs(Net().eval(), torch.zeros(2, 3), [""]) == {"": (2, 2)}


def test_training_model_is_left_alone_and_hooks_removed_on_error():
    net = Net().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    probe_outputs(net, torch.randn(4, 3))
    assert net.training and all(m.training for m in net.modules())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k   # BatchNorm running stats not updated
    with pytest.raises(RuntimeError):
        probe_outputs(net, torch.zeros(4, 7))  # wrong width: the forward pass fails
    assert hook_count(net) == 0
    eval_net = Net().eval()
    with pytest.raises(RuntimeError):
        probe_outputs(eval_net, torch.zeros(4, 7))
    assert hook_count(eval_net) == 0


def test_bytes_per_item_counts_every_leaf_call():
    net = Net().eval()
    x = torch.zeros(3)
    # leaves (modules without children): fc1 5, act 5 + 2 (two calls), bn 5, fc2 2, pair 2 (the
    # first element of its tuple); unused never runs; plus twice the input, float32
    elems = 5 + 5 + 2 + 5 + 2 + 2
    assert _bytes_per_item(net, x) == (2 * 3 + elems) * 4


def test_callers():
    from nnsens_core.saliency.cam import layer_grids
    from nnsens_core.sobol import hidden_layers
    from ui.cnn_views import layer_shapes

    assert hidden_layers(Net().train(), 3) == {"fc1": 5, "bn": 5, "fc2": 2, "act": 2, "pair": 2}
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(2 * 4 * 4, 3))
    assert layer_grids(cnn, (1, 8, 8), ["2", "0", "4"]) == {"0": (2, 8, 8), "2": (2, 4, 4), "4": (3,)}
    assert layer_shapes(cnn, (1, 8, 8), "cpu") == {"0": (2, 8, 8), "1": (2, 8, 8), "2": (2, 4, 4),
                                                   "3": (32,), "4": (3,)}
    assert hook_count(cnn) == 0


# --------------------------------------------------------------------------- cached shape probes

class CountingCNN(nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 3))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.head(torch.relu(self.conv(x)))


def test_input_check_and_layer_grids_probe_once_per_model_and_shape():
    from nnsens_core.saliency._common import check_model_input
    from nnsens_core.saliency.cam import default_target_layer, layer_grids, validate_target_layer

    net = CountingCNN().eval()
    x = torch.rand(2, 3, 16, 16)
    assert check_model_input(net, x)[1] == 3 and net.calls == 1
    assert check_model_input(net, x)[1] == 3 and net.calls == 1      # cached
    check_model_input(net, torch.rand(1, 3, 20, 20))                  # another size: probed
    assert net.calls == 2
    grids = layer_grids(net, (3, 16, 16))
    assert grids["conv"] == (4, 16, 16) and net.calls == 3
    name = default_target_layer(net, (3, 16, 16), min_grid=4)
    validate_target_layer(net, name, (3, 16, 16))
    assert name == "conv" and net.calls == 3                          # the same probe, reused
    grids["conv"] = "changed by the caller"                           # the store hands out copies
    assert layer_grids(net, (3, 16, 16))["conv"] == (4, 16, 16)
    net.conv = nn.Conv2d(3, 6, 3, padding=1)                          # structure changed: probed again
    net.head[2] = nn.Linear(6, 5)
    net.eval()  # (a model with a module in training mode is probed on an eval copy)
    assert check_model_input(net, x)[1] == 5 and layer_grids(net, (3, 16, 16))["conv"] == (6, 16, 16)
    assert net.calls == 5
    assert check_model_input(CountingCNN(), x)[1] == 3                # another model object: its own


def test_a_failed_probe_is_not_stored():
    from nnsens_core.errors import NnsensError
    from nnsens_core.saliency._common import check_model_input

    class Picky(CountingCNN):
        ok = False

        def forward(self, x):
            if not self.ok:
                raise RuntimeError("not yet")
            return super().forward(x)

    net = Picky().eval()
    with pytest.raises(NnsensError, match="does not accept"):
        check_model_input(net, torch.rand(1, 3, 8, 8))
    net.ok = True
    assert check_model_input(net, torch.rand(1, 3, 8, 8))[1] == 3
