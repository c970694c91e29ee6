"""Training pairs from annotations: small serialisable specs, and turning them into :class:`vmr.data.samples.Sample`.

``PairSpec``  a video query and a target window, with the ground-truth spans of the query's action in the target.
``TextSpec``  a sentence and its video, with the ground-truth spans.
All times are seconds on the *source video's* clock (a target window ``[60, 180)`` keeps its spans at e.g. ``[95, 101)``,
not ``[35, 41)``); spans are ``[start, end)``.

Where they come from:

- :func:`pairs_from_records`: SportsMoments pairs (each row is a pair: the whole query clip, the whole reference clip)
  and ActivityNet-VRL instances (query = one instance, target = the window (``location``) of another instance of the
  same class, preferably in another video; drawn per target from ``(seed, target)``).
- :func:`build_match_pairs`: match annotations (one row per action instance) -> SportsMoments-style pairs; see its
  docstring for the choices made.
- :func:`text_specs_from_records`: sentence-moment records.

:func:`materialize_pair` / :func:`materialize_text` read the features (a store, or a cache with ``load``) and build the
sample; :func:`embed_sentences` embeds every distinct sentence once with a :class:`vmr.features.clip.ClipEncoder`.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import zlib
from dataclasses import dataclass, field
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


# ---- match annotations -> pairs ----------------------------------------------------------------------------------


@dataclass
class MatchPairConfig:
    """How :func:`build_match_pairs` turns match annotations into pairs. Seconds unless stated.

    ``window_min``/``window_max``: target window length range (uniform; clipped to the video).
    ``split_fractions``: fraction of *classes* in train/val/test (classes are disjoint across splits; a split with a
    non-zero fraction gets at least one class). ``class_splits``: ``{class: split}`` pins, e.g. to keep the test classes
    fixed across scheduled retrains while new classes arrive. ``pairs_per_instance``: targets drawn per query
    instance. ``other_video_prob``: chance that the target comes from another video (match) than the query, when one
    has the class. ``max_tries``: draws per pair before it is counted as unplaced."""

    window_min: float = 60.0
    window_max: float = 180.0
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    class_splits: dict[str, str] = field(default_factory=dict)
    pairs_per_instance: int = 1
    other_video_prob: float = 0.5
    max_tries: int = 20
    seed: int = 0

    def validate(self) -> None:
        if not (self.window_min > 0 and self.window_max >= self.window_min):
            raise ConfigError(f"need 0 < window_min <= window_max, got {self.window_min}, {self.window_max}")
        f = self.split_fractions
        if len(f) != 3 or any(x < 0 for x in f) or abs(sum(f) - 1.0) > 1e-6:
            raise ConfigError(f"split_fractions must be three non-negative numbers summing to 1, got {list(f)}")
        bad = {c: s for c, s in self.class_splits.items() if s not in SPLITS}
        if bad:
            raise ConfigError(f"class_splits values must be one of {SPLITS}, got {bad}")
        if self.pairs_per_instance < 1 or self.max_tries < 1:
            raise ConfigError("pairs_per_instance and max_tries must be >= 1")
        if not 0.0 <= self.other_video_prob <= 1.0:
            raise ConfigError(f"other_video_prob must be in [0, 1], got {self.other_video_prob}")


def _split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Classes per split: at least one for each split with a non-zero fraction, the rest by largest remainder."""
    active = [i for i, f in enumerate(fractions) if f > 0]
    counts = [1 if i in active else 0 for i in range(3)]
    rest = n - len(active)
    want = [max(0.0, fractions[i] * n - 1) if i in active else 0.0 for i in range(3)]
    total = sum(want)
    if rest > 0:
        if total == 0:
            want = [fractions[i] if i in active else 0.0 for i in range(3)]
            total = sum(want)
        quota = [w / total * rest for w in want]
        floors = [int(math.floor(q)) for q in quota]
        left = rest - sum(floors)
        order = sorted(range(3), key=lambda i: (-(quota[i] - floors[i]), i))
        for i in order[:left]:
            floors[i] += 1
        counts = [c + f for c, f in zip(counts, floors)]
    return counts


