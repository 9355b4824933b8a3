"""Case and dataset reports: the PDF is made offline and its pages render (pdftoppm) with the
expected text (pdftotext); HTML is self-contained with every user text escaped; agreement, the
chance check, the sanity verdict and the weights' hash against independent computations."""
import base64
import copy
import io
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats as sps
from torch import nn

from nnsens_core import __version__, report as RP
from nnsens_core.saliency import trust as T
from nnsens_core.errors import NnsensError
from nnsens_core.saliency import metrics as mt
from nnsens_core.saliency.occlusion import OcclusionConfig
from nnsens_core.zoo import LoadedModel, ModelSpec

HOSTILE = "Ω<script>alert(1)</script>"
PDFTOPPM, PDFTOTEXT = Path("/usr/bin/pdftoppm"), Path("/usr/bin/pdftotext")
needs_poppler = pytest.mark.skipif(not (PDFTOPPM.exists() and PDFTOTEXT.exists()),
                                   reason="poppler-utils (/usr/bin/pdftoppm, pdftotext) is not "
                                          "installed: apt-get install poppler-utils")


def _tiny_model(classes=("regular", HOSTILE, "pneumonia"), resize="letterbox") -> LoadedModel:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64, len(classes)))
    spec = ModelSpec("tiny <cnn>", "custom", "image", (1, 24, 24), tuple(classes), (0.5,), (0.25,),
                     resize=resize)
    return LoadedModel(net.eval(), spec)


def _image(h=37, w=91) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (0.5 + 0.5 * np.sin(xx / 5.0) * np.cos(yy / 7.0))[None].astype(np.float32)


@pytest.fixture(scope="module")
def case():
    lm = _tiny_model()
    img = _image()
    x, place = RP.case_input(img, lm.spec)
    probs = RP.case_probabilities(lm, x)
    cfgs = {"gradient": None, "occlusion": OcclusionConfig(window=6, stride=3)}
    maps = {m: RP.case_map(lm, lm.spec, x, place, m, c, 1)[1] for m, c in cfgs.items()}
    sanity = T.SanityVerdict("spearman", {"gradient": 0.1, "occlusion": 0.8})
    rep = RP.case_report(img, lm, probs, maps, case="patient <b>7</b>.png", explained=1,
                         settings={m: c for m, c in cfgs.items() if c is not None}, sanity=sanity,
                         chance=T.accuracy_verdict([0, 1, 2, 0, 1, 2], [0, 1, 2, 0, 1, 2], 3))
    return lm, img, rep


def _pdftotext(pdf: bytes, tmp_path: Path) -> str:
    f = tmp_path / "r.pdf"
    f.write_bytes(pdf)
    return subprocess.run([str(PDFTOTEXT), "-layout", str(f), "-"], capture_output=True, text=True,
                          check=True).stdout


def _pages(pdf: bytes, tmp_path: Path) -> list[np.ndarray]:
    f = tmp_path / "p.pdf"
    f.write_bytes(pdf)
    subprocess.run([str(PDFTOPPM), "-r", "40", "-png", str(f), str(tmp_path / "pg")], check=True)
    return [np.asarray(Image.open(p).convert("L")) for p in sorted(tmp_path.glob("pg*.png"))]


# --------------------------------------------------------------------------- the PDF

@needs_poppler
def test_case_pdf_pages_render_with_the_expected_text(case, tmp_path):
    lm, img, rep = case
    pdf = rep.to_pdf()
    assert pdf.startswith(b"%PDF")
    text = _pdftotext(pdf, tmp_path)
    n_pages = len(re.findall(r"Page \d+/(\d+)", text))
    pages = _pages(pdf, tmp_path)
    assert 2 <= len(pages) == n_pages
    for pg in pages:  # every page has ink: more than the footer
        assert (pg < 200).mean() > 0.005 and pg.std() > 10
    for title in RP.SECTIONS:
        assert re.search(rf"^\s*{title}\s*$", text, re.M), title
    flat = " ".join(text.split())
    assert RP.weights_sha256(lm) in text and __version__ in flat
    assert "Omega<script>alert(1)</script>" in flat  # transliterated, shown literally
    assert "regular" in flat and "pneumonia" in flat and "patient <b>7</b>.png" in flat
    assert "not a medical device" in flat and "Gradient" in flat and "Occlusion" in flat
    assert "sanity check MIXED" in flat and "Chance level for independent maps" in flat
    assert "raw values" in flat and "diverging around 0" in flat  # stated scales


