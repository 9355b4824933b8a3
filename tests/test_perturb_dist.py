"""Large perturbation jobs in blocks (nnsens_core.perturb_dist): local sensitivity and occlusion
split into units of perturbations give the single call's maps bit for bit (one torch thread,
CPU), through the result store with resume after a killed run, and from the CLI."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from nnsens_core import executor as E
from nnsens_core import perturb_dist as PD
from nnsens_core.errors import NnsensError
from nnsens_core.local_sensitivity import LocalConfig, local_sensitivity_many
from nnsens_core.saliency.occlusion import OcclusionConfig, occlusion, occlusion_drops


class VggLike(nn.Module):
    """A features/classifier net: the incremental engines apply (local: blocks in ``features``;
    occlusion: ``features`` is the incremental head)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(6 * 4 * 4, 3))

    def forward(self, x):
        return self.classifier(self.features(x))


BLOCKS = {"b1": "features.2", "b2": "features.5"}


def images(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 2, 16, 16, generator=torch.Generator().manual_seed(seed))


def assert_same_local(one, got):
    for a, b in zip(one, got):
        assert torch.equal(a.maps, b.maps)  # same batches: bit for bit
        assert torch.equal(a.base_norms, b.base_norms)
        assert (a.labels, a.modules, a.config) == (b.labels, b.modules, b.config)
        assert a.extra["engine"] == b.extra["engine"]


