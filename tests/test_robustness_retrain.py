"""Training robustness: stratified folds, runs x folds of a cheap closed-form classifier on 8^3
volumes, group masks per network and inter-run / inter-fold similarities."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from nnsens_core._results import dumps
from nnsens_core.errors import NnsensError
from nnsens_core.robustness import metrics as rm
from nnsens_core.robustness import retrain as R
from nnsens_core.training import stratified_folds
from nnsens_core.saliency.meaningful_mask import MaskConfig


def test_stratified_folds():
    y = np.array([0] * 10 + [1] * 7 + [2] * 5)
    folds = stratified_folds(y, 3, seed=4)
    vals = np.concatenate([va for _, va in folds])
    assert sorted(vals.tolist()) == list(range(len(y)))  # disjoint and covering
    for tr, va in folds:
        assert not set(tr) & set(va) and len(tr) + len(va) == len(y)
        for c, n in ((0, 10), (1, 7), (2, 5)):
            assert (y[va] == c).sum() in (n // 3, -(-n // 3))
    assert [len(va) for _, va in folds] in ([8, 7, 7], [7, 8, 7], [7, 7, 8])
    again = stratified_folds(y, 3, seed=4)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(folds, stratified_folds(y, 3, seed=5)))
    with pytest.raises(NnsensError, match="one class only"):
        stratified_folds([1, 1, 1, 1], 2)
    with pytest.raises(NnsensError, match="fewer than k=3"):
        stratified_folds([0, 0, 0, 1, 1], 3)
    with pytest.raises(NnsensError, match="k=1"):
        stratified_folds([0, 1, 0, 1], 1)


class Linear3d(nn.Module):
    def __init__(self, w: torch.Tensor, b: float):
        super().__init__()
        self.register_buffer("w", w)
        self.b = float(b)
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        l1 = (x[:, 0] * self.w).flatten(1).sum(1) + self.b + 0 * self.dummy
        return torch.stack([torch.zeros_like(l1), l1], 1)


def _data(n=24):
    g = torch.Generator().manual_seed(0)
    y = np.arange(n) % 2
    x = 0.5 + 0.1 * torch.rand(n, 1, 8, 8, 8, generator=g)
    x[torch.as_tensor(y == 1), :, :4, :4, :4] -= 0.2  # class 1: "atrophy" in the first octant
    atlas = np.zeros((8, 8, 8), dtype=np.int64)
    for k, (i, j, l) in enumerate(np.ndindex(2, 2, 2)):
        atlas[4 * i:4 * i + 4, 4 * j:4 * j + 4, 4 * l:4 * l + 4] = k + 1
    return x, y, atlas


def _train_fn(x, y, calls):
    def train(seed, train_idx, val_idx):
        """Closed-form: w = 10 (mu_1 - mu_0) + seed-dependent noise, threshold at the midpoint."""
        calls.append((seed, len(train_idx), len(val_idx)))
        xt, yt = x[torch.as_tensor(train_idx), 0], y[train_idx]
        mu1, mu0 = xt[torch.as_tensor(yt == 1)].mean(0), xt[torch.as_tensor(yt == 0)].mean(0)
        g = torch.Generator().manual_seed(seed)
        w = 10 * (mu1 - mu0) + 0.05 * torch.randn(mu1.shape, generator=g)
        return Linear3d(w, -float((w * (mu1 + mu0) / 2).sum()))
    return train


def test_training_robustness_cross_design():
    x, y, atlas = _data()
    calls = []
    settings = R.RetrainSettings(n_runs=3, k_folds=2, mask_class=1, top_n=1,
                                 mask=MaskConfig.paper(steps=25, resolution=4, lambda1=0.002))
    seen = []
    res = R.training_robustness(x, y, _train_fn(x, y, calls), settings, atlas=atlas,
                                names={1: "first octant"}, device="cpu",
                                progress=lambda d, t, stage="": seen.append((stage, d, t)))
    assert [(u.run, u.fold) for u in res.units] == [(0, 0), (1, 0), (2, 0), (0, 1)]
    assert [c[0] for c in calls] == [0, 1, 2, 0] and all(c[1:] == (12, 12) for c in calls)
    assert res.masks.shape == (4, 8, 8, 8)
    kinds = [p["kind"] for p in res.pairs]
    assert kinds.count("inter_run") == 3 and kinds.count("inter_fold") == 1
    for p in res.pairs:
        ua, ub = res.units[p["a"]], res.units[p["b"]]
        assert (ua.fold == ub.fold) == (p["kind"] == "inter_run")
    # balanced accuracy of each network on its held-out fold, recomputed
    units = R.plan_units(y, settings)
    for u, plan in zip(res.units, units):
        pred = u.model(x[torch.as_tensor(plan.val_idx)]).argmax(-1).numpy()
        assert u.balanced_accuracy == pytest.approx(rm.balanced_accuracy(y[plan.val_idx], pred))
        assert u.balanced_accuracy > 0.9
    # the summary is the mean / std of the pairs
    vals = [p["roi_cosine"] for p in res.pairs if p["kind"] == "inter_run"]
    assert res.summary["inter_run"]["roi_cosine"] == pytest.approx((np.mean(vals), np.std(vals), 3))
    # every network uses the first octant: every mask deletes it most, and agrees on it
    assert all(t["region"].iloc[0] == 1 for t in res.top.values())
    ag = res.agreement["all"]
    assert ag["region"].iloc[0] == 1 and ag["count"].iloc[0] == 4 and ag["name"].iloc[0] == "first octant"
    assert res.agreement["runs"]["count"].iloc[0] == 3
    assert all(p["roi_cosine"] > 0.9 and p["prob_cnn"] < 0.5 for p in res.pairs)
    frame = res.to_frame()
    assert list(frame.index) == ["inter_run", "inter_fold"] and "prob_cnn_mean" in frame.columns
    doc = json.loads(dumps(res.to_dict()))
    assert len(doc["units"]) == 4 and doc["config"]["design"] == "cross"
    assert res.arrays()["masks"].shape == (4, 8, 8, 8)
    assert ("training", 4, 4) in seen and seen[-1] == ("similarities", 4, 4)


def test_any_executor_runs_the_units():
    x, y, _ = _data(12)
    settings = R.RetrainSettings(n_runs=2, k_folds=2, mask=MaskConfig.paper(steps=3, resolution=2))
    here = R.training_robustness(x, y, _train_fn(x, y, []), settings, device="cpu")
    again = R.training_robustness(x, y, _train_fn(x, y, []), settings, device="cpu",
                                  map_fn=lambda f, us: [f(u) for u in us[::-1]][::-1])
    np.testing.assert_allclose(again.masks, here.masks, atol=1e-6)
    assert again.pairs == here.pairs
    assert "roi_cosine" not in again.pairs[0] and again.agreement == {}


def test_plan_units_full_design_and_errors():
    y = np.arange(12) % 2
    full = R.plan_units(y, R.RetrainSettings(n_runs=2, k_folds=3, design="full", seeds=(7, 9)))
    assert [(u.run, u.fold, u.seed) for u in full] == [(0, 0, 7), (0, 1, 7), (0, 2, 7), (1, 0, 9),
                                                       (1, 1, 9), (1, 2, 9)]
    assert np.array_equal(full[1].val_idx, full[4].val_idx)  # one split for every run
    with pytest.raises(NnsensError, match="seeds"):
        R.RetrainSettings(n_runs=2, seeds=(1,))
    with pytest.raises(NnsensError, match="k_folds=1"):
        R.RetrainSettings(k_folds=1)
    with pytest.raises(NnsensError, match="design"):
        R.RetrainSettings(design="nested")
    x, y, atlas = _data(8)
    fn = _train_fn(x, y, [])
    with pytest.raises(NnsensError, match="mask_class=3"):
        R.training_robustness(x, y, fn, R.RetrainSettings(mask_class=3), device="cpu")
    with pytest.raises(NnsensError, match="one label per input"):
        R.training_robustness(x, y[:5], fn, device="cpu")
    with pytest.raises(NnsensError, match="one class only"):
        R.training_robustness(x, np.ones(8, dtype=int), fn, device="cpu")
    with pytest.raises(NnsensError, match="atlas has shape"):
        R.training_robustness(x, y, fn, atlas=atlas[:4], device="cpu")
    with pytest.raises(NnsensError, match="train_fn returned"):
        R.training_robustness(x, y, lambda s, tr, va: "model", R.RetrainSettings(k_folds=2),
                              device="cpu")