@needs_poppler
def test_dataset_pdf_and_html(tmp_path):
    from nnsens_core.phantom import make_phantom
    from nnsens_core.saliency.compare import evaluate_dataset, sanity_check
    from nnsens_core.zoo import build
    torch.manual_seed(0)
    net = build("vgg16-small", width=0.0625).eval()
    data = make_phantom(4, size=64, seed=3)
    spec = ModelSpec("tiny vgg", "vgg16-small", "image", (3, 64, 64), tuple(data.class_names))
    lm = LoadedModel(net, spec)
    from nnsens_core._approx import describe_error
    from nnsens_core.saliency.occlusion import OcclusionConfig
    ev = evaluate_dataset(net, spec, data, ["gradient", "gradcam", "occlusion"],
                          {"occlusion": OcclusionConfig(window=16, stride=16, drill_top=0.5)},
                          device="cpu")
    x = torch.as_tensor(data.images[:2])
    san = sanity_check(net, spec, x, [0, 1], ["gradient"], layers=["classifier.2", "features.0"])
    rep = RP.DatasetReport.from_evaluation(ev, lm, "phantom <i>set</i>", sanity=san)
    text = " ".join(_pdftotext(rep.to_pdf(), tmp_path).split())
    for s in ("Comparison table", "Sanity check", "Settings", "Grad-CAM", "Gradient", "GT IoU",
              RP.weights_sha256(lm), "phantom <i>set</i>", "classifier.2", "not a medical device"):
        assert s in text, s
    assert all((pg < 200).mean() > 0.005 for pg in _pages(rep.to_pdf(), tmp_path))
    page = rep.to_html()
    assert "<i>set</i>" not in page and "phantom &lt;i&gt;set&lt;/i&gt;" in page
    assert describe_error(ev.approx["occlusion"]) in page  # the approximate maps say so
    assert "occlusion maps" in text and "approximate (measured on 32" in text
    summary = ev.summary()
    v = summary.loc[("gradient", "all"), "iou_mean"]
    assert f"{v:.3f}" in page  # the table shows the evaluation's own numbers


def test_pdf_never_fails_on_unicode_names(tmp_path):
    names = ("日本語", "emoji 🫁", "Ω\u202e<x>", "Ünïcødé\x00ctrl")
    lm = _tiny_model(names)
    img = _image(20, 20)
    x, _ = RP.case_input(img, lm.spec)
    rep = RP.case_report(img, lm, RP.case_probabilities(lm, x), {}, case="☢ 测试.png")
    assert rep.to_pdf().startswith(b"%PDF")
    assert RP.pdf_text("Ω<script>") == "Omega<script>"
    assert RP.pdf_text("日本") == "??" and RP.pdf_text("Ünï") == "Ünï"
    assert RP.pdf_text("a\nb\x00c") == "a b c"
    for s in names:
        RP.pdf_text(s).encode("latin-1")  # never raises


# --------------------------------------------------------------------------- the HTML

def test_html_is_self_contained_and_escaped(case):
    lm, img, rep = case
    page = rep.to_html()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>7</b>" not in page and "patient &lt;b&gt;7&lt;/b&gt;.png" in page
    assert "tiny &lt;cnn&gt;" in page
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)  # nothing fetched
    for title in RP.SECTIONS:
        assert f"<h2>{title}</h2>" in page
    srcs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(srcs) >= 1 + 1 + 3 * 2  # original, bars, (original, wash, contours) per method
    first = Image.open(io.BytesIO(base64.b64decode(srcs[0])))
    assert abs(first.width / first.height - 91 / 37) < 0.05  # the original keeps its aspect ratio
    assert RP.weights_sha256(lm) in page and RP.DISCLAIMER in page


