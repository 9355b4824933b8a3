"""Architecture rules, checked on the sources: forward hooks only through ``nnsens_core._hooks``
(they must act only in the registering thread), and ``nnsens_core`` never imports streamlit (it runs
in batch jobs and tests without it)."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HOOK_REGISTRATIONS = ("register_forward_hook", "register_forward_pre_hook",
                      "register_full_backward_hook")
HOOKS_MODULE = ROOT / "nnsens_core" / "_hooks.py"


def _sources(*folders):
    files = [p for f in folders for p in sorted((ROOT / f).rglob("*.py"))]
    assert len(files) >= 10, f"found only {len(files)} source files under {folders}"
    return files


def _hook_registrations(path: Path, root: Path = ROOT) -> list[str]:
    """``file:line name`` for every use of a hook-registration name in ``path`` (calls, attribute
    reads such as ``register = m.register_forward_hook``, and ``getattr(m, "...")`` strings)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        name = node.attr if isinstance(node, ast.Attribute) else \
            node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None
        if name in HOOK_REGISTRATIONS:
            found.append((node.lineno, f"{path.relative_to(root)}:{node.lineno} {name}"))
    return [hit for _, hit in sorted(found)]


def test_forward_hooks_are_registered_only_in_nnsens_core_hooks():
    offenders = [hit for p in _sources("nnsens_core", "ui", "pages") if p != HOOKS_MODULE
                 for hit in _hook_registrations(p)]
    assert offenders == [], ("register hooks with nnsens_core._hooks.add_forward_hook (it acts only "
                             f"in the registering thread), not directly: {offenders}")
    assert _hook_registrations(HOOKS_MODULE), "the scan no longer sees _hooks.py's own registration"


def test_the_hook_scan_sees_every_spelling(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("m.register_forward_hook(f)\nh = m.register_forward_pre_hook\n"
                   "getattr(m, 'register_full_backward_hook')(f)\n# register_forward_hook in a comment\n")
    hits = _hook_registrations(src, tmp_path)
    assert hits == [f"m.py:{i + 1} {name}" for i, name in enumerate(HOOK_REGISTRATIONS)]


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


def test_core_sources_never_import_streamlit_or_the_dashboard():
    bad = [f"{p.relative_to(ROOT)}:{line} {mod}" for p in _sources("nnsens_core")
           for line, mod in _imports(p) if mod.split(".")[0] in ("streamlit", "ui", "pages")]
    assert bad == [], f"nnsens_core must not import streamlit or the dashboard: {bad}"


CODE = """
import importlib, json, pkgutil, sys
import nnsens_core
names = []
for m in pkgutil.walk_packages(nnsens_core.__path__, 'nnsens_core.'):
    if m.name.endswith('__main__'):
        continue
    importlib.import_module(m.name)
    names.append(m.name)
import nnsens_core.__main__  # the CLI, with every sub-command registered
nnsens_core.__main__.build_parser()
print(json.dumps({'modules': names, 'streamlit': sorted(k for k in sys.modules if k.split('.')[0] == 'streamlit')}))
"""


@pytest.mark.slow  # a fresh interpreter imports every module (also what third-party packages pull in)
def test_importing_all_of_nnsens_core_loads_no_streamlit():
    out = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(res["modules"]) >= 10
    assert res["streamlit"] == []
