"""Training pairs from annotations: small serialisable specs, and turning them into :class:`vmr.data.samples.Sample`.

``PairSpec``  a video query and a target window, with the ground-truth spans of the query's action in the target.
``TextSpec``  a sentence and its video, with the ground-truth spans.
All times are seconds on the *source video's* clock (a target window ``[60, 180)`` keeps its spans at e.g. ``[95, 101)``,
not ``[35, 41)``); spans are ``[start, end)``.

Where they come from:

- :func:`pairs_from_records`: SportsMoments pairs (each row is a pair: the whole query clip, the whole reference clip)
  and ActivityNet-VRL instances (query = one instance, target = the window (``location``) of another instance of the
  same class, preferably in another video; drawn per target from ``(seed, target)``).
- :func:`vmr.data.match_pairs.build_match_pairs`: match annotations (one row per action instance) -> SportsMoments-style
  pairs; see its docstring for the choices made.
- :func:`text_specs_from_records`: sentence-moment records.

:func:`materialize_pair` / :func:`materialize_text` read the features (a store, or a cache with ``load``) and build the
sample; :func:`embed_sentences` embeds every distinct sentence once with a :class:`vmr.features.clip.ClipEncoder`.
"""
from __future__ import annotations

import dataclasses
import logging
import zlib
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from vmr import timeline
from vmr.annotations.records import OVERRUN_TOLERANCE, ActionInstance, TextMoment, VideoPair
from vmr.data.samples import Sample
from vmr.errors import ConfigError, InputError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
Span = tuple[float, float]
_EPS = 1e-9  # seconds: float noise in window arithmetic, far below any frame


# ---- specs -------------------------------------------------------------------------------------------------------


def _spans(value) -> tuple[Span, ...]:
    return tuple((float(s), float(e)) for s, e in value)


@dataclass(frozen=True)
class PairSpec:
    """One video-query pair. Query = rows of ``query_video`` in ``[query_start, query_end)``; target = rows of
    ``target_video`` in ``[target_start, target_end)``; ``spans`` (K, 2) ground truth on the target video's clock,
    inside the target window."""

    pair_id: str
    query_video: str
    query_start: float
    query_end: float
    target_video: str
    target_start: float
    target_end: float
    spans: tuple[Span, ...]
    action_class: str
    split: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "PairSpec":
        d = dict(d)
        d["spans"] = _spans(d["spans"])
        return cls(**d)


@dataclass(frozen=True)
class TextSpec:
    """One sentence-moment sample: the sentence as query, the whole video ``vid`` as target, ``spans`` (K, 2)
    seconds."""

    qid: str
    vid: str
    sentence: str
    spans: tuple[Span, ...]
    split: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "TextSpec":
        d = dict(d)
        d["spans"] = _spans(d["spans"])
        return cls(**d)


class PairList(list):
    """A list of specs with ``stats``: what could not be paired and why (never dropped silently)."""

    def __init__(self, items: Iterable = (), stats: dict | None = None):
        super().__init__(items)
        self.stats = dict(stats or {})


class MatchPairs(dict):
    """``{split: [PairSpec, ...]}`` for ``train``/``val``/``test``, with ``stats``: the class of each split
    (``class_split``), pairs per split, and how many (instance, k) draws found no target window (``unplaced``)."""

    def __init__(self, items: Mapping, stats: dict):
        super().__init__(items)
        self.stats = stats


# ---- durations ---------------------------------------------------------------------------------------------------


def _duration_of(durations: Any, video_id: str) -> float | None:
    """A video's duration from a ``{video_id: seconds}`` mapping, a :class:`vmr.annotations.VideoIndex`, or a feature
    store (its manifest entry)."""
    if durations is None:
        return None
    if hasattr(durations, "entry"):
        e = durations.entry(video_id)
        return None if e is None else float(e["duration"])
    if hasattr(durations, "get") and not isinstance(durations, Mapping):
        info = durations.get(video_id)
        return None if info is None else info.duration
    v = durations.get(video_id)
    return None if v is None else float(v)


def _seed_of(*parts) -> list[int]:
    return [zlib.crc32(repr(p).encode("utf-8")) if not isinstance(p, int) else p for p in parts]


# ---- records -> specs --------------------------------------------------------------------------------------------


