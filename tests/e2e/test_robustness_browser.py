"""Browser check of the Robustness page's slice viewer (issue 12): select the 3-D demo, run a tiny
group mask, move the axial slice slider and see the axial picture change."""
from __future__ import annotations

import time

import pytest

from tests.e2e.test_browser import (
    CHROME_ARGS,
    CHROMIUM,
    _serve,
    _shots,
    _wait_idle,
    playwright,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _pick(pg, label: str, option: str) -> None:
    box = pg.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']").filter(has_text=label)
    box.click()
    pg.get_by_role("option", name=option).click()
    _wait_idle(pg)


def _axial_src(pg) -> str:
    return pg.locator("[data-testid='stImage'] img").first.get_attribute("src")


def test_slice_slider_changes_the_picture(tmp_path_factory):
    with _serve() as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.goto(f"{url}/robustness")
        _wait_idle(pg)
        _pick(pg, "Image dataset", "Demo: brain phantom (3-D)")
        _pick(pg, "CNN", "Demo: cnn3d-brain")
        steps = pg.get_by_label("Steps")
        steps.fill("2")
        steps.press("Enter")
        _wait_idle(pg)
        pg.get_by_role("button", name="Compute the mask").click()
        _wait_idle(pg)
        assert pg.locator("[data-testid='stException']").count() == 0
        assert pg.locator("[data-testid='stError']").count() == 0
        assert pg.locator("[data-testid='stImage'] img").count() >= 3
        before = _axial_src(pg)
        pg.screenshot(path=str(_shots(tmp_path_factory) / "robustness_mask.png"), full_page=True)
        for _ in range(6):  # one step at a time: each press reruns the page (on a loaded machine the
            # rerun may still show the stale slider next to the new one)
            thumb = pg.get_by_role("slider", name="Axial slice (D)").last
            thumb.focus()
            thumb.press("ArrowRight")
            _wait_idle(pg)
        deadline = time.time() + 30
        while _axial_src(pg) == before and time.time() < deadline:
            time.sleep(0.5)
        assert _axial_src(pg) != before
        deadline = time.time() + 30  # the slider settles on the last key press (reruns may lag)
        while "voxel (d=30" not in pg.inner_text("body") and time.time() < deadline:
            time.sleep(0.5)
        text = pg.inner_text("body")
        assert "voxel (d=30" in text, [ln for ln in text.splitlines() if "voxel" in ln]
        pg.screenshot(path=str(_shots(tmp_path_factory) / "robustness_slice.png"), full_page=True)
        browser.close()
