"""The Ray back-end on a local Ray with 2 CPUs: the same results as in-process (compare chunks,
retrain units), retries, failures reported by unit, resume, and a worker killed mid-study."""

import numpy as np
import pandas as pd
import pytest
import torch

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install ray==2.60.0, or "
                                        "nnsens[ray]); the Ray executor tests need it")

from nnsens_core import executor as E
from nnsens_core import studies_dist as SD
from nnsens_core.errors import NnsensError
from nnsens_core.robustness import RetrainSettings, training_robustness
from nnsens_core.saliency.compare import evaluate_dataset
from tests import _executor_helpers as H

pytestmark = pytest.mark.slow  # workers import torch: seconds each on a busy 2-core machine


def test_map_order_shared_and_progress(rx):
    seen = []
    out = rx.map(H.square_shared, [3, 1, 2, 5], shared={"scale": 2.0},
                 progress=lambda d, t, stage: seen.append((d, t)))
    assert [o[0] for o in out] == [18.0, 2.0, 8.0, 50.0]  # unit order, whatever finished first
    assert sorted(seen) == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_compare_on_ray_equals_in_process(rx, tmp_path):
    data = H.phantom(8)
    net, spec = H.tiny_cnn(), H.spec_of(data)
    one = evaluate_dataset(net, spec, data, H.METHODS, H.CFGS, batch_size=2, device="cpu")
    got = SD.evaluate_distributed(net, spec, data, H.METHODS, H.CFGS, batch_size=2, device="cpu",
                                  chunk_size=2, executor=rx, store=tmp_path)
    pd.testing.assert_frame_equal(one.records, got.records)
    for m in H.METHODS:  # one torch thread here (conftest) and in each worker: bit for bit
        assert torch.equal(got.maps[m], one.maps[m]), m
    assert torch.equal(got.probs, one.probs)
    assert got.approx == one.approx and one.approx["occlusion"]["parts"] == 4  # same error
    assert len(list(tmp_path.glob("chunk*.npz"))) == 4  # every chunk written as it finished
    # the chance levels, one Ray unit per method after the chunks: the single call's values
    assert got.chance == one.chance and set(got.chance) == set(H.METHODS)
    assert (rx.loaded, rx.computed) == (0, 4)  # the counts are the chunks'


def test_retrain_on_ray_equals_in_process(rx):
    x, y = H.retrain_data()
    settings = RetrainSettings(n_runs=2, k_folds=2, design="full", mask_class=1,
                               mask=H.RETRAIN_MASK)
    train = H.TrainSmall(x, y)
    one = training_robustness(x, y, train, settings, device="cpu")
    got = training_robustness(x, y, train, settings, device="cpu", map_fn=rx)
    assert [(u.run, u.fold) for u in got.units] == [(u.run, u.fold) for u in one.units]
    np.testing.assert_array_equal(got.masks, one.masks)  # seeded, one thread: bit for bit
    for a, b in zip(one.units, got.units):
        for (k, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
            assert torch.equal(pb, pa), k
    pd.testing.assert_frame_equal(got.pairs_frame(), one.pairs_frame(), check_exact=True)


def test_failed_task_is_retried(rx, tmp_path):
    fn = H.FailOnce(tmp_path, bad=2)
    assert [o[0] for o in rx.map(fn, [1, 2, 3])] == [1.0, 4.0, 9.0]
    assert (tmp_path / "attempt-2").exists()


def test_permanent_failure_names_the_unit_and_keeps_the_rest(rx, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    st = E.ResultStore(tmp_path / "store", SD_ARRAY, "fail")
    with pytest.raises(NnsensError, match=r"1 of 3 units failed after 3 attempts each: unit "
                                          r"u2: RuntimeError: planned failure of unit 2"):
        rx.map(H.FailOnce(marks, bad=2, always=True), [1, 2, 3], key=lambda u: f"u{u}", store=st)
    assert st.keys() == ["u1", "u3"]  # the others finished and were kept
    calls = E.RayExecutor()
    out = calls.map(H.square, [1, 2, 3], key=lambda u: f"u{u}", store=st)  # resume after a fix
    assert (calls.loaded, calls.computed) == (2, 1) and [o[0] for o in out] == [1.0, 4.0, 9.0]


def test_killed_worker_loses_nothing(rx, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    st = E.ResultStore(tmp_path / "store", SD_ARRAY, "kill")
    units = list(range(6))
    out = rx.map(H.FailOnce(marks, bad=3, exit=True), units, key=lambda u: f"u{u}", store=st)
    assert (marks / "attempt-3").exists()  # the worker did die once on unit 3
    assert [o[0] for o in out] == [float(u * u) for u in units]
    assert st.keys() == [f"u{u}" for u in units]


class _ArrayCodec:
    def encode(self, r):
        return {"r": r}, {}

    def decode(self, arrays, meta):
        return arrays["r"]


SD_ARRAY = _ArrayCodec()


def test_sobol_convergence_on_ray_equals_in_process(rx):
    from nnsens_core import sobol as S
    model, problem, cfg = H.sobol_case()
    plain = S.convergence(model, problem, (32, 64, 128), cfg, "cpu")
    got = S.convergence(model, problem, (32, 64, 128), cfg, "cpu", map_fn=rx)
    for k in ("S1", "S1_conf", "ST", "ST_conf"):
        np.testing.assert_allclose(getattr(got, k), getattr(plain, k), rtol=0, atol=1e-12)
