"""One result convention and one export per result: every result type has ``config``, ``seconds``
and a JSON-safe ``to_dict()``; the CLI's file and the dashboard's download are the same document for
the same run; every long-running function reports progress as ``(done, total[, stage])``."""
from __future__ import annotations

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
import torch

from nnsens_core import activation_max as A
from nnsens_core import landscape as L
from nnsens_core import local_sensitivity as P
from nnsens_core import sobol as S
from nnsens_core.__main__ import main
from nnsens_core._batching import sub_progress
from nnsens_core._results import dumps, export_json, jsonable, npz_bytes
from nnsens_core.data import pima_path
from nnsens_core.demos import demo_cnn_names, demo_tabular_model, load_demo_cnn
from nnsens_core.phantom import demo_images
from nnsens_core.saliency import compare as C
from nnsens_core.saliency import metrics as mt
from nnsens_core.saliency.cam import CamConfig
from nnsens_core.training import TrainConfig

TIMING_KEYS = {"seconds", "timings_s"}


def _strip(doc):
    """The document without wall-clock times (the only values two identical runs may differ in)."""
    if isinstance(doc, dict):
        return {k: _strip(v) for k, v in doc.items() if k not in TIMING_KEYS}
    if isinstance(doc, list):
        return [_strip(v) for v in doc]
    return doc


