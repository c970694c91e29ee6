"""The feature store: per-video CLIP frame features with their timestamps in seconds, and a manifest.

Layout under the store root (a local path or any :mod:`vmr.storage` URI)::

    {root}/features/{video_id}.npz      timestamps (n,) float64 seconds, features (n, D) float32, L2-normalised rows
    {root}/manifest/{video_id}.json     one manifest entry per video (keys: MANIFEST_KEYS, and FEATURES_KEYS: the
                                        features file's size in bytes and sha256, absent in entries of vmr < 0.2)
    {root}/failures.json                [{uri, reason, ...}] of the last extraction run
    {root}/settings.json                the store's feature settings (model, pretrained, fps, extractor_version):
                                        created once, by whoever writes first (a conditional create); every writer
                                        claims it before writing (:meth:`FeatureStore.claim_settings`)
    {root}/manifest.parquet             the compacted manifest: every entry in one file (rebuilt when stale)
    {root}/index/                       the vector index of the rows, when built (:mod:`vmr.search.index`)

``video_id`` may contain ``/`` (videos in subfolders of the ``--videos`` prefix); the same subfolders appear under
``features/`` and ``manifest/``. One manifest file per video lets many writers (Ray tasks) add videos at once without
a shared file to race on. :meth:`FeatureStore.write` writes the features first and the manifest entry second, each
atomically, so a manifest entry exists only for complete features: a run killed midway leaves, at worst, a features
file without an entry, which the next run rewrites.

Listing a manifest of 100k small JSON objects in S3 means 100k GETs. :meth:`FeatureStore.entries` therefore reads the
compacted manifest first: one Parquet object with a row per entry (its JSON text and the listed size/etag of the JSON
file it came from). It still lists ``manifest/`` (one LIST request per 1,000 keys), fetches only the entries that are
new or changed since the compaction, and writes the compacted manifest again (atomically) when any were; so writers
never touch it and it is never wrong, only slower when stale.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
import posixpath
import time
import zipfile
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from vmr import storage
from vmr.errors import InputError
from vmr.features.settings import IMPORTED_EXTRACTOR_VERSION, FeatureSettings

log = logging.getLogger(__name__)

COMPACT_MANIFEST = "manifest.parquet"  # under the store root: every manifest entry in one object
MANIFEST_KEYS = (
    "video_id", "source_uri", "source_size", "source_etag", "duration", "fps", "n_frames", "timestamps",
    "model", "pretrained", "extractor_version", "dim", "created",
)
SETTINGS_FILE = "settings.json"  # under the store root: the one set of settings every video of the store has
FEATURES_KEYS = ("features_size", "features_sha256")  # of the .npz bytes, recorded by write()
REPAIR_HINT = "re-run vmr extract (or vmr import-features) for it to repair the store"
_CALLER_KEYS = ("source_uri", "source_size", "source_etag", "duration", "fps", "model", "pretrained", "extractor_version")


def entry_is_current(entry: dict | None, source_size: int, source_etag: str, settings: FeatureSettings, *,
                     features_size: int | None) -> bool:
    """True when a manifest ``entry`` was made from the same source object (size and etag) with the same feature
    settings and its features file is there and whole, so a re-run can skip its video: the one "is this stored video
    current?" test. ``features_size``: the features file's size in bytes as listed (None: it is missing); it must be
    the size the entry records (``features_size``), or, for an entry from before that was recorded, at least the
    bytes of its arrays. A file damaged without changing its size is caught by :meth:`FeatureStore.load` (sha256)."""
    if not entry or features_size is None:
        return False
    try:
        if "features_size" in entry:
            whole = int(entry["features_size"]) == int(features_size)
        else:
            whole = int(features_size) >= int(entry["n_frames"]) * (8 + 4 * int(entry["dim"]))
        return (whole and int(entry.get("source_size", -1)) == int(source_size)
                and str(entry.get("source_etag")) == str(source_etag)
                and FeatureSettings.from_entry(entry).matches(settings))
    except (InputError, TypeError, ValueError, KeyError):
        return False


@dataclass
class VideoFeatures:
    """One video's features: ``timestamps`` (n,) float64 seconds, ``features`` (n, D) float32 L2-normalised rows,
    and its manifest ``entry``."""

    video_id: str
    timestamps: np.ndarray
    features: np.ndarray
    entry: dict = field(repr=False)

    @property
    def step(self) -> float:
        """Seconds between sampled rows (1/fps)."""
        return 1.0 / float(self.entry["fps"])

    @property
    def duration(self) -> float:
        """The source video's duration in seconds."""
        return float(self.entry["duration"])