def pairs_from_records(records: Sequence, split: str, durations: Any = None, seed: int = 0,
                       queries_per_target: int = 1) -> PairList:
    """SportsMoments :class:`VideoPair` or ActivityNet-VRL :class:`ActionInstance` (with ``context``) records ->
    :class:`PairSpec` list.

    ``durations`` (a ``{video_id: seconds}`` mapping, a ``VideoIndex`` or the feature store) gives the length of
    whole-video queries and targets (a SportsMoments query clip is the whole clip; the file states only the reference
    duration, used when ``durations`` lacks the reference). A ground truth outside the target so obtained is an
    :class:`InputError`; one overrunning it by at most ``OVERRUN_TOLERANCE`` is clipped. ActivityNet-VRL: each record is a target (its ``location`` window, its instance the ground truth) and
    gets ``queries_per_target`` queries: other instances of its class, from another video when the class has one
    (else from the same video but outside the target window), drawn from ``(seed, target)``. A target whose class has
    no usable query is left out and counted in ``stats["no_query"]``.
    Match annotations (instances without ``context``) are paired by :func:`build_match_pairs` instead."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    if not records:
        return PairList()
    if all(isinstance(r, VideoPair) for r in records):
        return _pairs_from_video_pairs(records, split, durations)
    if all(isinstance(r, ActionInstance) and r.context is not None for r in records):
        return _pairs_from_vrl(records, split, seed, queries_per_target)
    if all(isinstance(r, ActionInstance) for r in records):
        raise InputError("these action instances have no annotated windows (match annotations): build their pairs "
                         "with vmr.data.pairs.build_match_pairs")
    kinds = sorted({type(r).__name__ for r in records})
    raise InputError(f"cannot make video-query pairs from {kinds} records (text records: text_specs_from_records)")


def _whole(durations: Any, video_id: str, role: str) -> float:
    d = _duration_of(durations, video_id)
    if d is None:
        raise InputError(f"the {role} is the whole video {video_id!r}, but its duration is unknown: pass the feature "
                         "store (or a {video_id: seconds} mapping) as durations")
    return d


def _pairs_from_video_pairs(records: Sequence[VideoPair], split: str, durations: Any) -> PairList:
    out = PairList(stats={"records": len(records)})
    seen: dict[str, int] = {}
    for r in records:
        q0, q1 = r.query_window if r.query_window else (0.0, _whole(durations, r.query_video, "query"))
        if r.target_window:
            t0, t1 = r.target_window
        else:
            t1 = _duration_of(durations, r.target_video)
            t1 = t1 if t1 is not None else r.target_duration
            if t1 is None:
                t1 = _whole(durations, r.target_video, "target")
            t0 = 0.0
        spans = []
        for a, b in r.spans:
            if a < t0 or a >= t1 or b > t1 + OVERRUN_TOLERANCE:
                raise InputError(f"line {r.line}: ground truth [{a:g}, {b:g}) s lies outside the target "
                                 f"[{t0:g}, {t1:g}) s of {r.target_video!r} (the durations given disagree with "
                                 f"the file's {r.target_duration} s)")
            spans.append((a, min(b, t1)))
        s0, s1 = spans[0]
        base = f"{split}:{r.query_video}>{r.target_video}@{s0:.3f}-{s1:.3f}"
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.append(PairSpec(pair_id=base if n == 0 else f"{base}#{n}", query_video=r.query_video, query_start=q0,
                            query_end=q1, target_video=r.target_video, target_start=t0, target_end=t1,
                            spans=tuple(spans), action_class=r.action_class, split=split))
    return out


def _pairs_from_vrl(records: Sequence[ActionInstance], split: str, seed: int, per_target: int) -> PairList:
    by_class: dict[str, list[ActionInstance]] = {}
    for r in records:
        by_class.setdefault(r.action_class, []).append(r)
    out = PairList(stats={"records": len(records), "no_query": 0})
    for t in records:
        w0, w1 = t.context
        others = [q for q in by_class[t.action_class] if q.video_id != t.video_id]
        if not others:
            others = [q for q in by_class[t.action_class]
                      if q is not t and q.video_id == t.video_id and (q.end <= w0 or q.start >= w1)]
        if not others:
            out.stats["no_query"] += 1
            continue
        rng = np.random.default_rng(_seed_of(seed, t.video_id, t.line, t.start, t.end))
        picks = rng.choice(len(others), size=min(per_target, len(others)), replace=False)
        for k, i in enumerate(sorted(int(i) for i in picks)):
            q = others[i]
            out.append(PairSpec(
                pair_id=f"{split}:{q.video_id}@{q.start:.3f}-{q.end:.3f}>{t.video_id}@{w0:.3f}-{w1:.3f}#{k}",
                query_video=q.video_id, query_start=q.start, query_end=q.end, target_video=t.video_id,
                target_start=w0, target_end=w1, spans=((t.start, t.end),), action_class=t.action_class, split=split))
    if out.stats["no_query"]:
        log.warning("%d of %d targets have no other instance of their class to serve as query; left out",
                    out.stats["no_query"], len(records))
    return out


def text_specs_from_records(records: Iterable[TextMoment], split: str) -> list[TextSpec]:
    """:class:`TextMoment` records -> :class:`TextSpec` (the whole video is the target)."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    return [TextSpec(qid=r.qid, vid=r.vid, sentence=r.sentence, spans=tuple(r.spans), split=split) for r in records]


# ---- specs -> samples --------------------------------------------------------------------------------------------


def _rows(vf, start: float, end: float, what: str, sample_id: str) -> np.ndarray:
    """Indices of ``vf``'s rows in ``[start, end)`` seconds (row centres, :func:`vmr.timeline.span_to_mask`)."""
    ts = np.asarray(vf.timestamps, dtype=np.float64)
    mask = timeline.span_to_mask(ts, float(vf.step), start, end)
    if not mask.any():
        last = ts[-1] + float(vf.step) if len(ts) else 0.0
        raise InputError(f"{sample_id}: the {what} window [{start:.3f}, {end:.3f}) s of {vf.video_id!r} holds no "
                         f"feature rows (the video has {len(ts)} rows over [{ts[0] if len(ts) else 0.0:.3f}, "
                         f"{last:.3f}) s)")
    return np.flatnonzero(mask)


