"""Blocks of perturbations on a local Ray (2 CPUs): local sensitivity and occlusion give the
in-process maps (bit for bit: one torch thread here and in each worker), every block written to
the store as it finishes."""
import pytest
import torch

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install ray==2.60.0, or "
                                        "nnsens[ray]); the Ray executor tests need it")

from nnsens_core import perturb_dist as PD
from nnsens_core.local_sensitivity import LocalConfig, local_sensitivity_many
from nnsens_core.saliency.occlusion import OcclusionConfig, occlusion
from tests.test_perturb_dist import BLOCKS, VggLike, images

pytestmark = pytest.mark.slow  # workers import torch: seconds each on a busy 2-core machine


def test_blocks_on_ray_equal_in_process(rx, tmp_path):
    net, xs = VggLike(), images()
    cfg = LocalConfig(batch_size=32)
    one = local_sensitivity_many(net, xs, BLOCKS, cfg, "cpu")
    got = PD.local_distributed(net, xs, BLOCKS, cfg, "cpu", block_size=128, executor=rx,
                               store=tmp_path / "local")
    for a, b in zip(one, got):
        assert torch.equal(a.maps, b.maps) and torch.equal(a.base_norms, b.base_norms)
    assert len(list((tmp_path / "local").glob("img*_blk*.npz"))) == 8  # 2 images x 4 blocks
    occ = OcclusionConfig(window=4, stride=2, batch_size=10)
    ref = occlusion(net, xs, [0, 1], occ, "cpu")
    maps = PD.occlusion_distributed(net, xs, [0, 1], occ, "cpu", block_size=30, executor=rx,
                                    store=tmp_path / "occ")
    assert torch.equal(ref, maps)
    assert len(list((tmp_path / "occ").glob("blk*.npz"))) == 4  # 98 pairs in blocks of 30