def video_id_for(uri: str, base: str) -> str:
    """A video's id: its path under ``base`` without the extension (``league/m2`` for ``s3://raw/league/m2.mkv``
    under ``s3://raw``). If ``base`` is the file itself, its name without the extension."""
    if storage.normalize(uri) == storage.normalize(base):
        rel = posixpath.basename(storage.strip(uri).replace("\\", "/"))
    else:
        rel = storage.relative(uri, base)
    stem, _ = posixpath.splitext(rel)
    return _check_id(stem)


def _check_id(video_id: str) -> str:
    parts = video_id.split("/")
    if not video_id or video_id.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise InputError(f"invalid video id {video_id!r}: a relative path without '.' or '..' components")
    return video_id


class FeatureStore:
    """Read and write the feature store at ``uri`` (see the module docstring for the layout)."""

    def __init__(self, uri: str):
        self.uri = storage.normalize(uri)

    def __repr__(self) -> str:
        return f"FeatureStore({self.uri!r})"

    # -- locations -------------------------------------------------------------------------------------------
    def features_uri(self, video_id: str) -> str:
        return storage.join(self.uri, "features", *_check_id(video_id).split("/")) + ".npz"

    def entry_uri(self, video_id: str) -> str:
        return storage.join(self.uri, "manifest", *_check_id(video_id).split("/")) + ".json"

    @property
    def failures_uri(self) -> str:
        return storage.join(self.uri, "failures.json")

    @property
    def settings_uri(self) -> str:
        return storage.join(self.uri, SETTINGS_FILE)

    # -- the store's one set of settings ---------------------------------------------------------------------
    def recorded_settings(self) -> FeatureSettings | None:
        """The settings of ``settings.json`` (None when the store has none yet). InputError when it is damaged."""
        try:
            text = storage.read_text(self.settings_uri)
        except FileNotFoundError:
            return None
        try:
            return FeatureSettings.from_entry(json.loads(text))
        except (ValueError, InputError) as e:
            raise InputError(f"damaged {self.settings_uri} ({' '.join(str(e).split())[:80]}); remove it and re-run "
                             "vmr extract (it is recreated from the manifest)") from None

    def claim_settings(self, settings: FeatureSettings, redo: Iterable[str] = ()) -> None:
        """Make sure this store is one of ``settings`` before writing into it; every writer calls this first.

        The first writer creates ``settings.json`` with a conditional create (:func:`vmr.storage.create_bytes`), so
        of two runs with different settings racing on one store exactly one wins; a store from before the file
        existed gets it from its entries. A store of other settings is refused (InputError, one line), unless it
        holds videos and ``redo`` (the video ids this run writes) covers every one of them: then it is re-extracted
        whole (a new fps over the same videos) and the file is replaced."""
        wanted = settings.without_dim()
        current = self.recorded_settings()
        if current is None:
            seed = self.settings() or wanted  # an older store: what its entries hold (InputError if they mix)
            storage.create_bytes(self.settings_uri, _settings_json(seed))
            current = self.recorded_settings() or seed  # whoever created it first
        if current.matches(wanted):
            return
        stored = set(self.entries())
        if stored and stored <= set(redo):
            storage.write_text_atomic(self.settings_uri, _settings_json(wanted).decode())
            return
        raise InputError(f"feature store {self.uri} is for {current.describe()} ({self.settings_uri}), not "
                         f"{wanted.describe()}: use another --out, or the store's settings")

    def check_settings(self, settings: FeatureSettings) -> None:
        """InputError unless ``settings.json`` holds ``settings`` (a writer's check before each write: another run
        may have claimed the store for other settings since)."""
        current = self.recorded_settings()
        if current is None or not current.matches(settings):
            found = current.describe() if current else "no settings.json"
            raise InputError(f"feature store {self.uri} is no longer for {settings.without_dim().describe()} "
                             f"({found}); another run claimed it")

    # -- writing ---------------------------------------------------------------------------------------------
    def write(self, video_id: str, timestamps: np.ndarray, features: np.ndarray, entry: dict) -> None:
        """Store one video: the features file first, then its manifest entry, each atomically.

        ``entry`` must hold ``source_uri, source_size, source_etag, duration, fps, model, pretrained,
        extractor_version``; ``video_id, n_frames, dim, timestamps`` are filled in from the arrays and ``created``
        (UTC, ISO 8601) unless given. Rows must be L2-normalised and timestamps strictly increasing seconds."""
        _check_id(video_id)
        ts = np.asarray(timestamps, dtype=np.float64)
        feats = np.asarray(features, dtype=np.float32)
        if ts.ndim != 1 or feats.ndim != 2 or len(ts) != len(feats):
            raise ValueError(f"{video_id}: timestamps (n,) and features (n, D) expected, got {ts.shape} and {feats.shape}")
        if len(ts) == 0:
            raise ValueError(f"{video_id}: no feature rows to store")
        if not np.all(np.isfinite(ts)) or np.any(np.diff(ts) <= 0):
            raise ValueError(f"{video_id}: timestamps must be finite and strictly increasing seconds")
        norms = np.linalg.norm(feats, axis=1)
        if not np.all(np.abs(norms - 1.0) < 1e-3):
            raise ValueError(f"{video_id}: feature rows must be L2-normalised (norms {norms.min():.4f}..{norms.max():.4f})")
        missing = [k for k in _CALLER_KEYS if k not in entry]
        if missing:
            raise ValueError(f"{video_id}: manifest entry lacks {missing}")
        full = {k: entry[k] for k in entry}
        full.update(video_id=video_id, n_frames=int(len(ts)), dim=int(feats.shape[1]), timestamps=[float(t) for t in ts])
        full.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        full = _jsonable(full)

        buf = io.BytesIO()
        np.savez(buf, timestamps=ts, features=feats)
        blob = buf.getvalue()
        full.update(features_size=len(blob), features_sha256=hashlib.sha256(blob).hexdigest())
        storage.write_bytes_atomic(self.features_uri(video_id), blob)
        storage.write_text_atomic(self.entry_uri(video_id), json.dumps(full, indent=1))

    def write_failures(self, failures: list[dict]) -> None:
        """Replace the failures table with ``failures`` (dicts with at least ``uri`` and ``reason``): the complete
        list of the latest run, so that files fixed since drop out of it."""
        rows = []
        for f in failures:
            if "uri" not in f or "reason" not in f:
                raise ValueError(f"a failure needs 'uri' and 'reason', got {f}")
            rows.append(_jsonable(dict(f)))
        rows.sort(key=lambda r: str(r["uri"]))
        storage.write_text_atomic(self.failures_uri, json.dumps(rows, indent=1))

    # -- reading ---------------------------------------------------------------------------------------------
    def entry(self, video_id: str) -> dict | None:
        """The manifest entry of ``video_id``, or None if it has none. InputError naming the file when it is not
        valid JSON (a truncated copy)."""
        uri = self.entry_uri(video_id)
        try:
            text = storage.read_text(uri)
        except FileNotFoundError:
            return None
        return _parse_entry(text, uri)

    def feature_sizes(self) -> dict[str, int]:
        """``{video_id: bytes}`` of every features file, from one listing (for :func:`entry_is_current`)."""
        root = storage.join(self.uri, "features")
        if not storage.exists(root):
            return {}
        return {storage.relative(f.uri, root)[:-len(".npz")]: f.size
                for f in storage.list_files(root, extensions={".npz"})}

    @property
    def compact_manifest_uri(self) -> str:
        return storage.join(self.uri, COMPACT_MANIFEST)

    def entries(self, compact: bool = True) -> dict[str, dict]:
        """All manifest entries by video id (sorted). With ``compact`` (the default) the compacted manifest is read
        first and only entries new or changed since it was written are fetched (module docstring); it is rewritten
        when it was stale. ``compact=False`` fetches every per-video entry."""
        root = storage.join(self.uri, "manifest")
        if not storage.exists(root):
            return {}
        found = storage.list_files(root, extensions={".json"})
        tags = {storage.relative(f.uri, root): f"{f.size}:{f.etag}" for f in found}
        known = self._read_compact() if compact else {}
        texts = {name: known[name][1] for name, tag in tags.items() if name in known and known[name][0] == tag}
        todo = [f for f in found if storage.relative(f.uri, root) not in texts]
        if todo:
            fs = storage.filesystem(root)
            blobs = fs.cat([storage.strip(f.uri) for f in todo])  # one concurrent fetch on object stores
            for f in todo:
                raw = blobs[storage.strip(f.uri)]
                texts[storage.relative(f.uri, root)] = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        if compact and (todo or len(known) != len(tags)):
            self._write_compact({name: (tags[name], text) for name, text in texts.items()})
        out = {}
        for name, text in texts.items():
            try:
                e = _parse_entry(text, storage.join(root, name))
            except InputError as err:  # one damaged entry must not hide the others: its video is just not there
                log.warning("%s", err)
                continue
            out[e["video_id"]] = e
        return dict(sorted(out.items()))

    def _read_compact(self) -> dict[str, tuple[str, str]]:
        """The compacted manifest: {entry file name under manifest/: (its size:etag when compacted, JSON text)};
        {} when there is none or it cannot be read (then every entry is fetched and it is written again)."""
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(io.BytesIO(storage.read_bytes(self.compact_manifest_uri)))
            cols = table.to_pydict()
            return {n: (t, e) for n, t, e in zip(cols["name"], cols["tag"], cols["entry"])}
        except FileNotFoundError:
            return {}
        except Exception as e:  # noqa: BLE001 - a damaged or foreign file: rebuilt from the per-video entries
            log.warning("compacted manifest %s unreadable (%s); rebuilding it", self.compact_manifest_uri, e)
            return {}

    def _write_compact(self, rows: dict[str, tuple[str, str]]) -> None:
        """Write the compacted manifest atomically; a reader without write access just goes without it."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        names = sorted(rows)
        table = pa.table({"name": names, "tag": [rows[n][0] for n in names], "entry": [rows[n][1] for n in names]})
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        try:
            storage.write_bytes_atomic(self.compact_manifest_uri, buf.getvalue())
        except (OSError, PermissionError) as e:
            log.info("compacted manifest not written to %s: %s", self.compact_manifest_uri, e)

    def video_ids(self) -> list[str]:
        return list(self.entries())

    def __contains__(self, video_id: str) -> bool:
        return storage.exists(self.entry_uri(video_id))

    def __len__(self) -> int:
        root = storage.join(self.uri, "manifest")
        return len(storage.list_files(root, extensions={".json"})) if storage.exists(root) else 0

    def load(self, video_id: str) -> VideoFeatures:
        """A video's timestamps (seconds) and features (n, D). InputError if the store does not hold it."""
        entry = self.entry(video_id)
        if entry is None:
            known = len(self)
            raise InputError(f"video {video_id!r} is not in the feature store {self.uri} ({known} videos there)")
        uri = self.features_uri(video_id)
        try:
            data = storage.read_bytes(uri)
        except FileNotFoundError:
            raise InputError(f"feature store {self.uri}: features of {video_id!r} are missing ({uri}); "
                             f"{REPAIR_HINT}") from None
        sha = entry.get("features_sha256")
        if sha and hashlib.sha256(data).hexdigest() != sha:
            raise InputError(f"damaged features file {uri} (its sha256 is not its manifest entry's; or it is being "
                             f"re-extracted right now); {REPAIR_HINT}")
        ts, feats = read_features_npz(data, uri)
        if len(ts) != int(entry["n_frames"]):
            raise InputError(
                f"feature store {self.uri}: {video_id!r} has {len(ts)} rows but its manifest says {entry['n_frames']} "
                "(is it being re-extracted right now?)"
            )
        return VideoFeatures(video_id=video_id, timestamps=ts, features=feats, entry=entry)

    def failures(self) -> list[dict]:
        """The failures table of the latest run ([] if none was written)."""
        try:
            return json.loads(storage.read_text(self.failures_uri))
        except FileNotFoundError:
            return []

    def is_current(self, video_id: str, source_size: int, source_etag: str, settings: FeatureSettings) -> bool:
        """True when ``video_id`` is stored from the same source object (size and etag) with the same settings, so a
        re-run can skip it (:func:`entry_is_current`)."""
        try:
            features_size = storage.info(self.features_uri(video_id)).size
        except InputError:  # not found
            features_size = None
        return entry_is_current(self.entry(video_id), source_size, source_etag, settings, features_size=features_size)

    def settings(self, entries: dict[str, dict] | None = None) -> FeatureSettings | None:
        """The settings all stored videos were extracted with (``dim`` left unknown; None for an empty store), from
        ``entries`` when the caller has listed them already. InputError if they differ."""
        found: dict[FeatureSettings, list[str]] = {}
        for vid, e in (self.entries() if entries is None else entries).items():
            found.setdefault(FeatureSettings.from_entry(e).without_dim(), []).append(vid)
        if not found:
            return None
        if len(found) > 1:
            desc = "; ".join(f"{s.describe()} for {len(v)} videos (e.g. {v[0]})" for s, v in found.items())
            raise InputError(f"feature store {self.uri} mixes extraction settings: {desc}")
        return next(iter(found))

    def feature_settings(self, entries: dict[str, dict] | None = None) -> FeatureSettings:
        """:meth:`settings` with the rows' ``dim`` (from the first entry), from ``entries`` when given: what a model's
        card is compared with. InputError for an empty store or mixed settings."""
        entries = self.entries() if entries is None else entries
        settings = self.settings(entries)
        if settings is None:
            raise InputError(f"feature store {self.uri} is empty: no feature settings to compare with")
        return dataclasses.replace(settings, dim=int(next(iter(entries.values())).get("dim") or 0))


