"""``vmr extract``: embed the sampled frames of every video under --videos with CLIP into the feature store --out.

Runs the Ray Data pipeline of vmr.pipeline.extract on the Ray cluster in RAY_ADDRESS, or on a local one. A re-run
skips videos already extracted from the same source (size and etag) with the same settings. Bad files (empty,
truncated, not a video, undecodable codec, shorter than one sample) are listed with a reason at the end and stored in
the store's failures.json; the other videos are still done. Exit code: 0, or 1 when a failure was an error rather
than bad input (re-run to retry) or, with --strict, when anything failed; 2 for a usage error.
"""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from vmr.pipeline.extract import add_arguments

    p = subparsers.add_parser("extract", help="CLIP frame features of videos into a feature store (Ray Data)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from vmr.pipeline.extract import main_from_args

    return main_from_args(args)
