"""QVHighlights (Moment-DETR jsonl) -> :class:`TextMoment` records.

Schema: one JSON object per line; times in seconds::

    {"qid": 8737, "query": "A family is playing basketball ...", "duration": 126, "vid": "bP5KfdFJzC4_660.0_810.0",
     "relevant_windows": [[0, 16]], "relevant_clip_ids": [...], "saliency_scores": [...]}

``vid`` is the feature-store id (``{youtube_id}_{start}_{end}``: a 150 s cut of a YouTube video, ingested as its own
video); ``relevant_windows`` the ground-truth spans ``[start, end)`` (absent in test files released without ground truth:
such rows load with no spans and are counted in a note). ``relevant_clip_ids``/``saliency_scores`` (highlight
detection) are not used. ``duration`` is checked against the feature store's when one is given.

Duplicates: rows with the same qid and content; a qid repeated with *different* content is an error.
"""
from __future__ import annotations

import json

from vmr.annotations.records import (
    OVERRUN_TOLERANCE,
    Annotations,
    LoadReport,
    RowError,
    SpanChecker,
    TextMoment,
    VideoIndex,
    collect,
    parse_seconds,
    parse_span,
    read_text,
)

FORMAT = "qvhighlights"
REQUIRED = ("qid", "query", "duration", "vid")


def load(uri: str, videos: VideoIndex | None = None, *, on_error: str = "raise", dedupe: bool = True,
         tolerance: float = OVERRUN_TOLERANCE, video_id_prefix: str = "") -> Annotations:
    """Read a QVHighlights jsonl file; ``on_error`` as in :func:`vmr.annotations.sportsmoments.load`."""
    text = read_text(uri)
    report = LoadReport(file=uri, format=FORMAT)
    checker = SpanChecker(report, videos, tolerance=tolerance)
    first_line: dict[str, tuple[int, tuple]] = {}
    no_gt = 0

    def rows():
        for i, raw in enumerate(text.splitlines(), start=1):
            if raw.strip():
                yield i, raw

    def parse(line: int, raw: str) -> TextMoment:
        nonlocal no_gt
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as e:
            raise RowError(f"malformed row: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise RowError("malformed row: not a JSON object")
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            raise RowError(f"malformed row: missing {missing}")
        qid, vid, sentence = str(row["qid"]), video_id_prefix + str(row["vid"]), str(row["query"]).strip()
        if not sentence:
            raise RowError("query is empty")
        stated = parse_seconds(row["duration"], "duration")
        if stated <= 0:
            raise RowError(f"duration {stated:g} s is not positive")
        duration = checker.duration(vid, stated)
        windows = row.get("relevant_windows")
        spans = []
        if windows is None:
            no_gt += 1
        elif not isinstance(windows, list):
            raise RowError(f"relevant_windows is {windows!r}, not a list of [start, end]")
        else:
            for k, w in enumerate(windows):
                s, e = parse_span(w, f"relevant_windows[{k}]")
                spans.append(checker.check(line, vid, s, e, duration, what=f"relevant_windows[{k}]"))
        rec = TextMoment(qid=qid, vid=vid, sentence=sentence, duration=duration, spans=tuple(spans), line=line)
        content = (rec.vid, rec.sentence, rec.spans)
        if qid in first_line and first_line[qid][1] != content:
            raise RowError(f"qid {qid} repeats line {first_line[qid][0]} with different content")
        first_line.setdefault(qid, (line, content))
        return rec

    records = collect(report, rows(), parse, lambda r: (r.qid, r.vid, r.sentence, r.spans), dedupe)
    if no_gt:
        report.notes.append(f"{no_gt} rows have no relevant_windows (no ground truth; usable for prediction only)")
    if on_error == "raise":
        report.raise_if_errors()
    return Annotations(FORMAT, records, report)
