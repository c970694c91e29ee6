"""Decode the sampled frames of a local video file, with their container timestamps in seconds.

Sampling: one sample time every ``1/fps`` seconds starting at 0 (:func:`sample_times`); for each, the frame whose
container timestamp (presentation time) is nearest is decoded. The frame rate is never assumed constant: the times of
all frames are read from the container index, and the returned timestamps are those of the frames actually decoded.

Choices where nothing else decides:

- Timestamps are relative to the first video frame (a stream whose first frame is presented at 1.4 s starts at 0 here).
- A frame's timestamp is its presentation start; a video's duration is the end of its last frame.
- If ``fps`` exceeds the video's frame rate, several sample times share a nearest frame; each frame is returned once,
  so the timestamps always increase strictly.
- A video shorter than one sampling step (``duration < 1/fps``) is an error ("shorter than one sample"): it would give a
  single row, too little to localise anything in.
- Bad files are recognised in the process itself, not in a subprocess: empty files are caught before decord sees them,
  and decord raises (rather than crashes) on the truncated, non-video and undecodable files we tested. When decord
  fails, PyAV inspects the file to name the reason (see :class:`DecodeError`). A decoder crash that kills the process
  anyway is a task failure for the pipeline's retry/failure record, not something this module can catch.

Local paths only: callers spill remote objects with :func:`vmr.storage.local_copy`. Memory is bounded: decord keeps
only the index of all frames, and at most ``chunk`` decoded frames are held at a time.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from vmr.errors import DecodeError, InputError

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".webm", ".mov")


@dataclass
class VideoInfo:
    """What the container says about a video's picture stream."""

    duration: float  # seconds: end of the last frame, relative to the first frame
    n_frames: int
    avg_fps: float  # frames per second as the container states it (informational; never used for timing)
    width: int
    height: int


def sample_times(duration: float, fps: float) -> np.ndarray:
    """Sample times in seconds, float64: ``k / fps`` for k = 0, 1, ... while ``< duration``."""
    if not fps > 0 or not math.isfinite(fps):
        raise InputError(f"fps must be a positive number, got {fps}")
    if not duration > 0:
        return np.zeros(0, dtype=np.float64)
    k = np.arange(int(math.ceil(duration * fps)) + 1, dtype=np.float64)
    t = k / fps
    return t[t < duration]


# Leading bytes of the containers we accept; a file that starts like one but cannot be read is "truncated".
def _looks_like_container(head: bytes) -> bool:
    return (
        head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot")  # mp4 / mov
        or head[:4] == b"\x1a\x45\xdf\xa3"  # matroska / webm (EBML)
        or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")
    )


def _diagnose(path: str, error: Exception) -> DecodeError:
    """Name the reason decord could not read ``path``, using PyAV to look at the container."""
    import av

    detail = str(error).strip().splitlines()[-1][:200] if str(error).strip() else type(error).__name__
    try:
        container = av.open(path)
    except Exception:  # noqa: BLE001 - any open failure means the header is unreadable
        with open(path, "rb") as f:
            head = f.read(16)
        if _looks_like_container(head):
            return DecodeError(path, "truncated", "container header present but unreadable")
        return DecodeError(path, "not a video", "no known video container header")
    try:
        streams = container.streams.video
        if not streams:
            return DecodeError(path, "no video stream", "the container holds no picture stream")
        codec = streams[0].codec_context.codec.canonical_name
        if "cannot find video stream" in str(error):
            return DecodeError(path, "unsupported codec", f"codec {codec!r} cannot be decoded by decord")
        return DecodeError(path, "truncated", detail)
    finally:
        container.close()


def _open(path: str):
    """(decord VideoReader, frame start times in seconds relative to the first frame, duration in seconds)."""
    import decord

    if not os.path.isfile(path):
        raise DecodeError(path, "not found")
    if os.path.getsize(path) == 0:
        raise DecodeError(path, "empty file")
    decord.logging.set_level(decord.logging.QUIET)  # failures become DecodeErrors; ffmpeg's chatter only confuses
    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0))
        n = len(reader)
        spans = reader.get_frame_timestamp(np.arange(n)) if n else np.zeros((0, 2))
    except Exception as e:  # noqa: BLE001 - decord raises RuntimeError or DECORDError
        raise _diagnose(path, e) from e
    if n == 0:
        raise DecodeError(path, "no video stream", "the picture stream has no frames")
    spans = np.asarray(spans, dtype=np.float64).reshape(n, 2)
    origin = float(spans[:, 0].min())
    starts = spans[:, 0] - origin
    duration = float(spans[:, 1].max() - origin)
    _check_not_cut_short(path, duration)
    return reader, starts, duration


