"""Long targets in model-sized pieces: sliding windows of rows that overlap, and the part of the target each owns.

A target of ``n`` rows is cut into windows ``[s, e)`` of ``window_rows`` rows overlapping by ``overlap_rows``, the
last one aligned to the end (so every window has one length). Each window *owns* the core of its rows: from the middle
of its overlap with the previous window to the middle of its overlap with the next, so the cores tile the target; a
window reports only the moments whose centre lies in its core (:class:`vmr.search.localizer.Localizer` explains why).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vmr import timeline


def plan_windows(n_rows: int, window_rows: int, overlap_rows: int) -> list[tuple[int, int]]:
    """Half-open row ranges ``[s, e)`` covering ``n_rows`` rows with windows of ``window_rows`` overlapping by
    ``overlap_rows`` (clamped to ``[0, window_rows - 1]``), the last one aligned to the end; one window when the
    target fits in one."""
    if n_rows <= 0:
        return []
    window_rows = max(1, int(window_rows))
    if n_rows <= window_rows:
        return [(0, n_rows)]
    stride = window_rows - min(max(int(overlap_rows), 0), window_rows - 1)
    starts = list(range(0, n_rows - window_rows + 1, stride))
    if starts[-1] + window_rows < n_rows:
        starts.append(n_rows - window_rows)
    return [(s, s + window_rows) for s in starts]


def window_cores(windows: list[tuple[int, int]]) -> list[tuple[float, float]]:
    """The rows each window owns, as fractional row positions ``[a, b)``: from the middle of its overlap with the
    previous window to the middle of its overlap with the next (``-inf``/``inf`` at the ends), tiling the target."""
    cores = []
    for k, (s, e) in enumerate(windows):
        a = -math.inf if k == 0 else (s + windows[k - 1][1]) / 2.0
        b = math.inf if k == len(windows) - 1 else (windows[k + 1][0] + e) / 2.0
        cores.append((a, b))
    return cores


@dataclass
class WindowItem:
    """One window to run: ``key`` (video id), its rows, the owned core in seconds, and the data."""

    key: str
    rows: tuple[int, int]
    core_s: tuple[float, float]
    core_rows: tuple[float, float]
    target: np.ndarray
    times: np.ndarray
    step: float


def window_items(key: str, features: np.ndarray, times: np.ndarray, step: float, window_rows: int | None,
                 overlap_rows: int) -> list[WindowItem]:
    """The windows (:func:`plan_windows`, or one whole-target window when ``window_rows`` is None) of one target:
    ``features`` (n, D) rows at ``times`` (n,) seconds, ``step`` seconds per row; each with its owned core in rows and
    in seconds on the target's clock."""
    n = len(features)
    windows = plan_windows(n, window_rows, overlap_rows) if window_rows else [(0, n)]
    items = []
    for (s, e), (a, b) in zip(windows, window_cores(windows)):
        a_s = -math.inf if math.isinf(a) else float(timeline.position_to_seconds(times, step, a))
        b_s = math.inf if math.isinf(b) else float(timeline.position_to_seconds(times, step, b))
        items.append(WindowItem(key, (s, e), (a_s, b_s), (a, b), features[s:e], times[s:e], step))
    return items


__all__ = ["plan_windows", "window_cores", "WindowItem", "window_items"]
