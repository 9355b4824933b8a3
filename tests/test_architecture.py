"""nnsens_core must never import streamlit (it runs in batch jobs and tests without it)."""
import json
import subprocess
import sys

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

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


def test_core_never_imports_streamlit():
    out = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(res["modules"]) >= 10
    assert res["streamlit"] == []
