"""The records every annotation format loads into, the load report, and the checks shared by all formats.

All times are **seconds** on the clock of the named video, spans are half-open ``[start, end)``.

Records (immutable; ``line`` says where in the file the record came from, see :class:`LoadReport`):

``VideoPair``      a video-query pair as a file states it (SportsMoments): the query video (optionally a window of it),
                   the target video (optionally a window of it), the ground-truth span(s) in the target, the class.
``ActionInstance`` one labelled action (match annotations, ActivityNet-VRL): video, class, ``[start, end)``; ``context``
                   is the window the instance was annotated inside, when the format has one (ActivityNet-VRL's
                   ``location``). Pairs are *built* from instances (:mod:`vmr.data.pairs`).
``TextMoment``     a sentence and the span(s) of its video it describes (QVHighlights, Charades-STA, ActivityNet
                   Captions); ``spans`` may be empty for test files released without ground truth.

Video information (durations, frame rates) comes from a :class:`VideoIndex`: built from the feature store (then a video
missing from it is an error) or from a format's side file such as ``length.json`` (then a video missing from it is only
left unchecked, and counted).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from vmr.errors import InputError, RowError

#: An annotated end at most this many seconds past the video's duration is clipped to the duration and counted in
#: :attr:`LoadReport.clipped`; further past is an error. Chosen from the real data: Charades-STA's test sentences overrun
#: the Charades_v1 lengths by up to 1.5 s (562 of 3720, annotated on a different decode of the videos) and ActivityNet
#: Captions' ends overrun by up to 0.01 s (rounding). A start at or past the duration is always an error.
OVERRUN_TOLERANCE = 2.0

#: Overruns up to this many seconds are float rounding (``70.28999999999999`` vs ``70.29``): clipped, not counted.
ROUNDING = 1e-6

Span = tuple[float, float]


@dataclass(frozen=True)
class VideoPair:
    """A query video and a target video with the ground-truth span(s) of the query's action in the target.

    ``query_window``/``target_window`` are ``(start, end)`` seconds inside the respective video, ``None`` = the whole
    video. ``spans`` are on the target video's clock. ``target_duration`` is the target's duration *as the file states
    it* (``None`` if the file has none)."""

    query_video: str
    target_video: str
    spans: tuple[Span, ...]
    action_class: str
    query_window: Span | None = None
    target_window: Span | None = None
    target_duration: float | None = None
    line: int = 0


@dataclass(frozen=True)
class ActionInstance:
    """One labelled action ``[start, end)`` seconds in ``video_id``; ``context`` an enclosing window, if the format has
    one."""

    video_id: str
    action_class: str
    start: float
    end: float
    line: int = 0
    context: Span | None = None


@dataclass(frozen=True)
class TextMoment:
    """A sentence describing ``spans`` (K, 2) seconds of video ``vid`` (``duration`` seconds, ``None`` if unknown)."""

    qid: str
    vid: str
    sentence: str
    duration: float | None
    spans: tuple[Span, ...]
    line: int = 0

    @property
    def spans_array(self) -> np.ndarray:
        """The spans as a (K, 2) float64 array."""
        return np.asarray(self.spans, dtype=np.float64).reshape(-1, 2)


@dataclass
class LoadReport:
    """What loading (or checking) one file found.

    ``rows``: data rows read (records for JSON documents); ``valid``: rows that passed every check (duplicates included);
    ``duplicates``: valid rows equal to an earlier one; ``skipped``: rows left out because of an error; ``clipped``: spans
    overrunning the duration by at most :data:`OVERRUN_TOLERANCE` and clipped to it; ``unchecked``: rows whose video has
    no known duration (no store, no side file entry), so their ranges were not checked against one.
    ``errors``: ``{"line": l, "error": "..."}``; ``line`` is the 1-based physical line for line formats (CSV: the
    header is line 1) and the 1-based record number for JSON documents (the message then names the video too).
    ``notes``: what else a user should know (side files used, conversions not done)."""

    file: str
    format: str
    rows: int = 0
    valid: int = 0
    duplicates: int = 0
    skipped: int = 0
    clipped: int = 0
    unchecked: int = 0
    errors: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def error(self, line: int, message: str) -> None:
        self.errors.append({"line": int(line), "error": message})

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict:
        d = asdict(self)
        return {"format": d.pop("format"), "rows": d.pop("rows"), "valid": d.pop("valid"),
                "duplicates": d.pop("duplicates"), "errors": d.pop("errors"), **d}

    def summary(self) -> str:
        """One line: ``file (format): rows, valid, duplicates, skipped, errors``."""
        parts = [f"{self.rows} rows", f"{self.valid} valid", f"{self.duplicates} duplicates", f"{self.skipped} skipped"]
        if self.clipped:
            parts.append(f"{self.clipped} clipped to the duration")
        if self.unchecked:
            parts.append(f"{self.unchecked} without a known duration")
        parts.append(f"{len(self.errors)} errors")
        return f"{self.file} ({self.format}): " + ", ".join(parts)

    def raise_if_errors(self) -> None:
        """An :class:`InputError` naming the file and line of the first error (and how many more there are)."""
        if not self.errors:
            return
        first = self.errors[0]
        more = len(self.errors) - 1
        tail = f" (and {more} more; `vmr annotations check {self.file}` lists them)" if more else ""
        raise InputError(f"{self.file}:{first['line']}: {first['error']}{tail}")


@dataclass
class Annotations:
    """A loaded file: its records (duplicates removed unless asked to keep them), the report, and the class names when
    the format has a mapping (SportsMoments' ``id_class_mapping.json``)."""

    format: str
    records: list
    report: LoadReport
    class_names: dict[str, str] | None = None

    def __len__(self) -> int:
        return len(self.records)


@dataclass(frozen=True)
class VideoInfo:
    """What is known about one video: its ``duration`` in seconds (``None`` where unknown)."""

    duration: float | None = None


class VideoIndex:
    """Looks up :class:`VideoInfo` by video id.

    ``complete=True`` (a feature store) means every video should be there: a missing id is a row error naming
    ``source``. ``complete=False`` (a side file such as Charades_v1_test.csv) means a missing id is only unchecked."""

    def __init__(self, lookup: Callable[[str], VideoInfo | None], source: str, complete: bool):
        self._lookup = lookup
        self._cache: dict[str, VideoInfo | None] = {}
        self.source = source
        self.complete = complete

    def get(self, video_id: str) -> VideoInfo | None:
        if video_id not in self._cache:
            self._cache[video_id] = self._lookup(video_id)
        return self._cache[video_id]

    def __contains__(self, video_id: str) -> bool:
        return self.get(video_id) is not None

    @classmethod
    def from_mapping(cls, infos: Mapping[str, VideoInfo | float], source: str, complete: bool = False) -> "VideoIndex":
        """From ``{video_id: VideoInfo}`` or ``{video_id: duration_seconds}``."""
        data = {k: v if isinstance(v, VideoInfo) else VideoInfo(duration=float(v)) for k, v in infos.items()}
        return cls(data.get, source, complete)

    @classmethod
    def from_store(cls, store: Any) -> "VideoIndex":
        """From a :class:`vmr.features.store.FeatureStore` (its manifest entries' ``duration``; the manifest's ``fps`` is the
        feature sampling rate, not the source's frame rate, so it is not used here)."""

        def lookup(video_id: str) -> VideoInfo | None:
            try:
                entry = store.entry(video_id)
            except InputError as e:  # an id that cannot be in a store ('../x'), a damaged entry: this row's error
                raise RowError(str(e)) from None
            if entry is None:
                return None
            return VideoInfo(duration=_num(entry.get("duration")))

        return cls(lookup, f"the feature store {getattr(store, 'uri', store)}", complete=True)

    def durations(self, video_ids: Iterable[str]) -> dict[str, float]:
        """``{video_id: duration}`` for those of ``video_ids`` with a known duration."""
        out = {}
        for v in video_ids:
            info = self.get(v)
            if info is not None and info.duration is not None:
                out[v] = info.duration
        return out


def _num(x) -> float | None:
    return None if x is None else float(x)


def parse_seconds(value: Any, name: str) -> float:
    """A finite number of seconds, or a :class:`RowError` naming the field."""
    if isinstance(value, bool):
        raise RowError(f"{name} is {value!r}, not a number")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise RowError(f"{name} is {value!r}, not a number") from None
    if not math.isfinite(x):
        raise RowError(f"{name} is {value!r}, not a finite number")
    return x


def parse_span(value: Any, name: str) -> Span:
    """A ``[start, end]`` pair of numbers (not yet checked for order)."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise RowError(f"{name} is {value!r}, not a [start, end] pair")
    return parse_seconds(value[0], f"{name} start"), parse_seconds(value[1], f"{name} end")


class SpanChecker:
    """Checks spans against video durations and counts what it clipped or could not check.

    One per load; ``check(video_id, start, end, what)`` returns the (possibly clipped) span or raises a
    :class:`RowError`. ``videos`` (a store, complete) takes precedence over ``side`` (a side file, partial); a row-level
    ``duration`` stated by the file is used when neither knows the video, and is checked against the store's."""

    def __init__(self, report: LoadReport, videos: VideoIndex | None = None, side: VideoIndex | None = None,
                 tolerance: float = OVERRUN_TOLERANCE):
        self.report = report
        self.videos = videos
        self.side = side
        self.tolerance = tolerance
        self._unchecked_lines: set[int] = set()

    def find(self, video_id: str) -> tuple[VideoInfo | None, str | None]:
        """The video's info and where it came from; a row error if a complete index (the store) lacks the video."""
        for index in (self.videos, self.side):
            if index is None:
                continue
            info = index.get(video_id)
            if info is not None:
                return info, index.source
            if index.complete:
                raise RowError(f"video {video_id!r} is not in {index.source}")
        return None, None

    def duration(self, video_id: str, stated: float | None = None, what: str = "duration") -> float | None:
        """The duration to check against: the store's or side file's (a ``stated`` one that disagrees by more than the
        tolerance is an error), else ``stated``."""
        info, source = self.find(video_id)
        known = info.duration if info is not None else None
        if known is not None and stated is not None and abs(known - stated) > self.tolerance:
            raise RowError(f"{what} {stated:g} s of video {video_id!r} disagrees with {source} ({known:g} s)")
        return known if known is not None else stated

    def check(self, line: int, video_id: str, start: float, end: float, duration: float | None,
              what: str = "segment") -> Span:
        """``[start, end)`` validated: ``end > start``, ``start >= 0`` and inside ``duration`` (clipped when it overruns
        by at most the tolerance). ``duration=None`` counts the row as unchecked."""
        if not end > start:
            raise RowError(f"{what} end {end:g} s is not after its start {start:g} s")
        if start < 0:
            raise RowError(f"{what} [{start:g}, {end:g}) s starts before 0")
        if duration is None:
            self._unchecked_lines.add(line)
            self.report.unchecked = len(self._unchecked_lines)
            return start, end
        if start >= duration or end > duration + self.tolerance:
            raise RowError(f"{what} [{start:g}, {end:g}) s is outside video {video_id!r}'s duration {duration:g} s")
        if end > duration:
            if end - duration > ROUNDING:
                self.report.clipped += 1
            end = duration
        return start, end


def collect(report: LoadReport, rows: Iterable[tuple[int, Any]], parse: Callable[[int, Any], Any],
            key: Callable[[Any], Any] | None = None, dedupe: bool = True) -> list:
    """Run ``parse(line, raw)`` over ``rows``; errors go to the report (the row is skipped and counted), duplicates by
    ``key`` are counted and dropped unless ``dedupe=False``. ``parse`` may return a list of records (one row, several
    records) or a single one. Returns the records in file order."""
    out = []
    seen: set = set()
    for line, raw in rows:
        report.rows += 1
        try:
            recs = parse(line, raw)
        except RowError as e:
            report.skipped += 1
            report.error(line, str(e))
            continue
        report.valid += 1
        k = key(recs) if key is not None else None
        if k is not None and k in seen:
            report.duplicates += 1
            if dedupe:
                continue
        seen.add(k)
        out.extend(recs if isinstance(recs, list) else [recs])
    return out


def read_text(uri: str) -> str:
    """The file's text, or an :class:`InputError` saying why it cannot be read."""
    from vmr import storage

    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise InputError(f"not found: {uri}") from None
    except IsADirectoryError:
        raise InputError(f"{uri} is a folder, not an annotation file") from None
    except OSError as e:
        raise InputError(f"cannot read {uri}: {e}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{uri}: not UTF-8 text (byte {e.start})") from None


def read_json_document(text: str, uri: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{uri}:{e.lineno}: not valid JSON: {e.msg}") from e
