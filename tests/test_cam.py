"""Grad-CAM wrapper: hand-computed maps on a toy CNN, one target per image, hooks, layers."""
import numpy as np
import pytest
import torch
from torch import nn

from nnsens_core.saliency import cam as C
from nnsens_core import zoo
from nnsens_core._hooks import hook_count
from nnsens_core.errors import NnsensError


class Toy(nn.Module):
    """conv (1x1, weights +1 / -1) -> global mean -> identity linear: logit_c = mean(A_c)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.act = nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.fc.weight.copy_(torch.eye(2))

    def forward(self, x):
        return self.fc(self.pool(self.act(self.conv(x))).flatten(1))


def _x():
    torch.manual_seed(0)
    return torch.randn(3, 1, 5, 5)


def _expected(x, cls):
    # Grad-CAM weight of channel k for class c is W[c, k] / 25 > 0 only for k = c, so the map is
    # relu(A_c) = relu(+x) for class 0 and relu(-x) for class 1, min-max scaled to [0, 1].
    sign = torch.tensor([1.0 if c == 0 else -1.0 for c in cls]).view(-1, 1, 1)
    m = torch.relu(sign * x[:, 0])
    m = m - m.flatten(1).min(1)[0].view(-1, 1, 1)
    return m / (m.flatten(1).max(1)[0].view(-1, 1, 1) + 1e-7)


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "xgradcam", "layercam", "gradcam++"])
def test_hand_computed_maps_with_one_class_per_image(method):
    model, x = Toy().eval(), _x()
    cls = [0, 1, 0]
    maps = C.cam_maps(model, x, cls, C.CamConfig(method, "conv"), "cpu")
    assert maps.shape == (3, 5, 5)
    expect = _expected(x, cls)
    if method in ("gradcam", "hirescam", "layercam"):
        # hirescam: grad * A with constant grads W[c,k]/25 -> same map; layercam: relu(grad) * A
        assert torch.allclose(maps, expect, atol=1e-5)
    else:  # other weightings, but still the class channel only -> same top pixel
        assert (maps.flatten(1).argmax(1) == expect.flatten(1).argmax(1)).all()


def test_batch_equals_single_images_and_batch_size_invariant():
    model, x = Toy().eval(), _x()
    cls = [1, 0, 1]
    whole = C.cam_maps(model, x, cls, C.CamConfig("gradcam", "conv", batch_size=3), "cpu")
    bs1 = C.cam_maps(model, x, cls, C.CamConfig("gradcam", "conv", batch_size=1), "cpu")
    bs2 = C.cam_maps(model, x, cls, C.CamConfig("gradcam", "conv", batch_size=2), "cpu")
    assert torch.allclose(whole, bs1, atol=1e-6) and torch.allclose(whole, bs2, atol=1e-6)
    # the package's pitfall: a single target only drives the first image of the batch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    with GradCAM(model, [model.conv]) as g:
        naive = torch.from_numpy(g(x, [ClassifierOutputTarget(1)]))
    assert not torch.allclose(naive[1:], whole[1:], atol=1e-3)


def test_scorecam_matches_package_and_batch_size():
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    model, x = Toy().eval(), _x()
    cls = [0, 1, 1]
    ours = C.cam_maps(model, x, cls, C.CamConfig("scorecam", "conv", score_batch_size=1), "cpu")
    ours2 = C.cam_maps(model, x, cls, C.CamConfig("scorecam", "conv", score_batch_size=7), "cpu")
    with ScoreCAM(model, [model.conv]) as s:
        ref = s(x, [ClassifierOutputTarget(c) for c in cls])
    assert np.allclose(ours.numpy(), ref, atol=1e-5)
    assert torch.allclose(ours, ours2, atol=1e-6)


def test_hooks_released_and_grads_cleared_even_on_error():
    model, x = Toy().eval(), _x()
    C.cam_maps(model, x, [0, 0, 0], C.CamConfig("gradcam", "conv", batch_size=1), "cpu")
    assert hook_count(model) == 0
    assert all(p.grad is None for p in model.parameters())

    def boom(done, total):
        raise RuntimeError("stop")
    with pytest.raises(RuntimeError):
        C.cam_maps(model, x, [0, 0, 0], C.CamConfig("gradcam", "conv", batch_size=1), "cpu", boom)
    assert hook_count(model) == 0
    assert all(p.grad is None for p in model.parameters())


def test_frozen_parameters_still_work():
    model, x = Toy().eval(), _x()
    for p in model.parameters():
        p.requires_grad_(False)
    maps = C.cam_maps(model, x, [0, 1, 0], C.CamConfig("gradcam", "conv"), "cpu")
    assert torch.allclose(maps, _expected(x, [0, 1, 0]), atol=1e-5)


def test_target_layer_validation():
    model, x = Toy().eval(), _x()
    assert C.target_layer_choices(model) == ["conv"]
    for bad, msg in (("act", "not a convolutional"), ("fc", "not a convolutional"),
                     ("nope", "does not exist"), ("", "whole model")):
        with pytest.raises(NnsensError, match=msg):
            C.cam_maps(model, x, [0, 0, 0], C.CamConfig("gradcam", bad), "cpu")
    with pytest.raises(NnsensError, match="one class per image"):
        C.cam_maps(model, x, [0, 1], C.CamConfig("gradcam", "conv"), "cpu")
    with pytest.raises(NnsensError, match="must lie in 0..1"):
        C.cam_maps(model, x, [0, 5, 0], C.CamConfig("gradcam", "conv"), "cpu")
    with pytest.raises(NnsensError, match="method"):
        C.CamConfig("gradcam+++")


def test_default_layers_of_the_zoo_models():
    vgg = zoo.build("vgg16-small", width=0.0625).eval()
    res = zoo.build("resnet18-small", width=0.0625).eval()
    assert C.default_target_layer(vgg, (3, 64, 64)) == "features.30"
    assert C.default_target_layer(res, (3, 64, 64)) == "layer4"
    assert "features.40" in C.target_layer_choices(vgg)
    assert "features.41" not in C.target_layer_choices(vgg)  # a BatchNorm


def test_every_method_runs_on_a_zoo_cnn():
    torch.manual_seed(0)
    model = zoo.build("resnet18-small", width=0.0625).eval()
    x = torch.randn(2, 3, 16, 16)
    for method in C.CAM_METHODS:
        maps = C.cam_maps(model, x, [0, 2], C.CamConfig(method, "layer3"), "cpu")
        assert maps.shape == (2, 16, 16), method
        assert float(maps.min()) >= 0 and float(maps.max()) <= 1, method
        assert torch.isfinite(maps).all(), method
        assert hook_count(model) == 0, method
