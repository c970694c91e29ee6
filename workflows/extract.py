"""Feature extraction as a Ray job: ``ray job submit -- python workflows/extract.py --videos s3://raw --out s3://feats``.

The same options and code as ``vmr extract`` (vmr/commands/extract.py); Ray is reached through RAY_ADDRESS (set by
``ray job submit``), else a local cluster is started.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the vmr source next to this file (--working-dir .)

from vmr.cli import main  # noqa: E402  (one CLI: the same parser, errors and exit codes as `vmr extract`)

if __name__ == "__main__":
    sys.exit(main(["extract", *sys.argv[1:]]))
