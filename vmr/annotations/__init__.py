"""Annotation formats, loaded into one schema in seconds.

One module per format, each documenting its schema: :mod:`~vmr.annotations.sportsmoments`,
:mod:`~vmr.annotations.activitynet_vrl`, :mod:`~vmr.annotations.qvhighlights`, :mod:`~vmr.annotations.charades_sta`,
:mod:`~vmr.annotations.activitynet_captions`, :mod:`~vmr.annotations.matches`. The records they produce and the load
report are in :mod:`~vmr.annotations.records`; :mod:`~vmr.annotations.detect` guesses a file's format.

``load(uri)`` returns an :class:`Annotations` (records + :class:`LoadReport`) and raises an :class:`InputError` naming
file and line on the first bad row (``on_error="skip"`` leaves bad rows out instead, listed in the report);
``check(uri)`` validates a whole file and returns the report (what ``vmr annotations check`` prints).
"""
from __future__ import annotations

import importlib
from typing import Any

from vmr.annotations.detect import FORMATS, guess_file_format
from vmr.annotations.records import (
    ActionInstance,
    Annotations,
    LoadReport,
    TextMoment,
    VideoIndex,
    VideoInfo,
    VideoPair,
)
from vmr.errors import InputError

_MODULES = {
    "sportsmoments": "sportsmoments",
    "activitynet-vrl": "activitynet_vrl",
    "qvhighlights": "qvhighlights",
    "charades-sta": "charades_sta",
    "activitynet-captions": "activitynet_captions",
    "matches": "matches",
}

__all__ = ["FORMATS", "load", "check", "video_index", "guess_file_format", "Annotations", "LoadReport",
           "VideoPair", "ActionInstance", "TextMoment", "VideoIndex", "VideoInfo"]


def format_module(fmt: str):
    """The loader module of format ``fmt``."""
    if fmt not in _MODULES:
        raise InputError(f"unknown annotation format {fmt!r}; known: {', '.join(FORMATS)}")
    return importlib.import_module(f"vmr.annotations.{_MODULES[fmt]}")


def video_index(store: Any) -> VideoIndex:
    """A :class:`VideoIndex` over a feature store (a :class:`vmr.features.store.FeatureStore` or its URI). An empty or missing
    store is an :class:`InputError`: every row would otherwise fail with 'not in the feature store'."""
    if isinstance(store, str):
        from vmr.features.store import FeatureStore

        store = FeatureStore(store)
    if len(store) == 0:
        raise InputError(f"the feature store {store.uri} holds no videos (wrong --store?)")
    return VideoIndex.from_store(store)


def load(uri: str, format: str | None = None, store: Any = None, *, videos: VideoIndex | None = None,
         on_error: str = "raise", **options) -> Annotations:
    """Load ``uri`` in ``format`` (guessed from the content when ``None``). ``store`` (a feature store or its URI) or
    ``videos`` adds the checks against the store (ids present, durations). ``options`` go to the format's ``load``
    (``dedupe``, ``tolerance``, ``video_id_prefix``, and format-specific ones)."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    fmt = format or guess_file_format(uri)
    if videos is None and store is not None:
        videos = video_index(store)
    return format_module(fmt).load(uri, videos, on_error=on_error, **options)


def check(uri: str, format: str | None = None, store: Any = None, **options) -> LoadReport:
    """Validate every row of ``uri`` and return the report (errors listed, never raised). Without a store,
    ActivityNet-VRL files are checked in feature indices against ``length.json`` (no conversion to seconds)."""
    fmt = format or guess_file_format(uri)
    if fmt == "activitynet-vrl":
        options.setdefault("convert", store is not None)
    return load(uri, fmt, store, on_error="skip", **options).report
