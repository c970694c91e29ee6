"""``vmr localize``: the best moments of a query (a video clip or a sentence) in one target video, in seconds.

The target is a video id of the feature store (--store) or a video file (path or URI); its stored features are used
when the store holds that file, otherwise it is extracted now. --model takes an MLflow model URI
(models:/vmr-matr@champion, models:/vmr-matr/latest, runs:/<id>/model; MLFLOW_TRACKING_URI says where), a checkpoint
path or URI (local, s3://, gs://), or 'baseline' (the training-free cosine baseline). Long targets are searched in
sliding windows of the model's training length (see vmr.search.localizer). Exit code 0, or 2 with a one-line error for bad
input (missing or unsupported files, a query longer than the target, features made otherwise than the model's).
"""
from __future__ import annotations

import argparse
import sys

from vmr.features.settings import DEFAULT_MODEL as DEFAULT_CLIP_MODEL

DEFAULT_MODELS = {"video": "models:/vmr-matr@champion", "text": "models:/vmr-a2fa@champion"}


def add_common(p: argparse.ArgumentParser, top_k: int) -> None:
    """Options shared by ``vmr localize`` and ``vmr search``."""
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--query", metavar="CLIP", help="the query video clip (path, file://, s3://, gs://)")
    q.add_argument("--text", metavar="SENTENCE", help="a text query (needs a text model, e.g. vmr-a2fa, or baseline)")
    p.add_argument("--model", default=None,
                   help=f"MLflow model URI, checkpoint path/URI, or 'baseline' (default {DEFAULT_MODELS['video']} "
                        f"for --query, {DEFAULT_MODELS['text']} for --text)")
    p.add_argument("--top-k", type=int, default=top_k, help=f"moments to return (default {top_k})")
    p.add_argument("--json", action="store_true", help="print JSON on stdout instead of a table")
    p.add_argument("--window-s", type=float, default=None,
                   help="sliding-window length in seconds (default: the model's training length, 180 s if unknown; "
                        "the baseline scores whole videos)")
    p.add_argument("--overlap-s", type=float, default=None, help="window overlap in seconds (default half a window)")
    p.add_argument("--device", default=None, help="torch device (default cuda when available, else cpu)")
    p.add_argument("--clip-model", default=None,
                   help=f"baseline without a feature store only: CLIP model to embed videos with (default {DEFAULT_CLIP_MODEL})")
    p.add_argument("--pretrained", default=None,
                   help="baseline without a feature store only: CLIP weights (default openai; 'none' = random)")
    p.add_argument("--fps", type=float, default=None,
                   help="baseline without a feature store only: samples per second (default 0.5)")
    p.add_argument("--exact", action="store_true",
                   help="score every window even when the feature store has a vector index (default: the index "
                        "shortlists spans, the model re-ranks them)")


def register(subparsers) -> None:
    p = subparsers.add_parser("localize", help="find the moments of a query clip or sentence in one video",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p, top_k=5)
    p.add_argument("--target", required=True, help="video id in --store, or a video file (path or URI)")
    p.add_argument("--store", default=None, help="feature store URI holding extracted targets")
    p.add_argument("--plot", metavar="PNG", default=None,
                   help="write a PNG: score timeline, top moments, thumbnails of the query and of the best moment")
    p.add_argument("--gt", nargs=2, type=float, metavar=("START", "END"), default=None,
                   help="ground-truth moment in seconds, drawn in the plot")
    p.set_defaults(func=run)


def make_localizer(args, store: str | None):
    """A :class:`vmr.search.localizer.Localizer` from the shared options (raises ConfigError for bad combinations)."""
    from vmr.errors import ConfigError
    from vmr.search.localizer import Localizer, default_feature_settings

    model = args.model or DEFAULT_MODELS["text" if args.text is not None else "video"]
    features = None
    overrides = {k: v for k, v in (("model", args.clip_model), ("pretrained", args.pretrained), ("fps", args.fps))
                 if v is not None}
    if overrides:
        if model != "baseline":
            raise ConfigError("--clip-model/--pretrained/--fps only apply to --model baseline (a trained model "
                              "embeds queries with the settings it was trained on)")
        if args.fps is not None and not args.fps > 0:
            raise ConfigError(f"--fps must be positive, got {args.fps}")
        import dataclasses

        features = dataclasses.replace(default_feature_settings(), **overrides)
    if args.top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {args.top_k}")
    return Localizer(model, store, device=args.device, window_s=args.window_s, overlap_s=args.overlap_s,
                     features=features)


def _notices(loc) -> None:
    for n in loc.notices():
        print(n, file=sys.stderr)


def run(args) -> int:
    import json

    from vmr.errors import ConfigError

    if args.gt is not None and not args.gt[0] < args.gt[1]:
        raise ConfigError(f"--gt START END needs START < END, got {args.gt[0]} {args.gt[1]}")
    loc = make_localizer(args, args.store)
    result = loc.localize_details(args.target, args.query, text=args.text, top_k=args.top_k,
                                  curve=bool(args.plot), exact=True if args.exact else None)
    _notices(loc)
    if args.plot:
        from vmr.search.plots import plot_localization

        plot_localization(result, args.plot, gt=tuple(args.gt) if args.gt else None,
                          title=f"{loc.kind} model: {loc.source}")
        print(f"plot written to {args.plot}", file=sys.stderr)
    if args.json:
        print(json.dumps({"target": args.target, "video_id": result.target_id, "duration": result.duration,
                          "model": loc.source, "path": result.path, "moments": [m.to_dict() for m in result.moments]}))
        return 0
    windows = f", {len(result.windows)} windows" if len(result.windows) > 1 else ""
    print(f"{result.target_id} ({result.duration:.1f} s{windows}), {loc.kind} model {loc.source}: "
          f"{len(result.moments)} moments")
    print(f"{'rank':>4}  {'start_s':>9}  {'end_s':>9}  {'score':>8}")
    for i, m in enumerate(result.moments, 1):
        print(f"{i:>4}  {m.start:>9.2f}  {m.end:>9.2f}  {m.score:>8.4f}")
    return 0
