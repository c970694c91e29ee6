"""``vmr search``: the best moments of a query (video clip or sentence) across every video of a feature store.

A store with a vector index (vmr index build) is searched in two stages: the index shortlists spans, the model
re-ranks only those (--exact: every window of every video instead). Exhaustively, windows of many videos share each
forward pass; stores of many hours go through Ray Data (an actor pool holding the model; the cluster in RAY_ADDRESS or
a local one), smaller ones run in this process (--ray / --no-ray force either).
Prints video, start and end seconds and score per moment, best first (or --json). Exit code 0, or 2 with a one-line
error for bad input (an empty store, a query longer than every video, features made otherwise than the model's).
"""
from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    from vmr.commands.localize import add_common

    p = subparsers.add_parser("search", help="find the moments of a query across a whole feature store",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p, top_k=10)
    p.add_argument("--corpus", required=True, metavar="FEATURE_STORE_URI", help="the feature store to search")
    ray = p.add_mutually_exclusive_group()
    ray.add_argument("--ray", dest="use_ray", action="store_true", default=None, help="always use Ray Data")
    ray.add_argument("--no-ray", dest="use_ray", action="store_false", help="never use Ray Data")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from vmr.commands.localize import _notices, make_localizer
    from vmr.pipeline.search import search_store

    loc = make_localizer(args, args.corpus)
    result = search_store(loc, args.query, args.corpus, args.top_k, text=args.text, use_ray=args.use_ray,
                          exact=True if args.exact else None, progress=lambda s: print(s, file=sys.stderr, flush=True))
    _notices(loc)
    if args.json:
        print(json.dumps({"corpus": args.corpus, "model": loc.source, "path": result.path, "videos": result.videos,
                          "skipped": result.skipped, "hits": [h.to_dict() for h in result.hits]}))
        return 0
    width = max([len("video")] + [len(h.video_id) for h in result.hits])
    print(f"{'video':<{width}}  {'start_s':>9}  {'end_s':>9}  {'score':>8}")
    for h in result.hits:
        print(f"{h.video_id:<{width}}  {h.start:>9.2f}  {h.end:>9.2f}  {h.score:>8.4f}")
    return 0
