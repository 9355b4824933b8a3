"""Saliency methods, metrics, the dataset evaluation and the sanity check on 3-D volumes
(N, C, D, H, W): shapes, hand-computed maps on tiny Conv3d models, occlusion against a brute-force
loop, metrics against their flattened / hand-computed values."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from nnsens_core.errors import NnsensError
from nnsens_core.saliency import cam as C
from nnsens_core.saliency import compare, registry
from nnsens_core.saliency import gradients as G
from nnsens_core.saliency import metrics as mt
from nnsens_core.saliency import occlusion as O


def _cnn3d(n_classes: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 4, 3, padding=1),
                         nn.ReLU(), nn.MaxPool3d(2), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                         nn.Linear(4, n_classes)).eval()


def _cnn2d() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 3)).eval()


def _volumes(n: int = 2, shape=(8, 8, 8), seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(n, 1, *shape)


class Linear3d(nn.Module):
    """logit_k = <W_k, x> + b_k through one Conv3d whose kernel covers the whole volume."""

    def __init__(self, c=2, size=(3, 4, 5), k=3):
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv3d(c, k, size)
        self.flat = nn.Flatten()

    def forward(self, x):
        return self.flat(self.conv(x))


class Toy3d(nn.Module):
    """conv (1x1x1, weights +1 / -1) [-> avg-pool 2] -> global mean -> identity linear:
    logit_c = mean(A_c); ``features`` (conv + optional pool) is the CAM target layer."""

    def __init__(self, pool: bool = False):
        super().__init__()
        conv = nn.Conv3d(1, 2, 1, bias=False)
        with torch.no_grad():
            conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1, 1))
        self.features = nn.Sequential(conv, *([nn.AvgPool3d(2)] if pool else []))
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(2))

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def _minmax(m: torch.Tensor) -> torch.Tensor:
    m = m - m.flatten(1).min(1)[0].view(-1, *(1,) * (m.ndim - 1))
    return m / (m.flatten(1).max(1)[0].view(-1, *(1,) * (m.ndim - 1)) + 1e-7)


# --------------------------------------------------------------------------- every method

VOLUME_METHODS = [m for m in registry.volume_names() if m != "mask"]


@pytest.mark.parametrize("method", VOLUME_METHODS)
def test_every_volume_method_returns_finite_volume_maps(method):
    x = _volumes(2)
    cfg = registry.config_for(method, {"occlusion": O.OcclusionConfig(window=4, stride=2)})
    maps = registry.run(method, _cnn3d(), x, [0, 2], cfg, device="cpu")
    assert maps.shape == (2, 8, 8, 8) and maps.dtype == torch.float32
    assert torch.isfinite(maps).all()
    assert maps.flatten(1).std(1).gt(0).all()       # a map, not a constant


def test_explain_scales_volume_maps_to_unit_range():
    got = compare.explain(_cnn3d(), None, _volumes(2), [1, 0], ["gradcam", "occlusion", "ig"],
                          {"occlusion": O.OcclusionConfig(window=4, stride=4)}, device="cpu")
    for m in got.values():
        assert m.shape == (2, 8, 8, 8) and float(m.min()) == 0.0 and float(m.max()) == 1.0


@pytest.mark.parametrize("method", ["am", "sensitivity"])
def test_image_only_methods_refuse_volumes_naming_those_that_work(method):
    assert not registry.get(method).volumes
    with pytest.raises(NnsensError, match="images \\(N, C, H, W\\) only.*on volumes use .*gradcam"):
        registry.run(method, _cnn3d(), _volumes(1), 0, device="cpu")


@pytest.mark.parametrize("method", ["gradcam", "occlusion", "gradient", "ig"])
def test_images_to_a_3d_model_and_volumes_to_a_2d_model_are_refused(method):
    with pytest.raises(NnsensError, match="volumes \\(N, C, D, H, W\\)"):
        registry.run(method, _cnn3d(), torch.randn(1, 1, 8, 8), 0, device="cpu")
    with pytest.raises(NnsensError, match="images \\(N, C, H, W\\)"):
        registry.run(method, _cnn2d(), _volumes(1), 0, device="cpu")


# --------------------------------------------------------------------------- gradients by hand

def test_gradient_methods_of_a_linear_3d_model_by_hand():
    net = Linear3d().eval()
    torch.manual_seed(5)
    x = torch.randn(2, 2, 3, 4, 5)
    cls = [2, 0]
    w = net.conv.weight.detach()[cls]                         # (2, C, D, H, W): df/dx per volume
    cfg = G.GradientConfig(steps=3)                           # IG is exact on a linear model
    grad = G.gradient_maps(net, x, cls, "gradient", cfg, "cpu")
    assert torch.allclose(grad, w.abs().amax(1), atol=1e-6)
    expected = (x * w).sum(1)                                 # black reference r = 0
    for method in ("gradxinput", "ig"):
        got = G.gradient_maps(net, x, cls, method, cfg, "cpu")
        assert got.shape == (2, 3, 4, 5)
        assert torch.allclose(got, expected, atol=1e-5), method
    # IG completeness: the map sums to f(x) - f(0)
    with torch.no_grad():
        f = net(x)[[0, 1], cls] - net(torch.zeros_like(x))[[0, 1], cls]
    assert torch.allclose(G.gradient_maps(net, x, cls, "ig", cfg, "cpu").flatten(1).sum(1), f,
                          atol=1e-4)


def test_smoothgrad_noise_is_scaled_by_each_volumes_range():
    net = Linear3d().eval()
    torch.manual_seed(6)
    x = torch.randn(2, 2, 3, 4, 5) * torch.tensor([1.0, 3.0]).view(2, 1, 1, 1, 1)
    cfg = G.GradientConfig(samples=4, sigma=0.2, seed=7)
    got = G.gradient_maps(net, x, [1, 1], "smoothgrad", cfg, "cpu")
    # by hand: z = x + N(0, (0.2 * (max - min of the volume))^2), map = mean_j sum_c z_c w_c
    noise = torch.randn((2, 4, 2, 3, 4, 5), generator=torch.Generator().manual_seed(7))
    span = x.flatten(1).amax(1) - x.flatten(1).amin(1)
    z = x[:, None] + noise * (0.2 * span).view(2, 1, 1, 1, 1, 1)
    expected = (z * net.conv.weight.detach()[1]).sum(2).mean(1)
    assert torch.allclose(got, expected, atol=1e-5)


# --------------------------------------------------------------------------- Grad-CAM by hand

@pytest.mark.parametrize("method", ["gradcam", "hirescam", "xgradcam", "layercam", "gradcam++"])
def test_cam_of_a_volume_by_hand_one_class_per_volume(method):
    # weight of channel k for class c is delta_kc / (D H W): the map is relu(+x) for class 0 and
    # relu(-x) for class 1, min-max scaled (target grid = input grid: no resampling)
    torch.manual_seed(0)
    x = torch.randn(2, 1, 3, 4, 5)
    maps = C.cam_maps(Toy3d(), x, [0, 1], C.CamConfig(method, "features"), "cpu")
    sign = torch.tensor([1.0, -1.0]).view(2, 1, 1, 1)
    assert maps.shape == (2, 3, 4, 5)
    assert torch.allclose(maps, _minmax(torch.relu(sign * x[:, 0])), atol=1e-5)


def test_cam_of_a_coarse_volume_grid_is_upsampled_trilinearly_with_half_voxel_centres():
    # x rises along the depth only: the 2x-pooled class-0 CAM is [0, 1] along d (constant in h, w);
    # trilinear upsampling 2 -> 4 with half-voxel centres samples it at d = -0.25, 0.25, 0.75, 1.25
    # (clamped at the ends): [0, 0.25, 0.75, 1] (a corner-aligned zoom would give thirds)
    x = torch.tensor([0.0, 0.0, 1.0, 1.0]).view(1, 1, 4, 1, 1).expand(1, 1, 4, 2, 6).contiguous()
    maps = C.cam_maps(Toy3d(pool=True), x, [0], C.CamConfig("gradcam", "features"), "cpu")
    expected = torch.tensor([0.0, 0.25, 0.75, 1.0]).view(1, 4, 1, 1).expand(1, 4, 2, 6)
    assert maps.shape == (1, 4, 2, 6)
    assert torch.allclose(maps, expected, atol=1e-5)


def test_scorecam_of_a_volume_by_hand():
    # channel masks m_k = minmax(A_k) (A_0 = x, A_1 = -x); score s_k = logit_c(x * m_k) =
    # +-mean(x * m_k); weights softmax(s); map = relu(w_0 x - w_1 x), min-max scaled
    torch.manual_seed(2)
    x = torch.randn(2, 1, 3, 4, 5)
    maps = C.cam_maps(Toy3d(), x, [0, 1], C.CamConfig("scorecam", "features"), "cpu")
    for i, c in enumerate([0, 1]):
        a = torch.stack([x[i, 0], -x[i, 0]])
        m = (a - a.flatten(1).min(1)[0].view(2, 1, 1, 1))
        m = m / (m.flatten(1).max(1)[0].view(2, 1, 1, 1) + 1e-8)
        s = (x[i, 0] * m).flatten(1).mean(1) * (1.0 if c == 0 else -1.0)
        w = torch.softmax(s, 0)
        expected = _minmax(torch.relu(w[0] * a[0] + w[1] * a[1])[None])[0]
        assert torch.allclose(maps[i], expected, atol=1e-5)


def test_target_layer_helpers_take_conv3d_models_and_volume_shapes():
    net = _cnn3d()
    assert C.target_layer_choices(net) == ["0", "2"]
    assert C.layer_grids(net, (1, 8, 8, 8)) == {"0": (4, 8, 8, 8), "2": (4, 8, 8, 8)}
    assert C.default_target_layer(net, (1, 8, 8, 8)) == "2"
    assert C.validate_target_layer(net, "0", (1, 8, 8, 8)) is net[0]
    with pytest.raises(NnsensError, match="not a convolutional layer"):
        C.validate_target_layer(net, "4", (1, 8, 8, 8))
    toy = Toy3d(pool=True)
    assert C.default_target_layer(toy, (1, 4, 4, 4), min_grid=8) == "features"   # coarser fallback


# --------------------------------------------------------------------------- occlusion

def _axis_starts(size, window, stride):
    starts = list(range(0, size - window + 1, stride))
    return starts if starts[-1] == size - window else starts + [size - window]


@pytest.mark.parametrize("score", ["logit", "prob"])
def test_volume_occlusion_equals_a_brute_force_loop(score):
    net = _cnn3d()
    x = _volumes(2, (6, 5, 7))
    cls = [1, 2]
    cfg = O.OcclusionConfig(window=3, stride=2, reference="constant", constant=0.0, score=score,
                            batch_size=7)
    got, details = O.occlusion(net, x, cls, cfg, "cpu", return_details=True)
    assert details["engine"] == "full" and got.shape == (2, 6, 5, 7)
    with torch.no_grad():
        def f(v, c):
            out = net(v[None])[0]
            return (torch.softmax(out, -1) if score == "prob" else out)[c]
        for i in range(2):
            total, count = torch.zeros(6, 5, 7), torch.zeros(6, 5, 7)
            base = f(x[i], cls[i])
            for a, b, c in itertools.product(*(_axis_starts(s, 3, 2) for s in (6, 5, 7))):
                xo = x[i].clone()
                xo[:, a:a + 3, b:b + 3, c:c + 3] = 0.0
                total[a:a + 3, b:b + 3, c:c + 3] += base - f(xo, cls[i])
                count[a:a + 3, b:b + 3, c:c + 3] += 1
            assert torch.allclose(got[i], total / count, atol=1e-5)


def test_volume_occlusion_positions_and_window_check():
    pos = O.occlusion_positions((1, 6, 5, 7), O.OcclusionConfig(window=3, stride=2), spatial=3)
    assert pos == list(itertools.product([0, 2, 3], [0, 2], [0, 2, 4]))
    assert O.occlusion_positions((5, 5), O.OcclusionConfig(window=3, stride=2)) == \
        [(0, 0), (0, 2), (2, 0), (2, 2)]
    with pytest.raises(NnsensError, match="larger than the 6x5x7 volume; use at most 5"):
        O.occlusion(_cnn3d(), _volumes(1, (6, 5, 7)), [0], O.OcclusionConfig(window=6), "cpu")


def test_occlusion_budget_counts_cubes_for_a_volume_shape():
    from nnsens_core import budget
    est = budget.occlusion(_cnn3d(), (1, 8, 8, 8), O.OcclusionConfig(window=4, stride=2), 2)
    assert "(28 positions × 2 image(s))" in est.what         # 3 x 3 x 3 cubes + the clean pass


# --------------------------------------------------------------------------- metrics

def test_map_metrics_of_volumes_equal_those_of_the_flattened_maps():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 4, 5, 6)), rng.normal(size=(3, 4, 5, 6))
    b[1] = a[1] * 2 + 0.1 * b[1]
    a[2, :2] = b[2, :2] = 0.5                                   # ties
    fa, fb = a.reshape(3, 1, -1), b.reshape(3, 1, -1)
    for fn in (mt.spearman, mt.cosine, lambda p, q: mt.top_p_iou(p, q, 0.2)):
        got = fn(a, b)
        assert got.shape == (3,)
        np.testing.assert_allclose(got, fn(fa, fb))
    masks = rng.random(size=(3, 4, 5, 6)) < 0.2
    masks[2] = False
    fm = masks.reshape(3, 1, -1)
    for fn in (mt.gt_iou, mt.relevance_mass, lambda p, m: mt.gt_iou(p, m, 0.1)):
        np.testing.assert_allclose(fn(a, masks), fn(fa, fm), equal_nan=True)
    np.testing.assert_array_equal(mt.topk_region(a, 7).reshape(3, 1, -1), mt.topk_region(fa, 7))
    assert np.isnan(mt.gt_iou(a, masks)[2])
    with pytest.raises(NnsensError, match="give one 4x5x6 mask per image"):
        mt.gt_iou(a, masks[:, 0])


def test_pointing_game_on_volumes_uses_the_euclidean_voxel_distance():
    maps = np.zeros((3, 5, 5, 5))
    maps[:, 1, 2, 3] = 1.0                         # peak at (d, h, w) = (1, 2, 3)
    maps[2, 4, 4, 4] = 1.0                         # a tie: the first in C order (1, 2, 3) counts
    masks = np.zeros((3, 5, 5, 5), dtype=bool)
    masks[:, 3, 3, 3] = True                       # distance sqrt(2^2 + 1^2 + 0^2) = sqrt(5) = 2.236
    assert mt.pointing_game(maps, masks, 2.2).tolist() == [0.0, 0.0, 0.0]
    assert mt.pointing_game(maps, masks, 2.25).tolist() == [1.0, 1.0, 1.0]
    masks2 = masks.copy()
    masks2[1] = False
    masks2[1, 1, 2, 3] = True                      # the peak itself
    got = mt.pointing_game(maps, masks2, 0.0)
    assert got.tolist() == [0.0, 1.0, 0.0]
    masks2[0] = False
    assert np.isnan(mt.pointing_game(maps, masks2)[0])


# --------------------------------------------------------------------------- dataset and sanity

@dataclass
class _Volumes:
    """Stand-in for a volume ImageData: images (n, C, D, H, W) in [0, 1], labels, masks."""
    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    class_names: tuple = ("a", "b", "c")
    name: str = "tiny volumes"

    def __len__(self):
        return len(self.images)


def test_evaluate_dataset_scores_volume_maps_against_volume_masks():
    rng = np.random.default_rng(0)
    images = rng.random((3, 1, 8, 8, 8)).astype(np.float32)
    masks = np.zeros((3, 8, 8, 8), dtype=bool)
    masks[:, 2:5, 3:6, 1:4] = True
    data = _Volumes(images, np.array([0, 1, 2]), masks)
    ev = compare.evaluate_dataset(_cnn3d(), None, data, ["gradcam", "gradient"], indices=[2, 0],
                                  tolerance=1.5, batch_size=1, device="cpu")
    assert ev.maps["gradcam"].shape == (2, 8, 8, 8)
    for m in ("gradcam", "gradient"):
        rows = ev.records[ev.records["method"] == m]
        loc = mt.localization(ev.maps[m], masks[[2, 0]], None, 1.5)
        for k in ("iou", "pointing", "mass"):
            np.testing.assert_allclose(rows[k].to_numpy(), loc[k])
    summary = ev.summary()
    assert summary.loc[("gradient", "all"), "iou_n"] == 2


def test_sanity_check_on_volumes_randomizes_conv3d_layers():
    x = _volumes(2)
    res = compare.sanity_check(_cnn3d(), None, x, [0, 1], ["gradient", "gradcam"], device="cpu")
    assert res.steps == ["original", "7", "2", "0"]
    for m in ("gradient", "gradcam"):
        assert res.mean[m][0] == 1.0 and len(res.mean[m]) == 4
    assert res.mean["gradient"][-1] < 0.9
