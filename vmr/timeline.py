"""Seconds <-> frame positions: the only place where the two meet.

A feature row ``i`` is the frame sampled at ``timestamps[i]`` seconds and stands for the interval
``[timestamps[i], timestamps[i] + step)`` where ``step`` is the sampling interval in seconds (``1 / fps``). A *position*
is a fractional frame coordinate: position ``i`` is the start of row ``i``'s interval, position ``i + 1`` its end.
Positions map to seconds by piecewise-linear interpolation through ``(i, timestamps[i])``, extended past both ends with
slope ``step``, so non-uniform container timestamps are honoured. Spans are half-open ``[start, end)`` seconds.
"""
from __future__ import annotations

import numpy as np


def sample_step(timestamps: np.ndarray, fps: float | None = None) -> float:
    """The sampling interval in seconds: ``1/fps`` when known, else the median gap between timestamps."""
    if fps:
        return 1.0 / float(fps)
    t = np.asarray(timestamps, dtype=np.float64)
    if len(t) < 2:
        raise ValueError("need fps or at least two timestamps to know the sampling interval")
    return float(np.median(np.diff(t)))


def _knots(timestamps: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(timestamps, dtype=np.float64)
    pos = np.arange(len(t) + 1, dtype=np.float64)
    sec = np.append(t, t[-1] + step)
    return pos, sec


def position_to_seconds(timestamps: np.ndarray, step: float, position) -> np.ndarray:
    """Fractional frame positions (any shape) -> seconds."""
    pos, sec = _knots(timestamps, step)
    p = np.asarray(position, dtype=np.float64)
    out = np.interp(p, pos, sec)
    out = np.where(p < 0, sec[0] + p * step, out)
    out = np.where(p > pos[-1], sec[-1] + (p - pos[-1]) * step, out)
    return out


def seconds_to_position(timestamps: np.ndarray, step: float, seconds) -> np.ndarray:
    """Seconds (any shape) -> fractional frame positions (inverse of :func:`position_to_seconds`)."""
    pos, sec = _knots(timestamps, step)
    s = np.asarray(seconds, dtype=np.float64)
    out = np.interp(s, sec, pos)
    out = np.where(s < sec[0], (s - sec[0]) / step, out)
    out = np.where(s > sec[-1], pos[-1] + (s - sec[-1]) / step, out)
    return out


def span_to_mask(timestamps: np.ndarray, step: float, start: float, end: float) -> np.ndarray:
    """Boolean mask (M,) of rows whose interval centre lies in ``[start, end)``; a span narrower than a row marks the
    one row it overlaps most, so every non-empty span inside the video has at least one foreground row."""
    t = np.asarray(timestamps, dtype=np.float64)
    centre = t + step / 2.0
    mask = (centre >= start) & (centre < end)
    if not mask.any() and end > start and len(t):
        overlap = np.minimum(t + step, end) - np.maximum(t, start)
        if overlap.max() > 0:
            mask[int(np.argmax(overlap))] = True
    return mask


def span_to_rows(timestamps: np.ndarray, step: float, start: float, end: float) -> tuple[int, int]:
    """``[start, end)`` seconds -> half-open row range ``[i0, i1)`` covering the span's foreground rows."""
    m = span_to_mask(timestamps, step, start, end)
    if not m.any():
        raise ValueError(f"span [{start}, {end}) s does not overlap the sampled frames")
    idx = np.flatnonzero(m)
    return int(idx[0]), int(idx[-1]) + 1


def rows_to_span(timestamps: np.ndarray, step: float, i0: int, i1: int) -> tuple[float, float]:
    """Half-open row range ``[i0, i1)`` -> ``[start, end)`` seconds."""
    s, e = position_to_seconds(timestamps, step, [i0, i1])
    return float(s), float(e)
