"""The samples a workflow trains on, made from its config and the feature store (the ``samples`` step of
:func:`vmr.pipeline.workflow.run_workflow`): random clips for pretraining, match-annotation pairs for video-query
finetuning, QVHighlights-format sentences and their CLIP embeddings for text-query finetuning. Times are seconds."""
from __future__ import annotations

import dataclasses
import os

from vmr import annotations, storage
from vmr.data.match_pairs import build_match_pairs
from vmr.data.pairs import embed_sentences, text_specs_from_records
from vmr.data.pretrain_clips import sample_clip_specs, video_extents
from vmr.errors import ConfigError, InputError
from vmr.features.clip import ClipEncoder
from vmr.metrics.io import write_jsonl
from vmr.pipeline.workflow_config import Paths, WorkflowConfig


def split_hint(workflow: str, task: str) -> str:
    """What to check when a split has no samples."""
    if workflow == "pretrain":
        return "are there videos in the feature store (data.clips.clips_per_video > 0)?"
    if task == "video":
        return ("the annotations give too few classes, or no target window fits (data.pairs.window_min/max, "
                "data.pairs.split_fractions)")
    return "the text annotation files have no rows for this split"


def pretrain_specs(cfg: WorkflowConfig, store, announce) -> dict:
    """Pretraining: ``data.clip_draws`` rounds of random clips of every video (train) and held-out clips drawn with
    seed + 1 (val)."""
    extents = video_extents(store)
    train = [s for r in range(cfg.data.clip_draws) for s in sample_clip_specs(extents, cfg.data.clips, epoch=r)]
    val_cfg = dataclasses.replace(cfg.data.clips, seed=cfg.data.clips.seed + 1,
                                  clips_per_video=cfg.data.val_clips_per_video, clips_per_minute=0.0)
    val = sample_clip_specs(extents, val_cfg, epoch=0)
    announce(f"pretraining samples: {len(train)} random clips of {len(extents)} videos ({cfg.data.clip_draws} "
             f"draws, originals and augmentations), {len(val)} held-out clips (seed {val_cfg.seed})")
    return {"train": train, "val": val}


def pair_specs(cfg: WorkflowConfig, paths: Paths, store, announce) -> dict:
    """Video-query finetuning: class-disjoint train/val/test pairs from the match annotations."""
    if not paths.annotations:
        raise ConfigError("data.annotations is required with your own videos (a match CSV: "
                          "video_id,action_class,start,end)")
    ann = annotations.load(paths.annotations, "matches", store=store)
    pairs = build_match_pairs(ann.records, store, cfg.data.pairs)
    split_of = pairs.stats["class_split"]
    by = {s: sorted(c for c, v in split_of.items() if v == s) for s in ("train", "val", "test")}
    announce(f"pairs from {paths.annotations}: " + ", ".join(
        f"{s} {len(pairs[s])} ({len(by[s])} classes: {', '.join(by[s])})" for s in ("train", "val", "test")))
    return dict(pairs)


def derive_text_annotations(matches_uri: str, store, out_dir: str, template: str,
                            splits: tuple[float, float, float]) -> dict[str, str]:
    """QVHighlights-format jsonl files from match annotations (see :mod:`vmr.pipeline.workflow`, "Text demo"): one query per (video,
    class), ``template.format(action=class with spaces)`` as the sentence, all its instances as windows; videos split
    by ``splits`` in sorted order. Returns ``{split: uri}`` for the non-empty splits."""
    ann = annotations.load(matches_uri, "matches", store=store)
    by: dict[tuple[str, str], list] = {}
    for r in ann.records:
        by.setdefault((r.video_id, r.action_class), []).append((r.start, r.end))
    videos = sorted({v for v, _ in by})
    n = len(videos)
    n_test = int(round(splits[2] * n)) if splits[2] > 0 else 0
    n_val = max(1, int(round(splits[1] * n))) if splits[1] > 0 else 0
    if n - n_val - n_test < 1:
        raise InputError(f"{n} annotated videos are too few for text splits {list(splits)}")
    split_of = {v: ("train" if i < n - n_val - n_test else "val" if i < n - n_test else "test")
                for i, v in enumerate(videos)}
    rows: dict[str, list] = {"train": [], "val": [], "test": []}
    for (vid, cls), spans in sorted(by.items()):
        entry = store.entry(vid)
        rows[split_of[vid]].append({
            "qid": f"{vid}:{cls}", "query": template.format(action=cls.replace("_", " ")),
            "duration": float(entry["duration"]), "vid": vid, "relevant_windows": [list(s) for s in sorted(spans)]})
    out = {}
    for split, r in rows.items():
        if r:
            uri = storage.join(out_dir, f"text_{split}.jsonl")
            write_jsonl(uri, r)
            out[split] = uri
    return out


def text_specs(cfg: WorkflowConfig, paths: Paths, store, announce) -> tuple[dict, dict]:
    """Text-query finetuning: ``(specs per split, {"text_features": sentence -> CLIP embedding})`` from the
    ``data.text`` files, or from files derived from the match annotations."""
    tc = cfg.data.text
    files = {s: u for s, u in (("train", tc.train), ("val", tc.val), ("test", tc.test)) if u}
    if not files:
        if not paths.annotations:
            raise ConfigError("text finetuning needs data.text.train and data.text.val (QVHighlights-format jsonl)")
        files = derive_text_annotations(paths.annotations, store, os.path.join(paths.workdir, "text"), tc.template,
                                        tuple(tc.splits))
        announce(f"text queries derived from {paths.annotations} ('{tc.template}'): "
                 + ", ".join(f"{s} {u}" for s, u in files.items())
                 + " -- random CLIP text weights: a plumbing check of the text task, not a quality result")
    specs = {}
    for split, uri in files.items():
        specs[split] = text_specs_from_records(annotations.load(uri, "qvhighlights", store=store).records, split)
    fc = cfg.data.features
    encoder = ClipEncoder(fc.model, fc.pretrained, device="cpu", seed=fc.seed, warn=False)  # noted above
    text_features = embed_sentences([s for v in specs.values() for s in v], encoder)
    announce("text samples: " + ", ".join(f"{s} {len(v)}" for s, v in specs.items())
             + f"; {len(text_features)} distinct sentences embedded with CLIP {fc.model}")
    return specs, {"text_features": text_features}
