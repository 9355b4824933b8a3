"""``python -m nnsens_core <command>``: batch runs of the same core the dashboard uses.

Each module in ``nnsens_core/commands/`` (not starting with ``_``) is a sub-command: it defines
``HELP`` and ``register(parser)``, and sets ``parser.set_defaults(run=fn)`` where ``fn(args)``
returns an exit code.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from . import commands
from .errors import NnsensError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnsens",
                                     description="Sensitivity analysis of neural networks.")
    sub = parser.add_subparsers(dest="command", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{commands.__name__}.{info.name}")
        p = sub.add_parser(info.name, help=mod.HELP, description=mod.HELP)
        mod.register(p)
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
    args = build_parser().parse_args(argv)
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
