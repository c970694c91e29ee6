"""Self-supervised pretraining samples (MATR sec. 3.3): localise a random clip of a video inside that video.

Each sampled clip gives the *original* query and one *augmented* copy ("thereby doubling the number of pre-training
samples"): the frames reversed, gaussian noise added, slowed down or sped up. A sample is described by a small
:class:`ClipSpec` (seconds, ids, a seed) so that Ray Data can shuffle millions of them cheaply; the features are read
only when :func:`materialize_clip` turns a spec into a :class:`vmr.data.samples.Sample`.

Choices where the paper is silent (all configurable in :class:`PretrainConfig`):

- **Target**: the whole video (``target_window_s=None``), or a window whose length is uniform in
  ``target_window_s = (min_s, max_s)`` seconds (capped at the video), placed uniformly in the video. The window is drawn
  first, then the clip uniformly inside it, so the ground truth sits anywhere in the target with equal chance.
- **Clip length**: uniform in ``[clip_min, clip_max]``, in seconds (``clip_unit="seconds"``) or as a fraction of the
  target window (``clip_unit="fraction"``), then capped at ``max_clip_fraction`` of the window so that the target
  always keeps some background for the foreground/background head.
- **Augmentations** act on the query only; each is picked with probability proportional to its ``weight_*``.
  ``reverse`` flips the row order. ``noise`` adds ``N(0, sigma^2 / D)`` to each of the D components (so the noise
  vector's expected norm is ``noise_sigma`` times the unit feature norm) and re-normalises every row to unit length,
  since store features are unit CLIP vectors. ``slow`` resamples the clip's ``n`` rows to ``round(n * f)`` rows and
  ``fast`` to ``max(1, round(n / f))`` rows, ``f`` uniform in ``slow_factor`` / ``fast_factor``, by linear
  interpolation at the new rows' centres, re-normalised (a temporal low-pass for speed-up, frame blending for slow-down).
- **Ground truth**: the clip's rows on the *target's* clock, snapped to the row boundaries of the frames the query was
  cut from. Because every augmentation changes the query only, the ground truth is the same for the original and all
  four augmentations: the moment in the target that the query shows is unchanged.
- **Determinism**: the specs of a video depend only on ``(seed, epoch, video_id)``, not on the other videos, so adding
  footage does not reshuffle existing samples.
"""
from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass
from typing import Literal, Mapping

import numpy as np

from vmr import timeline
from vmr.data.samples import Sample
from vmr.errors import ConfigError, InputError

AUGMENTATIONS = ("reverse", "noise", "slow", "fast")


@dataclass
class PretrainConfig:
    """How random-clip pretraining samples are drawn. Seconds unless stated."""

    clip_unit: Literal["seconds", "fraction"] = "seconds"
    clip_min: float = 2.0
    clip_max: float = 8.0
    max_clip_fraction: float = 0.75
    target_window_s: tuple[float, float] | None = None
    clips_per_video: int = 2
    clips_per_minute: float = 0.0
    include_original: bool = True
    weight_reverse: float = 1.0
    weight_noise: float = 1.0
    weight_slow: float = 1.0
    weight_fast: float = 1.0
    noise_sigma: float = 0.2
    slow_factor: tuple[float, float] = (1.5, 2.0)
    fast_factor: tuple[float, float] = (1.5, 2.0)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.clip_min <= self.clip_max:
            raise ConfigError(f"need 0 < clip_min <= clip_max, got {self.clip_min}, {self.clip_max}")
        if self.clip_unit == "fraction" and self.clip_max > 1:
            raise ConfigError(f"clip_unit=fraction needs clip_max <= 1, got {self.clip_max}")
        if not 0 < self.max_clip_fraction <= 1:
            raise ConfigError(f"max_clip_fraction must be in (0, 1], got {self.max_clip_fraction}")
        if self.target_window_s is not None and not 0 < self.target_window_s[0] <= self.target_window_s[1]:
            raise ConfigError(f"need 0 < target_window_s[0] <= target_window_s[1], got {self.target_window_s}")
        if self.clips_per_video < 0 or self.clips_per_minute < 0:
            raise ConfigError("clips_per_video and clips_per_minute must be >= 0")
        if min(self.weights()) < 0:
            raise ConfigError("augmentation weights must be >= 0")
        if not self.include_original and sum(self.weights()) == 0:
            raise ConfigError("include_original=false with all augmentation weights 0 would give no samples")
        if self.noise_sigma < 0:
            raise ConfigError(f"noise_sigma must be >= 0, got {self.noise_sigma}")
        for name in ("slow_factor", "fast_factor"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ConfigError(f"need 1 <= {name}[0] <= {name}[1], got {(lo, hi)}")

    def weights(self) -> list[float]:
        """Relative weights of :data:`AUGMENTATIONS`, in that order."""
        return [self.weight_reverse, self.weight_noise, self.weight_slow, self.weight_fast]


@dataclass
class ClipSpec:
    """One pretraining sample, small and serialisable (:meth:`to_dict`). All times in seconds on the video's clock.

    ``augmentation`` is ``"none"`` or one of :data:`AUGMENTATIONS`; ``factor`` is the slow-down/speed-up factor (1.0
    otherwise); ``noise_sigma`` is used by ``"noise"``; ``seed`` makes the noise reproducible.
    """

    sample_id: str
    video_id: str
    clip_start: float
    clip_end: float
    target_start: float
    target_end: float
    augmentation: str = "none"
    factor: float = 1.0
    noise_sigma: float = 0.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "ClipSpec":
        return cls(**d)


def _video_seed(seed: int, epoch: int, video_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, zlib.crc32(video_id.encode("utf-8"))])


