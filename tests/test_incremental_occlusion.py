"""Occlusion through the incremental engine (head of the model box by box, tail by torch.fx):
equal to full forward passes, batch-size invariant, falls back (with a reason) where it does not
apply, and leaves the shared model untouched (no hooks, no state change, other threads unharmed)."""
from __future__ import annotations

import copy
import threading
import types

import pytest
import torch
from torch import fx, nn

from nnsens_core import _split, zoo
from nnsens_core.saliency import occlusion as O
from nnsens_core._hooks import add_forward_hook, hook_count
from nnsens_core.errors import NnsensError


def _vgg(seed=0, gain=(1.5, 2.5), dtype=torch.float32):
    """vgg16-small with random weights and BatchNorm gains > 1, so that occluding a few pixels of
    a 32x32 image visibly moves the logits (with unit gains they barely move)."""
    torch.manual_seed(seed)
    model = zoo.build("vgg16-small")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(*gain)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval().to(dtype)


def _both(model, x, classes, **cfg):
    before = {k: t.clone() for k, t in model.state_dict().items()}
    inc, d_inc = O.occlusion(model, x, classes, O.OcclusionConfig(**cfg), "cpu", return_details=True)
    full, d_full = O.occlusion(model, x, classes, O.OcclusionConfig(incremental="off", **cfg), "cpu",
                               return_details=True)
    assert d_full == {"engine": "full"}
    assert hook_count(model) == 0
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    return inc, d_inc, full


@pytest.mark.parametrize("hw, window, stride, reference, score", [
    ((32, 32), 4, 2, "constant", "logit"),
    ((32, 32), 4, 3, "blur", "prob"),        # stride 3 does not divide 32 - 4: a last flush position
    ((32, 32), 8, 5, "blur", "logit"),
    ((32, 32), 3, 2, "constant", "prob"),
    ((32, 40), 6, 4, "constant", "logit"),   # not square, last column position flush
])
def test_incremental_equals_full_on_vgg(hw, window, stride, reference, score):
    model = _vgg()
    x = torch.randn(3, 3, *hw, generator=torch.Generator().manual_seed(window))
    inc, det, full = _both(model, x, [2, 0, 1], window=window, stride=stride, reference=reference,
                           blur_sigma=1.5, constant=0.3, score=score)
    assert det["engine"] == "incremental" and det["head_layers"][-1] == "features.43"
    assert full.abs().max() > 1e-4              # the maps are far from float noise
    torch.testing.assert_close(inc, full, rtol=1e-4, atol=1e-6)
    # the class matters: another class gives another map
    other = O.occlusion(model, x, [0, 1, 2], O.OcclusionConfig(window, stride, reference, 1.5, 0.3,
                                                                score), "cpu")
    assert (other - inc).abs().max() > 1e-4


