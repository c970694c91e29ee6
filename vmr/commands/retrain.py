"""``vmr retrain``: one round of scheduled retraining. Finds new videos and match annotations under ``incoming/``
that the feature store's manifest (and the retraining ledger) have not seen, extracts only those, builds the new
pairs, finetunes the model that the MLflow registry's ``champion`` alias names, scores challenger and champion on the
same held-out split, moves the alias only if the challenger is better, and records the decision and both scores in
MLflow. With nothing new it does nothing and says so (exit 0).

    vmr retrain --config configs/retrain.yaml incoming=s3://footage/incoming store=s3://footage/features

Schedule it with cron and ``ray job submit --submission-id retrain-<date>`` (see configs/retrain.yaml and README).
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="overrides, e.g. incoming=s3://b/incoming store=s3://b/features min_improvement=0.5")
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="retraining YAML (repeatable; default: configs/retrain.yaml)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on the last line")


def resolve_retrain(args):
    """The :class:`vmr.pipeline.retrain.RetrainConfig` of parsed arguments."""
    from vmr.config import resolve
    from vmr.errors import ConfigError
    from vmr.pipeline.retrain import RetrainConfig
    from vmr.pipeline.workflow_config import bundled_configs

    files = list(args.config) or bundled_configs("retrain.yaml")
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise ConfigError(f"expected key=value overrides, got {bad}")
    return resolve(RetrainConfig, files, args.overrides)


def main_from_args(args) -> int:
    from vmr.commands._train_args import print_result
    from vmr.pipeline.retrain import run_retrain

    result = run_retrain(resolve_retrain(args), announce=lambda s: print(s, flush=True))
    return print_result(result.text(), result, args.json)


def register(subparsers) -> None:
    p = subparsers.add_parser("retrain", help="one round of scheduled retraining on new footage (champion/challenger)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=main_from_args)
