"""The README's "Use it from Python" example runs as written (from another directory)."""
import contextlib
import io
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_python_example_runs(tmp_path):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Use it from Python", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(tmp_path)  # nothing in it may depend on the repository being the working directory
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    text = out.getvalue()
    assert "S1" in text and "ST" in text
    assert "'gradcam': (4, 64, 64)" in text and "'smoothgrad': (4, 64, 64)" in text
