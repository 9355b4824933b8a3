"""Hyperparameter robustness: group masks over a lambda1 x lambda2 grid and their tables."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from nnsens_core._results import csv_bytes, dumps
from nnsens_core.errors import NnsensError
from nnsens_core.robustness import grid as G
from nnsens_core.robustness import metrics as rm
from nnsens_core.saliency.meaningful_mask import MaskConfig


class PatchModel(nn.Module):
    """Class 1 when a 6x6 patch of the image is dark: logit_1 = 8 * (0.5 - mean(patch))."""

    def __init__(self):
        super().__init__()
        w = torch.zeros(16, 16)
        w[2:8, 8:14] = 1 / 36
        self.register_buffer("w", w)
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        l1 = 8 * (0.5 - (x[:, 0] * self.w).flatten(1).sum(1)) + 0 * self.dummy
        return torch.stack([torch.zeros_like(l1), l1], 1)


def _data():
    g = torch.Generator().manual_seed(0)
    x = 0.4 + 0.2 * torch.rand(4, 1, 16, 16, generator=g)
    x[:, :, 2:8, 8:14] = 0.3
    atlas = np.zeros((16, 16), dtype=np.int64)
    atlas[:8, :8], atlas[:8, 8:], atlas[8:] = 1, 2, 3
    return x, atlas


def test_lambda_grid_tables():
    x, atlas = _data()
    model = PatchModel()
    cfg = MaskConfig.paper(steps=25, resolution=8, lambda1=0.0, lambda2=0.0)
    l1, l2 = [0.002, 0.02], [0.01, 0.1, 1.0]
    seen = []
    res = G.lambda_grid(model, x, 1, l1, l2, cfg, atlas=atlas, device="cpu",
                        progress=lambda d, t, stage="": seen.append((stage, d, t)))
    assert res.masks.shape == (2, 3, 16, 16) and res.m.shape == (2, 3, 8, 8)
    assert res.score_after.shape == (2, 3, 4)
    assert set(res.tables) == set(G.METRICS)
    for metric, by in res.tables.items():
        assert by["lambda1"].shape == (3, 2, 2) and by["lambda2"].shape == (2, 3, 3)
        for t in (*by["lambda1"], *by["lambda2"]):
            np.testing.assert_allclose(t, t.T, equal_nan=True)
            if metric != "prob_cnn":
                d = np.diag(t)
                np.testing.assert_allclose(d[np.isfinite(d)], 1.0)
    # prob_CNN's diagonal is each mask's own residual probability (score = prob)
    np.testing.assert_allclose(np.diagonal(res.tables["prob_cnn"]["lambda2"], axis1=1, axis2=2),
                               res.score_after.mean(-1), rtol=1e-5)
    # an entry recomputed from the masks
    assert res.tables["roi_cosine"]["lambda1"][1, 0, 1] == pytest.approx(
        rm.roi_cosine(res.masks[0, 1], res.masks[1, 1], atlas))
    t = res.table("pixel_cosine", "lambda2", fixed=0.02)
    assert list(t.index) == l2 and t.shape == (3, 3)
    np.testing.assert_allclose(t.to_numpy(), res.tables["pixel_cosine"]["lambda2"][1], equal_nan=True)
    frame = res.to_frame()
    assert len(frame) == len(G.METRICS) * (3 * 2 * 2 + 2 * 3 * 3)
    assert csv_bytes(frame, index=False).startswith(b"metric,across,fixed,a,b,value")
    doc = json.loads(dumps(res.to_dict()))
    assert doc["lambda1s"] == l1 and len(doc["tables"]["prob_cnn"]["lambda1"]) == 3
    assert res.arrays()["masks"].shape == (2, 3, 16, 16)
    stages = [s for s, _, _ in seen]
    assert stages.count("masks") == 6 and seen[5] == ("masks", 6, 6) and seen[-1][0] == "similarities"
    # the weakest penalties delete more than the strongest
    deleted = (1 - res.masks).reshape(2, 3, -1).mean(-1)
    assert deleted[0, 0] > deleted[1, 2]


def test_lambda_grid_errors():
    x, atlas = _data()
    model = PatchModel()
    cfg = MaskConfig.paper(steps=1)
    with pytest.raises(NnsensError, match="lambda1s is empty"):
        G.lambda_grid(model, x, 1, [], [0.1], cfg, device="cpu")
    with pytest.raises(NnsensError, match="lambda2s holds"):
        G.lambda_grid(model, x, 1, [0.1], [0.1, -1], cfg, device="cpu")
    with pytest.raises(NnsensError, match="twice"):
        G.lambda_grid(model, x, 1, [0.1, 0.1], [0.1], cfg, device="cpu")
    with pytest.raises(NnsensError, match="needs an atlas"):
        G.lambda_grid(model, x, 1, [0.1], [0.1], cfg, metrics=["roi_cosine"], device="cpu")
    with pytest.raises(NnsensError, match="atlas has shape"):
        G.lambda_grid(model, x, 1, [0.1], [0.1], cfg, atlas=atlas[:8], device="cpu")
    with pytest.raises(NnsensError, match="unknown"):
        G.lambda_grid(model, x, 1, [0.1], [0.1], cfg, metrics=["dice"], device="cpu")