def test_case_json_and_arrays(case):
    lm, img, rep = case
    doc = rep.to_dict()
    assert doc["class_names"][1] == HOSTILE and doc["explained"] == HOSTILE
    assert doc["model"]["sha256"] == RP.weights_sha256(lm)
    assert doc["sanity"]["overall"] == "mixed" and doc["chance"]["at_chance"] is False
    assert {m["method"] for m in doc["maps"]} == {"gradient", "occlusion"}
    occ = next(m for m in doc["maps"] if m["method"] == "occlusion")
    assert occ["signed"] is True
    if occ["diverging"]:
        assert occ["scale"][0] == -occ["scale"][1]  # diverging around 0
    arr = rep.arrays()
    assert arr["map_gradient"].shape == (37, 91) and arr["image"].shape == (1, 37, 91)
    assert np.isclose(arr["probabilities"].sum(), 1)


# --------------------------------------------------------------------------- the numbers

def test_signed_maps_diverge_around_zero_only_with_negative_values():
    img = _image(8, 8)
    m = np.linspace(-1, 3, 64).reshape(8, 8)
    e = RP.MapEntry("occlusion", "Occlusion", m, signed=True)
    assert e.diverging and e.scale() == (-3, 3) and "diverging" in e.scale_text()
    wash = e.pictures(img, alpha=1.0)["wash"]
    zero = np.unravel_index(np.abs(m).argmin(), m.shape)
    assert wash[zero].min() > 200  # 0 is (nearly) white on the diverging map
    pos = RP.MapEntry("am", "AM difference", np.abs(m), signed=True)
    assert not pos.diverging and pos.scale() == (np.abs(m).min(), 3) and "inferno" in pos.scale_text()
    assert not RP.MapEntry("gradient", "Gradient", m).diverging


def test_maps_come_back_at_the_original_resolution():
    img = _image(30, 60)
    for resize, nan in (("letterbox", False), ("crop", True), ("stretch", False)):
        lm = _tiny_model(resize=resize)
        x, place = RP.case_input(img, lm.spec)
        assert tuple(x.shape) == (1, 1, 24, 24)
        raw, m = RP.case_map(lm, lm.spec, x, place, "gradient", None, 0)
        assert raw.shape == (24, 24) and m.shape == (30, 60)
        assert bool(np.isnan(m).any()) == nan  # a centre crop never saw the sides
        if nan:
            assert np.isnan(m[:, 0]).all() and np.isfinite(m[:, 30]).all()


def test_agreement_against_scipy_on_the_covered_pixels():
    rng = np.random.default_rng(1)
    a, b = rng.random((10, 12)), rng.random((10, 12))
    a[:, :3] = np.nan  # not computed
    ag = RP.agreement({"gradient": a, "gradcam": b}, {}, p=0.2)
    ok = np.isfinite(a)
    rho = sps.spearmanr(a[ok], b[ok]).statistic
    assert ag["pairs"][0]["spearman"] == pytest.approx(rho, abs=1e-12)
    ta = a[ok] >= np.quantile(a[ok], 0.8)
    tb = b[ok] >= np.quantile(b[ok], 0.8)
    assert ag["pairs"][0]["top_p_iou"] == pytest.approx((ta & tb).sum() / (ta | tb).sum())
    assert ag["chance"] == {"top_p_iou": pytest.approx(0.2 / 1.8), "spearman": 0.0}
    # a signed map is compared by its positive part
    s = np.linspace(-1, 1, 120).reshape(10, 12)
    same = RP.agreement({"occlusion": s, "gradient": np.clip(s, 0, None)},
                        {"occlusion": True}, p=0.1)["pairs"][0]
    assert same["top_p_iou"] == 1 and same["spearman"] == pytest.approx(1)
    anti = RP.agreement({"gradient": s, "gradcam": -s})["pairs"][0]
    assert anti["spearman"] == pytest.approx(-1) and anti["top_p_iou"] == 0
    with pytest.raises(NnsensError, match="different shapes"):
        RP.agreement({"a": a, "b": b[:5]})


