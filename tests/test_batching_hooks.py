import threading

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


# ------------------------------------------------------------------ models shared between threads
# The dashboard gives every session the same cached model and runs each session in its own thread:
# hooks registered by one computation must not touch another thread's forward pass.

def _in_thread(fn):
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            out["error"] = exc
    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 2)).eval()


def test_captured_outputs_ignore_other_threads():
    net = _net()
    x, other = torch.zeros(1, 3, 8, 8), torch.ones(5, 3, 8, 8)
    with capture_outputs(net, ["1"]) as store:
        _in_thread(lambda: net(other))          # another session's pass through the same model
        assert store == {}
        net(x)
        assert store["1"].shape == (1, 4, 8, 8)


def test_a_stopping_block_tap_does_not_stop_other_threads():
    from nnsens_core.local_sensitivity import _BlockTap
    net = _net()
    with _BlockTap(net, {"b": "1"}, lambda _lb, out: out.sum()) as tap:
        tap.stop_after = 1
        y = _in_thread(lambda: net(torch.ones(2, 3, 8, 8)))   # would raise _Stop if it fired here
        assert y.shape == (2, 2) and tap.calls == 0
        tap.run(torch.ones(1, 3, 8, 8))
        assert tap.calls == 1


def test_grad_cam_hooks_ignore_other_threads():
    from pytorch_grad_cam import GradCAM
    from nnsens_core.saliency._gradcam_adapter import make_cam, recorded_activations, release_cam
    net = _net()
    cam = make_cam(GradCAM, net, net[0])
    try:
        _in_thread(lambda: net(torch.ones(3, 3, 8, 8)))
        assert recorded_activations(cam) == []
        cam.activations_and_grads(torch.ones(1, 3, 8, 8))
        assert len(recorded_activations(cam)) == 1
    finally:
        release_cam(cam)
    assert hook_count(net) == 0


class _Rendezvous(nn.Module):
    """Identity layer. While ``barrier`` is set, every forward pass waits in it for a pass of the
    other thread, so two runs on the model go pass by pass together: each thread's passes run
    while the other thread's hooks are registered (a run that ran alone would break the barrier)."""

    def __init__(self):
        super().__init__()
        self.barrier: threading.Barrier | None = None
        self.passes = self.meetings = 0

    def forward(self, x):
        self.passes += 1
        if self.barrier is not None:
            self.barrier.wait(timeout=30)
            self.meetings += 1
        return x


def test_concurrent_local_sensitivity_on_one_model_matches_sequential_runs():
    from nnsens_core.local_sensitivity import LocalConfig, local_sensitivity
    gate = _Rendezvous()
    net = nn.Sequential(gate, *_net()).eval()
    blocks = {"b": "2", "c": "3"}                          # the ReLU and the MaxPool
    xa, xb = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(1)), torch.zeros(3, 8, 8)
    cfg = LocalConfig(batch_size=3, incremental="off")      # many passes with hooks registered
    want_a = local_sensitivity(net, xa, blocks, cfg, "cpu").maps
    passes = gate.passes                                   # forward passes of one run
    want_b = local_sensitivity(net, xb, blocks, cfg, "cpu").maps
    got, errors = {}, []

    def job(key, x):
        try:
            got[key] = local_sensitivity(net, x, blocks, cfg, "cpu").maps
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(f"{key}: {exc!r}")
            gate.barrier.abort()                           # do not leave the other thread waiting
    gate.barrier = threading.Barrier(2)
    threads = [threading.Thread(target=job, args=(k, x)) for k, x in (("a", xa), ("b", xb))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gate.barrier = None
    assert errors == []
    assert passes > 10 and gate.meetings == 2 * passes, "the two runs did not overlap pass by pass"
    torch.testing.assert_close(got["a"], want_a)
    torch.testing.assert_close(got["b"], want_b)
    assert hook_count(net) == 0
