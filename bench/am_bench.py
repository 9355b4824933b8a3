"""Activation-maximisation throughput on the demo VGG-16 (3x64x64, all classes in one batch).

Measured in one run, in short interleaved rounds (raw, then ours); the result is the median of the
per-round ratios, so a busy machine hurts both sides of each ratio the same way:
  * ours: ``activation_max.maximize`` steps per second (TV rule, the page's defaults: one forward +
    one input-gradient backward + the TV step + clamping per step, and one final forward per run);
  * raw: plain forward + ``torch.autograd.grad`` of the summed target logits with respect to the
    same batch of inputs (the ceiling for ours: every AM step needs at least this).
Last line: ``am_efficiency=<ours steps/s / raw forward+backward/s>`` (goal >= 0.8).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from nnsens_core import demos, zoo
from nnsens_core.activation_max import AMConfig, AMTarget, maximize


def demo_model():
    name = next((n for n in demos.demo_cnn_names() if "vgg" in n), None)
    if name is not None:
        lm = demos.load_demo_cnn(name)
        return lm.module.eval(), lm.spec, f"demo model {name!r}"
    torch.manual_seed(0)
    model = zoo.build("vgg16-small").eval()
    spec = zoo.ModelSpec("vgg16-small", "vgg16-small", "image", (3, 64, 64), ("a", "b", "c"))
    return model, spec, "vgg16-small with random weights (no demo model shipped)"


def time_raw(model, x, classes, steps):
    """Forward + backward to the input, the minimum work of one AM step."""
    idx = torch.as_tensor(classes)
    rows = torch.arange(len(classes))

    def one():
        xr = x.detach().requires_grad_(True)
        out = model(xr)
        (g,) = torch.autograd.grad(out[rows, idx].sum(), xr)
        return g

    one()
    t = time.perf_counter()
    for _ in range(steps):
        one()
    return (time.perf_counter() - t) / steps


def time_ours(model, spec, targets, cfg):
    t = time.perf_counter()
    res = maximize(model, spec, targets, cfg, "cpu")
    return (time.perf_counter() - t) / cfg.steps, res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=20, help="AM steps per round")
    ap.add_argument("--repeat", type=int, default=2,
                    help="each class appears this many times in the batch (batch = classes x repeat)")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: the claim is the ratio, and one thread keeps it "
                         "stable on a shared machine; 0 = torch's default)")
    ap.add_argument("--rule", choices=("tv", "blur", "none"), default="tv")
    ap.add_argument("--jitter", type=int, default=0, help="the page's default is 0")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, spec, what = demo_model()
    n_cls = len(spec.class_names) or 3
    classes = list(range(n_cls)) * args.repeat
    targets = [AMTarget(c) for c in classes]
    cfg = AMConfig(steps=args.steps, rule=args.rule, jitter=args.jitter, preview_every=0)
    gen = torch.Generator().manual_seed(0)
    x = spec.normalize((0.5 + 0.1 * torch.randn((len(classes), *spec.input_shape), generator=gen)).clamp(0, 1))
    print(f"model: {what}; input {tuple(spec.input_shape)}; batch {len(classes)} "
          f"({n_cls} classes x {args.repeat}); rule {args.rule}, jitter {args.jitter}; "
          f"{args.steps} steps/round; torch threads {torch.get_num_threads()}")
    maximize(model, spec, targets, AMConfig(steps=2, rule=cfg.rule), "cpu")  # warm-up
    raw_t, ours_t = [], []
    for r in range(args.rounds):
        raw_t.append(time_raw(model, x, classes, args.steps))
        t, res = time_ours(model, spec, targets, cfg)
        ours_t.append(t)
        gain = (res.activations - res.start_activations).mean().item()
        print(f"round {r + 1}: raw forward+backward {1 / raw_t[-1]:.2f} /s, "
              f"AM {1 / ours_t[-1]:.2f} steps/s (mean logit gain {gain:+.2f})")
    raw, ours = statistics.median(raw_t), statistics.median(ours_t)
    ratio = statistics.median(r / o for r, o in zip(raw_t, ours_t))
    print(f"median over rounds: AM {1 / ours:.2f} steps/s vs raw forward+backward {1 / raw:.2f} /s "
          f"(batch {len(classes)}; {ours * 1e3:.1f} vs {raw * 1e3:.1f} ms per step); best rounds: "
          f"AM {1 / min(ours_t):.2f} vs raw {1 / min(raw_t):.2f} /s")
    print(f"am_efficiency={ratio:.3f}")


if __name__ == "__main__":
    main()
