"""The sweep as a Ray job: ``ray job submit --working-dir . -- python workflows/tune.py [--config FILE] [key=value ...]``.

The same options and code as ``vmr tune`` (vmr/commands/tune.py, vmr/pipeline/tune.py). Plain ``python
workflows/tune.py`` sweeps the embedded demo on a local Ray. A driver that dies can be started again with the same
``name=...``: the sweep resumes (Tuner.restore).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the vmr source next to this file (--working-dir .)

from vmr.cli import main  # noqa: E402  (one CLI: the same parser, errors and exit codes as `vmr tune`)

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
