"""Match annotations (one row per action instance: video, class, start and end seconds) -> SportsMoments-style
query-target pairs with class-disjoint train/val/test splits: :func:`build_match_pairs` (its docstring lists the
choices made), :func:`split_classes`, and their :class:`MatchPairConfig`. The specs are those of
:mod:`vmr.data.pairs`.
"""
from __future__ import annotations

import logging
import math
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from vmr.annotations.records import ActionInstance
from vmr.data.pairs import _EPS, SPLITS, MatchPairs, PairSpec, _duration_of, _seed_of
from vmr.errors import ConfigError, InputError

log = logging.getLogger(__name__)


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


__all__ = ["MatchPairConfig", "build_match_pairs", "split_classes"]
