"""Scheduled retraining as a Ray job (one round per run)::

    ray job submit --submission-id retrain-$(date +%F) --working-dir . -- python workflows/retrain.py \\
        --config configs/retrain.yaml incoming=s3://footage/incoming store=s3://footage/features

The same options and code as ``vmr retrain`` (vmr/commands/retrain.py, vmr/pipeline/retrain.py). A round with nothing
new under incoming/ does nothing and says so. A cron line is in configs/retrain.yaml and the README.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the vmr source next to this file (--working-dir .)

from vmr.cli import main  # noqa: E402  (one CLI: the same parser, errors and exit codes as `vmr retrain`)

if __name__ == "__main__":
    sys.exit(main(["retrain", *sys.argv[1:]]))
