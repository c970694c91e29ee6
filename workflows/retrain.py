"""Scheduled retraining as a Ray job (one round per run)::

    ray job submit --submission-id retrain-$(date +%F) --working-dir . -- python workflows/retrain.py \\
        --config configs/retrain.yaml incoming=s3://footage/incoming store=s3://footage/features

The same options and code as ``vmr retrain`` (vmr/commands/retrain.py, vmr/pipeline/retrain.py). A round with nothing
new under incoming/ does nothing and says so. A cron line is in configs/retrain.yaml and the README.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the vmr source next to this file (ray job submit)

from vmr.commands import retrain as command  # noqa: E402
from vmr.errors import VmrError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workflows/retrain.py", description=command.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    command.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return command.main_from_args(args)
    except VmrError as e:
        print(f"workflows/retrain.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
