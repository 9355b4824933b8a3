"""Meaningful-perturbation masks on volumes, the norm / mean objective forms, the references and
group masks (Thibeau-Sutre et al. 2020)."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from nnsens_core._results import dumps
from nnsens_core.errors import NnsensError
from nnsens_core.saliency import meaningful_mask as MM
from nnsens_core.saliency import registry


class RegionModel(nn.Module):
    """logit_1 = a * (t - mean of channel 0 over a region), logit_0 = 0: low intensity in the region
    (atrophy) means class 1; raising it (the "max" reference) moves inputs to class 0."""

    def __init__(self, region: torch.Tensor, t: float = 0.5, a: float = 8.0):
        super().__init__()
        self.register_buffer("w", region.float() / region.float().sum())
        self.t, self.a = t, a
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        s = (x[:, 0] * self.w).flatten(1).sum(1)
        l1 = self.a * (self.t - s) + 0 * self.dummy
        return torch.stack([torch.zeros_like(l1), l1], 1)


class Spec:
    """A spec-like object: normalisation (x01 - 0.5) / 0.25."""
    input_shape = None

    def normalize(self, x01):
        return (x01 - 0.5) / 0.25


def test_objective_forms_by_hand_2d_and_3d():
    m2 = torch.tensor([[[0.0, 1.0], [1.0, 1.0]]])
    mean = MM.MaskConfig(lambda1=2.0, lambda2=3.0, beta1=2.0, beta2=3.0, form="mean")
    norm = MM.MaskConfig(lambda1=2.0, lambda2=3.0, beta1=2.0, beta2=3.0, form="norm")
    # |1 - m|^2 = (1, 0, 0, 0); finite differences: along rows (1, 0), along columns (1, 0)
    assert MM.mask_objective(torch.tensor([0.5]), m2, mean).item() == pytest.approx(
        0.5 + 2 * 1 / 4 + 3 * 2 / 4)
    assert MM.mask_objective(torch.tensor([0.5]), m2, norm).item() == pytest.approx(
        0.5 + 2 * 1 ** 0.5 + 3 * 2 ** (1 / 3))
    m3 = torch.ones(1, 2, 2, 2)
    m3[0, 0, 0, 0] = 0.5
    # |1 - m|^2 = 0.25 at one of 8 cells; 3 finite differences of 0.5 among the 12 (4 per axis)
    assert MM.mask_objective(torch.tensor([0.0]), m3, mean).item() == pytest.approx(
        2 * 0.25 / 8 + 3 * 3 * 0.125 / 12)
    assert MM.mask_objective(torch.tensor([0.0]), m3, norm).item() == pytest.approx(
        2 * 0.25 ** 0.5 + 3 * (3 * 0.125) ** (1 / 3))
    # the norm's root has a zero (not NaN) gradient at a uniform mask
    m = torch.ones(1, 3, 3, 3, requires_grad=True)
    (g,) = torch.autograd.grad(MM.mask_objective(torch.zeros(1), m, norm).sum(), [m])
    assert torch.isfinite(g).all()


def test_defaults_paper_preset_and_formula():
    d = MM.MaskConfig()
    assert (d.form, d.reference, d.reduce) == ("mean", "blur", "mean")  # back-compat
    p = MM.MaskConfig.paper(steps=5)
    assert (p.form, p.reference, p.steps, p.lambda1) == ("norm", "max", 5, MM.PAPER_MASK.lambda1)
    text = MM.formula(MM.PAPER_MASK, group=True)
    assert "||1 - m||_1" in text and "||grad m||_3" in text and "mean_i" in text and "1 (max" in text
    assert "mean|1 - m|^1" in MM.formula(d) and "blur(X, sigma=5)" in MM.formula(d)
    with pytest.raises(NnsensError, match="form"):
        MM.MaskConfig(form="l2")
    with pytest.raises(NnsensError, match="reduce"):
        MM.MaskConfig(reduce="max")


def test_references():
    x = torch.rand(2, 1, 4, 4, 4)
    assert torch.equal(MM.mask_reference(x, "max"), torch.ones_like(x))
    assert torch.equal(MM.mask_reference(x, "black"), torch.zeros_like(x))
    assert torch.allclose(MM.mask_reference(x, "max", spec=Spec()), torch.full_like(x, 2.0))
    assert torch.allclose(MM.mask_reference(x, "constant", 0.25, spec=Spec()), torch.full_like(x, -1.0))
    with pytest.raises(NnsensError, match="reference"):
        MM.mask_reference(x, "noise")


def test_per_image_masks_on_images_and_volumes():
    torch.manual_seed(0)
    net3 = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1),
                         nn.Flatten(), nn.Linear(2, 2))
    x3 = torch.rand(3, 1, 8, 8, 8)
    cfg = MM.MaskConfig(steps=3, resolution=4, reference="max", form="norm", batch_size=2)
    sal, info = MM.perturbation_mask(net3, x3, [0, 1, 0], cfg, "cpu", return_details=True)
    assert sal.shape == (3, 8, 8, 8) and info["m"].shape == (3, 4, 4, 4)
    assert float(sal.min()) >= 0 and float(sal.max()) <= 1
    maps = registry.run("mask", net3, x3, 1, cfg, device="cpu")  # through the registry too
    assert maps.shape == (3, 8, 8, 8)
    net2 = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(2, 2))
    sal2, info2 = MM.perturbation_mask(net2, torch.rand(2, 1, 16, 16), 0,
                                       MM.MaskConfig(steps=2, resolution=4, reference="black"), "cpu",
                                       return_details=True)
    assert sal2.shape == (2, 16, 16) and info2["m"].shape == (2, 4, 4)
    with pytest.raises(NnsensError, match="resolution=9"):
        MM.perturbation_mask(net3, x3, 0, MM.MaskConfig(steps=1, resolution=9), "cpu")


def _region_case():
    region = torch.zeros(16, 16, 16, dtype=torch.bool)
    region[4:10, 4:8, 8:14] = True
    g = torch.Generator().manual_seed(0)
    x = 0.5 + 0.1 * torch.rand(6, 1, 16, 16, 16, generator=g)
    x[:, :, region] = 0.3  # "atrophy" in the region: every input is class 1
    return region, x


def test_group_mask_finds_the_region_the_model_uses():
    region, x = _region_case()
    model = RegionModel(region)
    res = MM.group_mask(model, x, 1, MM.MaskConfig.paper(steps=100, batch_size=4), device="cpu")
    d = res.saliency
    inside, outside = d[region.numpy()].mean(), d[~region.numpy()].mean()
    assert inside > 0.5 and outside < 0.05, (inside, outside)
    assert (d[~region.numpy()] < 0.5).all()  # nothing far from the region is deleted
    assert res.score_after.mean() < 0.2 and res.score_before.mean() > 0.8
    assert res.history[-1] < res.history[0]
    assert res.m.shape == (8, 8, 8) and res.mask.shape == (16, 16, 16)
    assert model.dummy.grad is None
    doc = json.loads(dumps(res.to_dict()))
    assert doc["config"]["form"] == "norm" and doc["n_inputs"] == 6
    assert set(res.arrays()) >= {"m", "mask", "history"} and len(res.to_frame()) == 6


def test_group_mask_chunks_and_reduce():
    region, x = _region_case()
    model = RegionModel(region)
    cfg = MM.MaskConfig.paper(steps=15, resolution=4)
    a = MM.group_mask(model, x, 1, MM.dataclasses.replace(cfg, batch_size=6), device="cpu")
    b = MM.group_mask(model, x, [1] * 6, MM.dataclasses.replace(cfg, batch_size=4), device="cpu")
    np.testing.assert_allclose(a.m, b.m, atol=1e-5)
    np.testing.assert_allclose(a.history, b.history, rtol=1e-5)
    # at the first step the mask is all ones: the objective is the reduced score alone
    assert a.history[0] == pytest.approx(a.score_before.mean(), rel=1e-6)
    s = MM.group_mask(model, x, 1, MM.dataclasses.replace(cfg, reduce="sum", steps=1), device="cpu")
    assert s.history[0] == pytest.approx(s.score_before.sum(), rel=1e-6)
    with pytest.raises(NnsensError, match="empty"):
        MM.group_mask(model, x[:0], 1, cfg, device="cpu")
