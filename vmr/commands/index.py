"""``vmr index build``: (re)build the vector index of a feature store, used by ``vmr search`` and ``vmr localize``.

The index (FAISS, under {store}/index/) holds every frame row of the store. A build adds the videos extracted since
the last one, replaces re-extracted videos' rows and drops removed videos, without re-indexing the rest (--rebuild:
train and fill a new index from scratch). The previous index stays in use until the new one is complete. vmr extract
keeps an existing index up to date by itself. Exit code 0, or 2 with a one-line error (an empty store, a store that
mixes extraction settings).
"""
from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("index", help="build the vector index of a feature store (fast search)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="index_command", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="build or update the vector index of a feature store", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--store", required=True, metavar="FEATURE_STORE_URI", help="the feature store (path or URI)")
    b.add_argument("--rebuild", action="store_true", help="train and fill a new index instead of updating")
    b.add_argument("--factory", default=None,
                   help="FAISS index factory string (default: IDMap2,Flat up to 200k rows, else IVF{nlist},PQ{dim/8}); "
                        "a new one means a rebuild")
    b.add_argument("--pool", type=int, default=None,
                   help="frame rows averaged into one indexed vector (default 1: every frame row)")
    b.add_argument("--json", action="store_true", help="print what the build did as JSON on stdout")
    b.set_defaults(func=run_build)


def run_build(args) -> int:
    import json

    from vmr.search.index import VectorIndex

    report = VectorIndex(args.store).build(rebuild=args.rebuild, factory=args.factory, pool=args.pool,
                                           progress=lambda s: print(s, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps({"store": args.store, **report.to_dict()}))
        return 0
    what = "rebuilt" if report.rebuilt else ("updated" if report.changed else "already current")
    print(f"index {what}: {report.factory}, {report.vectors} vectors over {report.hours:.2f} h; {report.added} videos "
          f"added, {report.removed} removed, {report.kept} kept ({report.seconds:.1f} s)")
    return 0
