"""Browser tests: the real server in headless Debian Chromium, driven by Playwright.

Skipped when /usr/bin/chromium or the playwright package is missing (``./run.sh test`` installs both
when it can). Screenshots land in $NNSENS_SCREENSHOTS (default: a pytest tmp dir).
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.app.app_pages import ROOT, page_files

CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed")]
playwright = pytest.importorskip("playwright.sync_api")
CHROME_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serve():
    """A fresh ``streamlit run app.py`` on a free port; yields its URL."""
    port = _free_port()
    log = open(ROOT / ".pytest_cache" / f"streamlit-e2e-{port}.log", "w") \
        if (ROOT / ".pytest_cache").is_dir() else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port",
                             str(port), "--server.address", "127.0.0.1", "--server.headless", "true"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("streamlit did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def server():
    with _serve() as url:
        yield url


@pytest.fixture(scope="module")
def page(server):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield pg
        browser.close()


def _shots(tmp_path_factory) -> Path:
    d = os.environ.get("NNSENS_SCREENSHOTS")
    return Path(d) if d else tmp_path_factory.mktemp("shots")


def _wait_idle(pg, timeout_s: float = 240) -> None:
    """Wait until Streamlit finished running the script (no 'Running...' status widget)."""
    pg.wait_for_selector("h1", timeout=timeout_s * 1000)
    deadline = time.time() + timeout_s
    quiet = 0
    while time.time() < deadline:
        running = pg.locator("[data-testid='stStatusWidget']").count() > 0 or \
            pg.locator("[data-testid='stSkeleton']").count() > 0
        quiet = 0 if running else quiet + 1
        if quiet >= 3:
            return
        time.sleep(0.5)
    raise AssertionError("the page kept running")


def test_every_page_renders_in_chromium_without_errors(server, page, tmp_path_factory):
    shots = _shots(tmp_path_factory)
    shots.mkdir(parents=True, exist_ok=True)
    page.goto(server)
    _wait_idle(page)
    for path in page_files():
        slug = Path(path).stem
        page.goto(f"{server}/{slug}" if path != page_files()[0] else server)
        _wait_idle(page)
        page.screenshot(path=str(shots / f"{slug}.png"), full_page=True)
        assert page.locator("[data-testid='stException']").count() == 0, slug
        assert "Traceback" not in page.inner_text("body"), slug
        assert page.locator("h1").count() >= 1, slug


def test_bad_upload_shows_a_message_and_keeps_the_app(server, page, tmp_path):
    bad = tmp_path / "evil.pt"
    bad.write_bytes(b"not a model at all")
    page.goto(server)
    _wait_idle(page)
    page.get_by_text("Upload weights").click()
    _wait_idle(page)
    page.locator("[data-testid='stFileUploaderDropzoneInput']").nth(1).set_input_files(str(bad))
    _wait_idle(page)
    page.get_by_role("button", name="Load model").click()
    _wait_idle(page)
    body = page.inner_text("body")
    assert "not a safe weights file" in body
    assert page.locator("[data-testid='stException']").count() == 0
    assert "Model & data" in body


def test_sobol_run_draws_the_indices_in_chromium(server, page, tmp_path_factory):
    """A real click on the default settings: the S1/ST chart appears, with no error in the page."""
    page.goto(f"{server}/sobol")
    _wait_idle(page)
    page.get_by_role("button", name="Run Sobol analysis").click()
    _wait_idle(page)
    page.screenshot(path=str(_shots(tmp_path_factory) / "sobol_run.png"), full_page=True)
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.locator("[data-testid='stError']").count() == 0
    assert page.locator(".js-plotly-plot").count() >= 1
    assert "S1" in page.inner_text("body") and "ST" in page.inner_text("body")


def test_deep_link_on_a_fresh_server_goes_through_the_router(page):
    """The first request of a new server opens /sobol directly: the page must still get the router's
    navigation and shared sidebar (not Streamlit's legacy list of the pages/ folder)."""
    with _serve() as url:
        page.goto(f"{url}/sobol")
        _wait_idle(page)
        side = page.locator("[data-testid='stSidebar']").inner_text()
        assert "Global sensitivity (Sobol)" in side and "Model & data" in side, side
        assert "Device" in side and "Tabular model" in side, side
        assert page.locator("h1").first.inner_text().startswith("Global sensitivity")
        assert page.locator("[data-testid='stException']").count() == 0
