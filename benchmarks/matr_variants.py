"""What each MATR option adds, on real footage and on the demo, in one run: the paper-faithful model, each option the
code adds, and the shipped default, side by side with the training-free methods.

Per variant (a name and config overrides, applied to pretraining and finetuning): pretrain on random clips (the
embedded demo config: the demo archive, or ``--pretrain-on real`` = the real videos of ``../shared/data/videos``
at the demo's feature settings, as ``python workflows/pretrain.py data.videos=../shared/data/videos`` does), finetune
on the demo's class split ``--split`` keeping the epoch with the best validation mIoU, then score

- the demo's held-out test classes (R1@0.5, mIoU), and
- the real-footage items of ``benchmarks/real_footage.py`` (splice and recurring kinds; R1@0.5, mIoU; time per query),

next to the cosine baseline (the run method and the Chamfer windows) and the adaptive cosine run on the same items.
Everything runs in-process on the CPU with the library's loops (``vmr.train.loop``), like
``benchmarks/matr_vs_baseline.py``; ``--quick`` shortens the training for a smoke run.

    .venv/bin/python benchmarks/matr_variants.py [--variants paper,default] [--pretrain-on demo|real|both] [--json out]
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import matr_vs_baseline as mvb  # noqa: E402
import real_footage as rf  # noqa: E402

from vmr.features.settings import FeatureSettings  # noqa: E402
from vmr.features.store import FeatureStore  # noqa: E402
from vmr.models.matr import MATR  # noqa: E402
from vmr.pipeline import workflow as wf  # noqa: E402
from vmr.train.loop import evaluate, evaluate_baseline, seed_everything  # noqa: E402

PAPER = ["model.matr.center=none", "model.matr.prior=none", "model.matr.proposals=offsets",
         "model.matr.align=subsequence", "model.matr.lambda_align_pre=1.0", "model.matr.lambda_align_post=1.0"]
VARIANTS: dict[str, list[str]] = {
    # the paper's model at the demo's size: no centring, no prior, offsets decoding, subsequence soft-DTW losses
    "paper": PAPER,
    "paper, no alignment losses": PAPER[:4] + ["model.matr.lambda_align_pre=0.0", "model.matr.lambda_align_post=0.0"],
    "+ centring": ["model.matr.prior=none", "model.matr.proposals=offsets"],
    "+ centring + prior": ["model.matr.proposals=offsets"],
    "+ centring + prior + run proposals": [],
    "+ ground-truth alignment losses": ["model.matr.align=ground_truth", "model.matr.lambda_align_pre=1.0",
                                        "model.matr.lambda_align_post=1.0"],
    "default": [],  # whatever the embedded configs ship
}


def score_real(model: MATR, settings: FeatureSettings, items: list) -> dict:
    """The model on the real-footage items, through ``vmr.Localizer`` as ``vmr localize`` runs it."""
    import vmr

    loc = vmr.Localizer(model.eval(), features=settings, device="cpu")
    return rf.evaluate(items, {"m": rf._localizer_method(loc)})["results"]["m"]


def run_variant(name: str, overrides: list[str], args, demo_store: FeatureStore, real_store: FeatureStore | None,
                items: list, settings: FeatureSettings) -> dict:
    base = [f"data.workdir={args.workdir}", *overrides]
    epochs = 2 if args.quick else args.pretrain_epochs
    pcfg, _ = wf.resolve_config("pretrain", None, base + ([f"train.epochs={epochs}"] if epochs else []))
    store = real_store if real_store is not None else demo_store
    dim = int(next(iter(demo_store.entries().values()))["dim"])
    seed_everything(pcfg.train.seed)
    model = MATR(wf._model_config(pcfg, dim, lambda s: None))
    t0 = time.perf_counter()
    specs = wf.pretrain_specs(pcfg, store, lambda s: None)
    mvb.train(model, pcfg, store, list(specs["train"]), pcfg.train.epochs, f"{name}: pretrain", {"val": specs["val"]})
    fcfg, _ = wf.resolve_config("finetune", None, base + [f"data.pairs.seed={args.split}"]
                                + (["train.epochs=1"] if args.quick else []))
    paths = wf.resolve_paths(fcfg)
    pairs = wf.pair_specs(fcfg, paths, demo_store, lambda s: None)
    best, best_val = None, -1.0
    for ep in range(fcfg.train.epochs):
        hist = mvb.train(model, fcfg, demo_store, list(pairs["train"]), 1, f"{name}: finetune {ep + 1}",
                         {"val": pairs["val"]})
        if hist[-1]["val"]["mIoU"] > best_val:
            best_val, best = hist[-1]["val"]["mIoU"], copy.deepcopy(model.state_dict())
    model.load_state_dict(best)
    model.eval()
    demo = evaluate(model, wf._torch_loader(fcfg, demo_store, pairs["test"]), "video").metrics
    real = score_real(model, settings, items)
    return {"variant": name, "pretrain_on": "real" if real_store is not None else "demo", "overrides": overrides,
            "demo_test": demo, "real": real, "train_s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default="vmr-data", help="the demo's workdir (features are extracted there once)")
    ap.add_argument("--cache", default=str(rf.DEFAULT_CACHE), help="real-footage feature cache")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS")
    ap.add_argument("--pretrain-on", choices=["demo", "real", "both"], default="both",
                    help="pretrain the default variant on the demo, on the real footage, or both (others: demo)")
    ap.add_argument("--split", type=int, default=0, help="the demo's class split (data.pairs.seed)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="2 pretraining epochs and 1 finetuning epoch (smoke run)")
    ap.add_argument("--pretrain-epochs", type=int, default=None,
                    help="pretraining epochs for every variant (default: the embedded config's)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    mvb.ensure_features(args.workdir, [])
    pcfg, _ = wf.resolve_config("pretrain", None, [f"data.workdir={args.workdir}"])
    demo_store = FeatureStore(wf.resolve_paths(pcfg).store)
    settings = FeatureSettings.of(demo_store)
    items = rf.build_items(args.cache, seed=0)
    real_store = rf.FeatureCache(args.cache).store(rf.FPS)

    t = time.perf_counter()
    training_free = rf.evaluate(items, {k: v for k, v in rf.methods_for([]).items()
                                        if not k.startswith("whole")})["results"]
    fcfg, _ = wf.resolve_config("finetune", None, [f"data.workdir={args.workdir}", f"data.pairs.seed={args.split}"])
    pairs = wf.pair_specs(fcfg, wf.resolve_paths(fcfg), demo_store, lambda s: None)
    demo_baseline = evaluate_baseline(wf._torch_loader(fcfg, demo_store, pairs["test"]), "video").metrics
    print(f"training-free methods scored in {time.perf_counter() - t:.0f} s", flush=True)

    rows = []
    for name in [v for v in args.variants.split(",") if v]:
        ons = ["demo", "real"] if (name == "default" and args.pretrain_on == "both") else \
            [args.pretrain_on if name == "default" else "demo"]
        for on in ons:
            rows.append(run_variant(name, VARIANTS[name], args, demo_store, real_store if on == "real" else None,
                                    items, settings))
            print(json.dumps({k: rows[-1][k] for k in ("variant", "pretrain_on", "demo_test")}, default=float),
                  flush=True)

    def cell(m: dict | None, key: str) -> str:
        return "" if m is None else f"{m[key]:.1f}"

    print("\n| method | pretrained on | splice R1@0.5 | splice mIoU | recurring R1@0.5 | recurring mIoU | "
          "demo test R1@0.5 | demo test mIoU | ms/query (real) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, res in training_free.items():
        demo = demo_baseline if name == "CosineBaseline" else None
        print(f"| {name} | - | {cell(res['splice'], 'R1@0.5')} | {cell(res['splice'], 'mIoU')} | "
              f"{cell(res['recurring'], 'R1@0.5')} | {cell(res['recurring'], 'mIoU')} | {cell(demo, 'R1@0.5')} | "
              f"{cell(demo, 'mIoU')} | {res['all']['ms_per_query']:.1f} |")
    for r in rows:
        real = r["real"]
        print(f"| MATR {r['variant']} | {r['pretrain_on']} | {cell(real['splice'], 'R1@0.5')} | "
              f"{cell(real['splice'], 'mIoU')} | {cell(real['recurring'], 'R1@0.5')} | {cell(real['recurring'], 'mIoU')}"
              f" | {cell(r['demo_test'], 'R1@0.5')} | {cell(r['demo_test'], 'mIoU')} | "
              f"{real['all']['ms_per_query']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"training_free": training_free, "demo_baseline": demo_baseline,
                                               "variants": rows}, indent=1, default=float))


if __name__ == "__main__":
    main()
