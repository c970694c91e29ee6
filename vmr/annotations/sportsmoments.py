"""SportsMoments pairs CSV (MATR's dataset) -> :class:`VideoPair` records.

Schema (a header line, then one pair per line; times in seconds)::

    query_id,reference_id,reference_segment_start,reference_segment_end,action_class,reference_duration
    iGGElV40TcU__5_1816.mp4,MbdWVX2jUhA__5_889.mp4,60.3,73.3,5,133.70000000000073

``query_id`` and ``reference_id`` name *clip files* cut from the 80 full matches, ``{youtube_id}__{class}_{n}.mp4``:
the query clip shows one instance of the action (the whole clip is the query), the reference clip is a longer clip in
which the action happens at ``[reference_segment_start, reference_segment_end)`` seconds from the clip's start, and
``reference_duration`` is the reference clip's length. The times are *not* positions in the full match.

Video ids: a clip is ingested as its own video, so its feature-store id is the file name without the extension
(``iGGElV40TcU__5_1816``), optionally under ``video_id_prefix`` (``"sportsmoments/"`` when the clips were ingested from
a ``sportsmoments/`` folder of the raw prefix). The class in the ids must equal ``action_class``; the class must be one
of ``id_class_mapping.json`` (read from the same folder when present, or given as ``class_names``).

Duplicates are identical rows (the real test split has 42); they are counted and dropped unless ``dedupe=False``.
"""
from __future__ import annotations

import csv
import io
import json
import re

from vmr import storage
from vmr.annotations.records import (
    OVERRUN_TOLERANCE,
    Annotations,
    LoadReport,
    RowError,
    SpanChecker,
    VideoIndex,
    VideoPair,
    collect,
    parse_seconds,
    read_text,
)
from vmr.errors import InputError

FORMAT = "sportsmoments"
COLUMNS = ("query_id", "reference_id", "reference_segment_start", "reference_segment_end", "action_class",
           "reference_duration")
CLIP_ID = re.compile(r"^(?P<youtube_id>.+)__(?P<cls>\d+)_(?P<n>\d+)(?:\.[A-Za-z0-9]+)?$")
MAPPING_FILE = "id_class_mapping.json"


def clip_video_id(clip: str, prefix: str = "") -> str:
    """``"iGGElV40TcU__5_1816.mp4"`` -> ``prefix + "iGGElV40TcU__5_1816"`` (the clip's feature-store id)."""
    stem = clip.rsplit(".", 1)[0] if re.search(r"\.[A-Za-z0-9]+$", clip) else clip
    return prefix + stem


def load_class_names(uri: str) -> dict[str, str] | None:
    """``id_class_mapping.json`` next to ``uri`` as ``{"1": "lbw", ...}``, or ``None`` if there is none."""
    path = storage.join(storage.parent(uri), MAPPING_FILE)
    if not storage.exists(path):
        return None
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from e
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object {{class id: name}}")
    return {str(k): str(v) for k, v in data.items()}


def load(uri: str, videos: VideoIndex | None = None, *, on_error: str = "raise", dedupe: bool = True,
         tolerance: float = OVERRUN_TOLERANCE, class_names: dict[str, str] | None = None,
         video_id_prefix: str = "") -> Annotations:
    """Read a SportsMoments CSV. ``videos`` (from the feature store) adds checks: both clips exist and the reference's
    duration agrees with the store's. ``on_error="raise"`` raises on the first bad row (naming file and line) after
    reading the whole file; ``"skip"`` leaves bad rows out and lists them in the report."""
    text = read_text(uri)
    report = LoadReport(file=uri, format=FORMAT)
    if class_names is None:
        class_names = load_class_names(uri)
        if class_names is not None:
            report.notes.append(f"classes checked against {MAPPING_FILE} ({len(class_names)} classes)")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise InputError(f"{uri}: empty file; expected the header {','.join(COLUMNS)}")
    header = [h.strip() for h in header]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise InputError(f"{uri}:1: header lacks {missing}; expected {','.join(COLUMNS)}")
    col = {c: header.index(c) for c in COLUMNS}
    checker = SpanChecker(report, videos, tolerance=tolerance)

    def rows():
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            yield reader.line_num, row

    def parse(line: int, row: list[str]) -> VideoPair:
        if len(row) != len(header):
            raise RowError(f"malformed row: {len(row)} fields, the header has {len(header)}")
        get = {c: row[i].strip() for c, i in col.items()}
        cls = get["action_class"]
        if not cls.isdigit():
            raise RowError(f"action_class is {cls!r}, not a class id")
        cls = str(int(cls))
        if class_names is not None and cls not in class_names:
            raise RowError(f"unknown class {cls} (not in {MAPPING_FILE})")
        ids = {}
        for name in ("query_id", "reference_id"):
            m = CLIP_ID.match(get[name])
            if not m:
                raise RowError(f"{name} {get[name]!r} is not of the form {{youtube_id}}__{{class}}_{{n}}.mp4")
            if str(int(m["cls"])) != cls:
                raise RowError(f"{name} {get[name]!r} names class {m['cls']} but action_class is {cls}")
            ids[name] = clip_video_id(get[name], video_id_prefix)
        start = parse_seconds(get["reference_segment_start"], "reference_segment_start")
        end = parse_seconds(get["reference_segment_end"], "reference_segment_end")
        stated = parse_seconds(get["reference_duration"], "reference_duration")
        if stated <= 0:
            raise RowError(f"reference_duration {stated:g} s is not positive")
        checker.find(ids["query_id"])
        duration = checker.duration(ids["reference_id"], stated, "reference_duration")
        span = checker.check(line, ids["reference_id"], start, end, duration)
        return VideoPair(query_video=ids["query_id"], target_video=ids["reference_id"], spans=(span,),
                         action_class=cls, target_duration=duration, line=line)

    def key(p: VideoPair):
        return (p.query_video, p.target_video, p.spans, p.action_class, p.target_duration)

    records = collect(report, rows(), parse, key, dedupe)
    if on_error == "raise":
        report.raise_if_errors()
    return Annotations(FORMAT, records, report, class_names)
