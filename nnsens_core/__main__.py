"""``python -m nnsens_core <command>``: batch runs of the same core the dashboard uses.

Each module in ``nnsens_core/commands/`` (not starting with ``_``) is a sub-command: it defines
``HELP`` and ``register(parser)``, and sets ``parser.set_defaults(run=fn)`` where ``fn(args)``
returns an exit code.

Start-up stays light: ``HELP`` is read from each module's source (a string literal, no import), and
only the chosen sub-command's module is imported, so ``nnsens --help`` loads no torch, pandas, SciPy,
SALib, plotly or grad-cam, and ``nnsens sobol ...`` never imports the CNN commands.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import os
import pkgutil
import sys
from pathlib import Path
from typing import Iterable, Sequence

from . import commands
from .errors import NnsensError


def command_names() -> list[str]:
    """The sub-commands: the modules of ``nnsens_core/commands`` not starting with ``_``, sorted."""
    return sorted(m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_"))


def command_help(name: str) -> str:
    """A sub-command's ``HELP`` read from its source without importing it (its imports are heavy);
    a ``HELP`` that is not a string literal is read by importing the module."""
    path = Path(commands.__file__).with_name(f"{name}.py")
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        tree = None
    for node in (tree.body if tree is not None else ()):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "HELP"
                                                for t in node.targets):
            try:
                return str(ast.literal_eval(node.value))
            except ValueError:
                break
    return importlib.import_module(f"{commands.__name__}.{name}").HELP


def _chosen(argv: Sequence[str]) -> list[str]:
    """The sub-command named on the command line (the top-level parser has no options but -h, so
    it is the first argument not starting with ``-``), as a list; empty when none is named."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return [first] if first in command_names() else []


def build_parser(register: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The CLI parser. ``register``: the sub-commands whose modules are imported and whose options
    are added (default: all); the others appear in ``--help`` with their ``HELP`` only."""
    parser = argparse.ArgumentParser(prog="nnsens",
                                     description="Sensitivity analysis of neural networks.")
    sub = parser.add_subparsers(dest="command", required=True)
    names = command_names()
    full = set(names if register is None else register)
    for name in names:
        text = command_help(name)
        p = sub.add_parser(name, help=text, description=text)
        if name in full:
            importlib.import_module(f"{commands.__name__}.{name}").register(p)
    return parser


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else "")[:500]


def main(argv: list[str] | None = None) -> int:
    """Run a sub-command. Bad input is exit code 2 and one line on stderr, never a traceback:
    :class:`NnsensError` (the core's messages), ``OSError`` (a missing or unreadable file, a full
    disk), other ``ValueError`` (a bad argument value) and ``RuntimeError`` (a model that rejects
    the input, out of memory). Anything else is a bug and surfaces with its traceback; so does
    every error when ``NNSENS_TRACEBACK=1``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_chosen(argv)).parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except NnsensError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except (OSError, ValueError, RuntimeError) as exc:
        if os.environ.get("NNSENS_TRACEBACK", "").strip() in ("1", "true", "yes"):
            raise
        if isinstance(exc, OSError) and exc.filename is not None:
            what = f"{exc.strerror or type(exc).__name__}: {exc.filename}"
        else:
            what = f"{type(exc).__name__}: {_first_line(exc)}"
        hint = "check the path and its permissions" if isinstance(exc, OSError) else \
            "check the model, data and arguments"
        print(f"error: {what}; {hint} (NNSENS_TRACEBACK=1 shows the details)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
