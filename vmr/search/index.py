"""A FAISS vector index of a feature store's rows, kept beside the store: stage 1 of the two-stage search.

Layout under the store root (a path or any :mod:`vmr.storage` URI)::

    {root}/index/index.json              the pointer: format, feature settings, FAISS factory, pooling, the files
                                         below, the next free id; replaced atomically, last, by every build
    {root}/index/index-{token}.faiss     the FAISS index (ids are int64 row ids)
    {root}/index/videos-{token}.parquet  the id table: video_id, first_id, n_vectors, n_frames, created,
                                         source_etag, source_size, a row per indexed video

Each indexed vector is ``pool`` consecutive frame rows of one video (``pool=1``: one frame row, one every ``1/fps``
seconds), their mean renormalised; vector ``i`` of a video covers rows ``[i * pool, (i + 1) * pool)``. A video's
vectors get the contiguous ids ``[first_id, first_id + n_vectors)``, so the id table maps an id to (video, rows) with
one binary search. Ids are never reused: ``next_id`` only grows.

The index type follows the size (:func:`default_factory`): up to ``FLAT_MAX_VECTORS`` vectors an exact inner-product
index (``IDMap2,Flat``: 2 KiB per 512-d vector), above that ``IVF{nlist},PQ{dim/8}`` (an inverted file over k-means
cells with product-quantised codes, 64 bytes per 512-d vector + 8 for its id; trained once on a sample of the rows and
kept for later additions). Rows are L2-normalised, so inner product = cosine.

Builds are incremental (:meth:`VectorIndex.build`): videos new to the store are added, videos whose manifest entry
changed since they were indexed (re-extracted: another ``created`` or source etag) have their ids removed and their
new rows added, videos gone from the store are removed. The new index and id table are written under a new token and
the pointer replaced last, so a build killed midway leaves the previous index in use. Files of older generations than
the previous one are deleted.

:meth:`VectorIndex.open` refuses (one-line :class:`~vmr.errors.InputError`) an index made from features with other
settings than the store's, and one that does not cover the store's current entries (stale): run ``vmr index build``.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import numpy as np

from vmr import storage
from vmr.errors import InputError
from vmr.features.settings import FeatureSettings
from vmr.features.store import FeatureStore

log = logging.getLogger(__name__)

INDEX_FORMAT = 1
POINTER = "index.json"
FLAT_MAX_VECTORS = 200_000  # ~110 h at 0.5 rows/s: 400 MB of float32 512-d rows, still searched in ~0.1 s
TRAIN_PER_CELL = 40  # k-means training rows per IVF cell (FAISS warns below 39)
DEFAULT_NPROBE = 32  # IVF cells visited per query row
ADD_CHUNK = 65_536  # vectors added per FAISS call during a build


def default_factory(n_vectors: int, dim: int) -> str:
    """The FAISS factory string for ``n_vectors`` vectors of ``dim`` (module docstring)."""
    if n_vectors <= FLAT_MAX_VECTORS:
        return "IDMap2,Flat"
    nlist = int(2 ** round(math.log2(max(256.0, 2.0 * math.sqrt(n_vectors)))))
    m = dim // 8 if dim % 8 == 0 else (dim // 4 if dim % 4 == 0 else dim)
    return f"IVF{nlist},PQ{m}"


def pooled(features: np.ndarray, pool: int) -> np.ndarray:
    """(ceil(n / pool), D) float32: means of ``pool`` consecutive rows of ``features`` (n, D), renormalised."""
    x = np.asarray(features, dtype=np.float32)
    if pool <= 1:
        return np.ascontiguousarray(x)
    n = len(x)
    k = -(-n // pool)
    pad = np.zeros((k * pool - n, x.shape[1]), np.float32)
    sums = np.concatenate([x, pad]).reshape(k, pool, x.shape[1]).sum(1)
    return np.ascontiguousarray(sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12))


@dataclass
class BuildReport:
    """What one :meth:`VectorIndex.build` did: videos ``added`` (new or re-extracted), ``removed`` (gone or
    re-extracted: their old ids), ``kept``; ``vectors`` in the index after it; ``rebuilt`` (trained afresh);
    ``factory``; ``seconds`` of wall time; ``hours`` of footage indexed."""

    added: int = 0
    removed: int = 0
    kept: int = 0
    vectors: int = 0
    rebuilt: bool = False
    factory: str = ""
    seconds: float = 0.0
    hours: float = 0.0
    changed: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Neighbours:
    """Nearest indexed vectors of each query row: ``video`` (N, k) video ids (object array, ``""`` for no hit),
    ``rows`` (N, k, 2) the covered frame rows ``[start, end)``, ``sim`` (N, k) cosine similarity (approximate for
    PQ codes), best first per query row."""

    video: np.ndarray
    rows: np.ndarray
    sim: np.ndarray


class LoadedIndex:
    """An opened index: the FAISS index, its id table and pointer (see :class:`VectorIndex`)."""

    def __init__(self, pointer: dict, index, table: dict[str, np.ndarray]):
        self.pointer, self.index, self.table = pointer, index, table
        order = np.argsort(table["first_id"], kind="stable")
        self._first = np.asarray(table["first_id"], np.int64)[order]
        self._count = np.asarray(table["n_vectors"], np.int64)[order]
        self._vid = np.asarray(table["video_id"], dtype=object)[order]
        self._by_video = {str(v): (int(f), int(c)) for v, f, c in zip(self._vid, self._first, self._count)}
        self.pool = int(pointer["pool"])
        self.nprobe = DEFAULT_NPROBE

    @property
    def settings(self) -> FeatureSettings:
        return FeatureSettings.from_entry(self.pointer["settings"])

    @property
    def factory(self) -> str:
        return str(self.pointer["factory"])

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def video_ids(self) -> list[str]:
        return sorted(self._by_video)

    def memory_bytes(self) -> int:
        """The FAISS index's size when serialised (what it holds in memory, within a few KiB)."""
        import faiss

        return int(faiss.serialize_index(self.index).nbytes)

    def search(self, query: np.ndarray, k: int, video_id: str | None = None) -> Neighbours:
        """The ``k`` nearest vectors of each row of ``query`` (N, D), optionally only among ``video_id``'s."""
        import faiss

        q = np.ascontiguousarray(np.asarray(query, np.float32))
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        ivf = faiss.try_extract_index_ivf(self.index) if "IVF" in self.factory else None
        params = None
        if video_id is not None:
            if video_id not in self._by_video:
                raise InputError(f"video {video_id!r} is not in the vector index of {self.pointer['store']}")
            first, count = self._by_video[video_id]
            k = min(k, count)
            sel = faiss.IDSelectorRange(first, first + count)
            params = (faiss.SearchParametersIVF(sel=sel, nprobe=ivf.nlist) if ivf is not None
                      else faiss.SearchParameters(sel=sel))
        elif ivf is not None:
            params = faiss.SearchParametersIVF(nprobe=min(self.nprobe, ivf.nlist))
        k = max(1, min(int(k), self.ntotal))
        sim, ids = self.index.search(q, k, params=params)
        return self._resolve(ids, sim)

    def _resolve(self, ids: np.ndarray, sim: np.ndarray) -> Neighbours:
        flat = ids.reshape(-1)
        slot = np.searchsorted(self._first, flat, side="right") - 1
        ok = (flat >= 0) & (slot >= 0)
        slot = np.clip(slot, 0, max(len(self._first) - 1, 0))
        ok &= flat < self._first[slot] + self._count[slot] if len(self._first) else False
        vec = np.where(ok, flat - self._first[slot], 0)
        video = np.where(ok, self._vid[slot] if len(self._vid) else "", "").astype(object)
        rows = np.stack([vec * self.pool, (vec + 1) * self.pool], axis=-1)
        return Neighbours(video.reshape(ids.shape), rows.reshape(ids.shape + (2,)),
                          np.where(ok, sim.reshape(-1), -np.inf).reshape(ids.shape))


