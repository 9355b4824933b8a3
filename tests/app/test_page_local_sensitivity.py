"""AppTest smoke test of the Local sensitivity page: renders, runs a small analysis (16x16 patches
on the demo VGG-16), keeps it across reruns, and reports bad input as messages."""

import numpy as np

from app_pages import open_page
from tests.uploads import png_bytes

PAGE = "pages/local_sensitivity.py"


def png(mode: str, size: int) -> bytes:
    shape = (size, size) if mode == "L" else (size, size, 3)
    return png_bytes(np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8))


def _page():
    return open_page(PAGE, timeout=120)


def test_local_page_runs_small_analysis_and_keeps_it():
    at = _page()
    assert at.title[0].value.startswith("Local sensitivity")
    assert not at.error, [e.value for e in at.error]
    at.number_input(key="ls_patch").set_value(16)
    at.run()
    assert any("48 forward passes" in c.value.replace("**", "") or "49 forward passes" in
               c.value.replace("**", "") for c in at.caption), [c.value for c in at.caption]
    at.button(key="ls_run").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    runs = at.session_state["local_sens"]["runs"]
    assert len(runs) == 1
    (key, run), = runs.items()
    res = run["results"][0]
    # the default demo CNN is the VGG-16: its blocks are detected, incremental inference applies
    assert res.labels == tuple(f"block{i}" for i in range(1, 6))
    assert tuple(res.maps.shape) == (len(res.labels), 3, 64, 64) and res.n_forward == 3 * 4 * 4 + 1
    assert any(m.label == "Forward passes" and m.value == "49" for m in at.metric)
    assert res.extra["engine"] == "incremental"
    assert any("incremental inference" in c.value for c in at.caption)
    # the same run with full forward passes: the same maps up to float rounding
    at.checkbox(key="ls_incremental").uncheck()
    at.button(key="ls_run").click()
    at.run()
    assert not at.exception, at.exception
    full = next(r for k, r in at.session_state["local_sens"]["runs"].items() if k != key)["results"][0]
    assert full.extra["engine"] == "full" and any("full forward passes" in c.value for c in at.caption)
    np.testing.assert_allclose(full.maps.numpy(), res.maps.numpy(), rtol=1e-4, atol=1e-5)
    at.checkbox(key="ls_incremental").check()
    at.run()
    # compact default: one block (the last) over the image, with a colour bar and its stated scale
    assert at.radio(key="ls_view").value == "over" and at.selectbox(key="ls_block").value == 4
    scale = [c.value for c in at.caption if c.value.startswith("**Scale:**")]
    assert scale and "sensitivity s from" in scale[0] and "shared by every block" in scale[0]
    imgs = [i for el in at.image for i in el.proto.imgs]
    assert len(imgs) >= 1 + 3 + 1  # the image, one overlay per channel, the colour bar
    assert not at.get("plotly_chart")
    at.radio(key="ls_view").set_value("alone")
    at.run()
    assert not at.exception, at.exception
    # the full grid is still there
    at.radio(key="ls_view").set_value("grid")
    at.run()
    assert len(at.get("plotly_chart")) >= 1
    # a view change reruns without recomputing
    at.radio(key="ls_scale").set_value("per block")
    at.number_input(key="ls_tile").set_value(4)
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["local_sens"]["runs"][key] is run
    # the fast mode with its agreement report
    at.radio(key="ls_method").set_value("gradient")
    at.run()
    at.number_input(key="ls_probes").set_value(4)
    at.button(key="ls_run").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert len(at.session_state["local_sens"]["runs"]) == 3  # incremental, full, gradient
    assert any("Spearman" in str(df.value.columns.tolist()) for df in at.dataframe)


