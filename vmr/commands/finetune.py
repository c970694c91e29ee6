"""``vmr finetune``: finetune MATR on video-query pairs (model.kind=matr) or train A2FA+F2SGD on text queries
(model.kind=a2fa, e.g. --config configs/finetune_text.yaml) on Ray Train, tracked and registered in MLflow.

With no arguments it finetunes the demo's MATR from the newest pretrained model (``vmr pretrain`` first) on the demo's
class-disjoint pairs, and reports validation and test R1/mIoU next to the training-free cosine baseline on the same
split. The same ``--run-name`` again resumes the run from its last checkpoint.
"""
from __future__ import annotations

import argparse

from vmr.commands._train_args import add_arguments, main_from_args


def register(subparsers) -> None:
    p = subparsers.add_parser("finetune", help="finetune MATR (video queries) or A2FA (text) (Ray Train + MLflow)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    return main_from_args("finetune", args)