def split_classes(classes: Iterable[str], config: MatchPairConfig, seed: int | None = None) -> dict[str, str]:
    """``{class: split}``, class-disjoint and deterministic for ``seed``.

    Classes are ordered by a hash of ``(seed, class)`` (so adding a class moves few others) and dealt out: test first,
    then val, the rest train, in the counts of :func:`_split_counts`; pinned classes (``config.class_splits``) count
    towards their split. Fewer classes than splits with a non-zero fraction is an :class:`InputError`."""
    seed = config.seed if seed is None else seed
    classes = sorted(set(classes))
    active = [SPLITS[i] for i, f in enumerate(config.split_fractions) if f > 0]
    if len(classes) < len(active):
        raise InputError(
            f"class-disjoint {'/'.join(active)} splits need at least {len(active)} action classes, the annotations "
            f"have {len(classes)} ({', '.join(classes) or 'none'}); annotate more classes or set the fraction of the "
            "splits you do not need to 0 (split_fractions)")
    counts = dict(zip(SPLITS, _split_counts(len(classes), config.split_fractions)))
    out = {c: config.class_splits[c] for c in classes if c in config.class_splits}
    free = sorted((c for c in classes if c not in out), key=lambda c: (zlib.crc32(f"{seed}:{c}".encode()), c))
    need = {s: max(0, counts[s] - sum(1 for v in out.values() if v == s)) for s in SPLITS}
    for s in ("test", "val"):
        for _ in range(need[s]):
            if free:
                out[free.pop(0)] = s
    for c in free:
        out[c] = "train" if config.split_fractions[0] > 0 else ("val" if config.split_fractions[1] > 0 else "test")
    empty = [s for s in active if s not in out.values()]
    if empty:
        raise InputError(f"no class left for the {'/'.join(empty)} split(s) after the pinned class_splits "
                         f"{config.class_splits}; pin fewer classes or set those fractions to 0")
    return out


