"""``vmr pretrain``: self-supervised MATR pretraining (random clips of every video) on Ray Train, tracked in MLflow.

With no arguments it runs the embedded demo end to end: local Ray, a synthetic match archive rendered into ./vmr-data
if absent, CLIP features (random weights, offline), pretraining samples, a small MATR, and it prints where the
checkpoint, the MLflow run and the dashboard command are. ``--config configs/pretrain.yaml`` gives the paper's sizes.
The same name (``--run-name``) again resumes the run from its last checkpoint.
"""
from __future__ import annotations

import argparse

from vmr.commands._train_args import add_arguments, main_from_args


def register(subparsers) -> None:
    p = subparsers.add_parser("pretrain", help="pretrain MATR on random clips (Ray Train + MLflow)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    return main_from_args("pretrain", args)
