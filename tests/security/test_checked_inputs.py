"""Data and models are checked at load (issue 11): NaN / inf / empty CSV and NPZ, a one-valued
target, NaN-output models and models whose output shape the pages cannot use are refused with a
message naming the column / row / shape, instead of a RuntimeError, "nan%" or "zero-size array"
later."""
import numpy as np
import pytest
import torch
from torch import nn

from nnsens_core import data as nd
from nnsens_core.errors import NnsensError
from nnsens_core.loading import load_model
from nnsens_core.zoo import IMAGE, ModelSpec, PaperMLP, VGG16Small
from tests.uploads import npz_bytes, torch_bytes


@pytest.mark.parametrize("csv, message", [
    (b"a,b,y\n1,2,0\n3,inf,1\n4,5,0\n", r"column 'b' has 1 missing \(NaN\) or infinite value\(s\), the first in data row 2 \(inf\)"),
    (b"a,b,y\n1,2,0\n3,-inf,1\n", r"column 'b' .* row 2 \(-inf\)"),
    (b"a,b,y\n1,2,0\n3,4,inf\n", r"column 'y' .* row 2 \(inf\)"),
    (b"a,b,y\n1,2,0\n3,,1\n", r"column 'b' has 1 missing .* row 2 \(nan\)"),
    (b"a,b,y\n", "no data rows"),
    (b"", "not a readable CSV: it is empty"),
    (b"a,b,y\n1,2,1\n3,4,1\n", r"target column 'y' has one value \(1\) in every row"),
])
def test_bad_csv_is_refused_naming_the_column(csv, message):
    with pytest.raises(NnsensError, match=message):
        nd.load_csv(csv)


@pytest.mark.parametrize("arrays, message", [
    ({"X": np.array([[1.0, np.inf], [2.0, 3.0]]), "y": np.array([0.0, 1.0])}, r"column 'x1' .* row 1 \(inf\)"),
    ({"X": np.array([[1.0, 2.0], [2.0, 3.0]]), "y": np.array([0.0, np.nan])}, r"column 'y' .* row 2 \(nan\)"),
    ({"X": np.zeros((0, 3)), "y": np.zeros(0)}, "has no rows"),
    ({"X": np.ones((3, 2)), "y": np.ones(3)}, "has one value"),
    ({"images": np.zeros((0, 3, 8, 8)), "labels": np.zeros(0, np.int64)}, "holds no images"),
    ({"images": np.full((2, 3, 8, 8), np.nan), "labels": np.array([0, 1])}, "NaN or infinite values .*image 0"),
])
def test_bad_npz_is_refused(arrays, message):
    with pytest.raises(NnsensError, match=message):
        nd.load_npz(npz_bytes(**arrays))


def test_good_data_still_loads():
    t = nd.load_csv(b"a,b,y\n1,2,0\n3,4,1\n")
    assert t.X.shape == (2, 2)
    img = nd.load_npz(npz_bytes(images=np.zeros((2, 3, 8, 8)), labels=np.array([0, 1])))
    assert len(img) == 2


def test_nan_output_model_is_refused_at_load():
    net = PaperMLP(8, 10)
    state = net.state_dict()
    state["fc2.weight"][0, 0] = float("nan")
    with pytest.raises(NnsensError, match="outputs are NaN or infinite"):
        load_model(torch_bytes(state), arch="paper-mlp", input_shape=(8,))


class _Squeezed(nn.Module):
    """A CNN returning one number per image (N,) instead of one logit per class."""

    def __init__(self):
        super().__init__()
        self.net = VGG16Small(3)

    def forward(self, x):
        return self.net(x)[:, 0]


class _Maps(nn.Module):
    """A CNN returning (N, 3, 2): a map per class instead of logits."""

    def __init__(self):
        super().__init__()
        self.net = VGG16Small(3)

    def forward(self, x):
        return self.net(x)[:, :, None].repeat(1, 1, 2)


@pytest.mark.parametrize("module", [_Squeezed, _Maps])
def test_wrong_output_shape_is_refused_at_load(module):
    import io
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module().eval()), buf)
    spec = ModelSpec(name="m.pt", arch="torchscript", task=IMAGE, input_shape=(3, 64, 64),
                     class_names=("covid", "pneumonia", "regular"))
    with pytest.raises(NnsensError, match=r"outputs of shape \(2,( 3, 2)?\) .* need \(N, 3\)"):
        load_model(buf.getvalue(), spec=spec, allow_code=True)