def _free_intervals(lo: float, hi: float, forbidden: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """``[lo, hi]`` minus the open intervals ``forbidden``, as closed intervals."""
    if lo > hi:
        return []
    parts = [(lo, hi)]
    for a, b in forbidden:
        if not b > a:
            continue
        nxt = []
        for s, e in parts:
            if b <= s or a >= e:
                nxt.append((s, e))
                continue
            if a >= s:
                nxt.append((s, a))
            if b <= e:
                nxt.append((b, e))
        parts = nxt
    return parts


def _place_window(rng: np.random.Generator, anchor: tuple[float, float], length: float, duration: float,
                  same_class: np.ndarray, avoid: tuple[float, float] | None) -> float | None:
    """A window start ``s`` such that ``[s, s + length)`` lies in ``[0, duration]``, contains ``anchor``, cuts none of
    ``same_class`` (rows ``[start, end]``: each is fully inside or fully outside) and does not touch ``avoid``."""
    a0, a1 = anchor
    lo, hi = max(0.0, a1 - length), min(a0, duration - length)
    forbidden = []
    for u0, u1 in same_class:
        # cut = the window overlaps u but does not contain it
        if u1 - u0 <= length:
            forbidden += [(u0 - length, u1 - length), (u0, u1)]
        else:
            forbidden.append((u0 - length, u1))
    if avoid is not None:
        forbidden.append((avoid[0] - length, avoid[1]))
    free = _free_intervals(lo, hi, forbidden)
    if not free:
        return None
    widths = np.array([e - s for s, e in free])
    if widths.sum() > 0:
        i = int(rng.choice(len(free), p=widths / widths.sum()))
        return float(rng.uniform(free[i][0], free[i][1]))
    return float(free[int(rng.integers(len(free)))][0])


def build_match_pairs(instances: Sequence[ActionInstance], durations: Any, config: MatchPairConfig | None = None,
                      seed: int | None = None) -> MatchPairs:
    """Match annotations -> SportsMoments-style pairs, ``{"train": [...], "val": [...], "test": [...]}``.

    - **Splits**: classes are split class-disjointly (:func:`split_classes`); every instance goes to its class's split.
    - **Query**: one instance ``[start, end)`` of its video.
    - **Target**: a window of length uniform in ``[window_min, window_max]`` (clipped to the video; a video shorter than
      ``window_min`` is taken whole) in another video that has the class (with probability ``other_video_prob``, when
      one exists) or in the query's own video, placed to contain an *anchor* instance of the same class. In the query's
      own video the window never overlaps the query instance itself: the query is not its own answer, which would be
      trivial. Anchors longer than ``window_max`` are not used.
    - **Ground truth**: every instance of the class inside the window (the anchor and any others); the window is placed
      so that no instance of the class is cut by its edges, so each span lies entirely inside the target.
    - **Determinism**: instances are sorted first, and each (instance, k) draw has its own random stream from
      ``(seed, instance, k)``, so the pairs of an instance do not depend on input order or on other classes.
    - A draw that finds no valid window in ``max_tries`` (e.g. a class with a single instance) is counted in
      ``stats["unplaced"]`` and logged, never silently dropped.

    ``durations``: ``{video_id: seconds}``, a ``VideoIndex`` or the feature store; every video needs one."""
    config = config or MatchPairConfig()
    config.validate()
    seed = config.seed if seed is None else seed
    inst = sorted(instances, key=lambda r: (r.action_class, r.video_id, r.start, r.end, r.line))
    missing = sorted({r.video_id for r in inst if _duration_of(durations, r.video_id) is None})
    if missing:
        raise InputError(f"no duration for {len(missing)} annotated videos (not in the feature store?): "
                         f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    dur = {v: float(_duration_of(durations, v)) for v in {r.video_id for r in inst}}
    for r in inst:
        if not (0 <= r.start < r.end <= dur[r.video_id] + _EPS):
            raise InputError(f"instance [{r.start:g}, {r.end:g}) s of {r.video_id!r} (line {r.line}) is not inside "
                             f"the video's duration {dur[r.video_id]:g} s")
    class_split = split_classes({r.action_class for r in inst}, config, seed)

    # per (class, video): instance spans as an (m, 2) array; per class: the instances
    by_cv: dict[tuple[str, str], np.ndarray] = {}
    by_class: dict[str, list[ActionInstance]] = {}
    for r in inst:
        by_class.setdefault(r.action_class, []).append(r)
    for c, rs in by_class.items():
        for v in sorted({r.video_id for r in rs}):
            by_cv[(c, v)] = np.array([(r.start, r.end) for r in rs if r.video_id == v], dtype=np.float64)

    out: dict[str, list[PairSpec]] = {s: [] for s in SPLITS}
    unplaced = 0
    for c, rs in by_class.items():
        split = class_split[c]
        usable = [t for t in rs if t.end - t.start <= config.window_max]  # sorted by video, so videos are blocks
        block: dict[str, tuple[int, int]] = {}
        for i, t in enumerate(usable):
            b0, _ = block.get(t.video_id, (i, i))
            block[t.video_id] = (b0, i + 1)
        for q in rs:
            b0, b1 = block.get(q.video_id, (0, 0))
            same = [t for t in usable[b0:b1] if t.end <= q.start or t.start >= q.end]
            n_other = len(usable) - (b1 - b0)
            for k in range(config.pairs_per_instance):
                rng = np.random.default_rng(_seed_of(seed, c, q.video_id, q.start, q.end, k))
                spec = None
                for _ in range(config.max_tries):
                    use_other = n_other > 0 and (not same or rng.random() < config.other_video_prob)
                    if use_other:
                        j = int(rng.integers(n_other))
                        t = usable[j if j < b0 else j + (b1 - b0)]
                    elif same:
                        t = same[int(rng.integers(len(same)))]
                    else:
                        break
                    D = dur[t.video_id]
                    length = min(max(float(rng.uniform(config.window_min, config.window_max)), t.end - t.start), D)
                    avoid = (q.start, q.end) if t.video_id == q.video_id else None
                    cls_spans = by_cv[(c, t.video_id)]
                    s = _place_window(rng, (t.start, t.end), length, D, cls_spans, avoid)
                    if s is None:
                        continue
                    w0, w1 = s, min(s + length, D)
                    inside = [(float(max(u0, w0)), float(min(u1, w1))) for u0, u1 in cls_spans
                              if u0 >= w0 - _EPS and u1 <= w1 + _EPS and not (avoid and (u0, u1) == avoid)]
                    spec = PairSpec(
                        pair_id=f"{split}:{c}:{q.video_id}@{q.start:.3f}-{q.end:.3f}#{k}",
                        query_video=q.video_id, query_start=q.start, query_end=q.end, target_video=t.video_id,
                        target_start=w0, target_end=w1, spans=tuple(sorted(set(inside))), action_class=c, split=split)
                    break
                if spec is None:
                    unplaced += 1
                else:
                    out[split].append(spec)
    stats = {"class_split": class_split, "pairs": {s: len(v) for s, v in out.items()}, "instances": len(inst),
             "unplaced": unplaced}
    if unplaced:
        log.warning("%d of %d (instance, k) draws found no target window containing another instance of their class "
                    "(classes with a single instance, or instances longer than window_max=%g s); left out",
                    unplaced, len(inst) * config.pairs_per_instance, config.window_max)
    return MatchPairs(out, stats)


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
