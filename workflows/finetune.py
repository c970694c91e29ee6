"""The finetune workflow as a Ray job: ``ray job submit --working-dir . -- python workflows/finetune.py [--config FILE] [key=value ...]``.

Plain ``python workflows/finetune.py`` runs the embedded demo on a local Ray. The same options and code as
``vmr finetune`` (vmr/commands/finetune.py, vmr/pipeline/workflow.py); Ray is reached through RAY_ADDRESS (set by
``ray job submit``), else a local cluster is started.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the vmr source next to this file (--working-dir .)

from vmr.cli import main  # noqa: E402  (one CLI: the same parser, errors and exit codes as `vmr finetune`)

if __name__ == "__main__":
    sys.exit(main(["finetune", *sys.argv[1:]]))
