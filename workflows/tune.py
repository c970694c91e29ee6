"""The sweep as a Ray job: ``ray job submit --working-dir . -- python workflows/tune.py [--config FILE] [key=value ...]``.

The same options and code as ``vmr tune`` (vmr/commands/tune.py, vmr/pipeline/tune.py). Plain ``python
workflows/tune.py`` sweeps the embedded demo on a local Ray. A driver that dies can be started again with the same
``name=...``: the sweep resumes (Tuner.restore).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the vmr source next to this file (ray job submit)

from vmr.commands import tune as command  # noqa: E402
from vmr.errors import VmrError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workflows/tune.py", description=command.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    command.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return command.main_from_args(args)
    except VmrError as e:
        print(f"workflows/tune.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
