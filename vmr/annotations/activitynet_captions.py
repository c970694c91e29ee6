"""ActivityNet Captions -> :class:`TextMoment` records (one per sentence).

Schema: one JSON object keyed by video id; times in seconds::

    {"v_QOlSCBRmfWY": {"duration": 82.73, "timestamps": [[0.83, 19.86], ...], "sentences": ["A young woman ...", ...]}}

The key is the feature-store id (``v_{youtube_id}``); ``timestamps[k]`` is the span of ``sentences[k]``. A row is one
sentence; its ``line`` is the sentence's 1-based number in file order (the files are one-line JSON documents) and its
messages name the video and the sentence index. A malformed video record (missing keys, lists of different lengths)
counts as one row. ``qid`` is ``{vid}#{k}``.

Real data: the train split has 4 sentences whose end is not after their start (reported as errors), and ends overrun
the duration by up to 0.01 s (clipped, counted). Duplicates are identical (video, span, sentence).
"""
from __future__ import annotations

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
    read_json_document,
    read_text,
)
from vmr.errors import InputError

FORMAT = "activitynet-captions"


def load(uri: str, videos: VideoIndex | None = None, *, on_error: str = "raise", dedupe: bool = True,
         tolerance: float = OVERRUN_TOLERANCE, video_id_prefix: str = "") -> Annotations:
    """Read an ActivityNet Captions JSON file; ``on_error`` as in :func:`vmr.annotations.sportsmoments.load`."""
    data = read_json_document(read_text(uri), uri)
    if not isinstance(data, dict):
        raise InputError(f"{uri}: expected a JSON object {{video id: {{duration, timestamps, sentences}}}}")
    report = LoadReport(file=uri, format=FORMAT)
    checker = SpanChecker(report, videos, tolerance=tolerance)

    def rows():
        n = 0
        for vid, rec in data.items():
            ok = (isinstance(rec, dict) and isinstance(rec.get("timestamps"), list)
                  and isinstance(rec.get("sentences"), list) and len(rec["timestamps"]) == len(rec["sentences"]))
            if not ok:
                n += 1
                yield n, (vid, rec, None)
                continue
            for k in range(len(rec["sentences"])):
                n += 1
                yield n, (vid, rec, k)

    def parse(line: int, item) -> TextMoment:
        vid, rec, k = item
        where = f"video {vid!r}" + (f" sentence {k}" if k is not None else "")
        try:
            if k is None:
                if not isinstance(rec, dict):
                    raise RowError("malformed record: not a JSON object")
                missing = [f for f in ("duration", "timestamps", "sentences") if f not in rec]
                if missing:
                    raise RowError(f"malformed record: missing {missing}")
                raise RowError(f"malformed record: {len(rec['timestamps'])} timestamps for "
                               f"{len(rec['sentences'])} sentences")
            if "duration" not in rec:
                raise RowError("malformed record: missing ['duration']")
            stated = parse_seconds(rec["duration"], "duration")
            if stated <= 0:
                raise RowError(f"duration {stated:g} s is not positive")
            sentence = rec["sentences"][k]
            if not isinstance(sentence, str) or not sentence.strip():
                raise RowError(f"sentence is {sentence!r}, not a non-empty string")
            full = video_id_prefix + vid
            duration = checker.duration(full, stated)
            s, e = parse_span(rec["timestamps"][k], "timestamp")
            span = checker.check(line, full, s, e, duration, what="timestamp")
        except RowError as err:
            raise RowError(f"{where}: {err}") from None
        return TextMoment(qid=f"{full}#{k}", vid=full, sentence=sentence.strip(), duration=duration, spans=(span,),
                          line=line)

    records = collect(report, rows(), parse, lambda r: (r.vid, r.spans, r.sentence), dedupe)
    if on_error == "raise":
        report.raise_if_errors()
    return Annotations(FORMAT, records, report)
