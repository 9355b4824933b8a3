"""What fewer optimisation steps cost: the AM-difference and perturbation-mask maps after k steps
against the same method's long run (the 64x64 defaults: AM 200, mask 150 steps), in the same run.

The iterative methods' defaults shrink with the image and the model's cost
(:func:`nnsens_core.saliency._common.scaled_steps`: 32 steps at 224 px, 12 on VGG-16 at 224 px),
so the four default methods stay interactive on a CPU. This prints, per k, the seconds and the
agreement with the long run (Spearman of the pixel ranks, IoU of the top-10 % regions; mean over
the images). Agreement with the long run measures how far the optimisation has gone, not which
map is right.

* ``demo``: the shipped, trained 64-px demo VGG-16 on 4 phantom test images (their predicted class);
* ``vgg224``: torchvision VGG-16 at 224 px, random weights (nothing downloaded), one random image.

Last line: ``steps_agreement_<case>_<method>_k<k>=<spearman>`` for the smallest k of the case.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from nnsens_core import demos, phantom, zoo
from nnsens_core.saliency import metrics as M
from nnsens_core.saliency import registry as R
from nnsens_core.zoo import ModelSpec


def setup(case: str):
    if case == "demo":
        lm = demos.load_demo_cnn("vgg16-phantom")
        d = phantom.demo_images("test", 4)
        x = lm.spec.normalize(torch.as_tensor(d.images).float())
        with torch.no_grad():
            cls = lm.module(x).argmax(1).tolist()
        return lm.module, lm.spec, x, cls, (8, 12, 16, 32, 64)
    torch.manual_seed(0)
    net = zoo.build("vgg16", num_classes=3).eval()
    spec = ModelSpec("vgg16", "vgg16", "image", (3, 224, 224), ("a", "b", "c"),
                     mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    x = spec.normalize(torch.rand((1, 3, 224, 224), generator=torch.Generator().manual_seed(0)))
    return net, spec, x, [0], (8, 12, 16, 32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cases", default="demo,vgg224")
    ap.add_argument("--methods", default="am,mask")
    args = ap.parse_args()
    last = None
    for case in [c for c in args.cases.split(",") if c]:
        net, spec, x, cls, ks = setup(case)
        for m in [m for m in args.methods.split(",") if m]:
            base = R.default_config(m)  # the unsized default: the long run
            t0 = time.perf_counter()
            ref = R.get(m)(net, x, cls, base, spec=spec, device="cpu").numpy()
            print(f"{case} {m}: long run {base.steps} steps {time.perf_counter() - t0:.1f} s",
                  flush=True)
            for k in ks:
                t0 = time.perf_counter()
                got = R.get(m)(net, x, cls, dataclasses.replace(base, steps=k), spec=spec,
                               device="cpu").numpy()
                dt = time.perf_counter() - t0
                rhos = np.asarray(M.spearman(got, ref), float)
                rho = float(np.nanmean(rhos)) if np.isfinite(rhos).any() else float("nan")
                iou = float(np.mean(M.top_p_iou(got, ref, 0.1)))
                flat = int((~np.isfinite(rhos)).sum())  # a map still constant after k steps
                print(f"  k={k:3d} {dt:6.1f} s  spearman={rho:.3f}  top10_iou={iou:.3f}"
                      + (f"  ({flat} of {len(rhos)} maps still constant)" if flat else ""), flush=True)
                if k == ks[0]:
                    last = f"steps_agreement_{case}_{m}_k{k}={rho:.3f}"
    if last:
        print(last)


if __name__ == "__main__":
    main()
