"""Two-stage search over a vector index (:mod:`vmr.search.index`): shortlist spans with the index, re-rank them with
the model.

**Stage 1** (:func:`shortlist`): the ``k`` nearest indexed vectors of every query row. A hit of query row ``j`` at
target row ``r`` votes for the moment starting at row ``r - j`` of that video (a copy of the query lines up row by
row), so the hits of one copy pile up on one start; votes are binned by start (bins of half the query's rows, on two
grids offset by half a bin so that a copy on a bin edge is not split). A bin's score is the sum over query rows of
their best similarity among its votes (each query row counts once): the cosine baseline's recall term, computed
from the index alone. The best-scoring bins, at most one per stretch of a video, are the shortlisted spans
``[first start, last start + query rows)``. A sentence (one row) votes for its hit rows directly.

**Stage 2** (:meth:`vmr.search.localizer.Localizer.search_ranges`): each span is widened to a crop of at least
``CROP_MIN_S`` seconds (the shortest target the pair builder trains on) and at least the query's length on each
side, capped at the model's window; overlapping crops of a video merge, a merged crop longer than the model's window
is cut into its sliding windows. The model runs on the crops only (batched across videos), each video's moments
are merged as in the exhaustive search, and the best ``top_k`` over all are returned.

Cost: stage 1 is one FAISS search of N query rows; stage 2 reads only the shortlisted videos' features and runs the
model on about ``shortlist`` crops, instead of every window of every video.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vmr.search.index import Neighbours

CROP_MIN_S = 60.0  # the shortest target window vmr.data.match_pairs.build_match_pairs draws for training
TEXT_SPAN_S = 16.0  # a sentence's shortlisted span, in seconds (its rows say nothing about duration)


@dataclass(frozen=True)
class Span:
    """A shortlisted stretch of one video: frame rows ``[start, end)`` and the stage-1 score (sum of cosines)."""

    video_id: str
    start: int
    end: int
    score: float


def shortlist(nb: Neighbours, n_query: int, n_spans: int, span_rows: int | None = None) -> list[Span]:
    """The ``n_spans`` best spans from the neighbours ``nb`` of ``n_query`` query rows (module docstring), best
    first. ``span_rows``: the span length in rows (default ``n_query``)."""
    n_rows, k = nb.sim.shape
    span_rows = max(1, int(span_rows or n_query))
    width = max(1.0, span_rows / 2.0)
    j = np.repeat(np.arange(n_rows), k)
    vids = nb.video.reshape(-1)
    sim = nb.sim.reshape(-1)
    rows = nb.rows.reshape(-1, 2)
    centre = (rows[:, 0] + rows[:, 1] - 1) / 2.0
    start = centre - (j if n_query > 1 else span_rows / 2.0)  # the row a copy of the query would start at
    ok = np.isfinite(sim) & (vids != "")
    vids, j, sim, start = vids[ok], j[ok], sim[ok], start[ok]
    if not len(sim):
        return []
    names, vcode = np.unique(vids.astype(str), return_inverse=True)
    cand_score, cand_vid, cand_lo, cand_hi = [], [], [], []
    for grid in (0.0, 0.5):
        b = np.floor(start / width + grid).astype(np.int64)
        keys, key = np.unique(np.stack([vcode, b], axis=1), axis=0, return_inverse=True)
        key = key.reshape(-1)
        # each query row counts once per bin: its best similarity among the bin's votes
        order = np.lexsort((-sim, key * n_rows + j))
        kj = (key * n_rows + j)[order]
        first = np.ones(len(kj), dtype=bool)
        first[1:] = kj[1:] != kj[:-1]
        score = np.bincount(key[order][first], weights=sim[order][first], minlength=len(keys))
        lo = np.full(len(keys), np.inf)
        hi = np.full(len(keys), -np.inf)
        np.minimum.at(lo, key, start)
        np.maximum.at(hi, key, start)
        cand_score.append(score)
        cand_vid.append(keys[:, 0])
        cand_lo.append(lo)
        cand_hi.append(hi)
    score, vcodes = np.concatenate(cand_score), np.concatenate(cand_vid)
    lo, hi = np.concatenate(cand_lo), np.concatenate(cand_hi)
    scored = [(float(score[i]), names[vcodes[i]], lo[i], hi[i]) for i in np.argsort(-score, kind="stable")]
    chosen: list[Span] = []
    for score, v, lo, hi in scored:
        a = int(max(0, math.floor(lo)))
        e = int(math.ceil(hi)) + span_rows
        mid = (a + e) / 2.0
        if any(c.video_id == v and c.start <= mid < c.end for c in chosen):
            continue
        if any(c.video_id == v and a <= (c.start + c.end) / 2.0 < e for c in chosen):
            continue
        chosen.append(Span(str(v), a, e, float(score)))
        if len(chosen) >= n_spans:
            break
    return chosen


def crop_ranges(spans: list[Span], n_rows: int, n_query: int, step: float,
                window_rows: int | None) -> list[tuple[int, int]]:
    """Row ranges ``[a, b)`` to run the model on for the ``spans`` of one video of ``n_rows`` rows at ``step``
    seconds per row: each span widened (module docstring), clipped to the video, overlapping ones merged."""
    want = max(int(round(CROP_MIN_S / step)), 1)
    if window_rows:
        want = min(want, window_rows)
    out: list[list[int]] = []
    for sp in sorted(spans, key=lambda s: s.start):
        a, b = sp.start - n_query, sp.end + n_query
        if b - a < want:
            extra = want - (b - a)
            a, b = a - extra // 2, b + extra - extra // 2
        if a < 0:
            a, b = 0, b - a
        if b > n_rows:
            a, b = max(0, a - (b - n_rows)), n_rows
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def default_neighbours(n_spans: int, ntotal: int) -> int:
    """Neighbours per query row for a shortlist of ``n_spans``: enough for every span to gather its votes."""
    return int(max(1, min(ntotal, max(128, 16 * n_spans))))


__all__ = ["Span", "shortlist", "crop_ranges", "default_neighbours", "CROP_MIN_S", "TEXT_SPAN_S"]
