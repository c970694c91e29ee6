"""The ``vmr`` command. Thin: each subcommand lives in ``vmr/commands/<name>.py`` with ``register(subparsers)``, which
adds its parser and sets ``func(args) -> int``. Modules are discovered, so adding a command touches no other file.
Heavy imports happen inside ``func`` so that ``vmr --help`` stays fast.

A :class:`vmr.errors.VmrError` is a user's mistake: one line on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from vmr.errors import ServiceUnavailable, VmrError


def build_parser() -> argparse.ArgumentParser:
    import vmr.commands as commands

    parser = argparse.ArgumentParser(prog="vmr", description="Find moments in videos with video or text queries.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        importlib.import_module(f"vmr.commands.{mod.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ServiceUnavailable as e:  # retryable: the same command can succeed later
        print(f"vmr {args.command}: error: {e}", file=sys.stderr)
        return 1
    except VmrError as e:
        print(f"vmr {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
