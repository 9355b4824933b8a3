"""Static checks of the files that set up and ship the app (no Docker engine runs here)."""
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

DOCKER_INSTRUCTIONS = {"FROM", "ARG", "ENV", "RUN", "WORKDIR", "COPY", "ADD", "EXPOSE", "CMD", "USER",
                       "HEALTHCHECK", "LABEL", "ENTRYPOINT", "VOLUME"}


def _docker_lines():
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def test_dockerfile_parses_and_serves_on_8501():
    lines = _docker_lines()
    assert lines[0].startswith(("FROM", "ARG"))
    for ln in lines:
        assert ln.split()[0] in DOCKER_INSTRUCTIONS, ln
    assert "EXPOSE 8501" in lines
    cmd = next(ln for ln in lines if ln.startswith("CMD"))
    import json
    argv = json.loads(cmd[3:].strip())
    assert "streamlit" in argv and "app.py" in argv and "--server.port=8501" in argv
    assert any(ln.startswith("RUN pip install -r requirements.txt") for ln in lines)
    for ln in lines:  # every COPY source exists
        if ln.startswith("COPY"):
            for src in shlex.split(ln)[1:-1]:
                assert (ROOT / src).exists(), src


def test_requirements_pin_torch_and_list_the_design_card():
    req = (ROOT / "requirements.txt").read_text()
    assert re.search(r"^torch==2\.14\.1$", req, re.M)
    assert re.search(r"^torchvision==0\.29\.1$", req, re.M)
    for pkg in ("streamlit", "SALib", "plotly", "numpy", "pandas", "pillow", "grad-cam"):
        assert re.search(rf"^{re.escape(pkg)}\b", req, re.M | re.I), pkg


def test_ci_runs_the_readme_test_command_verbatim():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = [c.split("#")[0].strip() for c in re.findall(r"^\s*(\./run\.sh.*)$", quick, re.M)]
    assert len(commands) == 2, commands
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


@pytest.mark.slow  # runs `python -m nnsens_core` in a subprocess
def test_cli_lists_commands():
    out = subprocess.run([sys.executable, "-m", "nnsens_core", "--help"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert "phantom" in out
