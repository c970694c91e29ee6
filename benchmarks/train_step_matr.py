"""MATR training-step throughput at the paper's size, and what the two soft-DTW alignment losses cost.

One training step = forward + all losses + backward + AdamW step (lr 1e-4, weight decay 1e-4), paper-size model
(d=1024, k=4 encoder and 4 decoder layers, l=10 queries, 512-d CLIP input), batch of B items with M=75 target rows
(150 s at one row per 2 s) and N=15 query rows. The query is the real CLIP ViT-B/32 features of
``../shared/data/features/univtg-sample/vid.npz`` (15 rows); each target embeds it at a different place among rows
drawn from it with noise, so the alignment sees real feature statistics.

Measured in the same run, interleaved step by step so machine noise hits both alike:
  * baseline: the step with ``lambda_align_pre = lambda_align_post = 0`` (the soft-DTW losses are skipped; the hard
    alignment that picks the decoder's crop still runs),
  * full: the paper's step with both soft-DTW losses.
Prints samples/s for each and the ratio full / baseline (below 1: the share of time the alignment losses cost), then
times the two soft-DTW losses alone (forward + backward on the step's features) as a less noisy cross-check.

    .venv/bin/python benchmarks/train_step_matr.py [--batch 8] [--steps 4] [--threads 2] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from vmr.data.samples import Sample, collate
from vmr.models import losses
from vmr.models.layers import count_parameters
from vmr.models.matr import MATR, MATRConfig

FEATURES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "features" / "univtg-sample" / "vid.npz"


def make_batch(batch: int, m: int, seed: int = 0) -> dict:
    """B samples: the real 15-row query, each hidden at a different place in an M-row target of noisy real rows."""
    rng = np.random.default_rng(seed)
    query = np.load(FEATURES)["features"].astype(np.float32)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    n = len(query)
    samples = []
    for b in range(batch):
        target = query[rng.integers(0, n, m)] + 0.3 * rng.normal(size=(m, query.shape[1])).astype(np.float32)
        start = int(rng.integers(0, m - n))
        target[start:start + n] = query
        target /= np.linalg.norm(target, axis=1, keepdims=True)
        times = 2.0 * np.arange(m)
        samples.append(Sample(f"b{b}", f"t{b}", target, times, 2.0, query, spans=[[times[start], times[start] + 2 * n]]))
    return collate(samples)


def step(model: MATR, opt: torch.optim.Optimizer, batch: dict, align: bool, device: torch.device) -> float:
    """One training step; returns its wall-clock seconds."""
    model.config.lambda_align_pre = model.config.lambda_align_post = 1.0 if align else 0.0
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    terms = model.loss(model(batch), batch)
    opt.zero_grad(set_to_none=True)
    terms["total"].backward()
    opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def align_only(model: MATR, batch: dict, device: torch.device) -> float:
    """Seconds for forward + backward of the two soft-DTW losses alone on this batch's paper-size features."""
    with torch.no_grad():
        out = model(batch)
    feats = [out[k].detach().requires_grad_() for k in ("target_proj", "query_proj", "target_fused", "query_fused")]
    tm, qm, gamma = out["target_mask"], out["query_mask"], model.config.gamma
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    loss = losses.alignment_loss(feats[0], feats[1], tm, qm, gamma) + losses.alignment_loss(feats[2], feats[3], tm, qm, gamma)
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--target-rows", type=int, default=75)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per variant (after one warm-up each)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = MATR(MATRConfig()).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    batch = make_batch(args.batch, args.target_rows)
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    print(f"MATR paper size: {count_parameters(model) / 1e6:.1f}M parameters, batch {args.batch}, "
          f"M={args.target_rows}, N={batch['query'].shape[1]}, device {device}, {args.threads} CPU threads")
    times = {True: [], False: []}
    for align in (False, True):  # warm-up
        step(model, opt, batch, align, device)
    for i in range(args.steps):
        for align in ((False, True) if i % 2 == 0 else (True, False)):
            times[align].append(step(model, opt, batch, align, device))
    rate = {a: args.batch / statistics.median(t) for a, t in times.items()}
    print(f"baseline (no soft-DTW losses): {rate[False]:7.2f} samples/s  (median of {args.steps} steps: "
          + ", ".join(f"{t:.2f}" for t in times[False]) + " s)")
    print(f"full (paper, both soft-DTW):   {rate[True]:7.2f} samples/s  (median of {args.steps} steps: "
          + ", ".join(f"{t:.2f}" for t in times[True]) + " s)")
    print(f"ratio full / baseline: {rate[True] / rate[False]:.3f}")
    alone = statistics.median(align_only(model, batch, device) for _ in range(args.steps))
    print(f"the two soft-DTW losses alone (forward + backward): {alone:.3f} s per step, "
          f"{alone / statistics.median(times[True]):.1%} of the full step's median")


if __name__ == "__main__":
    main()