class VectorIndex:
    """The vector index of the feature store at ``store`` (a URI or :class:`FeatureStore`): build, check, open."""

    def __init__(self, store):
        self.store = store if isinstance(store, FeatureStore) else FeatureStore(store)
        self.root = storage.join(self.store.uri, "index")
        self.pointer_uri = storage.join(self.root, POINTER)

    def __repr__(self) -> str:
        return f"VectorIndex({self.store.uri!r})"

    def exists(self) -> bool:
        try:
            return storage.exists(self.pointer_uri)
        except FileNotFoundError:
            return False

    def pointer(self) -> dict | None:
        try:
            return json.loads(storage.read_text(self.pointer_uri))
        except FileNotFoundError:
            return None

    # -- checking ---------------------------------------------------------------------------------------------
    def _check_settings(self, pointer: dict, store_settings: FeatureSettings) -> None:
        made = FeatureSettings.from_entry(pointer["settings"])
        diff = made.differences(store_settings)
        if diff:
            raise InputError(
                f"the vector index of {self.store.uri} was built from features made with {made.describe()}, but the "
                f"store holds {store_settings.describe()} ({', '.join(diff)} differ): run vmr index build --store "
                f"{self.store.uri} --rebuild")

    @staticmethod
    def _changes(table: dict[str, np.ndarray], entries: dict[str, dict]) -> tuple[list[str], list[str], list[str]]:
        """(new, changed, removed) video ids of the store's ``entries`` against the id ``table``."""
        indexed = {str(v): (str(c), str(t)) for v, c, t in zip(table["video_id"], table["created"],
                                                               table["source_etag"])}
        new = [v for v in entries if v not in indexed]
        changed = [v for v, e in entries.items()
                   if v in indexed and indexed[v] != (str(e.get("created")), str(e.get("source_etag")))]
        removed = [v for v in indexed if v not in entries]
        return new, changed, removed

    def check(self, entries: dict[str, dict] | None = None, pointer: dict | None = None) -> tuple[dict, dict]:
        """(pointer, id table) of the current index, checked against the store's ``entries`` (listed when not
        given): InputError when there is no index, when it was made from other feature settings, or when it is stale
        (videos added, re-extracted or removed since it was built)."""
        pointer = pointer or self.pointer()
        if pointer is None:
            raise InputError(f"the feature store {self.store.uri} has no vector index: run vmr index build --store "
                             f"{self.store.uri}")
        if int(pointer.get("format", 0)) != INDEX_FORMAT:
            raise InputError(f"the vector index of {self.store.uri} has format {pointer.get('format')}, this vmr "
                             f"reads {INDEX_FORMAT}: run vmr index build --store {self.store.uri} --rebuild")
        entries = self.store.entries() if entries is None else entries
        if not entries:
            raise InputError(f"the feature store {self.store.uri} is empty but has a vector index: run vmr index "
                             f"build --store {self.store.uri} --rebuild")
        self._check_settings(pointer, self.store.feature_settings(entries))
        table = self._read_table(pointer)
        new, changed, removed = self._changes(table, entries)
        if new or changed or removed:
            raise InputError(
                f"the vector index of {self.store.uri} is stale ({len(new)} videos new, {len(changed)} re-extracted, "
                f"{len(removed)} removed since it was built): run vmr index build --store {self.store.uri}, or "
                "search with --exact")
        return pointer, table

    def open(self, entries: dict[str, dict] | None = None) -> LoadedIndex:
        """The current index, loaded, after :meth:`check`."""
        pointer, table = self.check(entries)
        return LoadedIndex(pointer, self._read_faiss(pointer), table)

    # -- files ------------------------------------------------------------------------------------------------
    def _uri(self, name: str) -> str:
        return storage.join(self.root, name)

    def _read_faiss(self, pointer: dict):
        import faiss

        data = storage.read_bytes(self._uri(pointer["faiss"]))
        return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))

    def _read_table(self, pointer: dict) -> dict[str, np.ndarray]:
        import pyarrow.parquet as pq

        cols = pq.read_table(io.BytesIO(storage.read_bytes(self._uri(pointer["videos"])))).to_pydict()
        return {k: np.asarray(v, dtype=object if k in ("video_id", "created", "source_etag") else np.int64)
                for k, v in cols.items()}

    @staticmethod
    def _table_bytes(table: dict[str, list]) -> bytes:
        import pyarrow as pa
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(pa.table({
            "video_id": pa.array([str(v) for v in table["video_id"]], pa.string()),
            "first_id": pa.array([int(v) for v in table["first_id"]], pa.int64()),
            "n_vectors": pa.array([int(v) for v in table["n_vectors"]], pa.int64()),
            "n_frames": pa.array([int(v) for v in table["n_frames"]], pa.int64()),
            "created": pa.array([str(v) for v in table["created"]], pa.string()),
            "source_etag": pa.array([str(v) for v in table["source_etag"]], pa.string()),
            "source_size": pa.array([int(v) for v in table["source_size"]], pa.int64()),
        }), buf, compression="zstd")
        return buf.getvalue()

    # -- building ---------------------------------------------------------------------------------------------
    def build(self, rebuild: bool = False, factory: str | None = None, pool: int | None = None, seed: int = 0,
              progress: Callable[[str], None] | None = None) -> BuildReport:
        """Bring the index up to date with the store (module docstring): incremental unless ``rebuild``, a new
        ``factory``/``pool``, other feature settings, or a flat index grown past ``FLAT_MAX_VECTORS`` ask for a
        fresh one (trained on a sample of ``seed``). Returns what it did; an index already current is not rewritten.
        InputError for an empty store."""
        import faiss

        t0 = time.perf_counter()
        say = progress or (lambda s: None)
        entries = self.store.entries()
        if not entries:
            raise InputError(f"the feature store {self.store.uri} is empty: nothing to index (run vmr extract first)")
        settings = self.store.feature_settings(entries)
        hours = sum(float(e.get("duration") or 0.0) for e in entries.values()) / 3600.0
        old = None if rebuild else self.pointer()
        if old is not None:
            try:
                if int(old.get("format", 0)) != INDEX_FORMAT:
                    raise InputError("format")
                self._check_settings(old, settings)
            except InputError:
                old = None
        if old is not None and ((factory and factory != old["factory"]) or (pool and int(pool) != int(old["pool"]))):
            old = None
        pool = int(pool or (old["pool"] if old else 1))
        if pool < 1:
            raise InputError(f"--pool must be >= 1 rows, got {pool}")
        n_vectors = {v: -(-int(e["n_frames"]) // pool) for v, e in entries.items()}
        total = sum(n_vectors.values())
        if old is not None and old["factory"] == "IDMap2,Flat" and not factory and \
                default_factory(total, settings.dim) != "IDMap2,Flat":
            old = None  # grown past a flat index: train an IVF-PQ one
        report = BuildReport(hours=hours)

        if old is not None:
            table = self._read_table(old)
            new, changed, removed = self._changes(table, entries)
            if not (new or changed or removed):
                index = self._read_faiss(old)
                report.kept, report.vectors, report.factory = len(table["video_id"]), int(index.ntotal), old["factory"]
                report.seconds = time.perf_counter() - t0
                return report
            index = self._read_faiss(old)
            gone = set(changed) | set(removed)
            keep = [i for i, v in enumerate(table["video_id"]) if str(v) not in gone]
            drop = [i for i, v in enumerate(table["video_id"]) if str(v) in gone]
            if drop:
                ids = np.concatenate([np.arange(int(table["first_id"][i]), int(table["first_id"][i] + table["n_vectors"][i]),
                                                dtype=np.int64) for i in drop])
                index.remove_ids(faiss.IDSelectorBatch(ids))
            rows = {k: [table[k][i] for i in keep] for k in table}
            todo = sorted(set(new) | set(changed))
            next_id = int(old["next_id"])
            fac = old["factory"]
            report.removed, report.kept = len(drop), len(keep)
            say(f"index {self.store.uri}: adding {len(todo)} videos, removing {len(drop)}, keeping {len(keep)}")
        else:
            fac = factory or default_factory(total, settings.dim)
            say(f"index {self.store.uri}: building {fac} over {len(entries)} videos ({total} vectors, {hours:.1f} h)")
            index = faiss.index_factory(settings.dim, fac, faiss.METRIC_INNER_PRODUCT)
            ivf = faiss.try_extract_index_ivf(index)
            if ivf is not None and hasattr(faiss.downcast_index(ivf), "do_polysemous_training"):
                faiss.downcast_index(ivf).do_polysemous_training = False  # codes are only ranked, never Hamming-filtered
            if not index.is_trained:
                index.train(self._training_sample(entries, n_vectors, pool, index, seed))
            rows = {k: [] for k in ("video_id", "first_id", "n_vectors", "n_frames", "created", "source_etag",
                                    "source_size")}
            todo = list(entries)
            next_id = 0
            report.rebuilt = True

        buf_x, buf_i = [], []
        for n, vid in enumerate(todo, 1):
            vf = self.store.load(vid)
            x = pooled(vf.features, pool)
            e = vf.entry
            rows["video_id"].append(vid)
            rows["first_id"].append(next_id)
            rows["n_vectors"].append(len(x))
            rows["n_frames"].append(int(e["n_frames"]))
            rows["created"].append(str(e.get("created")))
            rows["source_etag"].append(str(e.get("source_etag")))
            rows["source_size"].append(int(e.get("source_size") or 0))
            buf_x.append(x)
            buf_i.append(np.arange(next_id, next_id + len(x), dtype=np.int64))
            next_id += len(x)
            if sum(len(b) for b in buf_x) >= ADD_CHUNK or n == len(todo):
                index.add_with_ids(np.concatenate(buf_x), np.concatenate(buf_i))
                buf_x, buf_i = [], []
            if n % 200 == 0:
                say(f"  {n}/{len(todo)} videos indexed")
        report.added = len(todo)
        report.vectors, report.factory = int(index.ntotal), fac
        report.changed = True
        self._publish(index, rows, dict(settings=dataclasses.asdict(settings), factory=fac, pool=pool,
                                        next_id=next_id, videos_count=len(rows["video_id"]), hours=round(hours, 4)))
        report.seconds = time.perf_counter() - t0
        return report

    def _training_sample(self, entries: dict[str, dict], n_vectors: dict[str, int], pool: int, index,
                         seed: int) -> np.ndarray:
        """Vectors of videos drawn at random (seeded) until the IVF cells have ``TRAIN_PER_CELL`` rows each."""
        import faiss

        ivf = faiss.try_extract_index_ivf(index)
        want = TRAIN_PER_CELL * int(ivf.nlist) if ivf is not None else 10_000
        want = max(want, 256 * 40)  # PQ codebooks of 256 centroids
        rng = np.random.default_rng(seed)
        parts, got = [], 0
        for vid in rng.permutation(sorted(entries)):
            x = pooled(self.store.load(str(vid)).features, pool)
            parts.append(x)
            got += len(x)
            if got >= want:
                break
        sample = np.concatenate(parts)
        if len(sample) > want:
            sample = sample[rng.choice(len(sample), want, replace=False)]
        return np.ascontiguousarray(sample, dtype=np.float32)

    def _publish(self, index, rows: dict[str, list], fields: dict) -> None:
        """Write the index and id table under a new token, then the pointer; delete generations older than the
        previous one."""
        import faiss

        token = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
        faiss_name, table_name = f"index-{token}.faiss", f"videos-{token}.parquet"
        storage.write_bytes_atomic(self._uri(faiss_name), faiss.serialize_index(index).tobytes())
        storage.write_bytes_atomic(self._uri(table_name), self._table_bytes(rows))
        previous = self.pointer()
        pointer = dict(format=INDEX_FORMAT, store=self.store.uri, faiss=faiss_name, videos=table_name,
                       created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fields)
        storage.write_text_atomic(self.pointer_uri, json.dumps(pointer, indent=1))
        keep = {POINTER, faiss_name, table_name}
        if previous:
            keep |= {previous.get("faiss"), previous.get("videos")}
        for f in storage.list_files(self.root):
            name = storage.relative(f.uri, self.root)
            if name not in keep and (name.startswith("index-") or name.startswith("videos-")):
                try:
                    storage.remove(f.uri)
                except OSError as e:
                    log.info("could not remove old index file %s: %s", f.uri, e)


def update_if_present(store, progress: Callable[[str], None] | None = None) -> BuildReport | None:
    """Add a store's new and re-extracted videos to its vector index when it has one; None when there is none."""
    index = VectorIndex(store)
    if not index.exists():
        return None
    return index.build(progress=progress)


def index_after_extract(store, announce: Callable[[str], None]) -> BuildReport | None:
    """The hook after an extraction wrote videos: :func:`update_if_present`, telling ``announce`` what it did. A
    failure leaves the previous index in place (then searches refuse it as stale) and is announced with the command
    that finishes the job, never failing the extraction that already succeeded."""
    try:
        report = update_if_present(store)
    except Exception as e:  # noqa: BLE001 - the extraction's own result stands; the index can be rebuilt any time
        announce(f"vector index not updated ({type(e).__name__}: {' '.join(str(e).split())[:200]}); "
                 f"run vmr index build --store {FeatureStore(store).uri if isinstance(store, str) else store.uri}")
        return None
    if report is not None and report.changed:
        announce(f"vector index updated: {report.added} videos added, {report.removed} removed, "
                 f"{report.vectors} vectors ({report.seconds:.1f} s)")
    return report


__all__ = ["VectorIndex", "LoadedIndex", "Neighbours", "BuildReport", "default_factory", "pooled",
           "update_if_present", "index_after_extract", "FLAT_MAX_VECTORS", "DEFAULT_NPROBE", "INDEX_FORMAT"]
