"""The executor interface without Ray: the result store (atomic files, study guard, no pickle),
in-process map (order, progress, resume), compare in chunks == one evaluate_dataset call,
retrain / lambda-grid units through the store, the CLI options."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from nnsens_core import executor as E
from nnsens_core import studies_dist as SD
from nnsens_core.errors import NnsensError
from nnsens_core.robustness import RetrainSettings, lambda_grid, training_robustness
from nnsens_core.saliency.compare import evaluate_dataset
from tests import _executor_helpers as H


class ArrayCodec:
    def encode(self, r):
        return {"r": r}, {"sum": float(r.sum())}

    def decode(self, arrays, meta):
        assert meta["sum"] == float(arrays["r"].sum())
        return arrays["r"]


def test_store_roundtrip_atomic_and_study_guard(tmp_path):
    st = E.ResultStore(tmp_path / "s", ArrayCodec(), study="A")
    st.save("u1", np.arange(4.0))
    assert st.has("u1") and not st.has("u2") and st.keys() == ["u1"]
    np.testing.assert_array_equal(st.load("u1"), np.arange(4.0))
    assert not list((tmp_path / "s").glob(".tmp-*"))  # no temporary left behind
    with np.load(tmp_path / "s" / "u1.npz", allow_pickle=False) as z:  # readable without pickle
        assert json.loads(str(z["__meta__"][()])) == {"sum": 6.0}
    (tmp_path / "s" / "u3.npz").write_bytes(b"truncated")
    assert st.load("u3") is None  # unreadable: recomputed, not trusted
    assert E.ResultStore(tmp_path / "s", ArrayCodec(), study="A").keys() == ["u1", "u3"]
    with pytest.raises(NnsensError, match="another study"):
        E.ResultStore(tmp_path / "s", ArrayCodec(), study="B")
    with pytest.raises(NnsensError, match="unit key"):
        st.path("../escape")


def test_inprocess_map_order_progress_resume(tmp_path):
    calls, seen = [], []

    def fn(u, shared):
        calls.append(u)
        return shared * np.full(2, float(u))

    ex = E.InProcess()
    st = E.ResultStore(tmp_path, ArrayCodec(), "sq")
    out = ex.map(fn, [3, 1, 2], shared=10.0, key=lambda u: f"u{u}", store=st,
                 progress=lambda d, t, stage: seen.append((d, t, stage)))
    assert [o[0] for o in out] == [30.0, 10.0, 20.0] and calls == [3, 1, 2]
    assert seen == [(1, 3, "units"), (2, 3, "units"), (3, 3, "units")]
    (tmp_path / "u1.npz").unlink()
    calls.clear()
    again = ex.map(fn, [3, 1, 2], shared=10.0, key=lambda u: f"u{u}", store=st)
    assert calls == [1] and (ex.loaded, ex.computed) == (2, 1)
    assert all(np.array_equal(a, b) for a, b in zip(out, again))
    with pytest.raises(NnsensError, match="distinct"):
        ex.map(fn, [1, 1], shared=1.0, key=str)
    with pytest.raises(ZeroDivisionError) as err:
        ex.map(lambda u: 1 / u, [1, 0], key=lambda u: f"k{u}")
    assert "(in unit k0)" in str(getattr(err.value, "__notes__", ["(in unit k0)"]))


def test_make_executor_and_missing_ray(monkeypatch):
    assert isinstance(E.make_executor(), E.InProcess)
    with pytest.raises(NnsensError, match="needs --executor ray"):
        E.make_executor("inprocess", address="auto")
    with pytest.raises(NnsensError, match="unknown"):
        E.make_executor("dask")
    with pytest.raises(NnsensError, match="max_retries"):
        E.RayExecutor(max_retries=-1)
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # `import ray` fails
    with pytest.raises(NnsensError, match=r"pip install ray==2\.60\.0"):
        E.RayExecutor(num_cpus=1).map(H.square, [1])


def test_compare_chunks_equal_one_call_and_resume(tmp_path):
    data = H.phantom(8)
    net, spec = H.tiny_cnn(), H.spec_of(data)
    one = evaluate_dataset(net, spec, data, H.METHODS, H.CFGS, batch_size=2, device="cpu")
    ex = E.InProcess()
    got = SD.evaluate_distributed(net, spec, data, H.METHODS, H.CFGS, batch_size=2, device="cpu",
                                  chunk_size=3, executor=ex, store=tmp_path)
    assert ex.computed == 2  # chunks of 4 (3 rounded up to whole batches)
    pd.testing.assert_frame_equal(one.records, got.records)
    for m in H.METHODS:
        assert torch.equal(one.maps[m], got.maps[m]), m  # same batches: bit for bit
    assert torch.equal(one.probs, got.probs) and np.array_equal(one.indices, got.indices)
    pd.testing.assert_frame_equal(one.summary(), got.summary())
    assert one.config == got.config
    # the approximation error: worst over 4 batches in one call, over 2 chunks of 2 batches here
    assert list(one.approx) == ["occlusion"] and one.approx["occlusion"]["parts"] == 4
    assert got.approx == one.approx
    # chance levels and the whole export as the single call's (computed from the merged maps)
    assert got.chance == one.chance and set(one.chance) == set(H.METHODS)
    a, b = one.to_dict(), got.to_dict()
    a.pop("seconds", None), b.pop("seconds", None)
    assert a == b
    (tmp_path / "chunk00001.npz").unlink()
    again = SD.evaluate_distributed(net, spec, data, H.METHODS, H.CFGS, batch_size=2, device="cpu",
                                    chunk_size=3, executor=ex, store=tmp_path)
    assert (ex.loaded, ex.computed) == (1, 1)
    pd.testing.assert_frame_equal(one.records, again.records)
    assert all(torch.equal(one.maps[m], again.maps[m]) for m in H.METHODS)
    assert again.approx == one.approx  # the loaded chunk kept its error
    # a chunk written without its error (an older store) is recomputed, not trusted
    path = tmp_path / "chunk00000.npz"
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["__meta__"][()]))
    del meta["approx"]
    arrays["__meta__"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    old = SD.evaluate_distributed(net, spec, data, H.METHODS, H.CFGS, batch_size=2, device="cpu",
                                  chunk_size=3, executor=ex, store=tmp_path)
    assert (ex.loaded, ex.computed) == (1, 1) and old.approx == one.approx
    with pytest.raises(NnsensError, match="another study"):  # other settings, same directory
        SD.evaluate_distributed(net, spec, data, H.METHODS, H.CFGS, batch_size=2, device="cpu",
                                chunk_size=3, store=tmp_path, target="pred")


def test_compare_chunks_with_a_region_of_interest_equal_one_call():
    data = H.phantom(6)
    net, spec = H.tiny_cnn(), H.spec_of(data)
    roi = np.zeros((6, *data.images.shape[2:]), bool)
    roi[:, 4:-4, 2:-6] = True
    roi[0, :, :] = True
    one = evaluate_dataset(net, spec, data, ["gradcam"], H.CFGS, batch_size=2, device="cpu", roi=roi)
    got = SD.evaluate_distributed(net, spec, data, ["gradcam"], H.CFGS, batch_size=2, device="cpu",
                                  chunk_size=2, roi=roi)
    assert one.roi_share == got.roi_share < 1
    pd.testing.assert_frame_equal(one.records, got.records)
    assert got.chance == one.chance
    plain = SD.evaluate_distributed(net, spec, data, ["gradcam"], H.CFGS, batch_size=2,
                                    device="cpu", chunk_size=2)
    assert plain.roi_share is None and not plain.records["iou"].equals(got.records["iou"])


def test_compare_subset_indices_keep_dataset_numbering():
    data = H.phantom(8)
    net, spec = H.tiny_cnn(), H.spec_of(data)
    idx = [7, 2, 5]
    one = evaluate_dataset(net, spec, data, ["gradcam"], H.CFGS, indices=idx, batch_size=1,
                           device="cpu")
    got = SD.evaluate_distributed(net, spec, data, ["gradcam"], H.CFGS, indices=idx, batch_size=1,
                                  device="cpu", chunk_size=1)
    assert got.records["index"].tolist() == idx
    pd.testing.assert_frame_equal(one.records, got.records)


def _retrain(store=None, calls=None):
    x, y = H.retrain_data()
    settings = RetrainSettings(n_runs=2, k_folds=2, design="full", mask_class=1,
                               mask=H.RETRAIN_MASK)
    mf = SD.retrain_map(E.InProcess(), store, build=H.build_small, settings=settings,
                        study="t") if store else None
    return training_robustness(x, y, H.TrainSmall(x, y, calls), settings, device="cpu",
                               map_fn=mf)


def test_retrain_units_resume_from_store(tmp_path):
    plain = _retrain()
    calls = []
    first = _retrain(tmp_path, calls)
    assert len(calls) == 4 and sorted(p.stem for p in tmp_path.glob("run*")) == [
        "run0_fold0", "run0_fold1", "run1_fold0", "run1_fold1"]
    np.testing.assert_array_equal(plain.masks, first.masks)
    (tmp_path / "run1_fold0.npz").unlink()
    calls.clear()
    again = _retrain(tmp_path, calls)
    assert len(calls) == 1  # only the missing training
    np.testing.assert_array_equal(first.masks, again.masks)
    # networks reloaded from the stored weights: the same prob_CNN
    pd.testing.assert_frame_equal(first.pairs_frame(), again.pairs_frame())
    assert [u.balanced_accuracy for u in first.units] == [u.balanced_accuracy for u in again.units]
    np.testing.assert_array_equal(first.units[2].mask.history, again.units[2].mask.history)


def test_grid_cells_through_the_store(tmp_path):
    data = H.phantom(4)
    net = H.tiny_cnn()
    x = torch.as_tensor(data.images)
    cfg = H.RETRAIN_MASK
    plain = lambda_grid(net, x, 1, (0.01, 0.1), (0.01,), cfg, device="cpu")
    mf = SD.grid_map(E.InProcess(), tmp_path, cfg=cfg, study="g")
    got = lambda_grid(net, x, 1, (0.01, 0.1), (0.01,), cfg, device="cpu", map_fn=mf)
    assert sorted(p.stem for p in tmp_path.glob("cell*")) == ["cell0_0", "cell1_0"]
    np.testing.assert_array_equal(plain.masks, got.masks)
    for metric, by in plain.tables.items():
        np.testing.assert_array_equal(by["lambda1"], got.tables[metric]["lambda1"])
    ex = E.InProcess()
    again = lambda_grid(net, x, 1, (0.01, 0.1), (0.01,), cfg, device="cpu",
                        map_fn=SD.grid_map(ex, tmp_path, cfg=cfg, study="g"))
    assert ex.computed == 0 and ex.loaded == 2
    np.testing.assert_array_equal(plain.score_after, again.score_after)


def test_cli_compare_store_resumes(tiny_vgg_weights, tmp_path, capsys):
    from nnsens_core.__main__ import main
    args = ["compare", "--model", tiny_vgg_weights, "--arch", "vgg16-small", "--arch-kwargs",
            '{"width": 0.0625}', "--n", "4", "--device", "cpu", "--methods", "gradcam",
            "--batch-size", "2", "--store", str(tmp_path / "units")]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert sorted(p.name for p in (tmp_path / "units").glob("chunk*")) == [
        "chunk00000.npz", "chunk00001.npz"]
    (tmp_path / "units" / "chunk00000.npz").unlink()
    assert main([*args, "--out", str(tmp_path / "b"), "--resume", str(tmp_path / "units")]) == 0
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert a["methods"] == b["methods"]
    assert main([*args, "--out", str(tmp_path / "c"), "--ray-address", "auto"]) == 2
    assert "--ray-address / --ray-cpus need --executor ray" in capsys.readouterr().err


def test_sobol_convergence_one_unit_per_n():
    from nnsens_core import sobol as S
    model, problem, cfg = H.sobol_case()
    plain = S.convergence(model, problem, (32, 64, 128), cfg, "cpu")
    ex = E.InProcess()
    got = S.convergence(model, problem, (32, 64, 128), cfg, "cpu", map_fn=ex)
    assert ex.computed == 3
    for k in ("S1", "S1_conf", "ST", "ST_conf"):
        np.testing.assert_array_equal(getattr(plain, k), getattr(got, k))


def test_sobol_convergence_store_resumes_identically(tmp_path):
    """One stored unit per N; a rerun loads them, a lost unit is recomputed, results identical."""
    from nnsens_core import sobol as S
    model, problem, cfg = H.sobol_case()
    ns = (32, 64, 128)
    plain = S.convergence(model, problem, ns, cfg, "cpu")
    store = tmp_path / "conv"

    def run():
        ex = E.InProcess()
        res = S.convergence(model, problem, ns, cfg, "cpu",
                            map_fn=SD.convergence_map(ex, str(store), study="s"))
        return res, ex
    first, ex1 = run()
    assert ex1.computed == 3 and sorted(p.name for p in store.glob("*.npz")) == \
        ["n128.npz", "n32.npz", "n64.npz"]
    (store / "n64.npz").unlink()
    again, ex2 = run()
    assert (ex2.loaded, ex2.computed) == (2, 1)
    for k in ("S1", "S1_conf", "ST", "ST_conf"):
        np.testing.assert_array_equal(getattr(plain, k), getattr(first, k))
        np.testing.assert_array_equal(getattr(plain, k), getattr(again, k))
    with pytest.raises(NnsensError, match="another study"):
        SD.convergence_map(E.InProcess(), str(store), study="other")


def test_cli_sobol_convergence_store_and_resume(tmp_path, capsys):
    from nnsens_core.__main__ import main
    csv = tmp_path / "d.csv"
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, size=(60, 4))
    rows = ["a,b,c,d,y"] + [",".join(f"{v:.4f}" for v in x) + f",{int(x[0] > 0.5)}" for x in X]
    csv.write_text("\n".join(rows) + "\n")
    torch.manual_seed(0)
    from nnsens_core.zoo import PaperMLP
    model = tmp_path / "m.pt"
    torch.save(PaperMLP(4, 5).eval().state_dict(), model)
    base = ["sobol", "--data", str(csv), "--model", str(model), "--arch", "paper-mlp",
            "--device", "cpu", "--n", "64", "--resamples", "20", "--convergence", "16:64", "--yes"]
    assert main([*base, "--out", str(tmp_path / "a.json")]) == 0
    assert main([*base, "--out", str(tmp_path / "b.json"), "--store", str(tmp_path / "u")]) == 0
    assert sorted(p.name for p in (tmp_path / "u").glob("*.npz")) == ["n16.npz", "n32.npz", "n64.npz"]
    (tmp_path / "u" / "n32.npz").unlink()
    assert main([*base, "--out", str(tmp_path / "c.json"), "--resume", str(tmp_path / "u")]) == 0
    docs = [json.loads((tmp_path / f"{n}.json").read_text())["convergence"] for n in "abc"]
    for d in docs:
        d.pop("seconds")
    assert docs[0] == docs[1] == docs[2]
    assert main([*base[:-3], "--yes", "--out", str(tmp_path / "d.json"), "--store",
                 str(tmp_path / "v")]) == 2
    assert "add --convergence" in capsys.readouterr().err
