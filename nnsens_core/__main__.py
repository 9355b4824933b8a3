"""``python -m nnsens_core <command>``: batch runs of the same core the dashboard uses.

Each module in ``nnsens_core/commands/`` (not starting with ``_``) is a sub-command: it defines
``HELP`` and ``register(parser)``, and sets ``parser.set_defaults(run=fn)`` where ``fn(args)``
returns an exit code.
"""
from __future__ import annotations

import argparse
import importlib
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except NnsensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