def _settings_json(settings: FeatureSettings) -> bytes:
    d = {k: getattr(settings, k) for k in ("model", "pretrained", "fps", "extractor_version")}
    return (json.dumps(d, indent=1) + "\n").encode()


def _parse_entry(text: str, uri: str) -> dict:
    """A manifest entry from its JSON text; InputError naming ``uri`` when it is damaged."""
    try:
        e = json.loads(text)
        if not isinstance(e, dict) or "video_id" not in e:
            raise ValueError("not a manifest entry")
        return e
    except ValueError as err:  # JSONDecodeError is a ValueError
        raise InputError(f"damaged manifest entry {uri} ({' '.join(str(err).split())[:80]}); {REPAIR_HINT}") from None


def read_features_npz(data: bytes, uri: str, keys: tuple[str, ...] = ("timestamps", "features")) -> tuple:
    """The arrays ``keys`` of an ``.npz`` file's bytes (timestamps as float64, anything else float32); InputError
    naming ``uri`` when the file is damaged (truncated, not a zip) or lacks one of them."""
    try:
        with np.load(io.BytesIO(data)) as z:
            missing = [k for k in keys if k not in z]
            if missing:
                raise InputError(f"{uri}: no {missing[0]!r} array (keys: {sorted(z.keys())})")
            return tuple(z[k].astype(np.float64 if k == "timestamps" else np.float32) for k in keys)
    except InputError:
        raise
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, KeyError) as err:
        raise InputError(f"damaged features file {uri} ({type(err).__name__}: {' '.join(str(err).split())[:80]}); "
                         f"{REPAIR_HINT}") from None


