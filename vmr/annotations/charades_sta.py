"""Charades-STA -> :class:`TextMoment` records.

Schema: one sentence per line, ``VID start end##sentence``, times in seconds::

    3MSZA 24.3 30.4##person turn a light on.

``VID`` is the Charades video id (the feature-store id). The lines carry no durations: they come from the feature store
when given, else from ``Charades_v1_train.csv``/``Charades_v1_test.csv`` (columns ``id``, ``length``) in the same folder
when present, else the row is counted as unchecked. The real test split overruns the Charades_v1 lengths by up to
1.5 s on 562 of 3720 lines; such ends are clipped to the duration and counted (see ``OVERRUN_TOLERANCE``).

``qid`` is ``{VID}#{line}`` (the file has none). Duplicates are identical lines.
"""
from __future__ import annotations

import csv
import io

from vmr import storage
from vmr.annotations.records import (
    OVERRUN_TOLERANCE,
    Annotations,
    LoadReport,
    RowError,
    SpanChecker,
    TextMoment,
    VideoIndex,
    VideoInfo,
    collect,
    parse_seconds,
    read_text,
)
from vmr.errors import InputError

FORMAT = "charades-sta"
LENGTH_FILES = ("Charades_v1_train.csv", "Charades_v1_test.csv")


def load_lengths(uri: str, video_id_prefix: str = "") -> VideoIndex | None:
    """Durations from the Charades_v1 CSVs next to ``uri`` (a partial index), or ``None`` if there are none."""
    folder = storage.parent(uri)
    infos: dict[str, VideoInfo] = {}
    used = []
    for name in LENGTH_FILES:
        path = storage.join(folder, name)
        if not storage.exists(path):
            continue
        used.append(name)
        for i, row in enumerate(csv.DictReader(io.StringIO(read_text(path))), start=2):
            try:
                infos[video_id_prefix + row["id"]] = VideoInfo(duration=float(row["length"]))
            except (KeyError, TypeError, ValueError):
                raise InputError(f"{path}:{i}: expected columns id and length (seconds)") from None
    if not used:
        return None
    return VideoIndex.from_mapping(infos, " and ".join(used), complete=False)


def load(uri: str, videos: VideoIndex | None = None, *, on_error: str = "raise", dedupe: bool = True,
         tolerance: float = OVERRUN_TOLERANCE, lengths: VideoIndex | None = None,
         video_id_prefix: str = "") -> Annotations:
    """Read a Charades-STA txt file; ``lengths`` overrides the side-file durations; ``on_error`` as in
    :func:`vmr.annotations.sportsmoments.load`."""
    text = read_text(uri)
    report = LoadReport(file=uri, format=FORMAT)
    if lengths is None and videos is None:
        lengths = load_lengths(uri, video_id_prefix)
    if lengths is not None and videos is None:
        report.notes.append(f"durations from {lengths.source}")
    checker = SpanChecker(report, videos, side=lengths, tolerance=tolerance)

    def rows():
        for i, raw in enumerate(text.splitlines(), start=1):
            if raw.strip():
                yield i, raw

    def parse(line: int, raw: str) -> TextMoment:
        if "##" not in raw:
            raise RowError("malformed row: expected 'VID start end##sentence'")
        head, sentence = raw.split("##", 1)
        fields = head.split()
        if len(fields) != 3:
            raise RowError(f"malformed row: expected 'VID start end' before '##', got {head.strip()!r}")
        sentence = sentence.strip()
        if not sentence:
            raise RowError("the sentence is empty")
        vid = video_id_prefix + fields[0]
        start, end = parse_seconds(fields[1], "start"), parse_seconds(fields[2], "end")
        duration = checker.duration(vid)
        span = checker.check(line, vid, start, end, duration)
        return TextMoment(qid=f"{vid}#{line}", vid=vid, sentence=sentence, duration=duration, spans=(span,), line=line)

    records = collect(report, rows(), parse, lambda r: (r.vid, r.spans, r.sentence), dedupe)
    if on_error == "raise":
        report.raise_if_errors()
    return Annotations(FORMAT, records, report)
