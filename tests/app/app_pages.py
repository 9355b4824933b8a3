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