def _jsonable(d: dict) -> dict:
    """Plain JSON types (NumPy scalars -> Python numbers); rejects NaN/inf."""
    out = {}
    for k, v in d.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"manifest value {k}={v} is not finite")
        out[k] = v
    return out


def import_npz_features(src_uri: str, store_uri: str, clip_seconds: float, model: str, pretrained: str) -> list[str]:
    """Import Moment-DETR / UniVTG style feature folders into the store; returns the imported video ids.

    ``src_uri`` is a folder (searched recursively) of ``{vid}.npz`` files, or one such file, each with key
    ``features`` of shape (n, D): one row per clip of ``clip_seconds``. Row i gets the timestamp ``i * clip_seconds``
    (the clip's start), fps is ``1 / clip_seconds`` and duration ``n * clip_seconds``. Rows that are not
    L2-normalised (UniVTG's are not) are normalised here; a file with an all-zero or non-finite row is refused with
    a clear error. The manifest records the npz as the source (its URI, size and etag),
    ``model`` and ``pretrained`` as stated by the caller, and extractor version ``IMPORTED_EXTRACTOR_VERSION``.
    """
    if not clip_seconds > 0:
        raise InputError(f"--clip-seconds must be positive, got {clip_seconds}")
    files = storage.list_files(src_uri, extensions={".npz"})
    if not files:
        raise InputError(f"no .npz files under {src_uri}")
    store = FeatureStore(store_uri)
    store.claim_settings(FeatureSettings(model, pretrained, 1.0 / float(clip_seconds), IMPORTED_EXTRACTOR_VERSION),
                         redo={video_id_for(f.uri, src_uri) for f in files})
    ids = []
    for f in files:
        vid = video_id_for(f.uri, src_uri)
        (feats,) = read_features_npz(storage.read_bytes(f.uri), f.uri, keys=("features",))
        if feats.ndim != 2 or len(feats) == 0:
            raise InputError(f"{f.uri}: 'features' must be a non-empty (n, D) array, got shape {feats.shape}")
        norms = np.linalg.norm(feats, axis=1, keepdims=True)
        if np.any(norms == 0) or not np.all(np.isfinite(feats)):
            raise InputError(f"{f.uri}: has all-zero or non-finite rows, which cannot be normalised")
        feats = feats / norms
        n = len(feats)
        entry = dict(
            source_uri=f.uri, source_size=f.size, source_etag=f.etag, duration=n * float(clip_seconds),
            fps=1.0 / float(clip_seconds), model=model, pretrained=pretrained, extractor_version=IMPORTED_EXTRACTOR_VERSION,
        )
        store.write(vid, np.arange(n, dtype=np.float64) * float(clip_seconds), feats, entry)
        ids.append(vid)
    return ids
