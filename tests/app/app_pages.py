"""Helpers for AppTest: the repo root and the page files registered in app.py's PAGES list."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
APP = str(ROOT / "app.py")


def page_files() -> list[str]:
    tree = ast.parse((ROOT / "app.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "PAGES":
            return [elt.elts[0].value for elt in node.value.elts]
    raise AssertionError("app.py has no PAGES list")


def open_page(page: str, timeout: float = 180, state: dict | None = None):
    """An AppTest of the router opened straight on ``page`` (the default page's demo training is
    skipped), with ``state`` put into session state first; asserts the first run raised nothing."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=timeout)
    for k, v in (state or {}).items():
        at.session_state[k] = v
    at.switch_page(page)
    at.run()
    assert not at.exception, at.exception
    return at
