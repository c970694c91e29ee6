"""Match annotations for new footage -> :class:`ActionInstance` records (what scheduled retraining feeds on).

Schema: a CSV with a header line and one action instance per line; times in seconds from the start of the video::

    video_id,action_class,start,end
    match_2024_05_01,corner kick,1312.4,1318.0

``video_id`` is the video's feature-store id, ``action_class`` any non-empty name, ``[start, end)`` the action.
Extra columns (notes, annotator) are allowed and ignored. Classes are checked against a class list when one is known:
``classes=`` or a ``classes.txt`` (one class per line) in the same folder. Durations come from the feature store; with
no store, ranges are only checked for ``0 <= start < end`` and the rows counted as unchecked.

Duplicates are identical (video, class, start, end) rows; counted and dropped unless ``dedupe=False``.
Pairs are built from these instances by :func:`vmr.data.match_pairs.build_match_pairs`.
"""
from __future__ import annotations

import csv
import io
from typing import Iterable

from vmr import storage
from vmr.annotations.records import (
    OVERRUN_TOLERANCE,
    ActionInstance,
    Annotations,
    LoadReport,
    RowError,
    SpanChecker,
    VideoIndex,
    collect,
    parse_seconds,
    read_text,
)
from vmr.errors import InputError

FORMAT = "matches"
COLUMNS = ("video_id", "action_class", "start", "end")
CLASSES_FILE = "classes.txt"


def load_classes(uri: str) -> list[str] | None:
    """``classes.txt`` next to ``uri`` (one class per line, blank lines and ``#`` comments ignored), or ``None``."""
    path = storage.join(storage.parent(uri), CLASSES_FILE)
    if not storage.exists(path):
        return None
    return [c.strip() for c in read_text(path).splitlines() if c.strip() and not c.strip().startswith("#")]


def load(uri: str, videos: VideoIndex | None = None, *, on_error: str = "raise", dedupe: bool = True,
         tolerance: float = OVERRUN_TOLERANCE, classes: Iterable[str] | None = None,
         video_id_prefix: str = "") -> Annotations:
    """Read a match-annotation CSV (schema in the module docstring); ``on_error`` as in
    :func:`vmr.annotations.sportsmoments.load`."""
    text = read_text(uri)
    report = LoadReport(file=uri, format=FORMAT)
    if classes is None:
        classes = load_classes(uri)
        if classes is not None:
            report.notes.append(f"classes checked against {CLASSES_FILE} ({len(classes)} classes)")
    known = set(classes) if classes is not None else None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise InputError(f"{uri}: empty file; expected the header {','.join(COLUMNS)}")
    header = [h.strip() for h in header]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise InputError(f"{uri}:1: header lacks {missing}; expected {','.join(COLUMNS)}")
    extra = [h for h in header if h not in COLUMNS]
    if extra:
        report.notes.append(f"extra columns ignored: {extra}")
    col = {c: header.index(c) for c in COLUMNS}
    checker = SpanChecker(report, videos, tolerance=tolerance)

    def rows():
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            yield reader.line_num, row

    def parse(line: int, row: list[str]) -> ActionInstance:
        if len(row) != len(header):
            raise RowError(f"malformed row: {len(row)} fields, the header has {len(header)}")
        vid = row[col["video_id"]].strip()
        cls = row[col["action_class"]].strip()
        if not vid:
            raise RowError("video_id is empty")
        if not cls:
            raise RowError("action_class is empty")
        if known is not None and cls not in known:
            raise RowError(f"unknown class {cls!r} (not in the class list)")
        vid = video_id_prefix + vid
        start = parse_seconds(row[col["start"]].strip(), "start")
        end = parse_seconds(row[col["end"]].strip(), "end")
        duration = checker.duration(vid)
        start, end = checker.check(line, vid, start, end, duration, what="instance")
        return ActionInstance(video_id=vid, action_class=cls, start=start, end=end, line=line)

    records = collect(report, rows(), parse, lambda r: (r.video_id, r.action_class, r.start, r.end), dedupe)
    if on_error == "raise":
        report.raise_if_errors()
    return Annotations(FORMAT, records, report)