def _check_not_cut_short(path: str, duration: float) -> None:
    """Raise "truncated" when the container header declares a longer video than the frames present. A cut-off mp4
    whose index (moov) comes first still opens, and decord then silently indexes only the frames that remain; the
    declared duration (PyAV) exposes it. Tolerance: 0.5 s or 2 %, far above the few hundredths of a second by which
    decord's and the header's durations of intact files differ."""
    import av

    try:
        with av.open(path) as container:
            declared = container.duration / 1e6 if container.duration else None
    except Exception:  # noqa: BLE001 - no declared duration to compare with; decord's reading stands
        return
    if declared and declared - duration > max(0.5, 0.02 * declared):
        raise DecodeError(path, "truncated", f"frames end at {duration:.2f} s but the container declares {declared:.2f} s")


def probe(path: str) -> VideoInfo:
    """Duration, frame count, stated frame rate and size of a local video file (decodes the first frame to check that
    the picture stream is decodable). Raises :class:`DecodeError`."""
    reader, _, duration = _open(path)
    try:
        h, w = reader[0].shape[:2]
    except Exception as e:  # noqa: BLE001
        raise _diagnose(path, e) from e
    return VideoInfo(duration=duration, n_frames=len(reader), avg_fps=float(reader.get_avg_fps()), width=int(w), height=int(h))


def nearest_frames(frame_times: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Indices (into ``frame_times``) of the frame nearest each time in ``times``, without duplicates, ordered by time.
    ``frame_times`` need not be sorted (frame index order can differ from presentation order)."""
    order = np.argsort(frame_times, kind="stable")
    sorted_t = frame_times[order]
    if len(sorted_t) == 1:
        return order[:1] if len(times) else order[:0]
    pos = np.clip(np.searchsorted(sorted_t, times), 1, len(sorted_t) - 1)
    before, after = sorted_t[pos - 1], sorted_t[pos]
    pos = np.where(np.abs(times - before) <= np.abs(after - times), pos - 1, pos)
    return order[np.unique(pos)]  # unique positions in sorted order -> increasing times


def iter_sampled_frames(path: str, fps: float, chunk: int = 16) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(timestamps (n,) float64 seconds, frames (n, H, W, 3) uint8 RGB)`` chunks of the sampled frames.

    Only the frames nearest each of :func:`sample_times` ``(duration, fps)`` are decoded, at most ``chunk`` at a time.
    Raises :class:`DecodeError` (also midway, if the file turns out to be damaged after the frames already yielded).
    """
    if chunk < 1:
        raise InputError(f"chunk must be >= 1, got {chunk}")
    reader, starts, duration = _open(path)
    if not fps > 0:
        raise InputError(f"fps must be a positive number, got {fps}")
    if duration < 1.0 / fps:
        raise DecodeError(path, "shorter than one sample", f"{duration:.3f} s < one sample every {1.0 / fps:g} s")
    indices = nearest_frames(starts, sample_times(duration, fps))
    for i in range(0, len(indices), chunk):
        idx = indices[i : i + chunk]
        try:
            frames = reader.get_batch(idx.tolist()).asnumpy()
        except Exception as e:  # noqa: BLE001
            raise DecodeError(path, "truncated", f"decoding failed near {starts[idx[0]]:.2f} s: {e}") from e
        yield starts[idx].astype(np.float64), np.ascontiguousarray(frames, dtype=np.uint8)


def decode_sampled(path: str, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """All sampled frames at once: ``(timestamps (n,) float64 seconds, frames (n, H, W, 3) uint8)``. For short clips."""
    times, frames = [], []
    for t, f in iter_sampled_frames(path, fps):
        times.append(t)
        frames.append(f)
    return np.concatenate(times), np.concatenate(frames)


def frames_at(path: str, times) -> tuple[np.ndarray, np.ndarray]:
    """The frames nearest the given times (seconds, relative to the first frame) of a local video: ``(timestamps
    (n,) float64 seconds, frames (n, H, W, 3) uint8)``, one per distinct nearest frame, in time order. Decodes only
    those frames (for thumbnails of a long video). Raises :class:`DecodeError`."""
    reader, starts, _ = _open(path)
    idx = nearest_frames(starts, np.atleast_1d(np.asarray(times, dtype=np.float64)))
    try:
        frames = reader.get_batch(idx.tolist()).asnumpy()
    except Exception as e:  # noqa: BLE001
        raise DecodeError(path, "truncated", f"decoding failed near {starts[idx[0]]:.2f} s: {e}") from e
    return starts[idx].astype(np.float64), np.ascontiguousarray(frames, dtype=np.uint8)
