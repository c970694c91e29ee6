"""``vmr annotations check FILE``: validate an annotation file before anyone trains on it.

Prints a one-line summary and the errors by line (``--json``: ``{"format", "rows", "valid", "duplicates", "errors":
[{"line", "error"}], ...}``). Exit code 1 when the file has errors, 0 when it has none; a file that cannot be read at all
(missing, not text, unknown format) is a one-line error with exit code 2.
"""
from __future__ import annotations

import json

from vmr.annotations.detect import FORMATS

MAX_PRINTED = 20


def register(subparsers) -> None:
    p = subparsers.add_parser("annotations", help="check annotation files",
                              description="Work with annotation files (moments in seconds).")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = sub.add_parser("check", help="validate an annotation file",
                       description="Validate every row of an annotation file: ranges, durations, classes, duplicates. "
                                   "Exit code 1 when there are errors.")
    c.add_argument("file", metavar="FILE", help="annotation file (path or URI)")
    c.add_argument("--format", choices=FORMATS, default=None, help="the file's format (guessed from its content if "
                                                                    "not given)")
    c.add_argument("--store", default=None, metavar="URI",
                   help="feature store: check that every video is there and spans fit its duration")
    c.add_argument("--video-id-prefix", default="", metavar="PREFIX",
                   help="prepended to the file's video ids to get the store's ids (e.g. 'sportsmoments/')")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(func=run_check)


def run_check(args) -> int:
    from vmr.annotations import check

    report = check(args.file, args.format, args.store, video_id_prefix=args.video_id_prefix)
    if args.json:
        print(json.dumps(report.to_json(), indent=1))
    else:
        print(report.summary())
        for note in report.notes:
            print(f"  note: {note}")
        for e in report.errors[:MAX_PRINTED]:
            print(f"  {report.file}:{e['line']}: {e['error']}")
        if len(report.errors) > MAX_PRINTED:
            print(f"  ... and {len(report.errors) - MAX_PRINTED} more errors (--json lists them all)")
    return 1 if report.errors else 0
