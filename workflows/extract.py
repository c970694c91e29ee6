"""Feature extraction as a Ray job: ``ray job submit -- python workflows/extract.py --videos s3://raw --out s3://feats``.

The same options and code as ``vmr extract`` (vmr/commands/extract.py); Ray is reached through RAY_ADDRESS (set by
``ray job submit``), else a local cluster is started.
"""
from __future__ import annotations

import argparse
import sys

from vmr.commands import extract as command
from vmr.errors import VmrError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workflows/extract.py", description=command.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from vmr.pipeline.extract import add_arguments

    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return command.run(args)
    except VmrError as e:
        print(f"workflows/extract.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
