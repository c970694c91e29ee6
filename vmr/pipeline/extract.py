"""The extraction pipeline on Ray Data: videos in object storage -> CLIP frame features in the feature store.

Stages (each a Ray Data operator; the driver prints a line per finished video, with the time left)::

    list + plan (driver)      storage.list_files, skip videos whose manifest entry is current (size, etag, settings)
      -> from_items           one row (and one block) per video to do
      -> decode (tasks)       spill a remote object to local disk, decode only the sampled frames (one every 1/fps s,
                              container timestamps), open_clip's eval transform -> rows of one frame each:
                              video_id, index, t (seconds), last, pixels (3, S, S) float32; a bad file gives one
                              failure row (error = DecodeError.reason) instead of raising
      -> embed (actor pool)   ClipActor: the CLIP image tower, loaded once per actor, on a GPU (num_gpus per actor)
                              when the cluster has GPUs, else on the CPU; batch_size frames per call; drops pixels
      -> assemble (driver)    gathers each video's embeddings (small: dim floats per frame, never pixels) and writes
                              the video as soon as its last frame arrives: FeatureStore.write (features, then manifest
                              entry, each atomic) -> a run killed midway keeps every video finished before the kill

Choices, where the issue is silent:

- Preprocessing runs in the decode tasks, not in the actors: a frame shrinks from H*W*3 bytes (6.2 MB at 1080p) to
  3*224*224 float32 (0.6 MB) before it crosses the object store, and the CPU-heavy PIL resize scales with the decode
  tasks instead of occupying the CPU of the (GPU) actor. ``benchmarks/extract.py`` measures its share of the work.
  The decode tasks build the transform from the model's preprocessing config alone (no weights), and a test checks that
  it equals ``ClipEncoder.preprocess`` exactly.
- Decode tasks declare their memory to Ray (``DECODE_MEMORY_BASE`` + the block size), which also keeps Ray Data
  from fusing them into the CLIP actors (it fuses stages with equal resource requests): as separate stages, decoding
  overlaps the tower instead of alternating with it in one process.
- Decode tasks run one torch thread each (small tensor ops with more threads than cores spin and lose time).
- Rows of a video carry ``index`` and the last one ``last=True``; the driver knows a video is complete when it holds
  ``index+1`` rows of it after seeing ``last``. Failure rows and ``error``-free rows share one schema (a failure row
  carries zero pixels, never embedded).
- An exception that is not a DecodeError (object store unreachable, disk full) also becomes a failure row, with the
  reason ``"error: ..."``; the run goes on with the other videos, and the exit code says errors happened (see
  :func:`exit_code`). A decode task or actor that crashes outright is tolerated by Ray Data (``max_errored_blocks``)
  and its videos are recorded as failed ("incomplete: ...") at the end; a re-run retries every failed video.
- Remote videos are spilled to a private temporary folder per task (removed when the video is done), so a decode task
  holds one chunk of frames and one block of output, never a whole video, in memory.
- The driver's object store endpoint and region are passed to the stages' workers (``runtime_env``), so a cluster
  reads the same object store as the driver; credentials never are (Ray logs ``runtime_env``): see
  :func:`vmr.pipeline.ray_session.forwarded_env`.

One module (over 500 lines) on purpose: every part is one of the stages above, they share the frame-row schema, and
the options of ``vmr extract`` and ``workflows/extract.py`` (:func:`add_arguments`) are the :class:`ExtractConfig` they
fill.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vmr.errors import ConfigError, InputError
from vmr.features.extraction import (
    FramePreprocessor,
    VideoJob,
    failure_reason,
    is_input_failure,
    iter_pixel_chunks,
    manifest_entry,
    plan_extraction,
    preprocess_config,
    spilled,
)
from vmr.features.settings import DEFAULT_FPS, DEFAULT_MODEL, DEFAULT_PRETRAINED, FeatureSettings
from vmr.features.store import FeatureStore
from vmr.features.video import DecodeError, probe
from vmr.pipeline.ray_session import ensure_ray, forwarded_env, quiet_ray_data
from vmr.search.index import index_after_extract

# torch, the CLIP encoder and Ray are imported by the functions that use them: `vmr --help` imports this module (the
# extract command's options are defined here) in 0.2-0.3 s, and importing torch here would add 1.6 s to it.

log = logging.getLogger(__name__)

CPU_BATCH_SIZE = 32  # frames per tower call on a CPU: larger batches gain nothing there and delay the first write
GPU_BATCH_SIZE = 256  # frames per tower call on a GPU
# Memory a decode task declares to Ray (bytes), on top of one output block (block_mb). Measured by
# benchmarks/extract.py at 1080p, chunk 4: 0.74 GiB of imports (torch, decord, open_clip) + 0.44 GiB decoding a
# 3-minute file, + 0.64 GiB a 90-minute one (decord's frame index grows by about 1.5 KiB per frame; the file's 3.8 GiB
# never enter memory). Chunk 16 would add about 0.45 GiB of decord batch buffers.
DECODE_MEMORY_BASE = 2048 * 1024 * 1024


@dataclass
class ExtractConfig:
    """``vmr extract`` settings. ``videos``: a URI/path of a folder (searched recursively) or one video file;
    ``out``: the feature store URI. ``fps``: samples per second. ``batch_size``: frames per CLIP call (None: 256 on a
    GPU, 32 on a CPU). ``num_gpus``: GPUs per CLIP actor (None: 1 when the cluster has GPUs, else 0 = CPU).
    ``max_actors``: the actor pool's upper size (None: one per GPU, or half the CPUs). ``cpus_per_actor``: CPU slots
    (and torch threads) of each CLIP actor. ``chunk``: frames decoded at a time (decoding memory
    grows with it at high resolutions, speed does not). ``block_mb``: Ray Data's block size
    for frame rows (a decode task holds at most about one block of output). ``spill_dir``: where decode tasks spill
    remote videos (None: each worker's temporary folder); it needs room for the largest video per decode task."""

    videos: str = ""
    out: str = ""
    fps: float = DEFAULT_FPS
    model: str = DEFAULT_MODEL
    pretrained: str = DEFAULT_PRETRAINED
    batch_size: int | None = None
    num_gpus: float | None = None
    max_actors: int | None = None
    cpus_per_actor: float = 1.0
    chunk: int = 4
    block_mb: int = 32
    spill_dir: str | None = None
    seed: int = 0
    strict: bool = False

    @classmethod
    def for_features(cls, videos: str, out: str, features: Any, **options) -> "ExtractConfig":
        """An extraction of ``videos`` into the store ``out`` with the CLIP model, weights and sampling rate of
        ``features`` (a workflow's ``FeaturesConfig``, a :class:`FeatureSettings`, anything with those attributes);
        ``options`` set the other fields."""
        return cls(videos=videos, out=out, fps=float(features.fps), model=str(features.model),
                   pretrained=str(features.pretrained), **options)

    def settings(self) -> FeatureSettings:
        return FeatureSettings(model=self.model, pretrained=self.pretrained, fps=float(self.fps))

    def validate(self) -> None:
        if not self.videos:
            raise ConfigError("--videos is required (a folder or video file: path, file://, s3://, gs://)")
        if not self.out:
            raise ConfigError("--out is required (the feature store: path, file://, s3://, gs://)")
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise ConfigError(f"--fps must be a positive number of samples per second, got {self.fps}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.num_gpus is not None and self.num_gpus < 0:
            raise ConfigError(f"--num-gpus must be >= 0, got {self.num_gpus}")
        if self.max_actors is not None and self.max_actors < 1:
            raise ConfigError(f"max_actors must be >= 1, got {self.max_actors}")
        if self.chunk < 1 or self.block_mb < 1 or self.cpus_per_actor <= 0:
            raise ConfigError("chunk, block_mb and cpus_per_actor must be positive")


@dataclass
class ExtractSummary:
    """What a run did: ``ok`` videos written, ``skipped`` (already current), ``failed`` [{uri, reason}], ``frames``
    embedded, ``seconds`` of wall time (listing to the last write, Ray start-up included)."""

    ok: int = 0
    skipped: int = 0
    failed: list[dict] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0
    store: str = ""
    notice: str = ""  # the random-weights warning, when it applies

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def errors(self) -> list[dict]:
        """Failures that are not bad input (object store or worker trouble): worth a re-run."""
        return [f for f in self.failed if not is_input_failure(f)]

    def to_json(self) -> dict:
        return {"ok": self.ok, "skipped": self.skipped, "failed": [dict(f) for f in self.failed],
                "frames": self.frames, "seconds": round(self.seconds, 3)}

    def text(self) -> str:
        lines = [f"{self.ok} videos done, {self.skipped} skipped, {len(self.failed)} failed, {self.frames} frames in "
                 f"{self.seconds:.1f} s ({self.frames_per_second:.1f} frames/s) -> {self.store}"]
        if self.failed:
            width = max(len(f["uri"]) for f in self.failed)
            lines.append("failures:")
            lines += [f"  {f['uri']:<{width}}  {f['reason']}" for f in self.failed]
        if self.errors:
            lines.append(f"{len(self.errors)} of the failures are errors, not bad input: run the same command again "
                         "to retry them (finished videos are skipped)")
        return "\n".join(lines)


def exit_code(summary: ExtractSummary, strict: bool) -> int:
    """0 when every video is done or failed as bad input; 1 when a failure was an error (retry), or with ``strict``
    when anything failed."""
    if summary.errors or (strict and summary.failed):
        return 1
    return 0


# -- Ray ------------------------------------------------------------------------------------------------------------
def _frame_rows(job: VideoJob, start: int, ts: np.ndarray, pixels: np.ndarray, last: bool, duration: float) -> dict:
    n = len(ts)
    lastcol = np.zeros(n, dtype=bool)
    lastcol[-1] = last
    return {
        "video_id": np.array([job.video_id] * n, dtype=object),
        "index": np.arange(start, start + n, dtype=np.int64),
        "t": ts.astype(np.float64),
        "last": lastcol,
        "duration": np.full(n, duration, dtype=np.float64),
        "error": np.array([""] * n, dtype=object),
        "pixels": pixels,
    }


def _failure_row(job: VideoJob, reason: str, size: tuple[int, int]) -> dict:
    return {
        "video_id": np.array([job.video_id], dtype=object),
        "index": np.array([-1], dtype=np.int64),
        "t": np.array([0.0]),
        "last": np.array([True]),
        "duration": np.array([0.0]),
        "error": np.array([reason], dtype=object),
        "pixels": np.zeros((1, 3, *size), dtype=np.float32),
    }


def decode_videos(batch: dict, fps: float, preprocess_cfg: dict, chunk: int, spill_dir: str | None = None):
    """Ray Data UDF (a generator): for each video row in ``batch``, yield frame-row batches (see the module
    docstring), or one failure row. Holds one chunk of decoded frames (plus one chunk of preprocessed pixels kept
    back to mark the last one) at a time."""
    import torch

    torch.set_num_threads(1)
    preprocess = FramePreprocessor(preprocess_cfg)
    for i in range(len(batch["uri"])):
        job = VideoJob(uri=str(batch["uri"][i]), video_id=str(batch["video_id"][i]),
                       size=int(batch["size"][i]), etag=str(batch["etag"][i]))
        emitted = 0
        try:
            with spilled(job.uri, spill_dir) as path:
                duration = probe(path).duration
                held = None
                for ts, pixels in iter_pixel_chunks(path, fps, preprocess, chunk=chunk):
                    if held is not None:
                        yield _frame_rows(job, emitted, *held, last=False, duration=duration)
                        emitted += len(held[0])
                    held = (ts, pixels)
                if held is None:
                    raise DecodeError(job.uri, "shorter than one sample", "no frame was sampled")
                yield _frame_rows(job, emitted, *held, last=True, duration=duration)
        except Exception as e:  # noqa: BLE001 - every failure becomes a record; the other videos go on
            reason = failure_reason(e)
            log.warning("%s: %s", job.uri, getattr(e, "detail", "") or reason)
            yield _failure_row(job, reason, preprocess.size)


class ClipActor:
    """Ray Data actor: the CLIP image tower, loaded once. Input rows with pixels -> the same rows with ``emb``
    (dim,) float32 L2-normalised instead of pixels. Failure rows pass through with zero embeddings."""

    def __init__(self, model: str, pretrained: str, seed: int, device: str, threads: int):
        import torch

        from vmr.features.clip import ClipEncoder

        if device == "cpu":
            torch.set_num_threads(max(1, threads))
        self.encoder = ClipEncoder(model, pretrained, device=device, seed=seed, warn=False)

    def __call__(self, batch: dict) -> dict:
        import torch

        ok = np.asarray([not e for e in batch["error"]])
        emb = np.zeros((len(ok), self.encoder.dim), dtype=np.float32)
        if ok.any():
            pixels = np.asarray(batch["pixels"])
            emb[ok] = self.encoder.encode_images(torch.from_numpy(np.ascontiguousarray(pixels[ok])))
        out = {k: v for k, v in batch.items() if k != "pixels"}
        out["emb"] = emb
        return out


class _Assembler:
    """Driver side: gathers frame embeddings per video and writes each video once its last frame is in."""

    def __init__(self, store: FeatureStore, jobs: dict[str, VideoJob], settings: FeatureSettings):
        self.store, self.jobs, self.settings = store, jobs, settings
        self.rows: dict[str, dict[int, tuple[float, np.ndarray]]] = {}
        self.count: dict[str, int] = {}
        self.duration: dict[str, float] = {}
        self.finished: dict[str, str] = {}  # video_id -> "ok" | failure reason
        self.failed: list[dict] = []
        self.ok = 0
        self.frames = 0
        self.outcomes: list[tuple[str, str]] = []  # (video_id, "N frames" | "FAILED: reason"), in finishing order

    def add(self, batch: dict) -> None:
        for vid, idx, t, last, dur, err, emb in zip(
            batch["video_id"], batch["index"], batch["t"], batch["last"], batch["duration"], batch["error"], batch["emb"]
        ):
            vid = str(vid)
            if vid in self.finished:
                continue  # rows of a video that already failed
            if err:
                self._fail(vid, str(err))
                continue
            self.rows.setdefault(vid, {})[int(idx)] = (float(t), np.asarray(emb))
            self.duration[vid] = float(dur)
            if last:
                self.count[vid] = int(idx) + 1
            if vid in self.count and len(self.rows[vid]) == self.count[vid]:
                self._write(vid)

    def _fail(self, vid: str, reason: str) -> None:
        self.finished[vid] = reason
        self.outcomes.append((vid, f"FAILED: {reason}"))
        self.rows.pop(vid, None)
        self.failed.append({"uri": self.jobs[vid].uri, "reason": reason})

    def _write(self, vid: str) -> None:
        rows = self.rows.pop(vid)
        order = sorted(rows)
        ts = np.array([rows[i][0] for i in order], dtype=np.float64)
        feats = np.stack([rows[i][1] for i in order]).astype(np.float32)
        job = self.jobs[vid]
        try:
            self.store.check_settings(self.settings)  # still ours: no run of other settings took the store over
            self.store.write(vid, ts, feats, manifest_entry(job, self.duration[vid], self.settings))
        except Exception as e:  # noqa: BLE001 - the store may be unreachable; record it and go on
            self._fail(vid, failure_reason(e))
            return
        self.finished[vid] = "ok"
        self.outcomes.append((vid, f"{len(ts)} frames"))
        self.ok += 1
        self.frames += len(ts)
        log.info("wrote %s (%d frames)", vid, len(ts))

    def close(self) -> None:
        """Videos with no outcome: their decode task or actor crashed (Ray Data dropped the block)."""
        for vid, _job in self.jobs.items():
            if vid not in self.finished:
                got = len(self.rows.get(vid, {}))
                want = self.count.get(vid)
                self._fail(vid, f"incomplete: {got} of {want if want is not None else '?'} frames arrived "
                                "(a decode task or CLIP actor crashed)")


def _check_store_settings(store: FeatureStore, settings: FeatureSettings, todo: set[str]) -> None:
    """Refuse to mix extraction settings in one store: videos stored with other settings must all be redone by
    this run (e.g. a new fps over the same videos), else the store would mix incomparable features."""
    stale = [vid for vid, e in store.entries().items() if not FeatureSettings.from_entry(e).matches(settings) and vid not in todo]
    if stale:
        e = store.entry(stale[0])
        raise InputError(
            f"feature store {store.uri} holds {len(stale)} videos extracted with other settings "
            f"({FeatureSettings.from_entry(e)}, e.g. {stale[0]}) that this run would not redo; "
            f"use another --out for {settings}"
        )


@functools.lru_cache(maxsize=4)
def _check_weights(model: str, pretrained: str, seed: int) -> tuple[str, dict]:
    """Load the CLIP model once in the driver (cached per process): fails fast on a bad model name or checkpoint,
    and gives the random-weights notice and the preprocessing config the decode tasks need."""
    from vmr.features.clip import ClipEncoder

    encoder = ClipEncoder(model, pretrained, device="cpu", seed=seed, warn=False)
    return encoder.notice(), preprocess_config(encoder)


def _progress_lines(assembler: _Assembler, told: int, seconds: float) -> list[str]:
    """One line per video finished after the first ``told``: ``[k/N] id: F frames`` (or ``FAILED: reason``), the
    time so far and an estimate of the time left (seconds per finished video so far, times the videos left). Costs
    only the new videos, so calling it after every batch stays cheap on an archive of thousands."""
    total = len(assembler.jobs)
    return [f"[{k}/{total}] {vid}: {what}  {seconds:.0f} s, ~{seconds / k * (total - k):.0f} s left"
            for k, (vid, what) in enumerate(assembler.outcomes[told:], start=told + 1)]


def run_extract(cfg: ExtractConfig, *, announce=print, on_batch=None) -> ExtractSummary:
    """Extract every video under ``cfg.videos`` into the feature store ``cfg.out`` on Ray Data (see module docstring).

    ``announce(str)`` receives the notices meant for the user (random weights, what will be done); ``on_batch(n)``,
    if given, is called with the number of embedded frames in each batch the driver receives (benchmarks time it).
    Returns the summary; the failures table is written beside the manifest. Raises InputError/ConfigError for bad
    arguments."""
    cfg.validate()
    t0 = time.perf_counter()
    settings = cfg.settings()
    store = FeatureStore(cfg.out)
    plan = plan_extraction(cfg.videos, store, settings)
    jobs = {j.video_id: j for j in plan.todo}
    _check_store_settings(store, settings, set(jobs))
    if jobs:  # the store's settings.json: created by the first writer; a run of other settings is refused here
        store.claim_settings(settings, redo=set(jobs))
    summary = ExtractSummary(skipped=len(plan.skipped), store=store.uri)
    if not jobs:
        store.write_failures([])
        summary.seconds = time.perf_counter() - t0
        return summary

    # the weights are checked here, before any cluster work; the decode tasks need only the preprocessing config
    summary.notice, pp_cfg = _check_weights(cfg.model, cfg.pretrained, cfg.seed)
    if summary.notice:
        announce(summary.notice)
    announce(f"extracting {len(jobs)} videos ({len(plan.skipped)} already current) from {cfg.videos} into {store.uri}")

    assembler = _Assembler(store, jobs, settings)
    quiet_ray_data()
    began, told = time.perf_counter(), 0
    for batch in _dataset(cfg, list(jobs.values()), pp_cfg).iter_batches(batch_size=None, batch_format="numpy"):
        assembler.add(batch)
        if on_batch is not None:
            on_batch(int(sum(1 for e in batch["error"] if not e)))
        for line in _progress_lines(assembler, told, time.perf_counter() - began):
            announce(line)
        told = len(assembler.outcomes)
    assembler.close()

    summary.ok, summary.frames = assembler.ok, assembler.frames
    summary.failed = sorted(assembler.failed, key=lambda f: f["uri"])
    try:
        store.write_failures(summary.failed)
    except Exception as e:  # noqa: BLE001 - keep the summary; the failures are printed anyway
        summary.failed.append({"uri": store.failures_uri, "reason": failure_reason(e)})
    if summary.ok:
        index_after_extract(store, announce)  # a store with a vector index gets the new videos added to it
    summary.seconds = time.perf_counter() - t0
    return summary


def _dataset(cfg: ExtractConfig, jobs: list[VideoJob], pp_cfg: dict):
    """The Ray Data dataset of embedded frame rows for ``jobs`` (lazy; iterate it to run)."""
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    ensure_ray()
    resources = ray.cluster_resources()
    gpus, cpus = float(resources.get("GPU", 0)), float(resources.get("CPU", 1))
    num_gpus = cfg.num_gpus if cfg.num_gpus is not None else (1.0 if gpus > 0 else 0.0)
    if num_gpus > 0 and gpus < num_gpus:
        raise ConfigError(f"--num-gpus {num_gpus} per actor, but the Ray cluster has {gpus:g} GPUs")
    device = "cuda" if num_gpus > 0 else "cpu"
    batch_size = cfg.batch_size or (GPU_BATCH_SIZE if device == "cuda" else CPU_BATCH_SIZE)
    if cfg.max_actors:
        max_actors = cfg.max_actors
    elif device == "cuda":
        max_actors = max(1, int(gpus // num_gpus))
    else:
        max_actors = max(1, int(cpus // (2 * cfg.cpus_per_actor)))  # leave about half the CPUs to decoding
    max_actors = min(max_actors, max(1, len(jobs)))
    env = forwarded_env()
    remote = {"runtime_env": {"env_vars": env}} if env else {}

    ctx = DataContext.get_current()
    saved = (ctx.target_max_block_size, ctx.max_errored_blocks, ctx.enable_progress_bars)
    ctx.target_max_block_size = cfg.block_mb * 1024 * 1024
    ctx.max_errored_blocks = -1  # a crashed video must not stop the others; it is recorded as failed
    ctx.enable_progress_bars = False  # run_extract prints a line per video instead (_progress_lines)
    try:
        items = [{"uri": j.uri, "video_id": j.video_id, "size": j.size, "etag": j.etag} for j in jobs]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(
            decode_videos, batch_size=1, batch_format="numpy", num_cpus=1,
            memory=DECODE_MEMORY_BASE + cfg.block_mb * 1024 * 1024,
            fn_kwargs={"fps": float(cfg.fps), "preprocess_cfg": pp_cfg, "chunk": cfg.chunk, "spill_dir": cfg.spill_dir},
            **remote,
        )
        # Ray Data restarts a lost actor (max_restarts=-1) and passes it object-store references of its own, so Ray
        # logs one core_worker.cc "constructor arguments in the object store" line per actor; restarts are kept.
        ds = ds.map_batches(
            ClipActor, batch_size=batch_size, batch_format="numpy",
            fn_constructor_kwargs={"model": cfg.model, "pretrained": cfg.pretrained, "seed": cfg.seed,
                                   "device": device, "threads": int(max(1, round(cfg.cpus_per_actor)))},
            compute=ActorPoolStrategy(min_size=1, max_size=max_actors),
            num_cpus=cfg.cpus_per_actor, num_gpus=num_gpus, **remote,
        )
    finally:
        ctx.target_max_block_size, ctx.max_errored_blocks, ctx.enable_progress_bars = saved
    log.info("pipeline: %d videos, CLIP on %s, batch %d, up to %d actors", len(jobs), device, batch_size, max_actors)
    return ds


def config_from_args(args) -> ExtractConfig:
    """An ExtractConfig from parsed ``vmr extract`` arguments (shared by the CLI and workflows/extract.py)."""
    return ExtractConfig(
        videos=args.videos, out=args.out, fps=args.fps, model=args.model, pretrained=args.pretrained,
        batch_size=args.batch_size, num_gpus=args.num_gpus, max_actors=args.max_actors, spill_dir=args.spill_dir,
        seed=args.seed, strict=args.strict,
    )


def add_arguments(parser) -> None:
    """The ``vmr extract`` options (shared by the CLI and workflows/extract.py)."""
    d = ExtractConfig()
    parser.add_argument("--videos", required=True, help="folder (searched recursively) or video file: path, file://, s3://, gs://")
    parser.add_argument("--out", required=True, help="feature store URI (path, file://, s3://, gs://)")
    parser.add_argument("--fps", type=float, default=d.fps, help=f"samples per second (default {d.fps})")
    parser.add_argument("--model", default=d.model, help=f"open_clip model name (default {d.model})")
    parser.add_argument("--pretrained", default=d.pretrained,
                        help="open_clip weights tag, checkpoint path or URI, or 'none' for random weights "
                             f"(tests/demo only; default {d.pretrained})")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"frames per CLIP call (default {GPU_BATCH_SIZE} on a GPU, {CPU_BATCH_SIZE} on a CPU)")
    parser.add_argument("--num-gpus", type=float, default=None,
                        help="GPUs per CLIP actor (default 1 when the Ray cluster has GPUs, else 0 = CPU)")
    parser.add_argument("--max-actors", type=int, default=None,
                        help="most CLIP actors (default one per GPU, or half the CPUs)")
    parser.add_argument("--spill-dir", default=None,
                        help="local folder where decode tasks download remote videos (default: the temp folder)")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of random weights (--pretrained none)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any video failed")
    parser.add_argument("--json", action="store_true", help="print only the JSON summary on stdout")


def main_from_args(args) -> int:
    """Run ``vmr extract`` for parsed arguments: notices and progress on stderr, the summary (text or --json) on
    stdout, failures table included. Returns the exit code."""
    cfg = config_from_args(args)
    summary = run_extract(cfg, announce=lambda s: print(s, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(summary.to_json()))
    else:
        print(summary.text())  # the random-weights notice was announced once, before the work
    return exit_code(summary, cfg.strict)


__all__ = [
    "ExtractConfig", "ExtractSummary", "run_extract", "exit_code", "ensure_ray", "decode_videos", "ClipActor",
    "add_arguments", "config_from_args", "main_from_args",
]
