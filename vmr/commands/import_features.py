"""``vmr import-features --src URI --out URI --clip-seconds S --model NAME --pretrained TAG``: bring precomputed
Moment-DETR / UniVTG style features (``{vid}.npz`` with key ``features``, one row per clip of S seconds) into a
feature store, so that they need not be re-extracted.

Row i gets the timestamp i*S seconds; rows are L2-normalised on the way in. --model and --pretrained record what
produced the features (e.g. ViT-B-32 / openai for the CLIP features those projects ship); the store cannot check it.
"""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("import-features", help="import Moment-DETR/UniVTG .npz feature folders into a store",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="folder (or one file) of {vid}.npz feature files")
    p.add_argument("--out", required=True, help="feature store folder or URI")
    p.add_argument("--clip-seconds", type=float, required=True, help="seconds per feature row (e.g. 2)")
    p.add_argument("--model", required=True, help="CLIP model that made the features (e.g. ViT-B-32)")
    p.add_argument("--pretrained", required=True, help="weights tag that made the features (e.g. openai)")
    p.add_argument("--json", action="store_true", help="print the imported video ids as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from vmr.features.store import import_npz_features

    ids = import_npz_features(args.src, args.out, args.clip_seconds, args.model, args.pretrained)
    if args.json:
        print(json.dumps(dict(store=args.out, imported=ids)))
    else:
        print(f"imported {len(ids)} videos into {args.out}" + (f": {', '.join(ids[:10])}" if ids else "")
              + (" ..." if len(ids) > 10 else ""))
    return 0
