"""The one Gaussian blur (_filters.gaussian_blur) on images and volumes, against scipy."""
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from nnsens_core._filters import gaussian_blur


@pytest.mark.parametrize("shape", [(2, 3, 9, 10), (2, 2, 7, 9, 10)])
@pytest.mark.parametrize("sigma", [0.5, 1.0, 1.3])
def test_blur_equals_scipy_mirror(shape, sigma):
    x = torch.rand(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    r = int(np.ceil(3 * sigma))  # our radius; scipy's is int(truncate * sigma + 0.5)
    want = np.stack([[gaussian_filter(x[i, c].numpy(), sigma, mode="mirror", truncate=r / sigma)
                      for c in range(shape[1])] for i in range(shape[0])])
    np.testing.assert_allclose(gaussian_blur(x, sigma).numpy(), want, atol=1e-12)


def test_blur_keeps_constants_and_single_pixel_dims():
    x = torch.full((1, 1, 1, 6, 5), 0.3)
    torch.testing.assert_close(gaussian_blur(x, 2.0), x)
    assert gaussian_blur(x, 0) is not x