def test_chance_check_against_sklearn():
    from sklearn.metrics import balanced_accuracy_score
    y = np.array([0] * 30 + [1] * 10 + [2] * 20)
    rng = np.random.default_rng(0)
    q = rng.integers(0, 3, len(y))
    c = T.accuracy_verdict(y, q, 3)
    assert c.balanced_accuracy == pytest.approx(balanced_accuracy_score(y, q))
    assert c.accuracy == pytest.approx((y == q).mean()) and c.chance == pytest.approx(1 / 3)
    var = sum((1 / 3) * (2 / 3) / n for n in (30, 10, 20)) / 9
    assert c.upper == pytest.approx(1 / 3 + 1.645 * np.sqrt(var))
    assert c.at_chance  # random guesses
    assert not T.accuracy_verdict(y, y, 3).at_chance
    assert T.accuracy_verdict(y, np.zeros_like(y), 3).at_chance  # always the majority class
    with pytest.raises(NnsensError):
        T.accuracy_verdict([0, 1], [0], 3)


def test_sanity_verdicts():
    res = mt.RandomizationResult(["original", "fc", ""], "spearman",
                                 mean={"a": np.array([1, 0.6, 0.2]), "b": np.array([1, 0.9, 0.7])},
                                 std={"a": np.zeros(3), "b": np.zeros(3)})
    s = T.SanityVerdict.from_result(res)
    assert s.final == {"a": 0.2, "b": 0.7} and s.passed("a") and not s.passed("b")
    assert s.overall == "mixed"
    assert T.SanityVerdict("spearman", {"a": 0.1}).overall == "pass"
    assert T.SanityVerdict("spearman", {"a": 0.9}).overall == "fail"
    with pytest.raises(NnsensError):
        T.SanityVerdict("spearman", {})


def test_model_sanity_leaves_the_model_alone_and_randomizes_everything():
    lm = _tiny_model()
    before = RP.weights_sha256(lm)
    x, _ = RP.case_input(_image(24, 24), lm.spec)
    s = RP.model_sanity(lm, lm.spec, x, [0], ["gradient"], device="cpu")
    assert RP.weights_sha256(lm) == before
    assert s.steps == ("original", "6", "every layer") and s.images == 1
    assert set(s.final) == {"gradient"} and -1 <= s.final["gradient"] <= 1


def test_weights_sha256_follows_the_weights_only():
    lm = _tiny_model()
    h = RP.weights_sha256(lm)
    assert re.fullmatch(r"[0-9a-f]{64}", h)
    twin = copy.deepcopy(lm.module).train()
    assert RP.weights_sha256(twin) == h  # mode and object identity do not matter
    with torch.no_grad():
        twin[0].weight[0, 0, 0, 0] += 1e-6
    assert RP.weights_sha256(twin) != h
    with pytest.raises(NnsensError):
        RP.weights_sha256("model.pt")


def test_case_report_checks_its_inputs():
    lm = _tiny_model()
    img = _image(10, 10)
    with pytest.raises(NnsensError, match="one probability per class"):
        RP.case_report(img, lm, [0.5, 0.5], {})
    with pytest.raises(NnsensError, match="original's resolution"):
        RP.case_report(img, lm, [0.2, 0.3, 0.5], {"gradient": np.zeros((5, 5))})
    with pytest.raises(NnsensError, match="explained class"):
        RP.case_report(img, lm, [0.2, 0.3, 0.5], {}, explained=7)


def test_reports_need_no_plotting_library_or_browser():
    """A PDF and an HTML report in a fresh interpreter import neither plotly nor kaleido."""
    import sys
    code = ("import sys, numpy as np\n"
            "from nnsens_core import report as RP\n"
            "from nnsens_core.demos import load_demo_cnn\n"
            "lm = load_demo_cnn('vgg16-phantom')\n"
            "img = np.random.default_rng(0).random((1, 40, 50)).astype(np.float32)\n"
            "rep = RP.case_report(img, lm, [0.2, 0.3, 0.5], {'gradient': img[0]})\n"
            "assert rep.to_pdf().startswith(b'%PDF') and rep.to_html()\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'plotly', 'kaleido', "
            "'streamlit', 'playwright'}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
