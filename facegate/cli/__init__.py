"""The ``facegate`` command line. Each module here registers one group of subcommands."""
from __future__ import annotations

import argparse
import functools
import getpass
import importlib
import pkgutil
import json
import logging
import sys

from facegate.errors import FacegateError



@functools.cache
def command_modules() -> tuple[str, ...]:
    """Every module in this package; each has a ``register(subparsers)`` function. Listed once per
    process: a process that later drops to another uid may no longer read the package's folder."""
    return tuple(f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def cli_actor() -> str:
    """Who runs this command, for the audit trail."""
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli:unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facegate", description="Face verification identity service")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in command_modules():
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except FacegateError as exc:
        if getattr(args, "json", False):
            print(json.dumps({"error": exc.to_dict()}))
        else:
            print(f"facegate: error: {exc.code}: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
