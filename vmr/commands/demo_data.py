"""``vmr demo-data --out URI``: render the synthetic demo match archive (videos + match annotations).

Writes ``{out}/videos/matchNN.mp4`` and ``{out}/annotations/matches.csv`` (``video_id,action_class,start,end`` in
seconds) plus ``{out}/annotations/classes.txt``. The same --seed gives the same archive. See vmr.data.demo.
"""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("demo-data", help="render a small synthetic match archive with annotated actions",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder or URI (s3://bucket/demo, ...)")
    p.add_argument("--videos", type=int, default=12, help="number of videos (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--min-seconds", type=float, default=60.0, help="shortest video, seconds (default: %(default)s)")
    p.add_argument("--max-seconds", type=float, default=120.0, help="longest video, seconds (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    import sys

    from vmr.data.demo import render_demo_archive

    result = render_demo_archive(
        args.out, n_videos=args.videos, seed=args.seed, duration_range=(args.min_seconds, args.max_seconds),
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    if args.json:
        print(json.dumps(result))
    else:
        total = sum(result["durations"].values())
        print(f"rendered {len(result['videos'])} videos ({total / 60:.1f} min) with {len(result['instances'])} "
              f"actions of {len(result['classes'])} classes in {result['seconds']:.1f} s")
        print(f"videos:      {args.out.rstrip('/')}/videos/")
        print(f"annotations: {result['annotations']}")
    return 0