def test_incremental_is_exact_in_float64():
    """In float64 the two engines agree to 1e-12: the incremental one is exact, not approximate."""
    model = _vgg(1, gain=(2.0, 3.0), dtype=torch.float64)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    inc, det, full = _both(model, x, [1, 2], window=5, stride=3, reference="blur", blur_sigma=1.0,
                           score="prob")
    assert det["engine"] == "incremental" and inc.dtype == torch.float64
    assert full.abs().max() > 1e-3
    torch.testing.assert_close(inc, full, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bs", [1, 7, 50, 1000])
def test_batch_size_does_not_change_results_or_progress(bs):
    model = _vgg(2)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    kw = dict(window=6, stride=5, reference="constant", constant=0.5, score="logit")
    ref = O.occlusion(model, x, [1, 2], O.OcclusionConfig(batch_size=128, **kw), "cpu")
    calls, calls_off = [], []
    got, det = O.occlusion(model, x, [1, 2], O.OcclusionConfig(batch_size=bs, **kw), "cpu",
                           progress=lambda d, t: calls.append((d, t)), return_details=True)
    assert det["engine"] == "incremental"
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    O.occlusion(model, x, [1, 2], O.OcclusionConfig(batch_size=bs, incremental="off", **kw), "cpu",
                progress=lambda d, t: calls_off.append((d, t)))
    n = 2 * len(O.occlusion_positions((32, 32), O.OcclusionConfig(**kw)))
    assert calls == calls_off == [(min(d, n), n) for d in range(bs, n + bs, bs)]


def test_model_that_is_a_sequential_splits_inside_it():
    """The engine runs the leading conv + ReLU; the tail is the rest of the same Sequential."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3)).eval()
    x = torch.randn(3, 2, 12, 12)
    inc, det, full = _both(model, x, [0, 2, 1], window=3, stride=2, reference="blur", blur_sigma=1.0,
                           score="logit")
    assert det == {"engine": "incremental", "head_layers": ("0", "1", "2")}
    assert full.abs().max() > 1e-3
    torch.testing.assert_close(inc, full, rtol=1e-4, atol=1e-6)
    split = _split.split_head(model)
    assert split.tail.get_submodule("5") is model[5]     # shares the model's layers, no copies


class ViewHead(nn.Module):
    """Old-style VGG head: ``f.view(f.size(0), -1)`` reads the features' shape too."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(4, 4, 3, padding=1))
        self.head = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        f = self.features(x)
        return self.head(f.view(f.size(0), -1)) + f.shape[1]


def test_shape_queries_on_the_head_output_are_allowed():
    torch.manual_seed(0)
    model = ViewHead().eval()
    x = torch.randn(2, 3, 12, 12)
    inc, det, full = _both(model, x, [0, 2], window=3, stride=2, score="logit")
    assert det["engine"] == "incremental" and det["head_layers"][-1] == "features.3"
    assert full.abs().max() > 1e-3
    torch.testing.assert_close(inc, full, rtol=1e-4, atol=1e-6)


class _ConvHead(nn.Module):
    """A conv + ReLU ``features`` block and a linear ``head``; subclasses wire them in ``forward``."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(4, 3)


class Untraceable(_ConvHead):
    """Python control flow on a tensor value: torch.fx cannot trace it."""

    def forward(self, x):
        f = self.features(x)
        if f.mean() > 0:
            f = f * 2
        return self.head(f.mean((2, 3)))


class TwoReaders(_ConvHead):
    """The features' output is read twice."""

    def forward(self, x):
        f = self.features(x)
        return self.head(f.mean((2, 3))) + f.amax((1, 2, 3))[:, None]


class SharedConv(nn.Module):
    """One conv applied twice."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Linear(3, 3)

    def forward(self, x):
        return self.head(self.conv(torch.relu(self.conv(x))).mean((2, 3)))


class Scaled(_ConvHead):
    """The features do not receive the raw input."""

    def forward(self, x):
        return self.head(self.features(x * 2).mean((2, 3)))


class Remembers(_ConvHead):
    """Its forward stores the features on the module (tracing would store an fx proxy there)."""

    def __init__(self):
        super().__init__()
        self.last = None

    def forward(self, x):
        self.last = self.features(x)
        return self.head(self.last.mean((2, 3)))


def test_tracing_leaves_no_trace_on_a_model_that_sets_attributes():
    model = Remembers().eval()
    x = torch.randn(2, 3, 8, 8)
    got, det = O.occlusion(model, x, [0, 1], O.OcclusionConfig(4, 2, score="logit"), "cpu",
                           return_details=True)
    assert det["engine"] == "full" and "sets attributes (last)" in det["engine_reason"]
    assert isinstance(model.last, torch.Tensor)          # a tensor from the real passes, no proxy
    assert list(model.__dict__) == list(Remembers().__dict__)


@pytest.mark.parametrize("make, why", [
    (lambda: zoo.build("resnet18-small", width=0.0625).eval(), "'maxpool' is used 2 times"),
    (lambda: Untraceable().eval(), "torch.fx cannot trace"),
    (lambda: TwoReaders().eval(), "used 2 times"),
    (lambda: SharedConv().eval(), "conv is called 2 times"),
    (lambda: Scaled().eval(), "not a layer applied to the model input"),
])
def test_fallbacks_say_why_and_equal_off(make, why):
    torch.manual_seed(3)
    model = make()
    training = model.training
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    cfg = dict(window=4, stride=3, reference="blur", blur_sigma=1.0, score="logit")
    torch.manual_seed(0)
    got, det = O.occlusion(model, x, [0, 2], O.OcclusionConfig(**cfg), "cpu", return_details=True)
    torch.manual_seed(0)
    off = O.occlusion(model, x, [0, 2], O.OcclusionConfig(incremental="off", **cfg), "cpu")
    assert det["engine"] == "full" and why in det["engine_reason"], det
    assert torch.equal(got, off)
    assert hook_count(model) == 0 and model.training == training


def test_hooks_that_would_be_skipped_force_the_full_pass():
    model = _vgg()
    x = torch.randn(1, 3, 32, 32)
    cfg = O.OcclusionConfig(window=8, stride=8, score="logit", batch_size=4)
    seen = []
    handle = model.features.register_forward_hook(lambda *_: seen.append(1))   # a user's hook
    try:
        _, det = O.occlusion(model, x, [0], cfg, "cpu", return_details=True)
    finally:
        handle.remove()
    assert det["engine"] == "full" and "features has forward hooks" in det["engine_reason"]
    assert len(seen) == 1 + 1 + 4    # class count, base score, 16 occluded images in 4 batches

    # another thread's nnsens hook acts only in that thread: it does not stop the engine here
    ready, done = threading.Event(), threading.Event()

    def other():
        h = add_forward_hook(model.features[0], lambda *_: None)
        ready.set()
        done.wait(30)
        h.remove()

    t = threading.Thread(target=other)
    t.start()
    try:
        ready.wait(30)
        _, det = O.occlusion(model, x, [0], cfg, "cpu", return_details=True)
    finally:
        done.set()
        t.join()
    assert det["engine"] == "incremental"


class _TraceGate(nn.Module):
    """Runs ``inner``. When fx traces it (its input is a Proxy: fx's class-wide patches are
    installed), it waits until another thread has run a whole forward pass through the model, so
    that pass certainly ran while this thread traced. (The counters live in ``log``, whose own
    attributes change: a forward that assigned module attributes would not be split.)"""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.cond = threading.Condition()
        self.log = types.SimpleNamespace(tracing=False, passes_while_tracing=0, traces=0)

    def forward(self, x):
        if isinstance(x, fx.Proxy):
            log = self.log
            with self.cond:
                log.tracing, seen = True, log.passes_while_tracing
                met = self.cond.wait_for(lambda: log.passes_while_tracing > seen, timeout=30)
                log.tracing = False
                log.traces += met
        return self.inner(x)

    def other_thread_pass(self, x):
        with self.cond:
            during = self.log.tracing
        y = self(x)
        with self.cond:
            if during and self.log.tracing:   # tracing began before the pass and is still going
                self.log.passes_while_tracing += 1
                self.cond.notify_all()
        return y


def test_tracing_does_not_disturb_other_threads():
    """torch.fx patches nn.Module for every thread while it traces; other threads' forward passes
    through the same model must still get tensors and the same outputs."""
    model = _TraceGate(_vgg()).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expect = model(x)
    errors, stop = [], threading.Event()

    def forwards():
        try:
            while not stop.is_set():
                with torch.no_grad():
                    y = model.other_thread_pass(x)
                if not isinstance(y, torch.Tensor) or not torch.equal(y, expect):
                    errors.append(type(y).__name__)
        except Exception as exc:   # noqa: BLE001 - any failure in the other thread counts
            errors.append(repr(exc)[:200])

    t = threading.Thread(target=forwards)
    t.start()
    try:
        for _ in range(10):
            assert not isinstance(_split.split_head(model), str)
    finally:
        stop.set()
        t.join()
    assert errors == []
    assert model.log.traces == 10, "the other thread's passes did not run while this thread traced"
    assert hook_count(model) == 0


def test_bad_incremental_value():
    with pytest.raises(NnsensError, match=r"incremental='on'.*'auto', 'off'"):
        O.OcclusionConfig(incremental="on")


def test_a_model_in_training_mode_runs_as_its_eval_copy_and_stays_in_training_mode():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).train()
    model[1].running_mean.uniform_(-0.5, 0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    cfg = O.OcclusionConfig(window=4, stride=3, reference="blur", blur_sigma=1.0, score="logit")
    got, det = O.occlusion(model, x, [0, 2], cfg, "cpu", return_details=True)
    want = O.occlusion(copy.deepcopy(model).eval(), x, [0, 2], cfg, "cpu")
    assert det["engine"] == "incremental"
    torch.testing.assert_close(got, want)
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
