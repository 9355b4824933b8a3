"""Dataset view without masks (confusion, class mean maps) and the trust verdicts."""
import numpy as np
import pytest
import torch

from nnsens_core import demos, phantom, zoo
from nnsens_core.errors import NnsensError
from nnsens_core.saliency import compare as C
from nnsens_core.saliency import dataset as D
from nnsens_core.saliency import trust as T


@pytest.fixture(scope="module")
def demo():
    return demos.load_demo_cnn("vgg16-phantom"), phantom.demo_images("test", 12)


def test_confusion_matches_image_by_image_predictions_at_any_batch_size(demo):
    lm, data = demo
    x = lm.spec.normalize(torch.as_tensor(data.images))
    with torch.no_grad():  # oracle: one image at a time
        preds = np.array([int(lm.module.eval()(x[i:i + 1]).argmax()) for i in range(len(x))])
    labels = np.asarray(data.labels)
    a, b = D.confusion(lm, data, batch_size=1), D.confusion(lm, data, batch_size=64)
    np.testing.assert_array_equal(a.matrix, b.matrix)
    np.testing.assert_array_equal(a.preds, preds)
    assert a.matrix.sum() == len(data)
    for i in range(3):
        for j in range(3):
            assert a.matrix[i, j] == np.sum((labels == i) & (preds == j))
    assert a.accuracy == pytest.approx((preds == labels).mean())
    recalls = [np.mean(preds[labels == c] == c) for c in np.unique(labels)]
    assert a.balanced_accuracy == pytest.approx(np.mean(recalls))
    np.testing.assert_array_equal(a.wrong, np.flatnonzero(preds != labels))
    assert list(a.to_frame().columns) == list(data.class_names)


def test_class_mean_maps_average_the_correct_images_and_ignore_batch_size(demo):
    lm, data = demo
    got1 = D.class_mean_maps(lm, data, "gradcam", batch_size=2)
    got2 = D.class_mean_maps(lm, data, "gradcam", batch_size=16)
    assert set(got1) == set(got2) and got1
    x = lm.spec.normalize(torch.as_tensor(data.images))
    preds = D.confusion(lm, data).preds
    labels = np.asarray(data.labels)
    for c, (mean, count) in got1.items():
        np.testing.assert_allclose(mean, got2[c][0], atol=1e-6)
        idx = np.flatnonzero((labels == c) & (preds == c))
        assert count == len(idx) == got2[c][1]
        maps = C.explain(lm, None, x[idx], labels[idx].tolist(), ["gradcam"])["gradcam"].numpy()
        np.testing.assert_allclose(mean, maps.mean(0), atol=1e-5)
        assert mean.shape == data.shape[1:]


def test_class_mean_maps_report_the_error_of_approximate_maps(demo):
    from nnsens_core import _approx
    from nnsens_core.saliency.occlusion import OcclusionConfig, occlusion
    lm, data = demo
    cfg = OcclusionConfig(window=16, stride=8, drill_top=0.5, approx_sample=8)
    details: dict = {}
    D.class_mean_maps(lm, data, "occlusion", cfg, batch_size=4, details=details)
    x = lm.spec.normalize(torch.as_tensor(data.images))
    labels = np.asarray(data.labels)
    ok = np.flatnonzero(labels == D.confusion(lm, data).preds)
    reports = [occlusion(lm.module, x[ok[b:b + 4]], labels[ok[b:b + 4]].tolist(), cfg, "cpu",
                         lm.spec, return_details=True)[1]["approx"] for b in range(0, len(ok), 4)]
    want = _approx.combine(reports)
    assert details["approx"]["parts"] == len(reports) > 1
    assert details["approx"]["rel_l2"] == pytest.approx(want["rel_l2"], rel=1e-5)
    assert details["approx"]["spearman"] == pytest.approx(want["spearman"], abs=1e-9)
    exact: dict = {}
    D.class_mean_maps(lm, data, "occlusion", OcclusionConfig(window=16, stride=8), details=exact)
    assert exact == {}


def test_accuracy_verdict_binomial_range():
    v = T.accuracy_verdict([0, 1, 2] * 10, [0] * 30, 3)  # always class 0: 1/3
    assert v.at_chance and v.low < 1 / 3 < v.high
    assert not T.accuracy_verdict([0, 1, 2] * 10, [0, 1, 2] * 10, 3).at_chance
    from scipy.stats import binom  # oracle: P(X <= high * n) >= 0.975 under chance
    assert binom.cdf(round(v.high * 30), 30, 1 / 3) >= 0.975
    with pytest.raises(NnsensError):
        T.accuracy_verdict([0, 1], [0], 3)


def test_untrained_model_is_flagged_the_demo_cnn_is_not(demo):
    lm, data = demo
    data = phantom.demo_images("test", 30)
    good = D.confusion(lm, data)
    assert not T.accuracy_verdict(good.labels, good.preds, 3).at_chance
    torch.manual_seed(0)
    fresh = zoo.build(lm.spec.arch, **lm.spec.arch_kwargs).eval()
    bad = D.confusion(fresh, data, spec=lm.spec)
    assert T.accuracy_verdict(bad.labels, bad.preds, 3).at_chance
