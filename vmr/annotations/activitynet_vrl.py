"""ActivityNet-VRL (video re-localization, Feng et al. 2018) -> :class:`ActionInstance` records in seconds.

Schema: a JSON list; each item is one action instance inside a window of a video, in **C3D feature indices**::

    [{"id": "JDg--pjY5gg", "label": 280, "location": [0, 197], "groundtruth": [95, 101]}, ...]

C3D feature ``i`` covers source frames ``[16 i, 16 i + 16)``. ``location = [s, e)`` is a window of the video in feature
indices; ``groundtruth = [a, b)`` is the action *relative to* ``location`` (so the action is features ``[s + a, s + b)``
of the video). ``label`` is the ActivityNet class node id; train/val/test have disjoint classes (160/20/20).
``length.json`` (same folder) gives each video's ``n_frames`` (source frames) and ``n_feat`` (= ``n_frames // 16``).

Seconds: feature index ``i`` starts at source frame ``16 i``, i.e. at ``16 i / fps`` seconds. The frame rate is not in
the annotations and is not guessed: it is ``n_frames`` (``length.json``) over the video's ``duration`` in the feature
store's manifest (whose own ``fps`` is the feature sampling rate, not the source's), and an implied rate outside
1-240 fps is an error (the store then holds a different encode). Without a store the loader refuses to convert
(:class:`InputError`); ``convert=False`` instead checks the index ranges against ``length.json`` and returns the raw
:class:`VrlRecord` index records (this is what ``vmr annotations check`` does without ``--store``).

Loaded records: ``ActionInstance(video_id, action_class=str(label), start, end, context=(window start, window end))``.
Pairs are built by :func:`vmr.data.pairs.pairs_from_records` (query = one instance, target = another instance's window).
``line`` is the 1-based record number (the files are one-line JSON documents); messages name the video.
Store ids are the ``id`` values, optionally under ``video_id_prefix`` (e.g. ``"v_"`` for ``v_{id}.mp4`` files).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

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
    read_json_document,
    read_text,
)
from vmr.errors import InputError

FORMAT = "activitynet-vrl"
FRAMES_PER_FEATURE = 16
LENGTH_FILE = "length.json"
FPS_RANGE = (1.0, 240.0)


@dataclass(frozen=True)
class VrlRecord:
    """One item as the file states it, in C3D feature indices (``location`` absolute, ``groundtruth`` relative)."""

    video_id: str
    label: str
    location: tuple[int, int]
    groundtruth: tuple[int, int]
    line: int = 0


def load_lengths(uri: str) -> dict[str, dict] | None:
    """``length.json`` next to ``uri``: ``{video id: {"n_frames": int, "n_feat": int}}``, or ``None``."""
    path = storage.join(storage.parent(uri), LENGTH_FILE)
    if not storage.exists(path):
        return None
    data = read_json_document(read_text(path), path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected {{video id: {{n_frames, n_feat}}}}")
    return data


def _index(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
        raise RowError(f"{name} {value!r} is not a feature index")
    return int(value)


def _index_span(value, name: str) -> tuple[int, int]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise RowError(f"{name} is {value!r}, not a [start, end] pair of feature indices")
    s, e = _index(value[0], f"{name} start"), _index(value[1], f"{name} end")
    if not e > s:
        raise RowError(f"{name} end {e} is not after its start {s}")
    if s < 0:
        raise RowError(f"{name} [{s}, {e}) starts before 0")
    return s, e


def load(uri: str, videos: VideoIndex | None = None, *, on_error: str = "raise", dedupe: bool = True,
         tolerance: float = OVERRUN_TOLERANCE, lengths: Mapping[str, dict] | None = None, convert: bool = True,
         video_id_prefix: str = "") -> Annotations:
    """Read an ActivityNet-VRL JSON file (see the module docstring). ``videos`` is the feature store's index (needed
    to convert to seconds); ``lengths`` overrides the ``length.json`` found next to the file."""
    if convert and videos is None:
        raise InputError(
            f"{uri}: ActivityNet-VRL times are C3D feature indices (16 frames each); converting them to seconds needs "
            "each video's duration from the feature store (pass store=/--store), and the loader does not guess a "
            "frame rate. To only check the file, use convert=False (`vmr annotations check` without --store)")
    data = read_json_document(read_text(uri), uri)
    if not isinstance(data, list):
        raise InputError(f"{uri}: expected a JSON list of {{id, label, location, groundtruth}}")
    report = LoadReport(file=uri, format=FORMAT)
    if lengths is None:
        lengths = load_lengths(uri)
        if lengths is not None:
            report.notes.append(f"index ranges checked against {LENGTH_FILE} ({len(lengths)} videos)")
    checker = SpanChecker(report, videos, tolerance=tolerance)
    if not convert:
        report.notes.append("not converted to seconds: converting needs the feature store (--store)")

    def parse(line: int, item) -> VrlRecord | ActionInstance:
        if not isinstance(item, dict):
            raise RowError("malformed record: not a JSON object")
        missing = [k for k in ("id", "label", "location", "groundtruth") if k not in item]
        if missing:
            raise RowError(f"malformed record: missing {missing}")
        raw_id = str(item["id"])
        try:
            label = _index(item["label"], "label")
            loc = _index_span(item["location"], "location")
            gt = _index_span(item["groundtruth"], "groundtruth")
            if gt[1] > loc[1] - loc[0]:
                raise RowError(f"groundtruth {list(gt)} (relative to location) ends past the location's "
                               f"{loc[1] - loc[0]} features")
            length = lengths.get(raw_id) if lengths is not None else None
            if length is not None:
                n_feat = int(length["n_feat"])
                if loc[1] > n_feat:
                    raise RowError(f"location {list(loc)} is outside the video's {n_feat} features ({LENGTH_FILE})")
            elif not convert:
                report.unchecked += 1
            rec = VrlRecord(video_id=video_id_prefix + raw_id, label=str(label), location=loc, groundtruth=gt,
                            line=line)
            return to_seconds(rec, length, checker) if convert else rec
        except RowError as e:
            raise RowError(f"video {raw_id!r}: {e}") from None

    def key(r):
        if isinstance(r, VrlRecord):
            return (r.video_id, r.label, r.location, r.groundtruth)
        return (r.video_id, r.action_class, r.start, r.end, r.context)

    records = collect(report, enumerate(data, start=1), parse, key, dedupe)
    if on_error == "raise":
        report.raise_if_errors()
    return Annotations(FORMAT, records, report)


def to_seconds(rec: VrlRecord, length: Mapping | None, checker: SpanChecker) -> ActionInstance:
    """One index record -> an :class:`ActionInstance` in seconds (see the module docstring for the frame rate)."""
    if length is None:
        raise RowError(f"not in {LENGTH_FILE}: its frame count is needed to convert feature indices to seconds")
    duration = checker.duration(rec.video_id)
    if duration is None:
        raise RowError("no duration known for the video; cannot convert feature indices to seconds")
    n_frames = int(length["n_frames"])
    fps = n_frames / duration
    if not FPS_RANGE[0] <= fps <= FPS_RANGE[1]:
        raise RowError(f"{LENGTH_FILE}'s {n_frames} frames over the store's duration {duration:g} s imply {fps:.1f} "
                       "fps: the store holds a different video or encode")
    sec = FRAMES_PER_FEATURE / fps
    loc, gt = rec.location, rec.groundtruth
    w0, w1 = checker.check(rec.line, rec.video_id, loc[0] * sec, loc[1] * sec, duration, what="location")
    a, b = (loc[0] + gt[0]) * sec, min((loc[0] + gt[1]) * sec, w1)
    if not b > a:
        raise RowError(f"groundtruth {list(gt)} lies past the end of the video ({duration:g} s)")
    return ActionInstance(video_id=rec.video_id, action_class=rec.label, start=a, end=b, line=rec.line,
                          context=(w0, w1))
