"""``vmr tune``: a hyperparameter sweep on Ray Tune over a finetuning config (every trial one Ray Train run), ASHA on
the validation metric, every trial an MLflow child run of the sweep's parent run; the best config is written out and
its model registered.

    vmr tune --config configs/tune.yaml name=matr-sweep num_samples=8 \\
        --train-config configs/finetune.yaml --train-set data.videos=s3://footage/matches ...

Positional ``key=value`` overrides set the sweep (``configs/tune.yaml`` documents the keys); ``--train-config`` and
``--train-set`` set the training config of every trial. The same ``name`` again resumes a sweep whose driver died.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="sweep overrides, e.g. name=sweep1 num_samples=8 asha.grace_period=1")
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="sweep YAML (repeatable; default: configs/tune.yaml)")
    parser.add_argument("--train-config", action="append", default=[], metavar="FILE",
                        help="finetuning YAML for every trial (repeatable; default: the sweep's train_config, else "
                             "the embedded demo's)")
    parser.add_argument("--train-set", action="append", default=[], metavar="KEY=VALUE",
                        help="finetuning override for every trial (repeatable), e.g. train.epochs=10")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on the last line")


def resolve_sweep(args):
    """The :class:`vmr.pipeline.tune.SweepConfig` of parsed arguments."""
    from vmr.config import resolve
    from vmr.errors import ConfigError
    from vmr.pipeline.tune import SweepConfig
    from vmr.pipeline.workflow import bundled_configs

    files = list(args.config) or bundled_configs("tune.yaml")
    bad = [o for o in [*args.overrides, *args.train_set] if "=" not in o]
    if bad:
        raise ConfigError(f"expected key=value overrides, got {bad}")
    cfg = resolve(SweepConfig, files, args.overrides)
    if args.train_config:
        cfg.train_config = list(args.train_config)
    cfg.train_overrides = [*cfg.train_overrides, *args.train_set]
    return cfg


def main_from_args(args) -> int:
    from vmr.commands._train_args import print_result
    from vmr.pipeline.tune import run_sweep

    result = run_sweep(resolve_sweep(args), announce=lambda s: print(s, flush=True))
    return print_result(result.text(), result, args.json)


def register(subparsers) -> None:
    p = subparsers.add_parser("tune", help="hyperparameter sweep (Ray Tune + ASHA, MLflow parent/child runs)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=main_from_args)
