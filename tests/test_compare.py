"""Orchestration: explain() over methods, dataset evaluation on a toy detector with known answers."""
import numpy as np
import pytest
import torch
from torch import nn

from nnsens_core.saliency import compare as CP
from nnsens_core.saliency import registry
from nnsens_core.saliency.cam import CamConfig
from nnsens_core.data import ImageData
from nnsens_core.errors import NnsensError
from nnsens_core.saliency.meaningful_mask import MaskConfig
from nnsens_core.saliency.occlusion import OcclusionConfig
from nnsens_core.zoo import ModelSpec

S = 16


class BrightDetector(nn.Module):
    """logit_0 = sum(relu(x - 0.5)) over pixels (counts bright pixels), logit_1 = 0."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(1, 2)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.fill_(-0.5)
            self.fc.weight.copy_(torch.tensor([[1.0], [0.0]]))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).sum((2, 3)))


def _squares(n=4, seed=0):
    """Dark images (0.2) with one bright 4x4 square at a random place; mask = the square."""
    rng = np.random.default_rng(seed)
    imgs = np.full((n, 1, S, S), 0.2, np.float32)
    masks = np.zeros((n, S, S), bool)
    for i in range(n):
        t, l = rng.integers(0, S - 4, 2)
        imgs[i, 0, t:t + 4, l:l + 4] = 0.9
        masks[i, t:t + 4, l:l + 4] = True
    return ImageData(imgs, np.zeros(n, np.int64), ("bright", "other"), masks, name="squares")


SPEC = ModelSpec("toy", "toy", "image", (1, S, S), ("bright", "other"))
FAST = {"occlusion": OcclusionConfig(window=4, stride=2, score="logit"),
        "mask": MaskConfig(steps=40, resolution=8, lambda1=0.05, lambda2=0.05, reference="constant",
                           score="logit"),
        "cam": CamConfig("gradcam", "conv")}


def test_normalize_maps_by_hand():
    m = torch.tensor([[[-1.0, 1.0], [3.0, 1.0]], [[2.0, 2.0], [2.0, 2.0]]])
    out = CP.normalize_maps(m, clip_negative=True)
    assert torch.allclose(out[0], torch.tensor([[0.0, 1 / 3], [1.0, 1 / 3]]))
    assert (out[1] == 0).all()  # constant map -> zeros
    assert torch.allclose(CP.normalize_maps(m)[0], torch.tensor([[0.0, 0.5], [1.0, 0.5]]))


def test_parse_methods():
    assert CP.parse_methods("gradcam, occlusion,mask,gradcam") == ["gradcam", "occlusion", "mask"]
    assert CP.parse_methods(["cam", "perturbation"]) == ["gradcam", "mask"]
    with pytest.raises(NnsensError, match="unknown"):
        CP.parse_methods("gradcam,deconvnet")
    with pytest.raises(NnsensError, match="no method"):
        CP.parse_methods(" , ")
    assert CP.parse_methods("all") == list(registry.names())


def test_explain_localizes_the_square_for_every_method():
    data = _squares(3)
    x = torch.as_tensor(data.images)
    methods = ["gradcam", "hirescam", "layercam", "occlusion", "mask"]
    maps = CP.explain(BrightDetector().eval(), SPEC, x, [0, 0, 0], methods, FAST, "cpu")
    assert list(maps) == methods
    for m, v in maps.items():
        assert v.shape == (3, S, S) and float(v.min()) >= 0 and float(v.max()) <= 1, m
        from nnsens_core.saliency import metrics as mt
        assert np.all(mt.pointing_game(v, data.masks) == 1.0), m
        assert np.all(mt.gt_iou(v, data.masks) >= 0.5), m


def test_explain_batch_equals_single_images():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.randn(3, 1, S, S)
    cls = [2, 0, 1]
    cfgs = {"cam": CamConfig("gradcam", "2"), "occlusion": OcclusionConfig(4, 4, batch_size=5),
            "mask": MaskConfig(steps=5, resolution=4, batch_size=2)}
    spec = ModelSpec("t", "t", "image", (1, S, S))
    both = CP.explain(model, spec, x, cls, ["gradcam", "gradcam++", "occlusion", "mask"], cfgs, "cpu")
    one = CP.explain(model, spec, x[1:2], [0], ["gradcam", "gradcam++", "occlusion", "mask"], cfgs, "cpu")
    for m in both:
        assert torch.allclose(both[m][1:2], one[m], atol=1e-5), m


def test_explain_bad_input():
    model = BrightDetector().eval()
    x = torch.as_tensor(_squares(2).images)
    with pytest.raises(NnsensError, match="expects"):
        CP.explain(model, SPEC, torch.zeros(2, 1, 8, 8), [0, 0], ["gradcam"], FAST, "cpu")
    with pytest.raises(NnsensError, match="not a convolutional"):
        CP.explain(model, SPEC, x, [0, 0], ["gradcam"], {"cam": CamConfig("gradcam", "relu")}, "cpu")
    with pytest.raises(NnsensError, match="one class per image"):
        CP.explain(model, SPEC, x, [0, 0, 0], ["occlusion"], FAST, "cpu")


def test_evaluate_records_summary_and_json():
    data = _squares(4)
    ev = CP.evaluate_dataset(BrightDetector().eval(), SPEC, data, ["gradcam", "occlusion"], FAST,
                             indices=[0, 2, 3], batch_size=2, device="cpu")
    assert len(ev.records) == 6 and set(ev.records["method"]) == {"gradcam", "occlusion"}
    assert (ev.records["pointing"] == 1.0).all()
    assert ev.maps["gradcam"].shape == (3, S, S)
    table = ev.summary()
    assert table.loc[("gradcam", "all"), "pointing_mean"] == 1.0
    js = ev.to_dict()
    assert js["methods"]["occlusion"]["pointing"] == 1.0
    assert js["methods"]["gradcam"]["per_class"]["bright"]["n"] == 3
    assert js["n_images"] == 3


def test_evaluate_errors():
    data = _squares(2)
    nomask = ImageData(data.images, data.labels, data.class_names, None)
    model = BrightDetector().eval()
    with pytest.raises(NnsensError, match="no ground-truth masks"):
        CP.evaluate_dataset(model, SPEC, nomask, ["gradcam"], FAST, device="cpu")
    with pytest.raises(NnsensError, match="indices"):
        CP.evaluate_dataset(model, SPEC, data, ["gradcam"], FAST, indices=[5], device="cpu")
    with pytest.raises(NnsensError, match="target"):
        CP.evaluate_dataset(model, SPEC, data, ["gradcam"], FAST, target="truth", device="cpu")


def test_sanity_check_curve_starts_at_one_and_keeps_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    before = [p.clone() for p in model.parameters()]
    x = torch.randn(2, 1, S, S)
    res = CP.sanity_check(model, ModelSpec("t", "t", "image", (1, S, S)), x, [0, 1],
                          ["gradcam"], {"cam": CamConfig("gradcam", "2")}, device="cpu")
    assert res.steps == ["original", "6", "2", "0"]
    assert res.mean["gradcam"][0] == 1.0 and len(res.mean["gradcam"]) == 4
    assert res.mean["gradcam"][-1] < 0.9
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


# --------------------------------------------------------------------------- approximation errors

APPROX = OcclusionConfig(window=8, stride=8, coarse_stride=16, drill_top=0.25, approx_sample=8,
                         score="logit")


def _drops(model, spec, x, classes, cfg) -> torch.Tensor:
    """Occlusion drops ``(N, P)`` read off the maps: window == stride, so every pixel lies in
    exactly one patch and the map there is that patch's drop."""
    from nnsens_core.saliency.occlusion import occlusion_positions
    maps = registry.run("occlusion", model, x, classes, cfg, spec=spec, device="cpu")
    return torch.stack([maps[:, t, l] for t, l in occlusion_positions(x.shape, cfg)], 1)


