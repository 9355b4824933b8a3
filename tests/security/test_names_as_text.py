"""User-provided names are shown as text, never as markdown (issue 11): a ZIP whose class folders
are markdown links must not render links in the page."""
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.app.app_pages import APP
from tests.uploads import png_bytes, zip_bytes
from ui._streamlit_internals import keep_router_in_apptest
from ui.widgets import plain

LINK = "[click me](evil.example)"
IMAGE = "![x](evil.example)"


def test_plain_escapes_markdown_and_autolinks():
    for text in (LINK, IMAGE, "see http://evil.example", "www.evil.example", "<javascript:alert(1)>",
                 "**bold** _it_ `code` $x$ :red[r]", "a@b.example"):
        out = plain(text)
        for k, ch in enumerate(out):        # every markdown special is escaped
            if ch in "[]`*_$@":
                assert out[k - 1] == "\\", (text, out)
        for live in ("http:", "javascript:", "www."):
            assert live not in out, (text, out)
    assert plain("lr=0.0 must be > 0 ('b')") == "lr=0.0 must be > 0 ('b')"   # readable as it was


def _markdown_texts(at) -> list[str]:
    texts = [e.value for kind in ("markdown", "caption", "success", "info", "warning", "error")
             for e in getattr(at, kind)]
    texts += [f"{m.label} {m.value}" for m in at.metric]
    for el in at.get("imgs"):
        texts += [img.caption for img in el.proto.imgs]
    return texts


@pytest.mark.slow
def test_markdown_class_folders_render_as_text(monkeypatch):
    keep_router_in_apptest(monkeypatch)
    png = png_bytes(np.full((64, 64, 3), 128, np.uint8))
    blob = zip_bytes({f"{c}/{i}.png": png for c in (LINK, IMAGE) for i in range(2)})
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.file_uploader(key="up_img").set_value(("[evil](x).zip", blob, "application/zip"))
    at.run()
    at.button(key="btn_img").click().run()
    assert not at.exception, at.exception
    assert at.session_state["sel_image_data"] == "[evil](x).zip"
    texts = _markdown_texts(at)
    joined = "\n".join(texts)
    assert "click me" in joined, texts                     # the names are shown ...
    for live in ("[click me](", "![x](", "[evil](x)"):     # ... but never as live markdown
        assert live not in joined, [t for t in texts if live in t]
