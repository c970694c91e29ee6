"""The one sample type shared by pairs, sentence-moment pairs and pretraining clips, and its padded batch layout.

Contract (every model's ``forward``/``loss``/``predict`` and every data source rely on it):

``Sample``
    target        (M, D) float32, L2-normalised target features, one row per sampled frame
    target_times  (M,) float64 seconds, the timestamp of each target row in the *source video* (not from 0 of a window)
    step          seconds per target row (1 / fps of the feature store)
    query         (N, D) float32: query-clip frame features (``query_kind="video"``) or text token features (``"text"``)
    spans         (K, 2) float64 ground-truth ``[start, end)`` seconds in the same clock as ``target_times`` (K >= 0)

``collate(samples)`` -> dict batch
    query (B, N, D) float32, query_mask (B, N) bool (True = a real row, False = padding)
    target (B, M, D) float32, target_mask (B, M) bool
    target_times (B, M) float64 seconds (padding rows continue the clock by ``step``)
    step (B,) float64 seconds
    spans (B, K, 2) float64 seconds, span_mask (B, K) bool
    fg (B, M) float32: 1 for target rows inside any ground-truth span (:func:`vmr.timeline.span_to_mask`), else 0
    sample_id, target_id, query_id: lists of str
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from vmr import timeline


@dataclass
class Sample:
    sample_id: str
    target_id: str
    target: np.ndarray
    target_times: np.ndarray
    step: float
    query: np.ndarray
    spans: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    query_id: str = ""
    query_kind: str = "video"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.target = np.asarray(self.target, dtype=np.float32)
        self.query = np.asarray(self.query, dtype=np.float32)
        self.target_times = np.asarray(self.target_times, dtype=np.float64)
        self.spans = np.asarray(self.spans, dtype=np.float64).reshape(-1, 2)
        if self.target.ndim != 2 or self.query.ndim != 2:
            raise ValueError(f"{self.sample_id}: target and query must be 2-D (rows, dim)")
        if len(self.target_times) != len(self.target):
            raise ValueError(f"{self.sample_id}: {len(self.target_times)} timestamps for {len(self.target)} target rows")

    def foreground(self) -> np.ndarray:
        """(M,) bool: target rows inside any ground-truth span."""
        m = np.zeros(len(self.target), dtype=bool)
        for s, e in self.spans:
            m |= timeline.span_to_mask(self.target_times, self.step, s, e)
        return m


def collate(samples: list[Sample], max_target: int | None = None, max_query: int | None = None) -> dict:
    """Pad a list of samples to the layout in the module docstring. ``max_target``/``max_query`` fix the padded
    lengths (so that every batch of a run has one shape); a sample longer than that is an error, not a silent crop."""
    if not samples:
        raise ValueError("collate needs at least one sample")
    B = len(samples)
    D = samples[0].target.shape[1]
    M = max(len(s.target) for s in samples)
    N = max(len(s.query) for s in samples)
    K = max(max(len(s.spans) for s in samples), 1)
    if max_target is not None:
        if M > max_target:
            raise ValueError(f"a target has {M} rows, more than max_target={max_target}")
        M = max_target
    if max_query is not None:
        if N > max_query:
            raise ValueError(f"a query has {N} rows, more than max_query={max_query}")
        N = max_query
    Dq = samples[0].query.shape[1]
    query = np.zeros((B, N, Dq), np.float32)
    qmask = np.zeros((B, N), bool)
    target = np.zeros((B, M, D), np.float32)
    tmask = np.zeros((B, M), bool)
    times = np.zeros((B, M), np.float64)
    step = np.zeros((B,), np.float64)
    spans = np.zeros((B, K, 2), np.float64)
    smask = np.zeros((B, K), bool)
    fg = np.zeros((B, M), np.float32)
    for b, s in enumerate(samples):
        m, n, k = len(s.target), len(s.query), len(s.spans)
        target[b, :m] = s.target
        tmask[b, :m] = True
        query[b, :n] = s.query
        qmask[b, :n] = True
        step[b] = s.step
        times[b, :m] = s.target_times
        last = s.target_times[-1] if m else 0.0
        times[b, m:] = last + s.step * np.arange(1, M - m + 1)
        spans[b, :k] = s.spans
        smask[b, :k] = True
        fg[b, :m] = s.foreground()
    return {
        "query": torch.from_numpy(query),
        "query_mask": torch.from_numpy(qmask),
        "target": torch.from_numpy(target),
        "target_mask": torch.from_numpy(tmask),
        "target_times": torch.from_numpy(times),
        "step": torch.from_numpy(step),
        "spans": torch.from_numpy(spans),
        "span_mask": torch.from_numpy(smask),
        "fg": torch.from_numpy(fg),
        "sample_id": [s.sample_id for s in samples],
        "target_id": [s.target_id for s in samples],
        "query_id": [s.query_id for s in samples],
    }
