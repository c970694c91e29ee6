"""Ray Train throughput of MATR with 1 and 2 workers, and what the Ray Data feed costs, measured in one run.

Data: a temporary feature store of 16 videos (120 rows each, 1 row per 2 s) whose rows are the real CLIP ViT-B/32
features of ``../shared/data/features/univtg-sample/vid.npz`` (15 rows) resampled with noise, so the model sees real
feature statistics; pretraining clip samples (``vmr.data.pretrain_clips``), padded and materialised by
``vmr.pipeline.datasets.sample_dataset`` into Ray Data. Model: the demo MATR (d=128, 2+2 layers, 10 queries), batch
16 per worker, one torch thread per worker, AdamW, on the CPU (``--device cuda`` with ``--use-gpu`` on a GPU machine).

Measured inside a real ``TorchTrainer`` run per worker count (``vmr.pipeline.train`` machinery: prepare_model/DDP,
``get_dataset_shard``, ``iter_model_batches``):

* feed overhead: per repetition, one epoch fed from the Ray Data shard and the same batches again from memory (the
  tensors collected during the Ray Data epoch), order alternating between repetitions so that machine noise and
  warm-up hit both; the overhead is ``median(t_raydata) / median(t_memory) - 1`` (goal: below 10%);
* samples/s: all workers' samples of a Ray Data epoch over the slowest worker's time; the scaling ratio is
  ``samples/s(2 workers) / samples/s(1 worker)`` (ideal 2.0 when each worker has its own core).

    .venv/bin/python benchmarks/train.py [--reps 3] [--videos 16] [--batch 16]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VMR_SHARED_DATA", ROOT.parent / "shared" / "data"))


def make_store(folder: str, n_videos: int, rows: int, seed: int = 0):
    """A feature store of ``n_videos`` videos built from real CLIP rows (resampled, noised, re-normalised)."""
    from vmr.features.store import FeatureStore

    real = np.load(SHARED / "features" / "univtg-sample" / "vid.npz")["features"].astype(np.float64)
    real /= np.linalg.norm(real, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    store = FeatureStore(folder)
    for v in range(n_videos):
        idx = np.clip(np.cumsum(rng.integers(0, 2, size=rows)), 0, len(real) - 1)
        idx = (idx + rng.integers(len(real))) % len(real)
        f = real[idx] + rng.normal(0, 0.03, size=(rows, real.shape[1]))
        f = (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32)
        ts = 1.0 + 2.0 * np.arange(rows)
        store.write(f"v{v:02d}", ts, f, dict(source_uri=f"bench://v{v}", source_size=rows, source_etag="1",
                                             duration=2.0 * rows, fps=0.5, model="ViT-B-32", pretrained="openai",
                                             extractor_version="bench"))
    return store


def bench_loop(config: dict) -> None:
    """Ray Train worker: warm-up epoch, then ``reps`` x (Ray Data epoch, in-memory epoch), order alternating."""
    import ray.train
    import ray.train.torch
    import torch

    from vmr.models.checkpoint import build_model
    from vmr.pipeline.datasets import iter_model_batches
    from vmr.pipeline.ray_session import quiet_ray_data
    from vmr.train.loop import TrainConfig, make_optimizer, train_one_epoch

    quiet_ray_data(progress_bars=False)
    torch.set_num_threads(config["threads"])
    torch.manual_seed(0)
    ctx = ray.train.get_context()
    world = ctx.get_world_size()
    device = ray.train.torch.get_device()
    model = ray.train.torch.prepare_model(build_model("matr", config["model"]))
    opt = make_optimizer(model, TrainConfig(lr=1e-4))
    shard = ray.train.get_dataset_shard("train")
    bs = config["batch"]

    def ray_epoch(keep: list | None):
        def feed():
            for b in iter_model_batches(shard, bs, device):
                if keep is not None:
                    keep.append(b)
                yield b
        return train_one_epoch(model, feed(), opt, device=device, grad_clip=1.0)

    cached: list = []
    ray_epoch(cached)  # warm-up (and the batches for the in-memory epochs)
    t_ray, t_mem, samples = [], [], 0
    for rep in range(config["reps"]):
        order = ("ray", "mem") if rep % 2 == 0 else ("mem", "ray")
        for mode in order:
            if mode == "ray":
                st = ray_epoch(None)
                t_ray.append(st.seconds)
                samples = st.samples
            else:
                t_mem.append(train_one_epoch(model, iter(cached), opt, device=device, grad_clip=1.0).seconds)
    med_ray, med_mem = statistics.median(t_ray), statistics.median(t_mem)
    total = torch.tensor([float(samples), med_ray, med_mem], dtype=torch.float64)
    if world > 1:
        import torch.distributed as dist

        s = total[:1].clone()
        dist.all_reduce(s)
        slowest = total[1:].clone()
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        total = torch.cat([s, slowest])
    metrics = {"samples": float(total[0]), "t_ray": float(total[1]), "t_mem": float(total[2]),
               "t_ray_all": t_ray, "t_mem_all": t_mem, "steps": len(cached)}
    if ctx.get_world_rank() == 0:  # Ray Train V2 keeps metrics only with checkpoints: hand them over in a file
        Path(config["out"]).write_text(json.dumps(metrics))
    ray.train.report(metrics)


def run(workers: int, ds, args, model_cfg: dict) -> dict:
    import ray.train
    from ray.train.torch import TorchTrainer

    out = os.path.join(args.storage, f"metrics-{workers}w.json")
    os.makedirs(args.storage, exist_ok=True)
    trainer = TorchTrainer(
        bench_loop,
        train_loop_config={"model": model_cfg, "batch": args.batch, "reps": args.reps, "threads": args.threads,
                           "out": out},
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=args.use_gpu,
                                               resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(name=f"bench-{workers}w-{time.time_ns()}", storage_path=args.storage,
                                       logging_config=ray.train.LoggingConfig(log_level="WARNING")),
        datasets={"train": ds}, dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
    )
    trainer.fit()
    return json.loads(Path(out).read_text())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--videos", type=int, default=16)
    p.add_argument("--rows", type=int, default=120)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--use-gpu", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    import ray

    from vmr.data.pretrain_clips import PretrainConfig, sample_clip_specs, video_extents
    from vmr.models.matr import MATRConfig
    from vmr.pipeline.datasets import StreamConfig, sample_dataset
    from vmr.pipeline.ray_session import quiet_ray_data

    tmp = tempfile.mkdtemp(prefix="vmr-bench-train-")
    args.storage = os.path.join(tmp, "runs")
    store = make_store(os.path.join(tmp, "features"), args.videos, args.rows)
    clips = PretrainConfig(clip_min=6, clip_max=16, clips_per_video=8, target_window_s=(60.0, 120.0))
    specs = [s for e in range(2) for s in sample_clip_specs(video_extents(store), clips, epoch=e)]
    ray.init(num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, logging_level="WARNING")
    quiet_ray_data(progress_bars=False)
    stream = StreamConfig(max_target=64, max_query=16, actors=1)
    ds = sample_dataset(specs, store.uri, stream, shuffle_seed=0).materialize()
    model_cfg = {**vars(MATRConfig(in_dim=512, d_model=128, heads=4, ff_dim=256, enc_layers=2, dec_layers=2))}
    print(f"{len(specs)} samples ({math.ceil(len(specs) / args.batch)} steps of {args.batch} per epoch on one worker), "
          f"demo MATR, {args.threads} torch thread(s) per worker, {os.cpu_count()} CPUs, reps {args.reps}", flush=True)
    results = {}
    for workers in (1, 2):
        m = run(workers, ds, args, model_cfg)
        sps = m["samples"] / m["t_ray"]
        overhead = m["t_ray"] / m["t_mem"] - 1.0
        results[workers] = {"samples_per_s": sps, "feed_overhead": overhead, **m}
        print(f"{workers} worker(s): {sps:.1f} samples/s fed by Ray Data; epoch {m['t_ray']:.2f} s from Ray Data vs "
              f"{m['t_mem']:.2f} s from memory (median of {args.reps}) -> feed overhead {100 * overhead:+.1f}%",
              flush=True)
    scaling = results[2]["samples_per_s"] / results[1]["samples_per_s"]
    print(f"scaling 2 workers / 1 worker: {scaling:.2f}x samples/s")
    print(f"feed overhead (Ray Data vs in-memory tensors): {100 * results[1]['feed_overhead']:+.1f}% with 1 worker, "
          f"{100 * results[2]['feed_overhead']:+.1f}% with 2 (goal < 10%)")
    if args.json:
        print(json.dumps({"scaling": scaling, "results": results}))
    ray.shutdown()
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
