"""Browser check of the clinician's loop workflow (issue 14) on the "Read a case" page: upload a
cine loop (the synthetic phantom with sliding B-lines, as a GIF), explain every frame, play it (the
frame slider moves by itself), pause, and download the case report (a PDF). Screenshots land in
$NNSENS_SCREENSHOTS (default: a pytest tmp dir)."""
from __future__ import annotations

import time

import pytest

from tests.e2e.test_browser import CHROME_ARGS, CHROMIUM, _serve, _shots, _wait_idle, playwright

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _frame(pg) -> int:
    return int(pg.locator("[data-testid='stSliderThumbValue']").last.inner_text())


def test_load_a_loop_play_it_and_export_the_report(tmp_path, tmp_path_factory):
    from nnsens_core.sequences import export_loop, phantom_cine
    seq, _ = phantom_cine(n_frames=8, size=(96, 128))
    clip = tmp_path / "lung_clip.gif"
    clip.write_bytes(export_loop(seq, None, "gif"))
    shots = _shots(tmp_path_factory)
    with _serve() as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
        pg.goto(f"{url}/case")
        _wait_idle(pg)
        pg.get_by_text("Upload one image").click()
        _wait_idle(pg)
        pg.locator("[data-testid='stFileUploaderDropzoneInput']").last.set_input_files(str(clip))
        _wait_idle(pg)
        pg.get_by_role("button", name="Explain all 8 frames").click()
        _wait_idle(pg)
        assert pg.locator("[data-testid='stException']").count() == 0
        assert pg.locator("[data-testid='stError']").count() == 0
        assert "Over 8 frames" in pg.inner_text("body")
        pg.screenshot(path=str(shots / "case_loop.png"), full_page=True)
        start = _frame(pg)
        pg.get_by_text("▶ Play").click()
        deadline, moved = time.time() + 40, False
        while time.time() < deadline and not moved:
            time.sleep(0.5)
            moved = _frame(pg) != start
        assert moved, "the frame slider did not move while playing"
        pg.screenshot(path=str(shots / "case_loop_playing.png"), full_page=True)
        pg.get_by_text("▶ Play").click()  # pause
        _wait_idle(pg)
        held = _frame(pg)
        time.sleep(2)
        assert _frame(pg) == held, "the loop kept playing after Pause"
        with pg.expect_download(timeout=120_000) as dl:
            pg.get_by_role("button", name="Case report (PDF)").click()
        path = dl.value.path()
        with open(path, "rb") as f:
            assert f.read(5) == b"%PDF-"
        assert pg.locator("[data-testid='stException']").count() == 0
        browser.close()


def test_cancel_keeps_the_finished_maps(tmp_path_factory):
    """Cancel during a run of the four default methods: the run stops at the next progress step,
    the page says how many maps were kept, and the button offers only the rest."""
    import re
    shots = _shots(tmp_path_factory)
    with _serve() as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1100})
        pg.goto(f"{url}/case")
        _wait_idle(pg)
        pg.get_by_role("button", name=re.compile(r"Explain this case \(4 method")).click()
        cancel = pg.get_by_role("button", name="Cancel")
        cancel.wait_for(state="visible", timeout=60_000)
        time.sleep(1.0)
        cancel.click()
        _wait_idle(pg)
        body = pg.inner_text("body")
        pg.screenshot(path=str(shots / "case_cancelled.png"), full_page=True)
        kept = re.search(r"Cancelled: (\d) of 4 maps computed and kept", body)
        assert kept, body[-2000:]
        left = 4 - int(kept.group(1))
        assert 0 < left <= 4
        assert pg.get_by_role("button", name=f"Explain this case ({left} method(s) to compute)").count() == 1
        assert pg.locator("[data-testid='stException']").count() == 0
        browser.close()
