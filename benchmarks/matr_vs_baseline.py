"""Quality against the training-free yardstick: the demo MATR (pretrained on random clips, finetuned on labelled pairs)
versus the cosine baseline (:class:`vmr.models.baseline.CosineBaseline`) on the *test* classes, over several class splits.

The demo's 8 action classes are split class-disjointly 4/2/2 (train/val/test) by ``data.pairs.seed``; with only 2
test classes (~60 pairs) one split is noisy, so the benchmark pretrains once (pretraining uses no labels) and then,
per split seed, finetunes from that model, keeps the epoch with the best validation mIoU, and scores the test pairs
with it and with the baseline. It prints both per split and ``model / baseline`` of the mean test mIoU and R1@0.5.

Everything runs in-process on the CPU (no Ray, same library code as the workflows: ``vmr.train.loop`` loops,
``vmr.pipeline.workflow`` sample builders, the embedded demo configs). Features come from ``--workdir`` (the README's
main command leaves them in ``./vmr-data``); when absent, the demo is rendered and extracted there first (local Ray).
``model.matr.center=none`` etc. are passed through as config overrides, for ablations:

    .venv/bin/python benchmarks/matr_vs_baseline.py [--splits 0,1,2] [--workdir vmr-data] [model.matr.center=none]
"""
from __future__ import annotations

import argparse
import copy
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vmr.features.store import FeatureStore  # noqa: E402
from vmr.models.matr import MATR  # noqa: E402
from vmr.pipeline import workflow as wf  # noqa: E402
from vmr.train.loop import evaluate, evaluate_baseline, make_optimizer, seed_everything, train_one_epoch  # noqa: E402


def fmt(m: dict) -> str:
    return f"mIoU {m['mIoU']:5.1f}  R1@0.5 {m['R1@0.5']:5.1f}  R1@0.3 {m['R1@0.3']:5.1f}"


def ensure_features(workdir: str, overrides: list[str]) -> None:
    """Render and extract the demo into ``workdir`` the way the pretrain workflow does, if its store is empty."""
    cfg, _ = wf.resolve_config("pretrain", None, [f"data.workdir={workdir}", *overrides])
    paths = wf.resolve_paths(cfg)
    if len(FeatureStore(paths.store)):
        return
    print(f"rendering and extracting the demo into {workdir} (once) ...", flush=True)
    wf.prepare_features(cfg, paths, lambda s: None)


def train(model, cfg, store, specs: list, epochs: int, tag: str, evals: dict) -> list[dict]:
    """``epochs`` passes over ``specs`` (shuffled per epoch); after each, the metrics of every ``evals`` split."""
    opt = make_optimizer(model, cfg.train)
    history = []
    for ep in range(epochs):
        random.Random(ep).shuffle(specs)
        t0 = time.perf_counter()
        stats = train_one_epoch(model, wf._torch_loader(cfg, store, specs), opt, grad_clip=cfg.train.grad_clip,
                                amp=False)
        res = {k: evaluate(model, wf._torch_loader(cfg, store, v), "video").metrics for k, v in evals.items()}
        history.append(res)
        print(f"  {tag} epoch {ep + 1}/{epochs}  loss {stats.losses['total']:.3f}  "
              + "  ".join(f"{k}: {fmt(m)}" for k, m in res.items()) + f"  ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    return history


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default="vmr-data")
    ap.add_argument("--splits", default="0,1,2", help="comma-separated data.pairs.seed values")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("overrides", nargs="*", help="config overrides (key=value), applied to both stages")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = [f"data.workdir={args.workdir}", *args.overrides]
    ensure_features(args.workdir, args.overrides)

    pcfg, _ = wf.resolve_config("pretrain", None, base)
    paths = wf.resolve_paths(pcfg)
    store = FeatureStore(paths.store)
    dim = int(next(iter(store.entries().values()))["dim"])
    seed_everything(pcfg.train.seed)
    model = MATR(wf._model_config(pcfg, dim, lambda s: None))
    specs = wf.pretrain_specs(pcfg, store, print)
    print(f"pretraining {pcfg.train.epochs} epochs (config: {' '.join(args.overrides) or 'embedded demo'})", flush=True)
    train(model, pcfg, store, list(specs["train"]), pcfg.train.epochs, "pretrain", {"val": specs["val"]})
    pretrained = copy.deepcopy(model.state_dict())

    rows = []
    for seed in [int(s) for s in args.splits.split(",")]:
        fcfg, _ = wf.resolve_config("finetune", None, base + [f"data.pairs.seed={seed}"])
        pairs = wf.pair_specs(fcfg, paths, store, print)
        model.load_state_dict(pretrained)
        baseline = evaluate_baseline(wf._torch_loader(fcfg, store, pairs["test"]), "video").metrics
        hist = train(model, fcfg, store, list(pairs["train"]), fcfg.train.epochs, f"finetune split {seed}",
                     {"val": pairs["val"], "test": pairs["test"]})
        best = max(range(len(hist)), key=lambda i: hist[i]["val"]["mIoU"])
        test = hist[best]["test"]
        rows.append((seed, baseline, test))
        print(f"split {seed}: test ({test['n']} pairs), epoch {best + 1} (best val):  MATR {fmt(test)}   "
              f"cosine baseline {fmt(baseline)}", flush=True)

    print("\nsplit  test pairs  MATR mIoU  baseline mIoU  MATR R1@0.5  baseline R1@0.5")
    for seed, b, t in rows:
        print(f"{seed:5d}  {t['n']:10d}  {t['mIoU']:9.1f}  {b['mIoU']:13.1f}  {t['R1@0.5']:11.1f}  {b['R1@0.5']:15.1f}")
    mean = lambda key, i: float(np.mean([r[i][key] for r in rows]))  # noqa: E731
    print(f" mean  {'':10s}  {mean('mIoU', 2):9.1f}  {mean('mIoU', 1):13.1f}  {mean('R1@0.5', 2):11.1f}  "
          f"{mean('R1@0.5', 1):15.1f}")
    print(f"ratio MATR / cosine baseline (mean over {len(rows)} splits): mIoU {mean('mIoU', 2) / mean('mIoU', 1):.2f}x"
          f", R1@0.5 {mean('R1@0.5', 2) / mean('R1@0.5', 1):.2f}x")


if __name__ == "__main__":
    main()
