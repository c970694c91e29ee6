"""``vmr eval``: score a predictions jsonl against a ground-truth jsonl (Moment-DETR layout, see vmr.metrics.io).

Tasks:
  moment-detr   Moment-DETR's standalone evaluation (MR R1/mAP per length bucket; HL metrics when the predictions
                carry saliency scores); the JSON is the reference evaluator's object.
  video-query   R1@0.3/0.5/0.7 and mIoU of the top-1 window per query (MATR's protocol).
Without --task: moment-detr when the ground truth has QVHighlights saliency annotations or the predictions have
saliency scores, else video-query (the choice is printed on stderr).
"""
from __future__ import annotations

import argparse
import sys

TASKS = ("moment-detr", "video-query")


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="score predictions against ground truth (jsonl, Moment-DETR layout)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--predictions", required=True, metavar="URI",
                   help="jsonl of {qid, vid, pred_relevant_windows: [[start_s, end_s, score], ...]}")
    p.add_argument("--ground-truth", required=True, metavar="URI",
                   help="jsonl of {qid, vid, duration, relevant_windows: [[start_s, end_s], ...]}")
    p.add_argument("--task", choices=TASKS, default=None, help="metric family (default: guessed, see above)")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.add_argument("--output", metavar="URI", default=None, help="also write the metrics JSON here")
    p.add_argument("--shared-only", action="store_true",
                   help="moment-detr: evaluate only qids present in both files (default: they must match)")
    p.add_argument("--clip-length", type=float, default=2.0,
                   help="moment-detr highlight metrics: seconds per saliency clip (default 2, QVHighlights)")
    p.set_defaults(func=run)


def guess_task(predictions: list[dict], ground_truth: list[dict]) -> str:
    """``moment-detr`` when saliency annotations or saliency predictions are present, else ``video-query``."""
    if any("saliency_scores" in r for r in ground_truth) or any("pred_saliency_scores" in r for r in predictions):
        return "moment-detr"
    return "video-query"


def compute(predictions: list[dict], ground_truth: list[dict], task: str, shared_only: bool = False,
            clip_length: float = 2.0) -> dict:
    """The metrics dict of ``task`` for already-read rows."""
    if task == "moment-detr":
        from vmr.metrics.moment_detr import eval_submission

        return eval_submission(predictions, ground_truth, match_number=not shared_only, clip_length=clip_length)
    from vmr.metrics.video_query import video_query_metrics

    return video_query_metrics(predictions, ground_truth)


def _print_table(metrics: dict, task: str) -> None:
    rows = metrics["brief"] if task == "moment-detr" else metrics
    width = max(len(k) for k in rows)
    for key, value in rows.items():
        print(f"{key:<{width}}  {value:.2f}" if isinstance(value, float) else f"{key:<{width}}  {value}")


def run(args) -> int:
    import json

    from vmr import storage
    from vmr.errors import InputError
    from vmr.metrics.io import read_ground_truth, read_predictions

    if args.clip_length <= 0:
        raise InputError("--clip-length must be positive")
    predictions = read_predictions(args.predictions)
    ground_truth = read_ground_truth(args.ground_truth)
    task = args.task or guess_task(predictions, ground_truth)
    if args.task is None:
        print(f"task: {task} (guessed; pass --task to choose)", file=sys.stderr)
    metrics = compute(predictions, ground_truth, task, args.shared_only, args.clip_length)
    text = json.dumps(metrics, indent=4)
    if args.output:
        storage.write_text_atomic(args.output, text + "\n")
    if args.json:
        print(text)
    else:
        _print_table(metrics, task)
    return 0
