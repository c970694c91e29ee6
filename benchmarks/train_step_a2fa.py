"""A2FA+F2SGD training-step throughput at the paper's size: F2SGD's conv backward, the CNN width, the batched mask.

One training step = forward + Eq. 14 loss + backward + Adam step (lr 1e-4), model at the paper's QVHighlights size
(d=512, C=21, k=10), batch of B items with M=75 target rows (150 s at one row per 2 s). Frames are real CLIP
ViT-B/32 rows of ``../shared/data/features/univtg-sample/vid.npz`` with noise; the query is the L2-normalised mean of
the real CLIP text token features in ``txt.npz``, pulled into a random window of each target.

Measured in the same run, interleaved step by step so machine noise hits all variants alike:
  1. training step, samples/s and throughput ratio against the baseline:
     - baseline: default channels (16, 16) with PyTorch's own conv backward (``SameConv2d.fast_cpu_backward=False``);
     - the model as shipped: (16, 16) with the conv backward written as forward convolutions (on CPU, the 21x21
       kernels' native backward is the bulk of a step); decides whether that custom backward earns its place;
     - (8, 8) channels with the custom backward: what a narrower CNN would buy (the paper gives no channel counts;
       the conv stack is the only part whose cost grows with M² x C²).
  2. the anchor + transition-point step (Eqs. 1-4) batched over B items [vmr.alignment.transition] against calling
     it once per item in a Python loop: ratio looped / batched, and its share of a shipped training step.

    .venv/bin/python benchmarks/train_step_a2fa.py [--batch 32] [--steps 3] [--threads 2] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vmr.alignment.transition import transition_points
from vmr.data.samples import Sample, collate
from vmr.models.a2fa import A2FA, A2FAConfig, SameConv2d
from vmr.models.layers import count_parameters

FEATURES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "features" / "univtg-sample"
# (label, cnn_channels, custom CPU conv backward); the first is the baseline, the second the model as shipped
VARIANTS = [("native bwd (16, 16)", (16, 16), False), ("shipped (16, 16)", (16, 16), True),
            ("shipped (8, 8)", (8, 8), True)]


def make_batch(batch: int, m: int, seed: int = 0) -> dict:
    """B text samples: noisy real frame rows, one window per target pulled towards the real query feature."""
    rng = np.random.default_rng(seed)
    frames = np.load(FEATURES / "vid.npz")["features"].astype(np.float32)
    tokens = np.load(FEATURES / "txt.npz")["features"].astype(np.float32)
    q = tokens.mean(0)
    q /= np.linalg.norm(q)
    samples = []
    for b in range(batch):
        noise = 0.3 * rng.normal(size=(m, frames.shape[1])).astype(np.float32)
        target = frames[rng.integers(0, len(frames), m)] + noise
        s = int(rng.integers(0, m - 12))
        e = s + int(rng.integers(3, 12))
        target[s:e] += 2 * q * np.linalg.norm(target[s:e], axis=1, keepdims=True)
        target /= np.linalg.norm(target, axis=1, keepdims=True)
        times = 2.0 * np.arange(m)
        samples.append(Sample(f"b{b}", f"t{b}", target, times, 2.0, q[None], spans=[[times[s], times[e - 1] + 2.0]],
                              query_kind="text"))
    return collate(samples)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_step(model: A2FA, opt: torch.optim.Optimizer, batch: dict, device: torch.device) -> float:
    """One training step; returns its wall-clock seconds."""
    _sync(device)
    t0 = time.perf_counter()
    loss = model.loss(model(batch), batch)["total"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    _sync(device)
    return time.perf_counter() - t0


def segment_step(batch: dict, looped: bool, device: torch.device) -> float:
    """Eqs. 1-4 (query-embedded frames, anchor, transition points) for the batch; returns wall-clock seconds."""
    v, valid = batch["target"], batch["target_mask"]
    q = F.normalize(batch["query"][:, 0], dim=-1)
    _sync(device)
    t0 = time.perf_counter()
    c = torch.einsum("bmd,bd->bm", F.normalize(v, dim=-1), q)
    ve = c[..., None] * q[:, None] + (1 - c[..., None]) * v
    anchor = torch.einsum("bmd,bd->bm", F.normalize(ve, dim=-1), q).masked_fill(~valid, float("-inf")).argmax(1)
    if looped:
        for b in range(len(v)):
            transition_points(ve[b:b + 1], anchor[b:b + 1], valid[b:b + 1])
    else:
        transition_points(ve, anchor, valid)
    _sync(device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--target-rows", type=int, default=75)
    ap.add_argument("--kernel", type=int, default=21, help="C (21 QVHighlights, 27 Charades-STA/ActivityNet)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant (after one warm-up each)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batch = make_batch(args.batch, args.target_rows)
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    models, opts = {}, {}
    for label, width, fast in VARIANTS:
        torch.manual_seed(0)
        models[label] = A2FA(A2FAConfig(kernel_size=args.kernel, cnn_channels=width)).to(device).train()
        for m in models[label].modules():
            if isinstance(m, SameConv2d):
                m.fast_cpu_backward = fast
        opts[label] = torch.optim.Adam(models[label].parameters(), lr=1e-4)
    print(f"device={device} threads={torch.get_num_threads()} batch={args.batch} M={args.target_rows} d=512 "
          f"C={args.kernel}")
    for label, _, _ in VARIANTS:
        print(f"  {label}: {count_parameters(models[label]):,} parameters")

    times = {label: [] for label, _, _ in VARIANTS}
    for i in range(args.steps + 1):  # step 0 is a warm-up for every variant
        line = []
        for label, _, _ in VARIANTS:
            t = train_step(models[label], opts[label], batch, device)
            if i:
                times[label].append(t)
            line.append(f"{label}: {t:.2f} s")
        print(f"  step {i}{' (warm-up)' if not i else ''}: " + ", ".join(line), flush=True)
    base = statistics.median(times[VARIANTS[0][0]])
    shipped = statistics.median(times[VARIANTS[1][0]])
    print("\n1. training step (median over steps)")
    for k, (label, _, _) in enumerate(VARIANTS):
        med = statistics.median(times[label])
        tag = " [baseline]" if k == 0 else ""
        print(f"  {label:20s} {args.batch / med:7.2f} samples/s  ({med:.3f} s/step)  "
              f"throughput ratio vs baseline: {base / med:.2f}x{tag}")

    seg = {False: [], True: []}
    with torch.no_grad():
        for i in range(21):
            for looped in (False, True):
                t = segment_step(batch, looped, device)
                if i:
                    seg[looped].append(t)
    batched, looped = statistics.median(seg[False]), statistics.median(seg[True])
    print("\n2. anchor + transition points (Eqs. 1-4), median over 20 runs")
    print(f"  batched over B={args.batch}: {batched * 1e3:.2f} ms   per-item loop: {looped * 1e3:.2f} ms   "
          f"speed-up batched / looped: {looped / batched:.1f}x")
    print(f"  share of a shipped training step: batched {100 * batched / shipped:.2f}%, "
          f"looped {100 * looped / shipped:.2f}%")


if __name__ == "__main__":
    main()