def _expected_error(model, spec, x, classes) -> dict:
    """The error report of one call of approximate occlusion, built independently: the drops of
    the approximate maps and of an exact run (full forward passes) at the perturbations the
    report samples, through _approx.error_report."""
    import dataclasses

    from nnsens_core import _approx
    exact = _drops(model, spec, x, classes, dataclasses.replace(
        APPROX, coarse_stride=None, drill_top=1.0, incremental="off"))
    approx = _drops(model, spec, x, classes, APPROX)
    chk = _approx.samples(exact.numel(), APPROX.approx_sample, seed=APPROX.approx_sample)[0]
    return _approx.error_report(approx.reshape(-1)[chk], exact.reshape(-1)[chk])


def test_explain_and_evaluate_report_the_approximation_error():
    from tests import _executor_helpers as H
    data = H.phantom(4)
    net, spec = H.tiny_cnn(), H.spec_of(data)
    x = spec.normalize(torch.as_tensor(data.images, dtype=torch.float32))
    cls = [int(c) for c in data.labels]
    per_batch = [_expected_error(net, spec, x[b:b + 2], cls[b:b + 2]) for b in (0, 2)]
    assert all(r["rel_l2"] > 1e-3 for r in per_batch)            # really approximate
    # explain: one call, one report
    details: dict = {}
    CP.explain(net, spec, x[:2], cls[:2], ["gradcam", "occlusion"], {"occlusion": APPROX}, "cpu",
               details=details)
    got = CP.approximation_errors(details)
    assert list(got) == ["occlusion"] and got["occlusion"]["sample"] == 8
    assert got["occlusion"]["rel_l2"] == pytest.approx(per_batch[0]["rel_l2"], rel=1e-4)
    assert got["occlusion"]["spearman"] == pytest.approx(per_batch[0]["spearman"], abs=1e-9)
    # evaluate_dataset: two batches, the worst of each number, the samples summed
    ev = CP.evaluate_dataset(net, spec, data, ["gradcam", "occlusion"], {"occlusion": APPROX},
                             batch_size=2, device="cpu")
    rep = ev.approx["occlusion"]
    assert list(ev.approx) == ["occlusion"] and (rep["sample"], rep["parts"]) == (16, 2)
    assert rep["rel_l2"] == pytest.approx(max(r["rel_l2"] for r in per_batch), rel=1e-4)
    assert rep["spearman"] == pytest.approx(min(r["spearman"] for r in per_batch), abs=1e-9)
    assert rep["drill_top"] == 0.25 and rep["tau"] == 0.0
    # exported: in the JSON (per method, with its definition) and in the npz arrays
    from nnsens_core._results import dumps, export_json
    doc = __import__("json").loads(dumps(export_json(ev)))
    assert doc["methods"]["occlusion"]["approx"] == pytest.approx(rep)
    assert "approx" not in doc["methods"]["gradcam"] and "approx" in doc["definitions"]
    arr = ev.arrays()
    np.testing.assert_allclose(arr["approx_occlusion"], [rep["rel_l2"], rep["spearman"], 16, 2])
    assert "approx_gradcam" not in arr


def test_exact_maps_report_no_error():
    from tests import _executor_helpers as H
    data = H.phantom(2)
    net, spec = H.tiny_cnn(), H.spec_of(data)
    details: dict = {}
    x = spec.normalize(torch.as_tensor(data.images, dtype=torch.float32))
    CP.explain(net, spec, x, 0, ["occlusion"], {"occlusion": OcclusionConfig(window=8, stride=8)},
               "cpu", details=details)
    assert "engine" in details["occlusion"] and CP.approximation_errors(details) == {}
    ev = CP.evaluate_dataset(net, spec, data, ["occlusion"],
                             {"occlusion": OcclusionConfig(window=8, stride=8)}, device="cpu")
    assert ev.approx == {} and "approx" not in ev.to_dict()["methods"]["occlusion"]
    assert "approx" not in ev.to_dict()["definitions"] and "approx_occlusion" not in ev.arrays()
