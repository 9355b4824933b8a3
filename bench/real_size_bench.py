"""The four default saliency methods on one 224-px image: the new defaults against the old ones,
measured in the same run.

torchvision ResNet-18 and VGG-16 (random weights, nothing downloaded; 3 classes explained: class
0), one random 3x224x224 image, ``compare.DEFAULT_METHODS`` (Grad-CAM, AM difference, occlusion,
perturbation mask) through :func:`nnsens_core.saliency.compare.explain`, one method at a time:

* new: every method's default for a 224x224 image (``registry.default_config(name, (224, 224))``):
  occlusion window 28 / stride 14 px (1/8 and 1/16 of the side: 15 x 15 = 225 positions),
  AM and mask 32 steps (:func:`nnsens_core.saliency._common.scaled_steps`);
* old: the defaults before (occlusion window 8 / stride 4 px: 55 x 55 = 3,025 positions, batch
  128; AM 200 steps; mask 150 steps).

Prints seconds per method and the totals; last line ``real_size_seconds_resnet18=<new total>
old=<old total> speedup=<old / new>``. The CPU is shared with other jobs: times are noisy.
``--skip-old`` times the new defaults only; ``--archs`` picks the models.
"""
from __future__ import annotations

import argparse
import time

import torch

from nnsens_core import zoo
from nnsens_core.activation_max import AMConfig
from nnsens_core.saliency import compare as C
from nnsens_core.saliency import registry as R
from nnsens_core.saliency.meaningful_mask import MaskConfig
from nnsens_core.saliency.occlusion import OcclusionConfig, occlusion_positions
from nnsens_core.zoo import ModelSpec

OLD = {"occlusion": OcclusionConfig(window=8, stride=4, batch_size=128), "am": AMConfig(),
       "mask": MaskConfig()}


def setup(arch: str):
    torch.manual_seed(0)
    module = zoo.build(arch, num_classes=3).eval()
    spec = ModelSpec(arch, arch, "image", (3, 224, 224), ("a", "b", "c"), mean=(0.485, 0.456, 0.406),
                     std=(0.229, 0.224, 0.225))
    x01 = torch.rand((1, 3, 224, 224), generator=torch.Generator().manual_seed(0))
    return module, spec, spec.normalize(x01)


def time_methods(module, spec, x, cfgs: dict) -> dict[str, float]:
    out = {}
    for m in C.DEFAULT_METHODS:
        t0 = time.perf_counter()
        maps = C.explain(module, spec, x, [0], [m], cfgs, "cpu")[m]
        out[m] = time.perf_counter() - t0
        assert maps.shape == (1, 224, 224) and torch.isfinite(maps).all()
    return out


def describe(cfgs: dict, shape, module) -> str:
    occ = R.config_for("occlusion", cfgs, shape)
    return (f"occlusion {occ.window}/{occ.stride} px ({len(occlusion_positions(shape, occ))} "
            f"positions), AM {R.config_for('am', cfgs, shape, module).steps} steps, mask "
            f"{R.config_for('mask', cfgs, shape, module).steps} steps")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--archs", default="resnet18,vgg16")
    ap.add_argument("--skip-old", action="store_true", help="time the new defaults only")
    args = ap.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    totals: dict[str, tuple[float, float | None]] = {}
    for arch in [a.strip() for a in args.archs.split(",") if a.strip()]:
        module, spec, x = setup(arch)
        C.explain(module, spec, x, [0], ["gradcam"], None, "cpu")  # warm-up
        runs = {"new": {}} if args.skip_old else {"new": {}, "old": OLD}
        got = {}
        for name, cfgs in runs.items():
            print(f"{arch} {name} defaults: {describe(cfgs, (224, 224), module)}")
            got[name] = time_methods(module, spec, x, cfgs)
            print("  " + "  ".join(f"{m} {s:6.1f}s" for m, s in got[name].items())
                  + f"  total {sum(got[name].values()):6.1f}s")
        new = sum(got["new"].values())
        old = sum(got["old"].values()) if "old" in got else None
        totals[arch] = (new, old)
    for arch, (new, old) in totals.items():
        tail = "" if old is None else f" old={old:.1f} speedup={old / new:.1f}"
        print(f"real_size_seconds_{arch}={new:.1f}{tail}")
    if "resnet18" in totals and list(totals)[-1] != "resnet18":
        new, old = totals["resnet18"]
        tail = "" if old is None else f" old={old:.1f} speedup={old / new:.1f}"
        print(f"real_size_seconds_resnet18={new:.1f}{tail}")


if __name__ == "__main__":
    main()
