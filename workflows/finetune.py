"""The finetune workflow as a Ray job: ``ray job submit --working-dir . -- python workflows/finetune.py [--config FILE] [key=value ...]``.

Plain ``python workflows/finetune.py`` runs the embedded demo on a local Ray. The same options and code as
``vmr finetune`` (vmr/commands/finetune.py, vmr/pipeline/workflow.py); Ray is reached through RAY_ADDRESS (set by
``ray job submit``), else a local cluster is started.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the vmr source next to this file (ray job submit)

from vmr.commands import finetune as command  # noqa: E402
from vmr.commands._train_args import add_arguments  # noqa: E402
from vmr.errors import VmrError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workflows/finetune.py", description=command.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return command.run(args)
    except VmrError as e:
        print(f"workflows/finetune.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