def clips_for(duration: float, config: PretrainConfig) -> int:
    """Number of clips drawn from a video of ``duration`` seconds per epoch."""
    return config.clips_per_video + int(config.clips_per_minute * duration / 60.0)


def sample_clip_specs(videos: Mapping[str, float | tuple[float, float]], config: PretrainConfig,
                      epoch: int = 0) -> list[ClipSpec]:
    """Draw the pretraining specs of one epoch. ``videos`` maps video id -> its extent in seconds: a duration (the
    video spans ``[0, duration)``) or a ``(start, end)`` pair; :func:`video_extents` reads them from a feature store.
    Deterministic for ``(config.seed, epoch)``; videos are visited in sorted id order and each has its own random
    stream."""
    weights = np.asarray(config.weights(), dtype=np.float64)
    probs = weights / weights.sum() if weights.sum() > 0 else None
    specs: list[ClipSpec] = []
    for vid in sorted(videos):
        extent = videos[vid]
        v0, v1 = (0.0, float(extent)) if np.isscalar(extent) else (float(extent[0]), float(extent[1]))
        duration = v1 - v0
        if not duration > 0:
            raise InputError(f"video {vid!r} spans [{v0}, {v1}) s; need a positive duration")
        rng = _video_seed(config.seed, epoch, vid)
        for k in range(clips_for(duration, config)):
            if config.target_window_s is None:
                w0, w1 = v0, v1
            else:
                wlen = min(rng.uniform(*config.target_window_s), duration)
                w0 = v0 + rng.uniform(0.0, duration - wlen)
                w1 = w0 + wlen
            wlen = w1 - w0
            clen = rng.uniform(config.clip_min, config.clip_max)
            if config.clip_unit == "fraction":
                clen *= wlen
            clen = min(clen, config.max_clip_fraction * wlen)
            c0 = w0 + rng.uniform(0.0, wlen - clen)
            c1 = c0 + clen
            base = dict(video_id=vid, clip_start=c0, clip_end=c1, target_start=w0, target_end=w1)
            stem = f"{vid}#e{epoch}c{k}"
            aug_seed = int(rng.integers(0, 2**31 - 1))
            if config.include_original:
                specs.append(ClipSpec(sample_id=f"{stem}:none", **base))
            if probs is not None:
                aug = AUGMENTATIONS[int(rng.choice(len(AUGMENTATIONS), p=probs))]
                factor = 1.0
                if aug == "slow":
                    factor = float(rng.uniform(*config.slow_factor))
                elif aug == "fast":
                    factor = float(rng.uniform(*config.fast_factor))
                sigma = config.noise_sigma if aug == "noise" else 0.0
                specs.append(ClipSpec(sample_id=f"{stem}:{aug}", augmentation=aug, factor=factor,
                                      noise_sigma=sigma, seed=aug_seed, **base))
    return specs


def is_reversed(sample_id: str) -> bool:
    """True for a sample whose query is its clip played backwards (:func:`sample_clip_specs` names it
    ``{stem}:reverse``): a monotone alignment must see its moment's rows in reverse order."""
    return str(sample_id).endswith(":reverse")


def video_extents(store) -> dict[str, tuple[float, float]]:
    """Video id -> ``(start, end)`` seconds covered by its feature rows (``timestamps[0]``, ``timestamps[-1] + step``)
    for every video in a feature store. Reads only the manifest (``entries()``, whose entries hold ``timestamps`` and
    ``fps``) when the store has one, else loads each video."""
    out = {}
    entries = store.entries() if hasattr(store, "entries") else None
    for vid in (entries if entries is not None else store.video_ids()):
        if entries is not None and entries[vid].get("timestamps") and entries[vid].get("fps"):
            ts, step = entries[vid]["timestamps"], 1.0 / float(entries[vid]["fps"])
        else:
            vf = store.load(vid)
            ts, step = vf.timestamps, vf.step
        if len(ts):
            out[vid] = (float(ts[0]), float(ts[-1]) + step)
    return out


