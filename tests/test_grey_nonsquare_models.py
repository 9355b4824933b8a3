"""1-channel and non-square inputs load for every 2-D architecture (``in_channels`` kwargs)."""
import pytest
import torch

from nnsens_core import zoo
from nnsens_core.loading import check_forward, load_model
from tests.uploads import torch_bytes


@pytest.mark.parametrize("arch,kwargs", [("vgg16-small", {"width": 0.0625}),
                                         ("resnet18-small", {"width": 0.0625}),
                                         ("resnet18", {})])
def test_grey_non_square_state_dict_loads(arch, kwargs):
    kw = {"num_classes": 2, "in_channels": 1, **kwargs}
    torch.manual_seed(0)
    blob = torch_bytes(zoo.build(arch, **kw).state_dict())
    spec = zoo.ModelSpec("m", arch, zoo.IMAGE, (1, 48, 80), ("a", "b"), arch_kwargs=kw)
    lm = load_model(blob, arch=arch, arch_kwargs=kw, spec=spec)
    out = lm.module(torch.zeros(3, 1, 48, 80))
    assert out.shape == (3, 2)
    with pytest.raises(Exception):   # three-channel weights do not fit a one-channel input
        load_model(torch_bytes(zoo.build(arch, **{**kw, "in_channels": 3}).state_dict()), arch=arch,
                   arch_kwargs=kw, spec=spec)


@pytest.mark.slow
def test_torchvision_vgg16_takes_one_channel():
    m = zoo.build("vgg16", num_classes=2, in_channels=1).eval()
    spec = zoo.ModelSpec("m", "vgg16", zoo.IMAGE, (1, 64, 96), ("a", "b"),
                         arch_kwargs={"num_classes": 2, "in_channels": 1})
    check_forward(m, spec)
    assert m.features[0].in_channels == 1
