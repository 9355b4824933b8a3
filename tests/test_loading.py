import io
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from nnsens_core.errors import NnsensError
from nnsens_core.loading import is_torchscript, load_model, match_state_dict
from nnsens_core.zoo import PaperMLP, build
from tests.uploads import TouchOnUnpickle, torch_bytes


def test_state_dict_round_trip_gives_identical_outputs():
    torch.manual_seed(0)
    net = PaperMLP(8, 10).eval()
    x = torch.randn(5, 8)
    lm = load_model(torch_bytes(net.state_dict()), arch="paper-mlp")
    assert lm.report == "keys matched by name"
    assert not lm.module.training
    torch.testing.assert_close(lm.module(x), net(x), rtol=0, atol=0)


def test_renamed_keys_load_by_order_and_shape_and_report_the_mapping():
    torch.manual_seed(1)
    net = PaperMLP(8, 10).eval()
    seq = torch.nn.Sequential(torch.nn.Linear(8, 10), torch.nn.BatchNorm1d(10), torch.nn.ReLU(),
                              torch.nn.Linear(10, 1), torch.nn.BatchNorm1d(1), torch.nn.Sigmoid())
    seq.load_state_dict(dict(zip(seq.state_dict(), net.state_dict().values())))
    lm = load_model(torch_bytes(seq.state_dict()), arch="paper-mlp")
    assert "order and shape" in lm.report and "0.weight -> fc1.weight" in lm.report
    x = torch.randn(4, 8)
    torch.testing.assert_close(lm.module(x), seq.eval()(x).squeeze(-1))


def test_wrong_shapes_are_refused_with_the_tensor_named():
    state = PaperMLP(8, 12).state_dict()
    with pytest.raises(NnsensError, match="fc1.weight"):
        load_model(torch_bytes(state), arch="paper-mlp")
    with pytest.raises(NnsensError, match="tensors but the architecture needs"):
        load_model(torch_bytes({"w": torch.zeros(3)}), arch="paper-mlp")


def test_nested_checkpoint_dict_is_accepted():
    net = PaperMLP(8, 10)
    lm = load_model(torch_bytes({"epoch": 3, "state_dict": net.state_dict()}), arch="paper-mlp")
    assert lm.spec.input_shape == (8,)


class _Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "pwned"))


def test_malicious_pickle_payload_never_runs(tmp_path):
    marker = tmp_path / "marker.txt"
    for blob in (torch_bytes({"fc1.weight": _Payload(marker)}), pickle.dumps(_Payload(marker))):
        with pytest.raises(NnsensError, match="pickled code is refused"):
            load_model(blob, arch="paper-mlp")
    assert not marker.exists()


def test_os_system_payload_is_refused(tmp_path):
    marker = tmp_path / "sys.txt"
    with pytest.raises(NnsensError):
        load_model(torch_bytes({"x": TouchOnUnpickle(marker)}), arch="paper-mlp")
    assert not marker.exists()


def test_corrupt_empty_and_oversized_files(tmp_path):
    with pytest.raises(NnsensError, match="not a safe weights file"):
        load_model(b"this is not a model", arch="paper-mlp")
    with pytest.raises(NnsensError, match="empty"):
        load_model(b"", arch="paper-mlp")
    big = tmp_path / "big.pt"
    big.write_bytes(b"0" * 2048)
    with pytest.raises(NnsensError, match="over the"):
        load_model(big, arch="paper-mlp", max_bytes=1024)
    with pytest.raises(NnsensError, match="does not exist"):
        load_model(tmp_path / "missing.pt", arch="paper-mlp")
    with pytest.raises(NnsensError, match="needs an architecture"):
        load_model(torch_bytes(PaperMLP().state_dict()))
    with pytest.raises(NnsensError, match="unknown"):
        load_model(torch_bytes(PaperMLP().state_dict()), arch="nope")


def test_torchscript_loads_and_checks_the_input_shape():
    net = torch.jit.script(PaperMLP(8, 10).eval())
    buf = io.BytesIO()
    torch.jit.save(net, buf)
    data = buf.getvalue()
    assert is_torchscript(data) and not is_torchscript(torch_bytes(PaperMLP().state_dict()))
    lm = load_model(data, input_shape=(8,), allow_code=True)
    assert lm.report == "TorchScript archive" and lm.spec.task == "tabular"
    with pytest.raises(NnsensError, match="does not accept inputs of shape"):
        load_model(data, input_shape=(5,), allow_code=True)
    with pytest.raises(NnsensError, match="input shape"):
        load_model(data, allow_code=True)


class ReadsAServerFile(torch.nn.Module):
    """A scripted model whose forward returns the bytes of a file on the machine that runs it."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def forward(self, x):
        return torch.from_file(self.path, False, 8, dtype=torch.uint8).float()[None].expand(len(x), 8)


def test_torchscript_is_code_and_refused_unless_allowed(tmp_path, monkeypatch):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"hunter2!")
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(ReadsAServerFile(str(secret))), buf)
    data = buf.getvalue()
    monkeypatch.delenv("NNSENS_ALLOW_CODE_MODELS", raising=False)
    for call in (lambda: load_model(data, input_shape=(8,)),
                 lambda: load_model(data, input_shape=(8,), allow_code=False)):
        with pytest.raises(NnsensError, match=r"TorchScript file, which is code.*state_dict\(\)"):
            call()
    # what the refusal prevents: allowed, the file's bytes come out of the model
    lm = load_model(data, input_shape=(8,), allow_code=True)
    assert bytes(lm.module(torch.zeros(1, 8))[0].to(torch.uint8).tolist()) == b"hunter2!"
    monkeypatch.setenv("NNSENS_ALLOW_CODE_MODELS", "1")
    assert load_model(data, input_shape=(8,)).report == "TorchScript archive"


def test_image_state_dict_for_small_cnn_loads():
    net = build("vgg16-small", num_classes=3).eval()
    lm = load_model(torch_bytes(net.state_dict()), arch="vgg16-small", arch_kwargs={"num_classes": 3})
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(lm.module(x), net(x))
    assert lm.spec.input_shape == (3, 64, 64)


def test_match_state_dict_ignores_num_batches_tracked_when_aligning():
    net = PaperMLP(8, 10)
    renamed = {f"k{i}": v for i, (k, v) in enumerate(net.state_dict().items())
               if not k.endswith("num_batches_tracked")}
    mapped, report = match_state_dict(PaperMLP(8, 10), renamed)
    assert "order and shape" in report
    assert set(mapped) == set(net.state_dict())
    assert zipfile  # zipfile used by is_torchscript


def test_renamed_counters_are_recognised_by_value_not_name():
    """Keys renamed wholesale (num_batches_tracked included) still align by order and shape."""
    torch.manual_seed(2)
    net = PaperMLP(8, 10).eval()
    renamed = {f"layer{i}": v for i, v in enumerate(net.state_dict().values())}
    assert len(renamed) == 14  # 4 linear + 2 x 5 BatchNorm tensors
    mapped, report = match_state_dict(PaperMLP(8, 10), renamed)
    assert "layer0 -> fc1.weight" in report
    fresh = PaperMLP(8, 10)
    fresh.load_state_dict(mapped)
    x = torch.randn(5, 8)
    torch.testing.assert_close(fresh.eval()(x), net(x), rtol=0, atol=0)