@pytest.mark.parametrize("cfg", [
    LocalConfig(batch_size=24),                                           # incremental engine
    LocalConfig(batch_size=16, incremental="off", formula="norm_diff"),   # full forward passes
    LocalConfig(noise="gaussian", sigma=0.3, patch=3, batch_size=8),      # seeded deltas, edge tiles
    LocalConfig(),                                                        # auto batch size
], ids=["incremental", "full", "gaussian-patch", "auto-batch"])
def test_local_blocks_equal_one_call(cfg):
    net, xs = VggLike(), images()
    one = local_sensitivity_many(net, xs, BLOCKS, cfg, "cpu")
    ex = E.InProcess()
    got = PD.local_distributed(net, xs, BLOCKS, cfg, "cpu", block_size=50, executor=ex)
    assert_same_local(one, got)
    bs = one[0].extra["batch_size"]
    n = 2 * (-(-16 // cfg.patch)) ** 2
    size = min(-(-50 // bs) * bs, n)  # whole batches, at most the image's perturbations
    assert got[0].extra["block_size"] == size and ex.computed == 2 * -(-n // size)
    assert got[0].n_forward == n + got[0].extra["blocks"]  # one base pass per block


def test_local_blocks_reject_inexact_configs():
    net, xs = VggLike(), images(1)
    for cfg in (LocalConfig(method="gradient"), LocalConfig(tau=0.1)):
        with pytest.raises(NnsensError, match="exact finite differences"):
            PD.local_distributed(net, xs, BLOCKS, cfg, "cpu", block_size=10)
    with pytest.raises(NnsensError, match="block_size=0"):
        PD.local_distributed(net, xs, BLOCKS, LocalConfig(), "cpu", block_size=0)


class Killed(Exception):
    pass


def kill_after(k: int):
    """A progress callback that stops the run after ``k`` units (each already written)."""
    def progress(done, total, stage=""):
        if done >= k:
            raise Killed(f"killed after {done} of {total}")
    return progress


def test_local_store_resumes_after_a_killed_run(tmp_path):
    net, xs = VggLike(), images()
    cfg = LocalConfig(batch_size=32)
    one = local_sensitivity_many(net, xs, BLOCKS, cfg, "cpu")
    with pytest.raises(Killed):
        PD.local_distributed(net, xs, BLOCKS, cfg, "cpu", block_size=64, executor=E.InProcess(),
                             store=tmp_path, progress=kill_after(3))
    assert sorted(p.stem for p in tmp_path.glob("*.npz")) == [
        "img00000_blk000000", "img00000_blk000001", "img00000_blk000002"]
    ex = E.InProcess()
    got = PD.local_distributed(net, xs, BLOCKS, cfg, "cpu", block_size=64, executor=ex,
                               store=tmp_path)
    assert (ex.loaded, ex.computed) == (3, 13)  # 2 images x 512 perturbations, blocks of 64
    assert_same_local(one, got)
    with pytest.raises(NnsensError, match="another study"):  # other settings, same directory
        PD.local_distributed(net, xs, BLOCKS, cfg, "cpu", block_size=128, store=tmp_path)


# --------------------------------------------------------------------------- occlusion

OCC = OcclusionConfig(window=4, stride=2, batch_size=10)


@pytest.mark.parametrize("cfg", [OCC, OcclusionConfig(window=5, stride=3, batch_size=7,
                                                      incremental="off", reference="blur",
                                                      score="logit")],
                         ids=["incremental", "full"])
def test_occlusion_blocks_equal_one_call(cfg):
    net, xs = VggLike(), images(3)
    one, det = occlusion(net, xs, [0, 1, 2], cfg, "cpu", return_details=True)
    ex = E.InProcess()
    got, gdet = PD.occlusion_distributed(net, xs, [0, 1, 2], cfg, "cpu", block_size=45,
                                         executor=ex, return_details=True)
    assert torch.equal(one, got)
    assert gdet["engine"] == det["engine"] and gdet.get("head_layers") == det.get("head_layers")
    p = 3 * 7 * 7 if cfg is OCC else 3 * 5 * 5
    size = -(-45 // cfg.batch_size) * cfg.batch_size
    assert (gdet["block_size"], ex.computed) == (size, -(-p // size))


def test_occlusion_drops_oracle_and_volume_blocks():
    """occlusion_drops against a brute-force oracle (full forward of each occluded image), and
    volume occlusion in blocks equal to the single call."""
    net, xs = VggLike(), images(1)
    d, _ = occlusion_drops(net, xs, [2], OCC, 5, 9, "cpu")
    tops = [0, 2, 4, 6, 8, 10, 12]
    with torch.no_grad():
        base = torch.softmax(net(xs), 1)[0, 2]
        for k, j in enumerate(range(5, 9)):
            occluded = xs.clone()
            t, l = tops[j // 7], tops[j % 7]
            occluded[..., t:t + 4, l:l + 4] = 0.0
            assert d[k].item() == pytest.approx((base - torch.softmax(net(occluded), 1)[0, 2]).item(),
                                                abs=1e-6)
    torch.manual_seed(0)
    vnet = nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1),
                         nn.Flatten(), nn.Linear(3, 2)).eval()
    vol = torch.randn(2, 1, 8, 8, 8, generator=torch.Generator().manual_seed(2))
    cfg = OcclusionConfig(window=4, stride=2, batch_size=6)
    one = occlusion(vnet, vol, [0, 1], cfg, "cpu")
    got = PD.occlusion_distributed(vnet, vol, [0, 1], cfg, "cpu", block_size=20)
    assert got.shape == (2, 8, 8, 8) and torch.equal(one, got)


def test_occlusion_blocks_reject_approximate_and_resume(tmp_path):
    net, xs = VggLike(), images(2)
    for cfg in (OcclusionConfig(window=4, stride=2, tau=0.1),
                OcclusionConfig(window=4, stride=2, drill_top=0.5)):
        with pytest.raises(NnsensError, match="need an exact config"):
            PD.occlusion_distributed(net, xs, [0, 1], cfg, "cpu", block_size=10)
    one = occlusion(net, xs, [0, 1], OCC, "cpu")
    with pytest.raises(Killed):
        PD.occlusion_distributed(net, xs, [0, 1], OCC, "cpu", block_size=30, store=tmp_path,
                                 progress=kill_after(2))
    assert len(list(tmp_path.glob("blk*.npz"))) == 2
    ex = E.InProcess()
    got = PD.occlusion_distributed(net, xs, [0, 1], OCC, "cpu", block_size=30, executor=ex,
                                   store=tmp_path)
    assert (ex.loaded, ex.computed) == (2, 2) and torch.equal(one, got)  # 98 pairs, blocks of 30


# --------------------------------------------------------------------------- CLI

def test_cli_local_store_and_resume(tiny_vgg_weights, tmp_path, capsys):
    from nnsens_core.__main__ import main
    base = ["local", "--model", tiny_vgg_weights, "--arch", "vgg16-small", "--arch-kwargs",
            '{"width": 0.0625}', "--patch", "8", "--device", "cpu", "--batch-size", "8"]
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    units = tmp_path / "units"
    args = [*base, "--executor", "inprocess", "--block", "60"]
    assert main([*args, "--store", str(units), "--out", str(tmp_path / "a")]) == 0
    names = sorted(p.name for p in units.glob("*.npz"))
    assert len(names) == 3 and "3 units of 64 perturbations on inprocess: 3 computed" in \
        capsys.readouterr().out  # 3 x 8 x 8 tiles = 192 perturbations, 60 -> 8 batches
    (units / names[1]).unlink()
    assert main([*args, "--resume", str(units), "--out", str(tmp_path / "b")]) == 0
    assert "1 computed; 2 loaded" in capsys.readouterr().out
    plain = np.load(tmp_path / "plain" / "maps.npz")
    for run in "ab":
        z = np.load(tmp_path / run / "maps.npz")
        for k in ("maps_all", "base_norms", "image_indices"):
            np.testing.assert_array_equal(z[k], plain[k])
    s = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert s["engine"] == "incremental"
    assert main([*args, "--method", "gradient", "--out", str(tmp_path / "c")]) == 2
    assert "exact finite differences" in capsys.readouterr().err