# ---- augmentations (query rows only) ---------------------------------------------------------------------------


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


def reverse_rows(x: np.ndarray) -> np.ndarray:
    """(n, D) -> (n, D) with the rows in reverse order."""
    return np.ascontiguousarray(x[::-1])


def add_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """(n, D) unit rows -> (n, D) unit rows: add ``N(0, sigma^2 / D)`` per component, then re-normalise."""
    d = x.shape[1]
    noisy = x.astype(np.float64) + rng.normal(0.0, sigma / np.sqrt(d), size=x.shape)
    return _unit_rows(noisy)


def resampled_length(n: int, augmentation: str, factor: float) -> int:
    """Rows of an ``n``-row query after ``"slow"`` (``round(n * factor)``) or ``"fast"`` (``max(1, round(n /
    factor))``); other augmentations keep ``n``. Rounds halves up."""
    if augmentation == "slow":
        return max(1, int(np.floor(n * factor + 0.5)))
    if augmentation == "fast":
        return max(1, int(np.floor(n / factor + 0.5)))
    return n


def resample_rows(x: np.ndarray, n_out: int) -> np.ndarray:
    """(n, D) -> (n_out, D): linear interpolation at the centres of ``n_out`` equal rows spanning the same time,
    re-normalised to unit rows."""
    n = len(x)
    if n_out < 1:
        raise ValueError(f"n_out must be >= 1, got {n_out}")
    pos = np.clip((np.arange(n_out) + 0.5) * n / n_out - 0.5, 0.0, n - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    w = (pos - lo)[:, None]
    out = (1.0 - w) * x[lo].astype(np.float64) + w * x[hi].astype(np.float64)
    return _unit_rows(out)


def augment_query(x: np.ndarray, spec: ClipSpec) -> np.ndarray:
    """Apply ``spec.augmentation`` to the (n, D) query rows."""
    aug = spec.augmentation
    if aug == "none":
        return np.asarray(x, dtype=np.float32)
    if aug == "reverse":
        return reverse_rows(x)
    if aug == "noise":
        return add_noise(x, spec.noise_sigma, np.random.default_rng(spec.seed))
    if aug in ("slow", "fast"):
        return resample_rows(x, resampled_length(len(x), aug, spec.factor))
    raise ValueError(f"{spec.sample_id}: unknown augmentation {aug!r}; known: none, {', '.join(AUGMENTATIONS)}")


def materialize_clip(spec: ClipSpec, source) -> Sample:
    """Turn a spec into a :class:`Sample`. ``source`` is a feature store (anything with ``load(video_id)``) or the
    video's ``VideoFeatures`` itself (``timestamps`` (n,) s, ``features`` (n, D), ``step`` s).

    The target is the rows whose interval centres lie in ``[target_start, target_end)`` (widened, if need be, to
    contain the clip's rows); the query is the rows of ``[clip_start, clip_end)``, augmented; the ground truth is the
    query rows' ``[start, end)`` seconds on the target's clock (see the module docstring)."""
    vf = source.load(spec.video_id) if hasattr(source, "load") else source
    ts = np.asarray(vf.timestamps, dtype=np.float64)
    feats = np.asarray(vf.features)
    step = float(vf.step)
    try:
        c0, c1 = timeline.span_to_rows(ts, step, spec.clip_start, spec.clip_end)
        w0, w1 = timeline.span_to_rows(ts, step, spec.target_start, spec.target_end)
    except ValueError as e:
        end = ts[-1] + step if len(ts) else 0.0
        raise InputError(f"{spec.sample_id}: spec does not fit the features of {spec.video_id!r} "
                         f"({len(ts)} rows, [{ts[0] if len(ts) else 0.0:.3f}, {end:.3f}) s): {e}") from None
    w0, w1 = min(w0, c0), max(w1, c1)
    times = ts[w0:w1]
    gt_start, gt_end = timeline.rows_to_span(times, step, c0 - w0, c1 - w0)
    query = augment_query(feats[c0:c1], spec)
    return Sample(
        sample_id=spec.sample_id,
        target_id=spec.video_id,
        target=feats[w0:w1],
        target_times=times,
        step=step,
        query=query,
        spans=np.array([[gt_start, gt_end]]),
        query_id=f"{spec.video_id}@{spec.clip_start:.3f}-{spec.clip_end:.3f}:{spec.augmentation}",
        query_kind="video",
        meta={"kind": "clip", "augmentation": spec.augmentation, "factor": spec.factor,
              "query_rows": (c0, c1), "target_rows": (w0, w1)},
    )
