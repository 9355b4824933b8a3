"""The image CLI reads an uploaded model's manifest: its input size (non-square), channels,
normalisation, resize policy and class names, and reads the images through that recipe."""
import json

import numpy as np
import torch

from nnsens_core import zoo
from nnsens_core.__main__ import main
from nnsens_core.model_manifest import manifest_entry
from tests.uploads import png_bytes, zip_bytes


def _grey_model(tmp_path, classes=("b_class", "a_class")):
    torch.manual_seed(0)
    kwargs = {"num_classes": len(classes), "width": 0.0625, "in_channels": 1}
    spec = zoo.ModelSpec("grey", "vgg16-small", zoo.IMAGE, (1, 96, 128), tuple(classes),
                         mean=(0.5,), std=(0.25,), arch_kwargs=kwargs, resize="crop")
    w = tmp_path / "grey.pt"
    torch.save(zoo.build("vgg16-small", **kwargs).state_dict(), w)
    m = tmp_path / "grey.json"
    m.write_text(json.dumps(manifest_entry(spec, "grey.pt", balanced_accuracy=0.5)))
    return str(w), str(m)


def test_compare_with_a_manifest_reads_the_zip_through_the_models_recipe(tmp_path, capsys):
    w, m = _grey_model(tmp_path)
    rng = np.random.default_rng(0)
    files = {f"set/{c}/{k}.png": png_bytes((rng.random((60, 100, 3)) * 255).astype(np.uint8))
             for c in ("a_class", "b_class") for k in range(2)}
    z = tmp_path / "imgs.zip"
    z.write_bytes(zip_bytes({**files, "set/readme.txt": b"x"}))
    masks = np.zeros((4, 96, 128), bool)
    masks[:, 40:60, 50:80] = True
    np.save(tmp_path / "masks.npy", masks)
    out = tmp_path / "out"
    rc = main(["compare", "--model", w, "--manifest", m, "--data", str(z), "--masks",
               str(tmp_path / "masks.npy"), "--methods", "gradcam", "--out", str(out),
               "--device", "cpu"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "classes b_class, a_class" in text and "96×128 px, 1 channel (grey), centre crop" in text
    assert "1 file(s) skipped" in text and "classes matched to the model's by name" in text
    info = json.loads((out / "metrics.json").read_text())
    assert info["class_names"] == ["b_class", "a_class"]
    maps = np.load(out / "maps.npz")
    assert maps["map_gradcam"].shape == (4, 96, 128)
    # labels follow the model's order: files of a_class are the model's class 1
    assert list(maps["labels"]) == [1, 1, 0, 0]


def test_a_state_dict_without_a_manifest_says_what_is_assumed(tiny_vgg_weights, tmp_path, capsys):
    rc = main(["compare", "--model", tiny_vgg_weights, "--arch", "vgg16-small", "--arch-kwargs",
               '{"width": 0.0625}', "--n", "3", "--methods", "gradcam", "--out", str(tmp_path),
               "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0
    line = next(ln for ln in out.splitlines() if ln.startswith("no --manifest"))
    for bit in ("3×64×64", "no normalisation", "class names = the data's class folders",
                "--manifest MODEL.json"):
        assert bit in line, line


def test_phantom_for_a_non_square_grey_model_and_clashing_flags(tmp_path, capsys):
    w, m = _grey_model(tmp_path, ("regular", "covid", "pneumonia"))
    rc = main(["compare", "--model", w, "--manifest", m, "--n", "3", "--methods", "gradcam",
               "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert rc == 0, capsys.readouterr()
    assert np.load(tmp_path / "o" / "maps.npz")["masks"].shape == (3, 96, 128)
    assert main(["compare", "--model", w, "--manifest", m, "--input-shape", "3,64,64",
                 "--out", str(tmp_path / "o")]) == 2
    assert "drop --input-shape" in capsys.readouterr().err


def test_robustness_with_a_manifest_reads_the_zip_through_the_recipe(tmp_path, capsys):
    """``nnsens robustness mask --manifest``: the ZIP's images go through the model's recipe (grey,
    96×128, centre crop), classes are matched by name, and a demo name with a manifest is refused."""
    w, m = _grey_model(tmp_path)
    rng = np.random.default_rng(1)
    files = {f"set/{c}/{k}.png": png_bytes((rng.random((60, 100, 3)) * 255).astype(np.uint8))
             for c in ("a_class", "b_class") for k in range(2)}
    z = tmp_path / "imgs.zip"
    z.write_bytes(zip_bytes(files))
    out = tmp_path / "out"
    rc = main(["robustness", "mask", "--model", w, "--manifest", m, "--data", str(z), "--class",
               "a_class", "--steps", "2", "--resolution", "4", "--out", str(out), "--device", "cpu"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "96×128 px, 1 channel (grey), centre crop" in text
    assert "classes matched to the model's by name" in text
    doc = json.loads((out / "mask.json").read_text())
    assert doc["class"] == "a_class" and doc["n_inputs"] == 2
    assert np.load(out / "masks.npz")["mask"].shape == (96, 128)
    rc = main(["robustness", "mask", "--model", "vgg16-phantom", "--manifest", m, "--data",
               str(z), "--out", str(out), "--device", "cpu"])
    assert rc == 2 and "--manifest" in capsys.readouterr().err
