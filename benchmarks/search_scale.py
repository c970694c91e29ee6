"""Archive-scale search: the vector index (vmr.search.index) and the two-stage search against the exhaustive one, and
the compacted manifest against one JSON per video in S3.

Synthetic stores (``--part search``) of ``--hours`` hours of 90-minute videos at 0.5 rows/s, 512-d, written to local
disk with :class:`vmr.features.store.FeatureStore` (no decoding). Rows come in scenes of 3-15 rows; a scene's
direction is a real CLIP ViT-B/32 row of ``../shared/data/features/univtg-sample/vid.npz`` plus an equally long random
direction (so two scenes have cosine ~0.45, as unrelated CLIP frames have), each row that direction plus noise
(cosine ~0.96 to it). The query is 8 rows (a 16 s clip) of 3 scenes made the same way; ``--planted`` noisy copies of
it (each row cosine ~0.92 to the query's) are planted at random places of random videos. Per store:

- index build time per hour of footage, size on disk and in memory, for each index variant (``--variants``:
  frame rows or pooled pairs of rows; exact flat or IVF-PQ);
- query latency p50/p95 over ``--queries`` queries (the query plus fresh noise), two-stage vs exhaustive, with the
  cosine baseline and with paper-size MATR (random weights: speed only) as the stage-2 model; exhaustive MATR is
  measured on ``--exact-minutes`` of footage and extrapolated per hour where it would take hours;
- recall@10 of the planted copies (a copy counts when a top-10 hit of its video overlaps it with IoU >= 0.5), for the
  stage-1 shortlist alone and for the two-stage top 10 with the baseline re-ranking;
- where exhaustive is affordable (``--agree-hours``), the agreement of the two-stage top 10 with the exhaustive top 10
  (the share of exhaustive hits matched by a two-stage hit of the same video with IoU >= 0.5), baseline re-ranking.

``--part match``: one 90-minute match (2,700 rows), paper-size MATR: ``Localizer.localize`` through the index vs
every window (59 windows of 180 s).

``--part manifest``: ``--videos`` manifest entries in a SeaweedFS S3 server on loopback (the tests' fixture,
tests/fixtures/s3.py); ``FeatureStore.entries()`` with one GET per entry vs the compacted manifest (first call: builds
it; later calls: read it).

    .venv/bin/python benchmarks/search_scale.py --part search --hours 10 100 --threads 2
    .venv/bin/python benchmarks/search_scale.py --part manifest --videos 10000
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ROOT.parent / "shared" / "data" / "features" / "univtg-sample" / "vid.npz"
FPS, DIM, VIDEO_ROWS, QUERY_ROWS = 0.5, 512, 2700, 8


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _noise(rng, shape, norm: float) -> np.ndarray:
    return norm * _unit(rng.standard_normal(shape, dtype=np.float32))


def scene_rows(n: int, rng, base: np.ndarray) -> np.ndarray:
    """``n`` rows in scenes of 3-15 rows (module docstring)."""
    out, got = [], 0
    while got < n:
        k = int(rng.integers(3, 16))
        c = _unit(base[int(rng.integers(len(base)))] + _noise(rng, (DIM,), 1.0))
        out.append(_unit(c[None] + _noise(rng, (k, DIM), 0.3)))
        got += k
    return np.concatenate(out)[:n]


def make_store(root: str, hours: float, planted: int, seed: int = 0):
    """A store of ``hours`` h of 90-minute videos with ``planted`` copies of the query; returns (store, query,
    [(video, start row)])."""
    from vmr.features.settings import EXTRACTOR_VERSION
    from vmr.features.store import FeatureStore

    rng = np.random.default_rng(seed)
    base = np.load(FEATURES)["features"].astype(np.float32)
    base = _unit(base)
    query = scene_rows(QUERY_ROWS, np.random.default_rng(10_000 + seed), base)
    n_videos = max(1, int(round(hours * 3600 * FPS / VIDEO_ROWS)))
    where = {}
    for v in rng.choice(n_videos, size=min(planted, n_videos * 10), replace=planted > n_videos):
        vid = f"m{int(v):05d}"
        starts = where.setdefault(vid, [])
        for _ in range(100):
            s = int(rng.integers(0, VIDEO_ROWS - QUERY_ROWS))
            if all(abs(s - t) > 4 * QUERY_ROWS for t in starts):
                starts.append(s)
                break
    store = FeatureStore(root)
    for i in range(n_videos):
        vid = f"m{i:05d}"
        f = scene_rows(VIDEO_ROWS, rng, base)
        for s in where.get(vid, []):
            f[s:s + QUERY_ROWS] = _unit(query + _noise(rng, query.shape, 0.4))
        store.write(vid, np.arange(VIDEO_ROWS) / FPS, f, dict(
            source_uri=f"synthetic://{vid}", source_size=VIDEO_ROWS, source_etag="1", duration=VIDEO_ROWS / FPS,
            fps=FPS, model="ViT-B-32", pretrained="none", extractor_version=EXTRACTOR_VERSION))
    return store, query, [(v, s) for v, ss in where.items() for s in ss]


def recall(hits, planted) -> float:
    """Share of planted copies overlapped (IoU >= 0.5) by a hit of their video."""
    def iou(a, b):
        inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
        return inter / max(a[1] - a[0] + b[1] - b[0] - inter, 1e-9)

    found = 0
    for vid, s in planted:
        span = (s / FPS, (s + QUERY_ROWS) / FPS)
        found += any(h.video_id == vid and iou((h.start, h.end), span) >= 0.5 for h in hits)
    return found / max(len(planted), 1)


def agreement(two, full) -> float:
    def iou(a, b):
        inter = max(0.0, min(a.end, b.end) - max(a.start, b.start))
        return inter / max(a.end - a.start + b.end - b.start - inter, 1e-9)

    return sum(any(t.video_id == f.video_id and iou(t, f) >= 0.5 for t in two) for f in full) / max(len(full), 1)


def _index_bytes(store) -> int:
    """Bytes on disk of the current index generation: the FAISS file and the id table."""
    from vmr.search.index import VectorIndex

    vi = VectorIndex(store)
    pointer = vi.pointer()
    return sum(os.path.getsize(os.path.join(vi.root, pointer[k])) for k in ("faiss", "videos"))


def _p(xs, q) -> float:
    return float(np.percentile(np.asarray(xs), q))


def search_part(args) -> None:
    from vmr.models.matr import MATR
    from vmr.search import two_stage
    from vmr.search.index import VectorIndex
    from vmr.search.localizer import Localizer

    torch.manual_seed(0)
    matr = MATR().eval() if "matr" in args.models else None
    results = []
    for hours in args.hours:
        work = tempfile.mkdtemp(prefix=f"vmr-scale-{hours:g}h-", dir=args.work)
        t = time.perf_counter()
        store, query, planted = make_store(work, hours, args.planted)
        n_rows = sum(int(e["n_frames"]) for e in store.entries().values())
        real_h = n_rows / FPS / 3600
        print(f"\n== {real_h:.1f} h: {len(store)} videos, {n_rows} rows, {len(planted)} planted copies "
              f"(store written in {time.perf_counter() - t:.0f} s)", flush=True)
        rng = np.random.default_rng(1)
        queries = [_unit(query + _noise(rng, query.shape, 0.1)) for _ in range(args.queries)]
        base = Localizer("baseline")
        exact_base = None
        if real_h <= args.agree_hours:
            t = time.perf_counter()
            exact_base = base.search_details(queries[0], store.uri, top_k=10, exact=True)
            exact_base_s = time.perf_counter() - t
            print(f"  exhaustive baseline: {exact_base_s:.2f} s, recall@10 {recall(exact_base.hits, planted):.2f}")
        for variant in args.variants:
            kind, pool = variant.split(":")
            factory = "IDMap2,Flat" if kind == "flat" else None
            if kind == "ivfpq":
                from vmr.search.index import default_factory

                factory = default_factory(max(n_rows // int(pool), 200_001), DIM)
            t = time.perf_counter()
            report = VectorIndex(store).build(rebuild=True, factory=factory, pool=int(pool))
            build_s = time.perf_counter() - t
            disk = _index_bytes(store)
            loc = Localizer("baseline")
            t = time.perf_counter()
            loaded = loc.index_for(store.uri)
            load_s = time.perf_counter() - t
            mem = loaded.memory_bytes()
            row = dict(hours=round(real_h, 1), rows=n_rows, variant=variant, factory=report.factory,
                       build_s=round(build_s, 2), build_s_per_h=round(build_s / real_h, 3), disk_mb=round(disk / 2**20, 1),
                       mem_mb=round(mem / 2**20, 1), load_s=round(load_s, 3))
            # stage 1 alone, and the two stages with the baseline
            s1, lat, rec1, rec2 = [], [], [], []
            for q in queries:
                t = time.perf_counter()
                nb = loaded.search(q, two_stage.default_neighbours(20, loaded.ntotal))
                spans = two_stage.shortlist(nb, QUERY_ROWS, 20, QUERY_ROWS)
                s1.append(time.perf_counter() - t)
                rec1.append(recall([_SpanHit(sp) for sp in spans], planted))
                t = time.perf_counter()
                res = loc.search_details(q, store.uri, top_k=10)
                lat.append(time.perf_counter() - t)
                rec2.append(recall(res.hits, planted))
                assert res.path == "index"
            row.update(stage1_p50_ms=round(_p(s1, 50) * 1e3, 1), baseline_p50_s=round(_p(lat, 50), 3),
                       baseline_p95_s=round(_p(lat, 95), 3), shortlist_recall=round(float(np.mean(rec1)), 3),
                       recall10=round(float(np.mean(rec2)), 3))
            if exact_base is not None:
                two = loc.search_details(queries[0], store.uri, top_k=10)
                row.update(agree10_baseline=round(agreement(two.hits, exact_base.hits), 2),
                           exact_baseline_s=round(exact_base_s, 2))
            if matr is not None:
                mloc = Localizer(matr, window_s=180.0)
                mloc.index_for(store.uri)
                ml = []
                for q in queries[: max(2, len(queries) // 2)]:
                    t = time.perf_counter()
                    mloc.search_details(q, store.uri, top_k=10)
                    ml.append(time.perf_counter() - t)
                row.update(matr_p50_s=round(_p(ml, 50), 2), matr_p95_s=round(_p(ml, 95), 2))
            print("  " + json.dumps(row), flush=True)
            results.append(row)
        if matr is not None and args.exact_minutes:
            # exhaustive MATR on the first video's first --exact-minutes, extrapolated per hour of footage
            from vmr.search.results import QueryFeatures

            vf = store.load(store.video_ids()[0])
            n = int(args.exact_minutes * 60 * FPS)
            vf.features, vf.timestamps = vf.features[:n], vf.timestamps[:n]
            vf.entry = dict(vf.entry, duration=n / FPS, n_frames=n)
            mloc = Localizer(matr, window_s=180.0)
            t = time.perf_counter()
            mloc.localize_details(vf, QueryFeatures(queries[0], "video", 1 / FPS, "q"), top_k=10, curve=False,
                                  exact=True)
            per_h = (time.perf_counter() - t) / (n / FPS / 3600)
            print(f"  exhaustive MATR: {per_h:.0f} s per hour of footage -> {per_h * real_h:.0f} s for {real_h:.1f} h "
                  f"(measured on {args.exact_minutes:g} min)", flush=True)
            results.append(dict(hours=round(real_h, 1), exact_matr_s_per_h=round(per_h, 1),
                                exact_matr_s=round(per_h * real_h, 1)))
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


class _SpanHit:
    """A stage-1 span as a hit (seconds), for recall of the shortlist."""

    def __init__(self, sp):
        self.video_id, self.start, self.end = sp.video_id, sp.start / FPS, sp.end / FPS


def match_part(args) -> None:
    from vmr.models.matr import MATR
    from vmr.search.index import VectorIndex
    from vmr.search.localizer import Localizer

    work = tempfile.mkdtemp(prefix="vmr-scale-match-", dir=args.work)
    store, query, planted = make_store(work, VIDEO_ROWS / FPS / 3600, 3)
    VectorIndex(store).build()
    torch.manual_seed(0)
    loc = Localizer(MATR().eval(), store.uri, window_s=180.0)
    vid = store.video_ids()[0]
    lat = []
    for _ in range(args.queries):
        t = time.perf_counter()
        got = loc.localize_details(vid, query, top_k=10, curve=False)
        lat.append(time.perf_counter() - t)
        assert got.path == "index"
    print(f"one 90-minute match, paper-size MATR through the index: p50 {_p(lat, 50):.2f} s, p95 {_p(lat, 95):.2f} s "
          f"({len(got.windows)} spans re-ranked)", flush=True)
    if args.exact_minutes:
        t = time.perf_counter()
        full = loc.localize_details(vid, query, top_k=10, curve=False, exact=True)
        print(f"  every window (59): {time.perf_counter() - t:.1f} s; top-10 agreement "
              f"{agreement(_hits(vid, got.moments), _hits(vid, full.moments)):.2f} (random weights)", flush=True)


def _hits(vid, moments):
    from vmr.search.results import SearchHit

    return [SearchHit(vid, m.start, m.end, m.score) for m in moments]


def manifest_part(args) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from fixtures.s3 import S3Server  # the tests' SeaweedFS fixture

    from vmr import storage
    from vmr.features.store import FeatureStore

    with tempfile.TemporaryDirectory(dir=args.work) as tmp, S3Server(Path(tmp) / "weed") as srv:
        os.environ.update(srv.env())
        base = srv.bucket() + "/store"
        fs = storage.filesystem(base)
        t = time.perf_counter()
        blobs = {}
        for i in range(args.videos):
            vid = f"v{i:06d}"
            entry = dict(video_id=vid, source_uri=f"s3://raw/{vid}.mp4", source_size=1000 + i, source_etag=f"e{i}",
                         duration=5400.0, fps=FPS, n_frames=10, timestamps=[2.0 * k for k in range(10)],
                         model="ViT-B-32", pretrained="openai", extractor_version="1", dim=DIM,
                         created="2026-01-01T00:00:00Z")
            blobs[storage.strip(storage.join(base, "manifest", vid + ".json"))] = json.dumps(entry).encode()
        keys = list(blobs)
        for k in range(0, len(keys), 1000):
            fs.pipe({key: blobs[key] for key in keys[k:k + 1000]})
        print(f"{args.videos} entries written in {time.perf_counter() - t:.0f} s", flush=True)
        store = FeatureStore(base)
        rows = []
        for r in range(args.repeat):
            fs.invalidate_cache()
            t = time.perf_counter()
            plain = store.entries(compact=False)
            t_plain = time.perf_counter() - t
            if r == 0:
                t = time.perf_counter()
                store.entries()
                t_build = time.perf_counter() - t
            fs.invalidate_cache()
            t = time.perf_counter()
            compact = store.entries()
            t_compact = time.perf_counter() - t
            assert compact == plain and len(compact) == args.videos
            rows.append((t_plain, t_compact))
            print(f"  round {r + 1}: one GET per entry {t_plain:.2f} s, compacted {t_compact:.2f} s"
                  + (f" (first call, building it: {t_build:.2f} s)" if r == 0 else ""), flush=True)
        size = fs.info(storage.strip(store.compact_manifest_uri))["size"]
        print(f"median: {statistics.median(x for x, _ in rows):.2f} s vs {statistics.median(y for _, y in rows):.2f} s; "
              f"manifest.parquet {size / 2**20:.2f} MiB", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["search", "match", "manifest"], default="search")
    ap.add_argument("--hours", type=float, nargs="+", default=[10.0, 100.0])
    ap.add_argument("--variants", nargs="+", default=["flat:1", "flat:2", "ivfpq:1", "ivfpq:2"],
                    help="index variants KIND:POOL, KIND flat or ivfpq, POOL rows per vector")
    ap.add_argument("--models", nargs="*", default=["matr"], help="stage-2 models besides the baseline: matr")
    ap.add_argument("--planted", type=int, default=10)
    ap.add_argument("--queries", type=int, default=10)
    ap.add_argument("--agree-hours", type=float, default=15.0, help="exhaustive baseline up to this many hours")
    ap.add_argument("--exact-minutes", type=float, default=10.0, help="footage exhaustive MATR is timed on")
    ap.add_argument("--videos", type=int, default=10_000, help="--part manifest: entries")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=None, help="folder for the synthetic stores (default: the system's temp)")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic stores")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    {"search": search_part, "match": match_part, "manifest": manifest_part}[args.part](args)


if __name__ == "__main__":
    main()
