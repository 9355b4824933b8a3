"""Screenshots of the clinician's workflow on the phantom for the README (docs/img/*.png).

    .venv/bin/python docs/screenshots.py            # starts its own server, needs Debian chromium

1. Model & data: a ZIP of scanner-like screenshots (phantom fans of different sizes inside a
   black frame with burned-in text and a depth scale) loaded at their own sizes, the auto-detected
   fan as region of interest, and what the selected CNN sees.
2. Read a case: one of those images beside its maps (colour bars, stated scale).
3. Read a case: a cine loop (phantom with sliding B-lines) explained frame by frame.
4. The case report (PDF page 1, rendered with pdftoppm).
"""
from __future__ import annotations

import io
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "img"


def scanner_screenshot(fan: np.ndarray, size: tuple[int, int], label: str) -> Image.Image:
    """The fan (h, w) in [0, 1] in a black scanner screen of ``size`` (H, W) with burned-in text
    and a depth scale on the right."""
    H, W = size
    img = Image.new("L", (W, H), 0)
    f = Image.fromarray((fan * 255).astype(np.uint8))
    scale = min((H - 40) / f.height, (W - 60) / f.width)
    f = f.resize((int(f.width * scale), int(f.height * scale)), Image.BILINEAR)
    img.paste(f, ((W - f.width) // 2 - 10, 28))
    d = ImageDraw.Draw(img)
    d.text((6, 4), f"DEMO PATIENT  ID 0000  {label}", fill=235)
    for k in range(6):  # depth scale: ticks and numbers
        y = 28 + k * (f.height // 5)
        d.line([(W - 26, y), (W - 18, y)], fill=220)
        d.text((W - 16, y - 5), str(k * 2), fill=220)
    return img


def phantom_zip(path: Path) -> None:
    from nnsens_core.phantom import make_phantom
    d = make_phantom(60, size=128, seed=3, channels=1)
    sizes = [(300, 400), (240, 320), (360, 420)]
    seen: dict[str, int] = {}
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(len(d)):
            name = d.class_names[int(d.labels[i])]
            j = seen[name] = seen.get(name, -1) + 1  # 3 frames per clip, clips within a class
            shot = scanner_screenshot(d.images[i, 0], sizes[j // 3 % 3], name)
            buf = io.BytesIO()
            shot.save(buf, "PNG")
            zf.writestr(f"scans/{name}/clip{j // 3}_f{j % 3:03d}.png", buf.getvalue())


def main() -> None:
    from playwright.sync_api import sync_playwright

    from nnsens_core.sequences import export_loop, phantom_cine
    from tests.e2e.test_browser import CHROME_ARGS, CHROMIUM, _serve, _wait_idle
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    zpath = tmp / "lung_scans.zip"
    phantom_zip(zpath)
    seq, _ = phantom_cine(n_frames=12, size=(96, 128))
    clip = tmp / "lung_clip.gif"
    clip.write_bytes(export_loop(seq, None, "gif"))
    with _serve() as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1700}, accept_downloads=True)
        pg.goto(f"{url}/model_data")
        _wait_idle(pg)

        def images_tab():
            pg.get_by_role("tab", name="Images").click()
            _wait_idle(pg)
        images_tab()
        pg.locator("[data-testid='stFileUploader']").filter(has_text="ZIP of class sub-folders") \
            .locator("input[type=file]").set_input_files(str(zpath))
        _wait_idle(pg)
        pg.get_by_role("button", name="Load images").click()
        _wait_idle(pg)
        pg.get_by_role("tab", name="Images").click()
        _wait_idle(pg)
        pg.get_by_text("auto-detected ultrasound fan").first.click()
        _wait_idle(pg)
        images_tab()
        pg.screenshot(path=str(OUT / "clinician_model_data.png"), full_page=True)
        def number(key: str, value) -> None:
            box = pg.locator(f".st-key-{key} input")
            box.fill(str(value))
            box.press("Enter")
            _wait_idle(pg)
            images_tab()

        def choose(key: str, option: str) -> None:
            box = pg.locator(f".st-key-{key} input")
            box.click()
            box.fill(option)  # the select filters its options as one types
            box.press("Enter")
            _wait_idle(pg)
            images_tab()
        # train a CNN on these images: grouped by clip, grey, at the screenshots' 3:4 aspect
        choose("tr_arch_2", "resnet18-small")
        choose("tr_channels", "1 (grey)")
        number("tr_h", 96)
        number("tr_w", 128)
        number("tr_epochs", 25)
        number("tr_patience", 10)
        images_tab()
        pg.locator(".st-key-btn_train_cnn button").click()
        _wait_idle(pg, 600)
        images_tab()
        pg.locator(".st-key-btn_train_cnn").scroll_into_view_if_needed()
        pg.screenshot(path=str(OUT / "clinician_training.png"), full_page=True)
        pg.get_by_role("link", name="Read a case").click()  # same session: the upload stays
        _wait_idle(pg)
        pg.get_by_role("button", name="Explain this case", exact=False).click()
        _wait_idle(pg)
        pg.screenshot(path=str(OUT / "clinician_case.png"), full_page=True)
        with pg.expect_download(timeout=240_000) as dl:
            pg.get_by_role("button", name="Case report (PDF)").click()
        pdf = tmp / "report.pdf"
        pdf.write_bytes(Path(dl.value.path()).read_bytes())
        pg.get_by_text("Upload one image").click()
        _wait_idle(pg)
        pg.locator("[data-testid='stFileUploaderDropzoneInput']").last.set_input_files(str(clip))
        _wait_idle(pg)
        pg.get_by_role("button", name="Explain all 12 frames").click()
        _wait_idle(pg)
        time.sleep(1)
        pg.screenshot(path=str(OUT / "clinician_loop.png"), full_page=True)
        browser.close()
    subprocess.run(["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", str(pdf),
                    str(OUT / "clinician_report")], check=True)
    for f in sorted(OUT.glob("clinician_*.png")):
        print(f"wrote {f.relative_to(ROOT)} ({f.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
