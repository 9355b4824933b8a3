"""``python -m nnsens_core phantom``: write phantom images, masks and labels to a folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..phantom import make_phantom
from ._common import write_json

HELP = "Generate lung-ultrasound phantom images with ground-truth masks (PNG + labels.json + NPZ)."


def register(p) -> None:
    p.add_argument("--n", type=int, default=12, help="number of images (default 12)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (>= 32, default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--channels", type=int, choices=(1, 3), default=3)
    p.set_defaults(run=run)


def run(args) -> int:
    from PIL import Image
    data = make_phantom(args.n, size=args.size, seed=args.seed, channels=args.channels)
    out = Path(args.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    width = len(str(len(data) - 1))
    rows = []
    for i, (img, label, mask) in enumerate(zip(data.images, data.labels, data.masks)):
        cls = data.class_names[int(label)]
        stem = f"{i:0{width}d}_{cls}.png"
        pix = np.round(img.transpose(1, 2, 0) * 255).astype(np.uint8)
        Image.fromarray(pix[..., 0] if pix.shape[-1] == 1 else pix).save(out / "images" / stem)
        Image.fromarray(mask.astype(np.uint8) * 255).save(out / "masks" / stem)
        rows.append({"index": i, "class": cls, "label": int(label), "image": f"images/{stem}",
                     "mask": f"masks/{stem}"})
    write_json(out / "labels.json", {"class_names": list(data.class_names), "seed": args.seed,
                                     "size": args.size, "images": rows})
    np.savez_compressed(out / "phantom.npz", images=data.images, labels=data.labels,
                        masks=data.masks, class_names=np.array(data.class_names))
    print(f"wrote {len(data)} images, masks, labels.json and phantom.npz to {out}")
    return 0
