"""Inference speed: one localisation on cached features for a 10-minute and a 90-minute target, and search throughput
over a feature store of demo videos.

Latency (``--part latency``): a feature store on local disk holds two targets at 0.5 rows/s (the extraction default;
300 and 2,700 rows of 512-d features: real CLIP ViT-B/32 rows of ``../shared/data/features/univtg-sample/vid.npz``
with noise, in runs, so their statistics are real). Each timed call is ``Localizer.localize`` end to end on cached
features: read the target from the store, cut sliding windows (180 s = 90 rows, overlap 45; 6 and 59 windows), run
them, merge. Models at paper size with random weights (speed does not depend on training): MATR (d=1024, 4+4 layers,
8-row query = a 16 s clip) and A2FA+F2SGD (d=512, C=21, one sentence row). Measured in the same run, interleaved:

  * batched windows (``batch_windows=8``, shipped) vs one window per forward pass (``batch_windows=1``);
  * the cosine baseline on the same target and query, the training-free yardstick.

Search (``--part search``): a store of rendered demo matches (``vmr.data.demo``, 12 videos of 60-120 s by default,
extracted once with seeded random ViT-B-32 at 0.5 rows/s and cached under ``--work``), searched with paper-size MATR
for the best 10 moments. Throughput in target-minutes per second: the in-process path vs Ray Data (a local cluster;
first call includes starting Ray, the second reuses it), interleaved over ``--repeat`` rounds.

    .venv/bin/python benchmarks/localize.py [--part latency|search|all] [--threads 2] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ROOT.parent / "shared" / "data" / "features" / "univtg-sample" / "vid.npz"
FPS = 0.5


def real_rows(n: int, seed: int) -> np.ndarray:
    """``n`` unit rows in runs of 3-15 copies of real CLIP rows with noise (consecutive frames look alike)."""
    rng = np.random.default_rng(seed)
    base = np.load(FEATURES)["features"].astype(np.float32)
    rows = []
    while sum(len(r) for r in rows) < n:
        k = int(rng.integers(3, 16))
        rows.append(base[int(rng.integers(len(base)))][None].repeat(k, 0))
    x = np.concatenate(rows)[:n] + 0.05 * rng.normal(size=(n, base.shape[1])).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_store(root: str, minutes: dict[str, float]):
    from vmr.features.settings import EXTRACTOR_VERSION
    from vmr.features.store import FeatureStore

    store = FeatureStore(root)
    for i, (vid, mins) in enumerate(minutes.items()):
        n = int(mins * 60 * FPS)
        store.write(vid, np.arange(n) / FPS, real_rows(n, i), dict(
            source_uri=f"synthetic://{vid}", source_size=n, source_etag="1", duration=n / FPS, fps=FPS,
            model="ViT-B-32", pretrained="none", extractor_version=EXTRACTOR_VERSION))
    return store


def latency(args) -> None:
    from vmr.features.settings import FeatureSettings
    from vmr.models.a2fa import A2FA
    from vmr.models.matr import MATR
    from vmr.search.localizer import Localizer, QueryFeatures

    work = tempfile.mkdtemp(prefix="vmr-bench-latency-")
    store = make_store(work, {"ten_minutes": 10, "ninety_minutes": 90})
    feats = FeatureSettings.of(store)
    query = real_rows(8, 99)
    sentence = real_rows(1, 98)
    torch.manual_seed(0)
    matr, a2fa = MATR().eval(), A2FA().eval()
    print(f"latency: one localisation on cached features, window 180 s / overlap 90 s at {FPS} rows/s, "
          f"{args.threads} threads, median of {args.repeat}")
    print(f"{'target':<16}{'model':<8}{'windows':>8}{'batched s':>11}{'1-by-1 s':>10}{'batched x':>10}"
          f"{'baseline s':>12}{'vs baseline':>12}")
    text_query = QueryFeatures(sentence, "text", None, "sentence", text="sentence")
    for vid in ("ten_minutes", "ninety_minutes"):
        base = Localizer("baseline", store.uri)
        for name, model, q in (("matr", matr, query), ("a2fa", a2fa, text_query)):
            batched = Localizer(model, store.uri, features=feats, batch_windows=8)
            single = Localizer(model, store.uri, features=feats, batch_windows=1)
            n_win = len(batched.localize_details(vid, q, curve=False).windows)
            call = {"batched": lambda: batched.localize(vid, q), "single": lambda: single.localize(vid, q),
                    "baseline": lambda: base.localize(vid, q)}
            t = {k: [] for k in call}
            if vid == "ten_minutes":  # warm-up (first calls allocate); the 90-minute target reuses it
                for fn in call.values():
                    fn()
            for _ in range(args.repeat):  # interleaved rounds: load changes hit all three alike
                for k, fn in call.items():
                    s = time.perf_counter()
                    fn()
                    t[k].append(time.perf_counter() - s)
            m = {k: statistics.median(v) for k, v in t.items()}
            print(f"{vid:<16}{name:<8}{n_win:>8}{m['batched']:>11.3f}{m['single']:>10.3f}"
                  f"{m['single'] / m['batched']:>9.2f}x{m['baseline']:>12.3f}{m['batched'] / m['baseline']:>11.1f}x",
                  flush=True)


def demo_store(work: str, n_videos: int):
    """The demo archive rendered and extracted once (cached under ``work``)."""
    from vmr.data.demo import render_demo_archive
    from vmr.features.clip import ClipEncoder
    from vmr.features.extraction import extract_into_store
    from vmr.features.store import FeatureStore

    store = FeatureStore(os.path.join(work, f"store{n_videos}"))
    if len(store) == n_videos:  # rendered and extracted by an earlier run
        return store
    archive = os.path.join(work, f"archive{n_videos}")
    demo = render_demo_archive(archive, n_videos=n_videos, seed=0, progress=print)
    enc = ClipEncoder("ViT-B-32", "none")
    for i, (vid, uri) in enumerate(demo["videos"].items(), 1):
        t = time.perf_counter()
        extract_into_store(uri, store, enc, FPS)
        print(f"  extracted {vid} ({i}/{n_videos}) in {time.perf_counter() - t:.1f} s", flush=True)
    return store


def search(args) -> None:
    import ray

    from vmr.models.matr import MATR
    from vmr.pipeline.search import search_store
    from vmr.search.localizer import Localizer

    store = demo_store(args.work, args.videos)
    minutes = sum(float(e["duration"]) for e in store.entries().values()) / 60.0
    torch.manual_seed(0)
    loc = Localizer(MATR().eval(), store.uri, features=store)
    query = store.load(store.video_ids()[0]).features[10:18]
    print(f"search: {args.videos} demo videos, {minutes:.1f} target-minutes at {FPS} rows/s, paper-size MATR, "
          f"top 10, {args.threads} threads")
    loc.search(query, top_k=10)  # warm-up
    plain, on_ray, first = [], [], None
    try:
        for _ in range(args.repeat):
            t = time.perf_counter()
            a = loc.search(query, top_k=10)
            plain.append(time.perf_counter() - t)
            t = time.perf_counter()
            b = search_store(loc, query, top_k=10, use_ray=True).hits
            if first is None:
                first = time.perf_counter() - t
            else:
                on_ray.append(time.perf_counter() - t)
            assert [h.video_id for h in a] == [h.video_id for h in b], "Ray and in-process results differ"
    finally:
        ray.shutdown()
    p = statistics.median(plain)
    print(f"{'path':<34}{'seconds':>9}{'target-min/s':>14}{'vs in-process':>15}")
    print(f"{'in-process (median)':<34}{p:>9.2f}{minutes / p:>14.2f}{1.0:>14.2f}x")
    print(f"{'Ray Data, first call (starts Ray)':<34}{first:>9.2f}{minutes / first:>14.2f}{p / first:>14.2f}x")
    if on_ray:
        w = statistics.median(on_ray)
        print(f"{'Ray Data, Ray running (median)':<34}{w:>9.2f}{minutes / w:>14.2f}{p / w:>14.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("latency", "search", "all"), default="all")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--videos", type=int, default=12, help="demo videos in the search store")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "vmr-bench-localize"),
                    help="where the rendered demo store is cached between runs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.work, exist_ok=True)
    if args.part in ("latency", "all"):
        latency(args)
    if args.part in ("search", "all"):
        search(args)


if __name__ == "__main__":
    main()
