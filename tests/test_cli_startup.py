"""CLI start-up: ``nnsens --help`` imports no heavy package, only the chosen sub-command's module is
imported, and the FLOP estimate does not pull in ``torch._dynamo``."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nnsens_core import __main__ as cli

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "pandas", "scipy", "SALib", "plotly", "pytorch_grad_cam", "streamlit", "numpy")


def test_help_text_is_read_from_source_and_equals_the_modules_help():
    names = cli.command_names()
    assert "sobol" in names and not any(n.startswith("_") for n in names)
    for name in names:
        mod = importlib.import_module(f"nnsens_core.commands.{name}")
        assert cli.command_help(name) == mod.HELP


def test_only_the_named_command_is_registered():
    assert cli._chosen(["sobol", "--n", "8"]) == ["sobol"]
    assert cli._chosen(["--help"]) == [] and cli._chosen([]) == []
    assert cli._chosen(["sobl"]) == []  # argparse names the valid choices
    sub = next(a for a in cli.build_parser(["sobol"])._actions if a.dest == "command")
    opts = {n: {o for a in p._actions for o in a.option_strings} for n, p in sub.choices.items()}
    assert "--second-order" in opts["sobol"]
    assert opts["local"] == {"-h", "--help"}  # listed with its help, options not built
    full = next(a for a in cli.build_parser()._actions if a.dest == "command")  # default: all
    assert all(len(p._actions) > 1 for p in full.choices.values())


def test_unknown_or_missing_command_is_exit_2(capsys):
    for argv in (["sobl"], []):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2
    assert "invalid choice: 'sobl'" in capsys.readouterr().err


def _fresh(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # fresh interpreters
def test_help_imports_no_heavy_package():
    res = _fresh(
        "import contextlib, io, json, sys\n"
        "from nnsens_core.__main__ import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    try: main(['--help'])\n"
        "    except SystemExit: pass\n"
        "print(json.dumps({'help': buf.getvalue(), 'mods': sorted(sys.modules)}))\n")
    assert "sobol" in res["help"] and "Sobol' sensitivity indices" in res["help"]
    loaded = sorted({m.split(".")[0] for m in res["mods"]} & set(HEAVY))
    assert loaded == [], f"nnsens --help imported {loaded}"
    assert not [m for m in res["mods"] if m.startswith("nnsens_core.commands.")]


@pytest.mark.slow
def test_sobol_help_imports_only_its_command_and_no_pandas_salib_plotly():
    res = _fresh(
        "import contextlib, io, json, sys\n"
        "from nnsens_core.__main__ import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: main(['sobol', '--help'])\n"
        "    except SystemExit: pass\n"
        "print(json.dumps(sorted(sys.modules)))\n")
    commands = {m for m in res if m.startswith("nnsens_core.commands.")}
    assert commands == {"nnsens_core.commands.sobol", "nnsens_core.commands._common",
                        "nnsens_core.commands._executor_opts"}  # option helpers, nothing heavy
    loaded = sorted({m.split(".")[0] for m in res} & {"pandas", "SALib", "plotly", "pytorch_grad_cam"})
    assert loaded == []


@pytest.mark.slow
def test_flop_estimate_does_not_import_torch_dynamo():
    res = _fresh(
        "import json, sys, torch\n"
        "from nnsens_core import budget\n"
        "from nnsens_core.zoo import PaperMLP\n"
        "mlp = budget.forward_flop(PaperMLP(8, 10).eval(), (8,))\n"
        "conv = budget.forward_flop(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten()), (3, 16, 16))\n"
        "print(json.dumps({'mlp': mlp, 'conv': conv, 'dynamo': 'torch._dynamo' in sys.modules}))\n")
    assert res["dynamo"] is False
    assert res["conv"] == 2 * 3 * 9 * 8 * 14 * 14  # the FLOP counter still counts: 2·Cin·k²·Cout·H'·W'
    assert res["mlp"] > 0


@pytest.mark.slow
def test_small_sobol_run_imports_no_pandas_salib_plotly_gradcam_or_triton(tmp_path):
    """The smallest demo run (shipped MLP and Pima CSV, N=1024) reads the CSV without pandas and
    counts the MLP's FLOPs by hand (no flop counter, so no Triton)."""
    out = tmp_path / "s.json"
    res = _fresh(
        "import contextlib, io, json, sys\n"
        "from nnsens_core.__main__ import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "    code = main(['sobol', '--data', 'nnsens_core/datasets/pima_diabetes.csv', '--model',\n"
        "                 'models/paper-mlp-pima.pt', '--arch', 'paper-mlp', '--device', 'cpu',\n"
        f"                 '--n', '1024', '--yes', '--out', {str(out)!r}])\n"
        "print(json.dumps({'code': code, 'mods': sorted(sys.modules)}))\n")
    assert res["code"] == 0 and json.loads(out.read_text())["N"] == 1024
    loaded = sorted({m.split(".")[0] for m in res["mods"]}
                    & {"pandas", "SALib", "plotly", "pytorch_grad_cam", "triton", "streamlit"})
    assert loaded == [], f"a small sobol run imported {loaded}"