def _assert_same(a, b, path="doc"):
    """Equal JSON documents (floats to 1e-6 relative: the same computation run twice)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (path, sorted(set(a) ^ set(b)))
        for k in a:
            _assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        assert b == pytest.approx(a, rel=1e-6, abs=1e-9), path
    else:
        assert a == b, (path, a, b)


def _plain(obj) -> bool:
    """Only dict/list/str/int/float/bool/None, with finite floats."""
    if obj is None or isinstance(obj, (str, bool, int)):
        return True
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, list):
        return all(_plain(v) for v in obj)
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in obj.items())
    return False


def _check_convention(res, config_type=None):
    doc = res.to_dict()
    assert _plain(doc), type(res).__name__
    assert json.loads(dumps(doc)) == doc  # strict JSON round trip
    assert {"config", "seconds", "nnsens_version"} <= set(doc)
    assert dataclasses.is_dataclass(res.config) and res.config.__dataclass_params__.frozen
    if config_type is not None:
        assert isinstance(res.config, config_type)
    assert isinstance(res.seconds, float) and res.seconds >= 0
    assert doc["config"] == jsonable(res.config)
    for v in res.arrays().values():
        assert isinstance(v, np.ndarray)
    return doc


# --------------------------------------------------------------------------- the helper itself

def test_jsonable_converts_numpy_torch_dataclasses_and_non_finite():
    @dataclasses.dataclass(frozen=True)
    class Cfg:
        a: float = float("nan")
        b: tuple = (1, np.int64(2))

    obj = {"x": np.array([1.0, np.nan, np.inf]), "t": torch.tensor([[1, 2]]), "f": np.float32(0.5),
           "cfg": Cfg(), 3: {"s": {1}}, "none": None, "flag": np.bool_(True)}
    out = jsonable(obj)
    assert out == {"x": [1.0, None, None], "t": [[1, 2]], "f": 0.5, "cfg": {"a": None, "b": [1, 2]},
                   "3": {"s": [1]}, "none": None, "flag": True}
    assert _plain(out)
    assert json.loads(dumps({"v": float("nan")})) == {"v": None}
    z = np.load(__import__("io").BytesIO(npz_bytes({"m": np.arange(3)})))
    assert list(z["m"]) == [0, 1, 2]


def test_sub_progress_maps_parts_onto_one_total_and_passes_stages():
    calls = []
    sub = sub_progress(lambda d, t, stage="": calls.append((d, t, stage)), "eval", start=10, total=30)
    sub(5, 20)
    sub(20, 20)
    scaled = sub_progress(lambda d, t, stage="": calls.append((d, t, stage)), start=1000, total=3000,
                          span=1000)
    scaled(1, 4, stage="gradcam")
    plain = []
    sub_progress(lambda d, t: plain.append((d, t)), start=1)(2, 5)  # a stage-less callable works
    assert calls == [(15, 30, "eval"), (30, 30, "eval"), (1250, 3000, "gradcam")]
    assert plain == [(3, 5)]
    assert sub_progress(None, "x") is None


# --------------------------------------------------------------------------- every result type

@pytest.fixture(scope="module")
def tabular():
    data, lm, _ = demo_tabular_model(seed=0, device="cpu")
    return data, lm


@pytest.fixture(scope="module")
def cnn():
    return load_demo_cnn(demo_cnn_names()[0], device="cpu")


def test_sobol_results_follow_the_convention(tabular):
    data, lm = tabular
    problem = S.SobolProblem.from_data(data.rows("0:700"))
    res = S.run(lm, problem, S.SobolConfig(n=64, num_resamples=10, layer="act1"), "cpu")
    doc = _check_convention(res, S.SobolConfig)
    assert doc["N"] == 64 and doc["config"]["layer"] == "act1"
    assert res.seconds == pytest.approx(sum(res.timings.values()))
    assert len(res.to_frame()) == 11 * data.n_features
    conv = S.convergence(lm, problem, (16, 32), S.SobolConfig(num_resamples=10), "cpu")
    assert _check_convention(conv, S.SobolConfig)["N"] == [16, 32]
    pca = S.pca_comparison(data.X, data.feature_names, res.output().ST[0], share=0.7)
    assert _check_convention(pca)["config"] == {"share": 0.7, "standardize": True, "n_components": None,
                                                "importance": "variance", "rows": None,
                                                "class_value": None}
    fr = S.feature_reduction(lm, data.rows("0:500"), data.rows("500:700"), res.output().ST[0],
                             S.FeatureReductionConfig(k=2, seeds=(0,), train=TrainConfig(epochs=1)), "cpu")
    assert _check_convention(fr, S.FeatureReductionConfig)["seeds"] == [0]


def test_image_results_follow_the_convention(cnn):
    data = demo_images("test", n=6)
    x = cnn.spec.normalize(torch.as_tensor(data.images[:2]))
    cfg = P.LocalConfig(patch=32)
    results = P.local_sensitivity_many(cnn.module, x, None, cfg, "cpu")
    doc = _check_convention(results[0], P.LocalConfig)
    assert doc["forward_passes"] == 3 * 2 * 2 + 1 and doc["config"]["patch"] == 32
    batch = P.LocalBatchResult(tuple(results))
    doc = _check_convention(batch, P.LocalConfig)
    assert doc["n_images"] == 2 and batch.seconds == pytest.approx(sum(r.seconds for r in results))
    mean, std = P.mean_std(results)
    np.testing.assert_allclose(batch.arrays()["maps"], mean.numpy())
    np.testing.assert_allclose(batch.arrays()["maps_std"], std.numpy())
    assert doc["blocks"]["block1"]["max"] == pytest.approx(float(mean[0].max()))
    assert "maps" not in doc and "maps_all" not in doc  # big arrays only in arrays()

    am = A.maximize(cnn.module, cnn.spec, [0, 1], A.AMConfig(steps=2), "cpu")
    doc = _check_convention(am, A.AMConfig)
    assert doc["final_activations"] == pytest.approx(am.activations.tolist())
    assert list(am.to_frame().index) == list(am.labels)

    ev = C.evaluate_dataset(cnn.module, cnn.spec, data, ["gradcam"], indices=[0, 1, 2], device="cpu")
    doc = _check_convention(ev, C.EvaluationSettings)
    assert doc["n_images"] == 3 and doc["config"]["methods"] == ["gradcam"]
    assert doc["accuracy"] == pytest.approx(float((ev.probs.argmax(1).numpy() == data.labels[:3]).mean()))
    assert set(ev.arrays()) == {"indices", "map_gradcam"}

    san = C.sanity_check(cnn.module, cnn.spec, x[:1], [0], ["gradcam"],
                         layers=mt.randomizable_layers(cnn.module)[::-1][:1], device="cpu")
    doc = _check_convention(san, mt.RandomizationSettings)
    assert doc["steps"][0] == "original" and san.to_frame().shape == (2, 2)


def test_landscape_results_follow_the_convention(tabular):
    data, lm = tabular
    res = L.run_landscape_tabular(data, L.LandscapeConfig(epochs=5, retrains=2), rows="0:200",
                                  device="cpu")
    doc = _check_convention(res, L.LandscapeConfig)
    assert [f["feature"] for f in doc["features"]] == list(data.feature_names)
    assert set(res.arrays()) >= {"epochs", "loss", "mean_d2"} and len(res.to_frame()) == data.n_features
    surf = L.loss_surface(lm.module, data.X[:100], data.y[:100], L.SurfaceConfig(grid=5), "cpu")
    doc = _check_convention(surf, L.SurfaceConfig)
    assert np.asarray(doc["loss"]).shape == (5, 5) and len(surf.to_frame()) == 25
    dg = L.digits_landscape(3, L.LandscapeConfig(epochs=3, retrains=1), n=60, device="cpu")
    doc = _check_convention(dg, L.LandscapeConfig)
    assert doc["digit"] == 3 and dg.arrays()["increasing_share"].shape == (8, 8)


# --------------------------------------------------------------------------- CLI file == page download

def test_sobol_cli_file_is_the_page_document(tabular, tmp_path):
    data, lm = tabular
    csv = tmp_path / f"{data.name}.csv"          # the CLI names data and model by their files
    shutil.copy(pima_path(), csv)
    weights = tmp_path / f"{lm.spec.name}.pt"
    torch.save(lm.module.state_dict(), weights)
    out = tmp_path / "sobol.json"
    rc = main(["sobol", "--data", str(csv), "--target", "Outcome", "--model", str(weights),
               "--arch", "paper-mlp", "--rows", "0:700", "--n", "128", "--resamples", "20",
               "--second-order", "--layer", "act1", "--seed", "3", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    cli = json.loads(out.read_text())
    # what pages/sobol.py offers: export_json(res, model=..., data=..., rows=rows_spec, estimators=...)
    problem = S.SobolProblem.from_data(data.rows("0:700"))
    cfg = S.SobolConfig(n=128, num_resamples=20, seed=3, layer="act1")
    page = json.loads(dumps(export_json(S.run(lm, problem, cfg, "cpu"), model=lm.spec.name,
                                        data=data.name, rows="0:700", estimators=S.ESTIMATORS)))
    _assert_same(_strip(page), _strip(cli))
    assert cli["model"] == lm.spec.name and cli["data"] == data.name and cli["N"] == 128


def test_compare_cli_file_is_the_page_document(cnn, tmp_path):
    rc = main(["compare", "--n", "9", "--methods", "gradcam", "--out", str(tmp_path), "--no-maps",
               "--device", "cpu"])
    assert rc == 0
    cli = json.loads((tmp_path / "metrics.json").read_text())
    data = demo_images("test", n=9)
    cfgs = {"cam": CamConfig("gradcam", None, score_batch_size=64)}
    ev = C.evaluate_dataset(cnn.module, cnn.spec, data, ["gradcam"], cfgs, device="cpu")
    # what pages/saliency.py offers under "Metrics (JSON)"
    page = json.loads(dumps(export_json(ev, model=cnn.spec.name, data=data.name, device="cpu",
                                        class_names=list(data.class_names))))
    _assert_same(_strip(page), _strip(cli))
    assert cli["methods"]["gradcam"]["n"] == 9


# --------------------------------------------------------------------------- one progress signature

class Recorder:
    """A progress callback that records every call and checks the signature is (done, total, stage)."""

    def __init__(self):
        self.calls: list[tuple[int, int, str]] = []

    def __call__(self, done: int, total: int, stage: str = "") -> None:
        assert isinstance(done, int) and isinstance(total, int) and isinstance(stage, str)
        self.calls.append((done, total, stage))

    def check(self, stages=None) -> None:
        assert self.calls, "no progress reported"
        assert all(0 <= d <= t for d, t, _ in self.calls), self.calls
        by_stage: dict[str, list] = {}
        for d, t, s in self.calls:
            by_stage.setdefault(s, []).append((d, t))
        assert self.calls[-1][0] == self.calls[-1][1], self.calls[-3:]  # done reaches total
        for s, seq in by_stage.items():  # a stage with its own total reaches it too
            if seq[-1][1] != self.calls[-1][1]:
                assert seq[-1][0] == seq[-1][1], (s, seq[-3:])
        if stages is not None:
            assert set(by_stage) == set(stages), sorted(by_stage)


def test_long_running_functions_report_done_total_stage(tabular, cnn):
    data, lm = tabular
    problem = S.SobolProblem.from_data(data.rows("0:700"))
    cases = {
        "sobol.run": (lambda p: S.run(lm, problem, S.SobolConfig(n=32, num_resamples=5), "cpu",
                                      batch_size=50, progress=p), ("sampling", "evaluation", "analysis")),
        "sobol.convergence": (lambda p: S.convergence(lm, problem, (8, 16), S.SobolConfig(num_resamples=5),
                                                      "cpu", progress=p),
                              ("sampling", "evaluation", "analysis")),
        "sobol.feature_reduction": (lambda p: S.feature_reduction(
            lm, data.rows("0:300"), data.rows("300:400"), np.arange(data.n_features, dtype=float),
            S.FeatureReductionConfig(k=2, seeds=(0,), train=TrainConfig(epochs=1)), "cpu", progress=p),
            ("retraining",)),
        "landscape.run_landscape_tabular": (lambda p: L.run_landscape_tabular(
            data, L.LandscapeConfig(epochs=4, retrains=2), rows="0:100", device="cpu", progress=p),
            ("training", "derivatives")),
        "landscape.loss_surface": (lambda p: L.loss_surface(lm.module, data.X[:50], data.y[:50],
                                                            L.SurfaceConfig(grid=4), "cpu", batch_size=5,
                                                            progress=p), ("",)),
    }
    images = demo_images("test", n=3)
    x = cnn.spec.normalize(torch.as_tensor(images.images[:2]))
    cases.update({
        "local_sensitivity_many": (lambda p: P.local_sensitivity_many(
            cnn.module, x, None, P.LocalConfig(patch=32, batch_size=5), "cpu", progress=p), ("",)),
        "activation_max.maximize": (lambda p: A.maximize(cnn.module, cnn.spec, [0, 1], A.AMConfig(steps=3),
                                                         "cpu", progress=p), ("",)),
        "saliency.explain": (lambda p: C.explain(cnn.module, cnn.spec, x, [0, 1], ["gradcam", "occlusion"],
                                                 device="cpu", progress=p), ("gradcam", "occlusion")),
        "saliency.evaluate": (lambda p: C.evaluate_dataset(cnn.module, cnn.spec, images, ["gradcam"], batch_size=2,
                                                   device="cpu", progress=p), ("gradcam",)),
    })
    for name, (fn, stages) in cases.items():
        rec = Recorder()
        fn(rec)
        try:
            rec.check(stages)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None