def materialize_pair(spec: PairSpec, store, cache=None) -> Sample:
    """A :class:`PairSpec` -> :class:`Sample` (``query_kind="video"``). ``store`` (or ``cache``, when given) is
    anything with ``load(video_id) -> VideoFeatures``, e.g. :class:`vmr.features.store.FeatureStore` or
    :class:`vmr.data.specs.FeatureCache`.

    Query rows: ``query_video``'s rows whose interval centre lies in ``[query_start, query_end)`` (a window narrower
    than a row gets the row it overlaps most); target rows likewise for the target window; ``target_times`` stay on
    the source clock and ``spans`` are the spec's. A window with no rows, or a span with no target row, is an
    :class:`InputError` (the spec does not fit the stored features)."""
    src = cache if cache is not None else store
    qv = src.load(spec.query_video)
    tv = qv if spec.target_video == spec.query_video else src.load(spec.target_video)
    if abs(float(qv.step) - float(tv.step)) > 1e-9:
        raise InputError(f"{spec.pair_id}: query and target were sampled at different rates "
                         f"({1 / qv.step:g} and {1 / tv.step:g} per second)")
    qi = _rows(qv, spec.query_start, spec.query_end, "query", spec.pair_id)
    ti = _rows(tv, spec.target_start, spec.target_end, "target", spec.pair_id)
    times = np.asarray(tv.timestamps, dtype=np.float64)[ti]
    sample = Sample(
        sample_id=spec.pair_id,
        target_id=spec.target_video,
        target=np.asarray(tv.features)[ti],
        target_times=times,
        step=float(tv.step),
        query=np.asarray(qv.features)[qi],
        spans=np.asarray(spec.spans, dtype=np.float64).reshape(-1, 2),
        query_id=f"{spec.query_video}@{spec.query_start:.3f}-{spec.query_end:.3f}",
        query_kind="video",
        meta={"kind": "pair", "split": spec.split, "action_class": spec.action_class,
              "query_rows": (int(qi[0]), int(qi[-1]) + 1), "target_rows": (int(ti[0]), int(ti[-1]) + 1)},
    )
    for s, e in sample.spans:
        if not timeline.span_to_mask(times, sample.step, s, e).any():
            raise InputError(f"{spec.pair_id}: ground truth [{s:.3f}, {e:.3f}) s has no row in the target "
                             f"[{spec.target_start:.3f}, {spec.target_end:.3f}) s of {spec.target_video!r}")
    return sample


def materialize_text(spec: TextSpec, store, text_features: Mapping[str, np.ndarray], cache=None) -> Sample:
    """A :class:`TextSpec` -> :class:`Sample` (``query_kind="text"``): query = the sentence's (1, D) embedding from
    ``text_features`` (``{sentence: (D,) array}``, see :func:`embed_sentences`; an (L, D) array of token features is
    used as it is), target = every row of ``vid``."""
    try:
        emb = np.asarray(text_features[spec.sentence], dtype=np.float32)
        emb = emb.reshape(1, -1) if emb.ndim == 1 else emb
    except KeyError:
        raise InputError(f"{spec.qid}: no embedding for its sentence {spec.sentence[:60]!r}; embed the specs' "
                         "sentences with vmr.data.pairs.embed_sentences first") from None
    src = cache if cache is not None else store
    vf = src.load(spec.vid)
    times = np.asarray(vf.timestamps, dtype=np.float64)
    return Sample(
        sample_id=str(spec.qid),
        target_id=spec.vid,
        target=np.asarray(vf.features),
        target_times=times,
        step=float(vf.step),
        query=emb,
        spans=np.asarray(spec.spans, dtype=np.float64).reshape(-1, 2),
        query_id=str(spec.qid),
        query_kind="text",
        meta={"kind": "text", "split": spec.split, "sentence": spec.sentence},
    )


def embed_sentences(items: Iterable[TextSpec | TextMoment | str], encoder, batch_size: int = 256) -> dict[str, np.ndarray]:
    """``{sentence: (D,) float32}`` for every distinct sentence of ``items`` (specs, records or strings), embedded
    once with ``encoder.encode_text`` (a :class:`vmr.features.clip.ClipEncoder`), in batches, with progress logged."""
    sentences = sorted({s if isinstance(s, str) else s.sentence for s in items})
    out: dict[str, np.ndarray] = {}
    for i in range(0, len(sentences), batch_size):
        batch = sentences[i:i + batch_size]
        emb = np.asarray(encoder.encode_text(batch), dtype=np.float32)
        if emb.shape[0] != len(batch):
            raise ValueError(f"encode_text returned {emb.shape[0]} rows for {len(batch)} sentences")
        out.update(zip(batch, emb))
        log.info("embedded %d/%d sentences", min(i + batch_size, len(sentences)), len(sentences))
    return out
