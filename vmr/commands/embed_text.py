"""``vmr embed-text "s1" "s2" ...``: CLIP sentence embeddings (L2-normalised, the joint space of the frame features).

Prints one line per sentence (its embedding size and first values), or with --json an object
``{model, pretrained, random_weights, notice, dim, sentences, embeddings: [[...], ...]}``. The weights default to the
ones ``vmr extract`` uses (the same joint space as its frame features). Random weights (--pretrained none, for tests
and the offline demo) are announced once: a warning line first (with --json: ``notice`` in the JSON and the line on
stderr).
"""
from __future__ import annotations

import argparse

from vmr.features.settings import DEFAULT_MODEL, DEFAULT_PRETRAINED


def register(subparsers) -> None:
    p = subparsers.add_parser("embed-text", help="CLIP sentence embeddings for text queries",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sentences", nargs="+", metavar="SENTENCE", help="one or more sentences (quote each)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="open_clip model name (default: %(default)s)")
    p.add_argument("--pretrained", default=DEFAULT_PRETRAINED,
                   help="open_clip tag (openai, ...), a checkpoint path or URI, or none = random weights "
                        "(default: %(default)s, as vmr extract)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights with --pretrained none")
    p.add_argument("--json", action="store_true", help="print the embeddings as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    import sys

    from vmr.errors import InputError
    from vmr.features.clip import ClipEncoder

    if any(not s.strip() for s in args.sentences):
        raise InputError("empty sentence")
    encoder = ClipEncoder(args.model, args.pretrained, seed=args.seed, warn=False)  # announced below, once
    emb = encoder.encode_text(args.sentences)
    if args.json:
        if encoder.random_weights:
            print(encoder.notice(), file=sys.stderr)
        print(json.dumps(dict(model=encoder.model_name, pretrained=encoder.pretrained,
                              random_weights=encoder.random_weights, notice=encoder.notice(), dim=encoder.dim,
                              sentences=list(args.sentences), embeddings=emb.tolist())))
    else:
        if encoder.random_weights:
            print(encoder.notice())
        for s, e in zip(args.sentences, emb):
            head = " ".join(f"{v:+.4f}" for v in e[:4])
            print(f"{s!r}: {encoder.dim}-d unit vector [{head} ...]")
    return 0