def test_local_page_first_k_images_of_a_class_mean_and_std():
    at = _page()
    at.radio(key="ls_mode").set_value("First K images of a class")
    at.run()
    at.number_input(key="ls_k").set_value(2)
    at.number_input(key="ls_patch").set_value(32)
    at.radio(key="ls_noise").set_value("gaussian")
    at.run()
    at.button(key="ls_run").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    (run,) = at.session_state["local_sens"]["runs"].values()
    assert len(run["results"]) == 2 and run["results"][0].config.noise == "gaussian"
    at.selectbox(key="ls_stat").set_value("std")
    at.selectbox(key="ls_chan").set_value("l2")
    at.run()
    assert not at.exception, at.exception
    assert any(m.label == "Images" and m.value == "2" for m in at.metric)


def test_local_page_bad_input_is_reported():
    at = _page()
    at.number_input(key="ls_eps").set_value(0.0)
    at.run()
    assert not at.exception, at.exception
    assert any("epsilon=0.0 must be > 0" in e.value for e in at.error), [e.value for e in at.error]
    at.number_input(key="ls_eps").set_value(0.1)
    at.checkbox(key="ls_custom").check()
    at.run()
    at.text_input(key="ls_typed").set_value("features.99")
    at.run()
    assert not at.exception, at.exception
    assert any("does not exist" in e.value for e in at.error), [e.value for e in at.error]
    # uploads: a grayscale image and a wrong size are named; fitting them makes them usable
    at.text_input(key="ls_typed").set_value("")
    at.checkbox(key="ls_custom").uncheck()
    at.radio(key="ls_mode").set_value("Upload an image")
    at.run()
    at.file_uploader(key="ls_upload").set_value(("gray.png", png("L", 64), "image/png"))
    at.run()
    assert not at.exception, at.exception
    assert any("grayscale" in e.value and "RGB" in e.value for e in at.error), [e.value for e in at.error]
    at.file_uploader(key="ls_upload").set_value(("small.png", png("RGB", 32), "image/png"))
    at.run()
    assert any("32x32" in e.value and "64x64" in e.value for e in at.error), [e.value for e in at.error]
    at.checkbox(key="ls_fit").check()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any(b.key == "ls_run" for b in at.button)


def test_local_page_paper_preset_and_both_measures():
    """The paper preset sets exactly the paper's values; the comparison shows both formulas."""
    from nnsens_core import local_sensitivity as P
    at = _page()
    at.number_input(key="ls_patch").set_value(16)
    at.radio(key="ls_formula").set_value("diff_norm")
    at.run()
    at.button(key="ls_preset_paper").click()
    at.run()
    assert not at.exception, at.exception
    paper = P.PRESETS["paper"]
    assert at.radio(key="ls_formula").value == paper["formula"] == "norm_diff"
    assert at.number_input(key="ls_eps").value == paper["epsilon"]
    assert at.number_input(key="ls_patch").value == paper["patch"] == 1
    assert at.radio(key="ls_method").value == paper["method"]
    assert at.checkbox(key="ls_custom").value is False
    assert any("paper preset" in c.value and "‖B(x+δ)‖₂ − ‖B(x)‖₂" in c.value for c in at.caption)
    # a coarse patch keeps the test fast; the formula stays the paper's
    at.number_input(key="ls_patch").set_value(32)
    at.button(key="ls_run").click()
    at.run()
    assert not at.exception, at.exception
    (run,) = at.session_state["local_sens"]["runs"].values()
    assert run["results"][0].config == P.preset("paper", patch=32)
    assert any(c.value.startswith("Formula used: s = ‖B(x+δ)‖₂ − ‖B(x)‖₂") for c in at.caption)
    at.toggle(key="ls_both").set_value(True)
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    table = next(df.value for df in at.dataframe if "mean s (diff_norm)" in df.value.columns)
    assert list(table.index) == [f"block{i}" for i in range(1, 6)]
    assert (table["mean s (diff_norm)"] > 0).all()      # a norm of a difference is >= 0
    assert any("decay" in c.value for c in at.caption)
    at.button(key="ls_preset_nnsens").click()
    at.run()
    assert at.radio(key="ls_formula").value == "diff_norm"
