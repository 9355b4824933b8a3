"""The one image-shape check (_validate.check_images) and its messages, also through its callers."""
import numpy as np
import pytest
import torch
from torch import nn

from nnsens_core._validate import check_images
from nnsens_core.errors import NnsensError


def test_check_images_accepts_fitting_input():
    check_images(torch.zeros(2, 3, 8, 8))
    check_images(torch.zeros(2, 3, 8, 8), (3, 8, 8), finite=True)
    check_images(torch.zeros(3, 8, 8), (3, 8, 8), batch=False)
    check_images(np.zeros((2, 1, 4, 4)), arrays=True)


@pytest.mark.parametrize("x, kw, match", [
    (np.zeros((2, 3, 8, 8)), {}, r"x must be a Tensor of shape \(N, C, H, W\); got ndarray"),
    (torch.zeros(3, 8, 8), {}, r"x has shape \(3, 8, 8\); expected a batch of images \(N, C, H, W\)"),
    (torch.zeros(3, 8, 8), {"expected_shape": (3, 8, 8)}, r"expected a batch .*= \(N, 3, 8, 8\)"),
    (torch.zeros(1, 3, 8, 8), {"batch": False, "what": "the image"},
     r"the image has shape \(1, 3, 8, 8\); expected one image \(C, H, W\)"),
    (torch.zeros(2, 1, 8, 8), {"expected_shape": (3, 8, 8)},
     r"x is grayscale \(1 channel\) but the model expects RGB \(3 channels\); .*channels=3"),
    (torch.zeros(2, 3, 8, 8), {"expected_shape": (1, 8, 8)}, r"x is RGB .* expects grayscale"),
    (torch.zeros(2, 2, 8, 8), {"expected_shape": (5, 8, 8)}, r"x is 2 channels .* expects 5 channels"),
    (torch.zeros(2, 3, 6, 8), {"expected_shape": (3, 8, 8)}, r"x is 6x8 but the model expects 8x8; resize"),
    (torch.tensor([[[[float("nan")]]]]), {"finite": True}, "NaN or infinite"),
    (np.full((1, 1, 2, 2), np.inf), {"finite": True, "arrays": True}, "NaN or infinite"),
    (np.zeros((1, 2, 2)), {"arrays": True, "what": "images"}, r"images has shape \(1, 2, 2\)"),
])
def test_check_images_messages(x, kw, match):
    with pytest.raises(NnsensError, match=match):
        check_images(x, **kw)


def test_callers_use_the_shared_check():
    from nnsens_core.activation_max import difference_map
    from nnsens_core.data import ImageData
    from nnsens_core.local_sensitivity import local_sensitivity_many, sensitivity_map
    from nnsens_core.phantom import sector_of
    from nnsens_core.saliency._common import check_model_input

    model = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU())
    with pytest.raises(NnsensError, match=r"expected a batch of images \(N, C, H, W\)"):
        sensitivity_map(model, torch.zeros(3, 8, 8), "0", device="cpu")
    with pytest.raises(NnsensError, match=r"xs has shape \(3, 8, 8\); expected a batch"):
        local_sensitivity_many(model, torch.zeros(3, 8, 8), ["0"], device="cpu")
    with pytest.raises(NnsensError, match=r"xs is 4x4 but the model expects 8x8"):
        local_sensitivity_many(model, torch.zeros(1, 3, 4, 4), ["0"], device="cpu",
                               expected_shape=(3, 8, 8))
    with pytest.raises(NnsensError, match=r"\(N, C, H, W\)"):
        difference_map(model, None, torch.zeros(3, 8, 8), [0], device="cpu")
    with pytest.raises(NnsensError, match=r"images has shape \(2, 8, 8\)"):
        ImageData(np.zeros((2, 8, 8)), np.zeros(2, int), ("a", "b"))
    with pytest.raises(NnsensError, match=r"\(N, C, H, W\)"):
        sector_of(np.zeros((8, 8)))
    with pytest.raises(NnsensError, match=r"x is grayscale \(1 channel\) but the model expects RGB"):
        check_model_input(model, torch.zeros(1, 1, 8, 8))


def test_check_images_volumes():
    check_images(torch.zeros(2, 1, 4, 8, 8), volumes=True)
    check_images(torch.zeros(2, 3, 8, 8), volumes=True)  # volumes=True still takes images
    check_images(torch.zeros(2, 1, 4, 8, 8), (1, 4, 8, 8))  # a 4-entry shape implies volumes
    check_images(torch.zeros(1, 4, 8, 8), (1, 4, 8, 8), batch=False)
    with pytest.raises(NnsensError, match=r"expected a batch of images \(N, C, H, W\)"):
        check_images(torch.zeros(2, 1, 4, 8, 8))  # 2-D callers keep refusing volumes
    with pytest.raises(NnsensError, match=r"expected a batch of volumes \(N, C, D, H, W\) = \(N, 1, 4, 8, 8\)"):
        check_images(torch.zeros(2, 1, 8, 8), (1, 4, 8, 8))
    with pytest.raises(NnsensError, match=r"expected a batch of images or volumes"):
        check_images(torch.zeros(2, 8), volumes=True)
    with pytest.raises(NnsensError, match=r"x is 4x8x8 but the model expects 4x8x9; resize it to 4x8x9"):
        check_images(torch.zeros(2, 1, 4, 8, 8), (1, 4, 8, 9))
    with pytest.raises(NnsensError, match=r"x is RGB .* expects grayscale"):
        check_images(torch.zeros(2, 3, 4, 8, 8), (1, 4, 8, 8))


def test_model_input_check_takes_volumes():
    from nnsens_core.saliency._common import check_model_input, normalize_maps
    from nnsens_core.zoo import IMAGE, ModelSpec

    model = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                          nn.Linear(2, 2))
    x, n_out = check_model_input(model, torch.zeros(3, 1, 4, 6, 6))
    assert x.shape == (3, 1, 4, 6, 6) and n_out == 2
    with pytest.raises(NnsensError, match=r"first layer Conv3d\) takes volumes \(N, C, D, H, W\)"):
        check_model_input(model, torch.zeros(3, 1, 6, 6))
    spec = ModelSpec("v", "toy", IMAGE, (3, 8, 8))
    with pytest.raises(NnsensError, match=r"expected a batch of images \(N, C, H, W\) = \(N, 3, 8, 8\)"):
        check_model_input(model, torch.zeros(3, 1, 4, 6, 6), spec)
    m = normalize_maps(torch.arange(16.).view(2, 2, 2, 2))
    assert m.shape == (2, 2, 2, 2) and m[0].min() == 0 and m[1].max() == 1
