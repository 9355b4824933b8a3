"""``nnsens report IMAGE``: the four files, the image's own resolution, the model's hash and class
names from a manifest, clear errors."""
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nnsens_core import report as RP
from nnsens_core.__main__ import main
from nnsens_core.loading import load_model

PDFTOTEXT = Path("/usr/bin/pdftotext")


@pytest.fixture
def odd_png(tmp_path) -> Path:
    yy, xx = np.mgrid[:91, :37]
    a = (127 + 120 * np.sin(xx / 4.0) * np.cos(yy / 9.0)).astype(np.uint8)
    path = tmp_path / "case <1>.png"
    Image.fromarray(a).save(path)
    return path


def test_report_writes_pdf_html_maps_and_json(tiny_vgg_weights, odd_png, tmp_path, capsys):
    manifest = tmp_path / "vgg.json"
    manifest.write_text(json.dumps({"arch": "vgg16-small", "arch_kwargs": {"width": 0.0625},
                                    "input_shape": [3, 64, 64], "resize": "crop",
                                    "class_names": ["A-lines", "B-lines Ω", "consolidation"]}))
    out = tmp_path / "out"
    rc = main(["report", str(odd_png), "--model", tiny_vgg_weights, "--manifest", str(manifest),
               "--methods", "gradient,occlusion", "--occlusion-window", "16",
               "--occlusion-stride", "16", "--class", "b-lines ω", "--out", str(out),
               "--device", "cpu", "--sanity"])
    assert rc == 0, capsys.readouterr().err
    assert {p.name for p in out.iterdir()} == {"report.pdf", "report.html", "maps.npz", "case.json"}
    doc = json.loads((out / "case.json").read_text())
    assert doc["class_names"] == ["A-lines", "B-lines Ω", "consolidation"]
    assert doc["explained"] == "B-lines Ω" and doc["case"] == "case <1>.png"
    assert doc["image_shape"] == [1, 91, 37]  # a grey PNG stays grey, at its own size
    lm = load_model(tiny_vgg_weights, arch="vgg16-small", arch_kwargs={"width": 0.0625})
    assert doc["model"]["sha256"] == RP.weights_sha256(lm)
    assert "centre crop" in doc["model"]["input"] and doc["sanity"]["overall"] in ("pass", "fail",
                                                                                   "mixed")
    maps = np.load(out / "maps.npz")
    assert maps["map_gradient"].shape == (91, 37) and maps["map_occlusion"].shape == (91, 37)
    assert np.isnan(maps["map_gradient"][0]).all()  # the crop cut the top rows away
    assert np.isclose(maps["probabilities"].sum(), 1)
    page = (out / "report.html").read_text()
    assert "case &lt;1&gt;.png" in page and "case <1>" not in page
    if PDFTOTEXT.exists():
        text = subprocess.run([str(PDFTOTEXT), str(out / "report.pdf"), "-"], capture_output=True,
                              text=True, check=True).stdout
        assert "B-lines Omega" in text and doc["model"]["sha256"] in text
    assert "explaining B-lines" in capsys.readouterr().out


def test_report_demo_model_and_errors(odd_png, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["report", str(odd_png), "--model", "vgg16-phantom", "--methods", "gradient",
                 "--out", str(out), "--device", "cpu"]) == 0
    doc = json.loads((out / "case.json").read_text())
    assert doc["class_names"] == ["regular", "covid", "pneumonia"] and doc["sanity"] is None
    assert re.fullmatch(r"[0-9a-f]{64}", doc["model"]["sha256"])
    capsys.readouterr()
    assert main(["report", str(odd_png), "--model", "vgg16-phantom", "--methods", "deconvnet",
                 "--out", str(out)]) == 2
    assert "deconvnet" in capsys.readouterr().err
    assert main(["report", str(odd_png), "--model", "vgg16-phantom", "--class", "tumour",
                 "--methods", "gradient", "--out", str(out)]) == 2
    assert "'tumour' is not one of the model's classes" in capsys.readouterr().err
    bad = tmp_path / "not.png"
    bad.write_bytes(b"hello")
    assert main(["report", str(bad), "--model", "vgg16-phantom", "--out", str(out)]) == 2
    assert "not a readable image" in capsys.readouterr().err
    assert main(["report", str(odd_png), "--manifest", str(bad), "--out", str(out)]) == 2
    assert "--manifest" in capsys.readouterr().err  # a manifest describes weights, not a demo
