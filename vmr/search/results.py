"""What the search stage returns and takes: moments in seconds (:class:`Moment`, :class:`SearchHit`), a query ready
for a model (:class:`QueryFeatures`), one localisation with its score timeline (:class:`Localization`), and a search's
plan and result (:class:`SearchPlan`, :class:`SearchResult`). Plain data; :mod:`vmr.search.localizer` fills them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Moment:
    """A found moment: ``[start, end)`` seconds on the target video's clock and the model's score (higher = better)."""

    start: float
    end: float
    score: float

    def to_dict(self) -> dict:
        return {"start": round(float(self.start), 3), "end": round(float(self.end), 3), "score": float(self.score)}


@dataclass(frozen=True)
class SearchHit:
    """A moment found by :meth:`vmr.search.localizer.Localizer.search`: the store's ``video_id`` and ``[start, end)`` seconds, score."""

    video_id: str
    start: float
    end: float
    score: float

    def to_dict(self) -> dict:
        return {"video": self.video_id, "start": round(float(self.start), 3), "end": round(float(self.end), 3),
                "score": float(self.score)}


@dataclass
class QueryFeatures:
    """A query ready for a model: ``features`` (N, D) float32; ``kind`` "video" or "text"; ``step`` seconds per row
    (video queries; None for text); ``source`` where it came from (path/URI, "features", or the sentence)."""

    features: np.ndarray
    kind: str = "video"
    step: float | None = None
    source: str = ""
    text: str = ""
    uri: str | None = None  # the query video (for thumbnails)

    @property
    def duration(self) -> float:
        """Seconds the query covers (0 for text)."""
        return len(self.features) * float(self.step) if self.kind == "video" and self.step else 0.0


@dataclass
class Localization:
    """Everything about one localisation (for plots and reports): the moments, best first; the score timeline
    ``curve`` (M,) at ``times`` (M,) seconds (row starts) with its ``curve_label``; the windows as ``(start_s,
    end_s)``; the target's id, duration and source video URI; the query."""

    target_id: str
    moments: list[Moment]
    times: np.ndarray
    curve: np.ndarray | None
    curve_label: str
    windows: list[tuple[float, float]]
    duration: float
    target_uri: str | None
    query: QueryFeatures
    step: float = 0.0
    path: str = "exact"  # "index": two-stage through the store's vector index; "exact": every window


@dataclass
class SearchResult:
    """What :meth:`vmr.search.localizer.Localizer.search_details` found: ``hits`` best first; ``videos`` searched, ``skipped`` video ids
    (shorter than the query), ``hours`` of footage searched, whether Ray Data ran it (``ray``), and which ``path``
    ran: ``"index"`` (two-stage through the store's vector index) or ``"exact"`` (every window of every video)."""

    hits: list[SearchHit]
    videos: int
    skipped: list[str] = field(default_factory=list)
    hours: float = 0.0
    ray: bool = False
    path: str = "exact"


@dataclass
class SearchPlan:
    """A checked search: the embedded query, the store, the video ids to search and those skipped, the hours."""

    query: QueryFeatures
    store_uri: str
    video_ids: list[str]
    skipped: list[str]
    hours: float
    entries: dict[str, dict] = field(default_factory=dict, repr=False)  # the manifest entries it was made from

    def describe(self, kind: str, where: str = "") -> str:
        """One progress line: what is searched, with which model, and what was skipped."""
        return (f"searching {len(self.video_ids)} videos ({self.hours:.2f} h) of {self.store_uri} with the {kind} model"
                + where + (f"; {len(self.skipped)} shorter than the query skipped" if self.skipped else ""))

    def result(self, hits: list[SearchHit], on_ray: bool, path: str = "exact") -> SearchResult:
        return SearchResult(hits, len(self.video_ids), self.skipped, self.hours, on_ray, path)


__all__ = ["Moment", "SearchHit", "QueryFeatures", "Localization", "SearchResult", "SearchPlan"]
