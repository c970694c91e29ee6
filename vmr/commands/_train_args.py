"""Arguments and entry shared by ``vmr pretrain``, ``vmr finetune`` and ``workflows/{pretrain,finetune}.py`` (and the
result printing of ``vmr tune`` and ``vmr retrain``).

Configuration is layered: the YAML files given with ``--config`` (repeatable; none = the embedded demo's
``configs/demo.yaml`` + ``configs/demo_<workflow>.yaml``), then ``key.sub=value`` overrides, then the first-class
flags below. Light imports only: the workflow (Ray, MLflow) is imported when the command runs.
"""
from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. train.epochs=5 model.matr.d_model=256 data.videos=s3://b/videos")
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="YAML config file (repeatable, later files win; default: the embedded demo's configs)")
    parser.add_argument("--num-workers", type=int, help="Ray Train workers (trainer.num_workers)")
    parser.add_argument("--use-gpu", action="store_true", default=None, help="one GPU per worker, AMP (trainer.use_gpu)")
    parser.add_argument("--run-name", help="run name; the same name again resumes the run (run_name)")
    parser.add_argument("--storage-path", help="checkpoint folder: a path or s3:// URI (trainer.storage_path)")
    parser.add_argument("--workdir", help="folder for demo footage, features, runs and mlflow.db (data.workdir)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on the last line")


def overrides_from_args(args) -> list[str]:
    """The ``key=value`` overrides, then the first-class flags (which win)."""
    out = list(args.overrides)
    for flag, key in (("num_workers", "trainer.num_workers"), ("run_name", "run_name"),
                      ("storage_path", "trainer.storage_path"), ("workdir", "data.workdir")):
        value = getattr(args, flag, None)
        if value is not None:
            out.append(f"{key}={value}")
    if getattr(args, "use_gpu", None):
        out.append("trainer.use_gpu=true")
    bad = [o for o in out if "=" not in o]
    if bad:
        from vmr.errors import ConfigError

        raise ConfigError(f"expected key=value overrides, got {bad}")
    return out


def main_from_args(workflow: str, args) -> int:
    """Resolve the config, run the workflow, print where everything is. Returns the exit code."""
    from vmr.pipeline.workflow import resolve_config, run_workflow, summary_text

    cfg, files = resolve_config(workflow, args.config, overrides_from_args(args))
    result = run_workflow(workflow, cfg, config_files=files)
    return print_result(summary_text(result), result, args.json)


def print_result(text: str, result, as_json: bool) -> int:
    """Print a training command's summary ``text`` and, with ``as_json``, ``result.to_json()`` as JSON on the last
    line (what scripts parse). Returns the exit code, 0."""
    print(text, flush=True)
    if as_json:
        print(json.dumps(result.to_json(), default=str), flush=True)
    sys.stdout.flush()
    return 0
