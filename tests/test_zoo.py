import pytest
import torch

from nnsens_core.device import resolve_device
from nnsens_core.errors import NnsensError
from nnsens_core.zoo import ModelSpec, PaperMLP, build, image_blocks, last_conv_layer


def test_paper_mlp_structure():
    net = PaperMLP(8, 10)
    kinds = [type(m).__name__ for m in net.children()]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "Sigmoid"]
    out = net.eval()(torch.randn(4, 8))
    assert out.shape == (4,) and ((out > 0) & (out < 1)).all()


@pytest.mark.parametrize("arch,n_blocks,size", [("vgg16-small", 5, 64), ("resnet18-small", 4, 64),
                                                ("vgg16", 5, 224), ("resnet18", 4, 224)])
def test_blocks_are_detected(arch, n_blocks, size):
    net = build(arch, num_classes=3).eval()
    blocks = image_blocks(net)
    assert len(blocks) == n_blocks
    with torch.no_grad():
        assert net(torch.zeros(1, 3, size, size)).shape == (1, 3)
    assert last_conv_layer(net)


def test_spec_normalisation_round_trip_and_validation():
    spec = ModelSpec("m", "vgg16-small", "image", (3, 4, 4), mean=(0.5,) * 3, std=(0.25,) * 3)
    x = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(spec.denormalize(spec.normalize(x)), x)
    lo, hi = spec.input_range(x)
    assert float(lo.min()) == -2.0 and float(hi.max()) == 2.0
    with pytest.raises(NnsensError, match="one value per channel"):
        ModelSpec("m", "a", "image", (3, 4, 4), mean=(0.5,))
    with pytest.raises(NnsensError, match="task="):
        ModelSpec("m", "a", "audio", (3,))
    with pytest.raises(NnsensError, match="unknown"):
        build("lenet")


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cuda", "mps", "cpu")
    with pytest.raises(NnsensError, match="device="):
        resolve_device("tpu")
