"""The plain PyTorch data path: specs -> samples -> padded batches, without Ray.

A *spec* is a small serialisable description of one sample (:class:`vmr.data.pretrain_clips.ClipSpec`, and the annotation
pairs' ``PairSpec``/``TextSpec`` from :mod:`vmr.data.pairs`). Each spec type is registered here with a name and a
``materialize(spec, store, **context) -> Sample`` function, so :class:`SpecDataset` (and the Ray path in
:mod:`vmr.pipeline.datasets`) stay generic: a new kind of sample needs one :func:`register_spec` call.

``store`` is a feature store (anything with ``load(video_id) -> VideoFeatures``) or its URI; a URI is opened lazily in
each worker process, which keeps S3 clients out of ``fork``. Loaded videos are kept in a per-worker LRU cache
(:class:`FeatureCache`), since many specs share a video.

Targets longer than the model's maximum length are handled by :func:`crop_to_max` (a window that contains the ground
truth, rather than an error), and long video queries are resampled to the maximum; callers who want the strict
"error, not a silent crop" behaviour of :func:`vmr.data.samples.collate` pass ``crop=False``.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import json
import zlib
from collections import OrderedDict
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vmr import timeline
from vmr.data.samples import Sample, collate

# ---- the spec registry ------------------------------------------------------------------------------------------

_BY_TYPE: dict[type, tuple[str, Callable[..., Sample]]] = {}
_BY_NAME: dict[str, type] = {}
_ACCEPTS: dict[type, frozenset | None] = {}  # context keys a materializer takes (None: any)


def register_spec(spec_type: type, name: str, materialize_fn: Callable[..., Sample]) -> None:
    """Register a spec dataclass under ``name`` with its ``materialize_fn(spec, store, **context) -> Sample``.
    Each materializer receives only the context keys its signature names, so one context serves mixed specs."""
    if name in _BY_NAME and _BY_NAME[name] is not spec_type:
        raise ValueError(f"spec name {name!r} is already registered for {_BY_NAME[name].__qualname__}")
    params = list(inspect.signature(materialize_fn).parameters.values())[2:]
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    _BY_TYPE[spec_type] = (name, materialize_fn)
    _BY_NAME[name] = spec_type
    _ACCEPTS[spec_type] = None if var_kw else frozenset(p.name for p in params)


@functools.lru_cache(maxsize=1)
def _register_builtin() -> None:
    from vmr.data import pretrain_clips as pretraining

    register_spec(pretraining.ClipSpec, "clip", pretraining.materialize_clip)
    # Annotation pairs live in vmr.data.pairs (written alongside); register what it provides.
    try:
        pairs = importlib.import_module("vmr.data.pairs")
    except ImportError:
        return
    for type_name, fn_name, name in (("PairSpec", "materialize_pair", "pair"), ("TextSpec", "materialize_text", "text")):
        spec_type, fn = getattr(pairs, type_name, None), getattr(pairs, fn_name, None)
        if spec_type is not None and fn is not None:
            register_spec(spec_type, name, fn)


def _lookup(spec) -> tuple[str, Callable[..., Sample]]:
    _register_builtin()
    try:
        return _BY_TYPE[type(spec)]
    except KeyError:
        raise TypeError(f"no materializer registered for {type(spec).__qualname__}; "
                        f"known: {sorted(_BY_NAME)} (see vmr.data.specs.register_spec)") from None


def materialize(spec, store, **context) -> Sample:
    """Turn any registered spec into a :class:`Sample` (the ``context`` keys its materializer takes are passed on)."""
    _, fn = _lookup(spec)
    accepts = _ACCEPTS[type(spec)]
    if accepts is not None:
        context = {k: v for k, v in context.items() if k in accepts}
    return fn(spec, store, **context)


def spec_to_record(spec) -> dict:
    """A spec -> ``{"kind": name, "sample_id": str, "spec": json}``: one flat row that Ray Data can hold, whatever the
    spec type (so clips and pairs can share a dataset)."""
    name, _ = _lookup(spec)
    d = dataclasses.asdict(spec)
    return {"kind": name, "sample_id": spec_id(spec), "spec": json.dumps(d)}


def spec_id(spec) -> str:
    """The id of the sample a spec makes: its ``sample_id``, ``pair_id`` or ``qid``."""
    for attr in ("sample_id", "pair_id", "qid"):
        if hasattr(spec, attr):
            return str(getattr(spec, attr))
    return ""


def spec_from_record(record: dict):
    """Inverse of :func:`spec_to_record`."""
    _register_builtin()
    kind = str(record["kind"])
    if kind not in _BY_NAME:
        raise TypeError(f"unknown spec kind {kind!r}; known: {sorted(_BY_NAME)}")
    cls = _BY_NAME[kind]
    d = json.loads(record["spec"])
    from_dict = getattr(cls, "from_dict", None)
    return from_dict(d) if from_dict is not None else cls(**d)


# ---- stores -----------------------------------------------------------------------------------------------------


def open_store(store):
    """A store object, or ``vmr.features.store.FeatureStore(uri)`` for a URI string."""
    if isinstance(store, str):
        from vmr.features.store import FeatureStore

        return FeatureStore(store)
    return store


class FeatureCache:
    """LRU cache of loaded videos in front of a store: ``load(video_id)`` returns the same ``VideoFeatures`` object
    for the ``max_videos`` most recently used ids. The store (or URI) is opened on first use."""

    def __init__(self, store, max_videos: int = 32):
        if max_videos < 1:
            raise ValueError(f"max_videos must be >= 1, got {max_videos}")
        self._source = store
        self._store = None
        self.max_videos = max_videos
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def store(self):
        if self._store is None:
            self._store = open_store(self._source)
        return self._store

    def load(self, video_id: str):
        if video_id in self._cache:
            self._cache.move_to_end(video_id)
            self.hits += 1
            return self._cache[video_id]
        self.misses += 1
        vf = self.store.load(video_id)
        self._cache[video_id] = vf
        if len(self._cache) > self.max_videos:
            self._cache.popitem(last=False)
        return vf

    def __getstate__(self):
        # Workers get the source and an empty cache, never an open client or another process's arrays.
        return {"_source": self._source, "_store": None, "max_videos": self.max_videos,
                "_cache": OrderedDict(), "hits": 0, "misses": 0}


# ---- fitting a sample to the model's lengths --------------------------------------------------------------------


def sample_rng(seed: int, sample_id: str) -> np.random.Generator:
    """The random stream of one sample's cropping: a function of ``(seed, sample_id)`` only, so the torch and the Ray
    paths crop a sample identically, whatever the batch or worker."""
    return np.random.default_rng([seed, zlib.crc32(sample_id.encode("utf-8"))])


def crop_to_max(sample: Sample, max_target: int | None = None, max_query: int | None = None,
                seed: int = 0) -> Sample:
    """Fit ``sample`` to ``max_target`` target rows and ``max_query`` query rows (``None`` = no limit).

    Target: a window of ``max_target`` consecutive rows that contains every ground-truth row, placed uniformly among
    the windows that do (seeded by ``(seed, sample_id)``); spans are clipped to the window's seconds (they only stick
    out when a span ends inside a row). A ground truth wider than ``max_target`` rows is an error: raise
    ``max_target`` or shorten the targets (e.g. ``PretrainConfig.target_window_s``). A sample without spans gets a
    uniformly placed window.
    Query: a ``"video"`` query is resampled to ``max_query`` rows (the whole moment, played faster; see
    :func:`vmr.data.pretrain_clips.resample_rows`); a ``"text"`` query keeps its first ``max_query`` tokens.
    Returns ``sample`` itself when it already fits."""
    from vmr.data.pretrain_clips import resample_rows

    target, times, spans, query = sample.target, sample.target_times, sample.spans, sample.query
    meta = dict(sample.meta)
    changed = False
    if max_target is not None and len(target) > max_target:
        m = len(target)
        fg = np.flatnonzero(sample.foreground())
        if len(fg):
            f0, f1 = int(fg[0]), int(fg[-1]) + 1
            if f1 - f0 > max_target:
                raise ValueError(f"{sample.sample_id}: the ground truth covers {f1 - f0} target rows, more than "
                                 f"max_target={max_target}; raise max_target or use shorter targets")
            lo, hi = max(0, f1 - max_target), min(f0, m - max_target)
        else:
            lo, hi = 0, m - max_target
        w0 = int(sample_rng(seed, sample.sample_id).integers(lo, hi + 1))
        w1 = w0 + max_target
        target, times = target[w0:w1], times[w0:w1]
        start, end = timeline.position_to_seconds(times, sample.step, [0, len(times)])
        spans = np.clip(spans, start, end)
        spans = spans[spans[:, 1] > spans[:, 0]]
        meta["target_crop_rows"] = (w0, w1)
        changed = True
    if max_query is not None and len(query) > max_query:
        if sample.query_kind == "video":
            query = resample_rows(query, max_query)
        else:
            query = query[:max_query]
        meta["query_rows_before_crop"] = len(sample.query)
        changed = True
    if not changed:
        return sample
    return dataclasses.replace(sample, target=target, target_times=times, spans=spans, query=query, meta=meta)


# ---- the torch Dataset ------------------------------------------------------------------------------------------


class SpecDataset(Dataset):
    """A map-style dataset over specs: ``dataset[i]`` is the materialised (and, with ``crop=True``, fitted)
    :class:`Sample` of ``specs[i]``; :meth:`collate` pads a list of them to ``max_target``/``max_query`` rows.

    ``context`` is passed to every materializer, e.g. ``{"text_features": vmr.data.pairs.embed_sentences(specs, enc)}``
    for ``TextSpec``. Use :func:`make_loader` for a ``DataLoader``; each worker process keeps its own
    :class:`FeatureCache`."""

    def __init__(self, specs: Sequence, store, max_target: int | None = None, max_query: int | None = None,
                 crop: bool = True, seed: int = 0, cache_size: int = 32, context: dict | None = None):
        self.specs = list(specs)
        self.features = store if isinstance(store, FeatureCache) else FeatureCache(store, cache_size)
        self.max_target = max_target
        self.max_query = max_query
        self.crop = crop
        self.seed = seed
        self.context = dict(context or {})
        for s in self.specs[:1]:
            _lookup(s)  # fail now, not inside a worker, on an unregistered spec type

    def __len__(self) -> int:
        return len(self.specs)

    def __getitem__(self, i: int) -> Sample:
        return self.sample(self.specs[i])

    def sample(self, spec) -> Sample:
        s = materialize(spec, self.features, **self.context)
        if self.crop:
            s = crop_to_max(s, self.max_target, self.max_query, self.seed)
        return s

    def collate(self, samples: list[Sample]) -> dict:
        return collate(samples, max_target=self.max_target, max_query=self.max_query)


def make_loader(dataset: SpecDataset, batch_size: int, shuffle: bool = False, num_workers: int = 0,
                seed: int = 0, drop_last: bool = False, **kwargs) -> DataLoader:
    """A ``DataLoader`` yielding :func:`vmr.data.samples.collate` batches padded to the dataset's max lengths; with
    ``shuffle`` the order is drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      collate_fn=dataset.collate, drop_last=drop_last, generator=generator, **kwargs)
