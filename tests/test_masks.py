"""Occlusion and meaningful-perturbation masks: hand-computed toy cases, batch-size invariance."""
import numpy as np
import pytest
import torch
from torch import nn

from nnsens_core._filters import gaussian_blur
from nnsens_core.saliency import meaningful_mask as MM, occlusion as O
from nnsens_core.errors import NnsensError


class SumModel(nn.Module):
    """logit_0 = sum(weight * x[:, 0]), logit_1 = 0."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight)
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        s = (x[:, 0] * self.weight).flatten(1).sum(1) + 0 * self.dummy
        return torch.stack([s, torch.zeros_like(s)], 1)


def test_occlusion_by_hand():
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 0, 0] = 1.0  # only the top-left 2x2 patch contains it: drop 1 there, 0 elsewhere
    model = SumModel(torch.ones(3, 3))
    cfg = O.OcclusionConfig(window=2, stride=1, reference="constant", constant=0.0, score="logit")
    m = O.occlusion(model, x, [0], cfg, "cpu")[0]
    # pixel value = mean drop over the patches covering it (corner 1 patch, edge 2, centre 4)
    expect = torch.tensor([[1.0, 0.5, 0.0], [0.5, 0.25, 0.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(m, expect)


def test_occlusion_positions_cover_every_pixel():
    cfg = O.OcclusionConfig(window=2, stride=2)
    pos = O.occlusion_positions((5, 5), cfg)
    assert sorted({t for t, _ in pos}) == [0, 2, 3]
    with pytest.raises(NnsensError, match="window=9"):
        O.occlusion_positions((8, 8), O.OcclusionConfig(window=9))


def test_occlusion_batch_size_and_per_image_classes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                          nn.Flatten(), nn.Linear(12, 3)).eval()
    x = torch.randn(3, 2, 6, 6)
    cls = [0, 2, 1]
    runs = [O.occlusion(model, x, cls, O.OcclusionConfig(3, 2, "blur", 1.0, batch_size=b), "cpu")
            for b in (1, 5, 64)]
    assert torch.allclose(runs[0], runs[1], atol=1e-6) and torch.allclose(runs[0], runs[2], atol=1e-6)
    single = O.occlusion(model, x[1:2], [2], O.OcclusionConfig(3, 2, "blur", 1.0), "cpu")
    assert torch.allclose(runs[0][1:2], single, atol=1e-6)
    with pytest.raises(NnsensError, match="one class per image"):
        O.occlusion(model, x, [0, 1], O.OcclusionConfig(3, 2), "cpu")
    with pytest.raises(NnsensError, match="0..2"):
        O.occlusion(model, x, [0, 1, 3], O.OcclusionConfig(3, 2), "cpu")


def test_gaussian_blur_matches_scipy_mirror():
    from scipy.ndimage import gaussian_filter
    x = torch.randn(1, 1, 12, 10, dtype=torch.float64)
    ours = gaussian_blur(x, 1.0)[0, 0].numpy()
    ref = gaussian_filter(x[0, 0].numpy(), 1.0, mode="mirror", truncate=3.0)
    assert np.allclose(ours, ref, atol=1e-10)
    assert torch.allclose(gaussian_blur(torch.ones(1, 2, 5, 5), 3.0), torch.ones(1, 2, 5, 5))


def test_gaussian_blur_edges_of_tiny_images():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    same = gaussian_blur(x, 0.0)
    assert torch.equal(same, x) and same is not x  # sigma <= 0: a copy
    # radius ceil(3 * 2) = 6 capped at size - 1 per dimension, reflect padding: the 3-tap kernel
    # along a 2-pixel dimension weighs the mirrored neighbour twice
    k = torch.exp(-0.5 * (torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64) / 2.0) ** 2)
    k = k / k.sum()
    two = torch.tensor([[[[1.0, 3.0]]]], dtype=torch.float64)
    torch.testing.assert_close(gaussian_blur(two, 2.0)[0, 0, 0],
                               torch.stack([k[1] * 1 + 2 * k[0] * 3, k[1] * 3 + 2 * k[0] * 1]))
    row = torch.randn(1, 1, 1, 6, dtype=torch.float64)  # a 1-pixel dimension is left as it is
    torch.testing.assert_close(gaussian_blur(row, 1.0)[0, 0, 0],
                               gaussian_blur(row.expand(1, 1, 3, 6), 1.0)[0, 0, 1])


def test_mask_objective_by_hand():
    cfg = MM.MaskConfig(lambda1=2.0, lambda2=3.0, beta1=1.0, beta2=1.0)
    m = torch.tensor([[[0.0, 1.0], [1.0, 1.0]]])
    # area = mean|1-m| = 1/4; finite differences |dx| = (1, 0), |dy| = (1, 0): mean 1/2
    obj = MM.mask_objective(torch.tensor([0.5]), m, cfg)
    assert obj.item() == pytest.approx(0.5 + 2 * 0.25 + 3 * 0.5)
    assert MM.mask_objective(torch.tensor([0.7]), torch.ones(1, 3, 3), cfg).item() == pytest.approx(0.7)


def test_mask_deletes_the_evidence_and_is_batch_invariant():
    w = torch.zeros(16, 16)
    w[4:12, 10:16] = 1.0  # the class score only looks at this region
    model = SumModel(w)
    x = torch.rand(3, 1, 16, 16) + 0.5
    cfg = MM.MaskConfig(lambda1=2.0, lambda2=0.1, steps=60, lr=0.1, resolution=8,
                       reference="constant", constant=0.0, score="logit", batch_size=3)
    sal, info = MM.perturbation_mask(model, x, 0, cfg, "cpu", return_details=True)
    inside = sal[:, 4:12, 10:16].mean().item()
    outside = sal[:, :, :6].mean().item()
    assert inside > 0.5 and outside < 0.1
    assert (info["score_after"] < info["score_before"] - 10).all()
    assert info["m"].shape == (3, 8, 8)
    sal1 = MM.perturbation_mask(model, x, [0, 0, 0], MM.MaskConfig(**{**cfg.__dict__, "batch_size": 1}),
                               "cpu")
    assert torch.allclose(sal, sal1, atol=1e-5)
    assert model.dummy.grad is None  # no gradients left on the model


def test_mask_config_errors():
    with pytest.raises(NnsensError, match="steps"):
        MM.MaskConfig(steps=0)
    with pytest.raises(NnsensError, match="lambda1"):
        MM.MaskConfig(lambda1=-1)
    with pytest.raises(NnsensError, match="reference"):
        MM.MaskConfig(reference="noise")
    with pytest.raises(NnsensError, match="resolution=32"):
        MM.perturbation_mask(SumModel(torch.ones(8, 8)), torch.rand(1, 1, 8, 8), 0,
                            MM.MaskConfig(resolution=32, steps=1), "cpu")
