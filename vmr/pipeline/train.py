"""Distributed training on Ray Train (V2 API): a ``TorchTrainer`` whose workers run :func:`train_loop_per_worker`.

Per worker::

    model = build_model(kind, config)  (+ the init weights, finetuning)  -> ray.train.torch.prepare_model (DDP, device)
    resume: ray.train.get_checkpoint() -> weights + train_state.pt (optimizer, schedule, AMP scaler, epoch)
    each epoch:
        train_one_epoch over ray.train.get_dataset_shard("train") (vmr.pipeline.datasets batches; AMP on GPU)
        losses averaged over the workers (all_reduce)
        rank 0: evaluate on the whole "val" dataset, log metrics (and, at the last epoch, plots) to MLflow, save a
                vmr checkpoint (vmr.models.checkpoint format + train_state.pt) into a temp folder
        ray.train.report(metrics, checkpoint, checkpoint_dir_name="checkpoint_epoch{NNNN}") on every rank

Where things go: ``RunConfig(storage_path, name=run name)``: checkpoints under ``{storage_path}/{run name}/`` (local or
``s3://``, the endpoint from ``AWS_ENDPOINT_URL``), ``CheckpointConfig(num_to_keep, checkpoint_score_attribute,
order)`` keeps the best ones (Ray always keeps the latest too, to resume from), ``FailureConfig(max_failures)`` restarts
the worker group from the latest checkpoint when a worker dies. Re-running with the same storage path and run name
restores Ray's checkpoint manager from its snapshot, and ``get_checkpoint()`` hands the workers the latest checkpoint:
training continues at the next epoch (an already finished run does nothing and returns its checkpoints).

Choices: only ``"train"`` is split across workers (``DataConfig(datasets_to_split=["train"])``); validation runs on rank
0 over the whole validation set (the others wait at ``report``), so metrics never depend on the worker count. Each
worker reports the same loss averages; only rank 0 reports validation metrics and the checkpoint. MLflow metric
steps are epochs; an epoch re-run after a failure logs its step again (MLflow keeps both values).
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.distributed as dist
from pyarrow import fs as pafs

from vmr import storage
from vmr.errors import ConfigError, InputError
from vmr.models.checkpoint import build_model, checkpoints_in, load_state, read_card, save_checkpoint, unwrap
from vmr.pipeline.datasets import iter_model_batches
from vmr.pipeline.ray_session import forwarded_env, quiet_ray_train_worker, say
from vmr.train.loop import (
    TrainConfig,
    autocast_dtype,
    evaluate,
    make_optimizer,
    make_scheduler,
    prefixed,
    save_plots,
    seed_everything,
    train_one_epoch,
)

# ray.train (and ray.train.torch) is imported by the functions that train: this module's configs are part of every
# workflow config (vmr.pipeline.workflow_config), so `vmr retrain` with nothing new imports this module and would pay
# about 1 s more for them (measured on the 2-core dev machine); Ray Train's workers and fit() import them anyway.

log = logging.getLogger(__name__)


@dataclass
class TrainerConfig:
    """Ray Train settings. ``storage_path``: where checkpoints go (a path or ``s3://``; "" = ``{workdir}/runs``).
    ``num_to_keep`` checkpoints are kept, ranked by ``score_attribute`` (a reported metric, e.g. ``val/mIoU``; ""
    = the workflow's default) in ``score_order``. ``max_failures``: worker-group restarts from the latest checkpoint
    (-1 = unlimited). ``cpus_per_worker``: CPU slots per training worker. ``materialize``: compute the sample rows
    once on the driver side (Ray Data ``materialize``) instead of streaming them every epoch: right when they fit in
    the object store, and it frees the data actors' CPUs before training starts."""

    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    storage_path: str = ""
    num_to_keep: int = 2
    score_attribute: str = ""
    score_order: Literal["max", "min"] = "max"
    max_failures: int = 1
    materialize: bool = True


@dataclass
class DebugConfig:
    """Test hooks. ``kill_at_step`` >= 0: the worker of rank ``kill_rank`` exits abruptly (``os._exit``) before that
    global optimizer step, once: the marker file ``kill_marker`` records that it happened (required)."""

    kill_at_step: int = -1
    kill_rank: int = 0
    kill_marker: str = ""


@dataclass
class LoopConfig:
    """Everything a training worker needs (sent to every worker; keep it small: weights travel by object ref)."""

    kind: str
    model_config: dict
    task: str
    features: dict
    train: TrainConfig
    n_train: int
    run_name: str = ""
    run_dir: str = ""                 # {storage_path}/{run_name}: where the checkpoints are (for resuming)
    workflow: str = ""
    init_weights: Any = None          # a Ray ObjectRef of a state_dict (finetuning), or None
    tracker: Any = None               # vmr.pipeline.tracking.Tracker (rank 0 logs with it), or None
    baseline: dict = field(default_factory=dict)   # the cosine baseline's validation metrics, printed alongside
    score_attribute: str = ""
    debug: DebugConfig = field(default_factory=DebugConfig)


def _average(values: dict, world: int, device: torch.device) -> dict:
    """Mean of each value over the workers (the same keys on every worker)."""
    if world <= 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / world for k, v in zip(keys, t.tolist())}


def _sum(value: float, world: int, device: torch.device) -> float:
    if world <= 1:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def _kill_hook(debug: DebugConfig, rank: int):
    """The ``step_hook`` that injects the test's worker failure (None when no failure is configured)."""
    if debug.kill_at_step < 0 or rank != debug.kill_rank:
        return None
    if not debug.kill_marker:
        raise ConfigError("debug.kill_at_step needs debug.kill_marker (a file recording that the kill happened once)")

    def hook(step: int) -> None:
        if step == debug.kill_at_step and not os.path.exists(debug.kill_marker):
            with open(debug.kill_marker, "w") as f:
                f.write(f"killed rank {rank} before step {step} (pid {os.getpid()})\n")
            say(f"debug: killing this worker (rank {rank}) before step {step}")
            os._exit(1)

    return hook


def _resume_state(ray_checkpoint, run_dir: str) -> tuple[dict, dict, str] | None:
    """``(weights, train_state, source)`` to resume from, or None: the newer of the checkpoint Ray hands back
    (``get_checkpoint()``) and the newest complete checkpoint in the run folder. The folder matters when a worker died
    right after ``report``: the checkpoint is in storage, but the controller had not registered it yet."""
    best: tuple[int, dict, dict, str] | None = None
    if ray_checkpoint is not None:
        with ray_checkpoint.as_directory() as d:
            weights, state, _ = load_state(d)
        best = (int(state["epoch"]), weights, state, f"its checkpoint of epoch {int(state['epoch']) + 1}")
    if run_dir:
        for uri in reversed(checkpoints_in(run_dir)):
            try:
                weights, state, _ = load_state(uri)
            except InputError as e:  # cut short by a crash: try the one before
                log.warning("skipping %s: %s", uri, e)
                continue
            if state is not None and (best is None or int(state["epoch"]) > best[0]):
                best = (int(state["epoch"]), weights, state, uri)
            break
    return None if best is None else best[1:]


def _format_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def epoch_line(epoch: int, epochs: int, metrics: dict, baseline: dict, seconds: float, left: float) -> str:
    """``epoch 3/10  loss 2.41 (fg 0.52 ...)  val R1-0.5 40.0 (baseline 35.0) mIoU 38.2 (...)  12.3 s, ~1m30s left``."""
    train = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("train/") and k != "train/loss"
             and not k.endswith(("samples_per_s", "lr"))}
    parts = [f"epoch {epoch + 1}/{epochs}", f"loss {metrics.get('train/loss', float('nan')):.3f}"]
    if train:
        parts[-1] += " (" + " ".join(f"{k} {v:.3f}" for k, v in sorted(train.items())) + ")"
    val = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("val/") and k != "val/n"}
    if val:
        shown = []
        for k, v in val.items():
            b = baseline.get(f"baseline/{k}")
            shown.append(f"{k} {v:.2f}" + (f" (baseline {b:.2f})" if b is not None else ""))
        parts.append("val " + " ".join(shown))
    parts.append(f"{metrics.get('train/samples_per_s', 0):.1f} samples/s")
    parts.append(f"{seconds:.1f} s, ~{_format_seconds(left)} left")
    return "  ".join(parts)


@dataclass
class _Worker:
    """One training worker's model (prepared for DDP), optimiser state and place in the worker group."""

    rank: int
    world: int
    device: torch.device
    model: Any
    optimizer: Any
    scheduler: Any
    scaler: Any
    steps_per_epoch: int


def train_loop_per_worker(config: dict) -> None:
    """The Ray Train worker function (see the module docstring); ``config = {"loop": LoopConfig}``."""
    import ray.train

    lc: LoopConfig = config["loop"]
    tc = lc.train
    quiet_ray_train_worker()
    w = _build_worker(lc)
    start_epoch, history = _resume(lc, w)
    train_shard = ray.train.get_dataset_shard("train")
    val_data = ray.train.get_dataset_shard("val") if w.rank == 0 else None
    hook = _kill_hook(lc.debug, w.rank)
    began = time.perf_counter()
    for epoch in range(start_epoch, tc.epochs):
        t0 = time.perf_counter()
        metrics = _train_epoch(lc, w, train_shard, epoch, hook)
        tmp = None
        if w.rank == 0:
            tmp = _validate_and_save(lc, w, val_data, epoch, metrics, history)
            done = epoch + 1 - start_epoch
            spent = time.perf_counter() - began
            say(epoch_line(epoch, tc.epochs, metrics, lc.baseline, time.perf_counter() - t0,
                           spent / done * (tc.epochs - epoch - 1)))
        checkpoint = ray.train.Checkpoint.from_directory(tmp) if tmp else None
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"checkpoint_epoch{epoch:04d}")
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _build_worker(lc: LoopConfig) -> _Worker:
    """The model (seeded, the init weights loaded, prepared for DDP on the worker's device), optimiser, schedule and
    AMP scaler."""
    import ray.train
    import ray.train.torch

    tc = lc.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if tc.torch_threads:
        torch.set_num_threads(tc.torch_threads)
    seed_everything(tc.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = build_model(lc.kind, lc.model_config)
    if lc.init_weights is not None:
        model.load_state_dict(ray.get(lc.init_weights))
    device = ray.train.torch.get_device()
    model = ray.train.torch.prepare_model(model)
    steps_per_epoch = max(1, math.ceil(lc.n_train / world / tc.batch_size))
    optimizer = make_optimizer(model, tc)
    scheduler = make_scheduler(optimizer, tc, steps_per_epoch)
    dtype = autocast_dtype(device) if tc.amp else None
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    return _Worker(rank=rank, world=world, device=device, model=model, optimizer=optimizer, scheduler=scheduler,
                   scaler=scaler, steps_per_epoch=steps_per_epoch)


def _resume(lc: LoopConfig, w: _Worker) -> tuple[int, list]:
    """``(the first epoch to train, the metrics history)``: from the newest checkpoint of the run (see
    :func:`_resume_state`), else ``(0, [])``."""
    import ray.train

    tc = lc.train
    start_epoch, history = 0, []
    resume = _resume_state(ray.train.get_checkpoint(), lc.run_dir)
    if resume is not None:
        weights, state, source = resume
        unwrap(w.model).load_state_dict(weights)
        w.optimizer.load_state_dict(state["optimizer"])
        w.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            w.scaler.load_state_dict(state["scaler"])
        start_epoch = int(state["epoch"]) + 1
        history = list(state.get("history", []))
        if w.rank == 0:
            say(f"resuming {lc.run_name} from {source} ({start_epoch}/{tc.epochs} epochs done)")
    if start_epoch >= tc.epochs and w.rank == 0:
        say(f"{lc.run_name}: all {tc.epochs} epochs are done already; nothing to train")
    return start_epoch, history


def _train_epoch(lc: LoopConfig, w: _Worker, train_shard, epoch: int, hook) -> dict:
    """One pass over this worker's shard; the epoch's metrics with the losses averaged over the workers."""
    tc = lc.train
    batches = iter_model_batches(train_shard, tc.batch_size, w.device,
                                 local_shuffle_buffer_size=tc.shuffle_buffer or None,
                                 local_shuffle_seed=(tc.seed * 1000 + epoch) if tc.shuffle_buffer else None)
    stats = train_one_epoch(w.model, batches, w.optimizer, w.scheduler, device=w.device, amp=tc.amp, scaler=w.scaler,
                            grad_clip=tc.grad_clip, step_hook=hook, start_step=epoch * w.steps_per_epoch)
    losses = _average({f"train/{k}" if k != "total" else "train/loss": v for k, v in stats.losses.items()},
                      w.world, w.device)
    samples = _sum(stats.samples, w.world, w.device)
    return {"epoch": epoch, **losses, "train/samples_per_s": samples / max(stats.seconds, 1e-9),
            "train/lr": w.optimizer.param_groups[0]["lr"]}


def _validate_and_save(lc: LoopConfig, w: _Worker, val_data, epoch: int, metrics: dict, history: list) -> str:
    """Rank 0: evaluate on the whole val dataset (into ``metrics`` and ``history``), save a vmr checkpoint into a temp
    folder (returned) and log the metrics (and, at the last epoch, plots) to MLflow."""
    tc = lc.train
    last = epoch == tc.epochs - 1
    res = evaluate(unwrap(w.model), iter_model_batches(val_data, tc.eval_batch_size or tc.batch_size, w.device),
                   lc.task, top_k=tc.eval_top_k, device=w.device, keep_examples=tc.plot_items if last else 0,
                   amp=tc.amp)
    metrics.update(prefixed(res.metrics, "val"))
    history.append({k: v for k, v in metrics.items()})
    tmp = tempfile.mkdtemp(prefix="vmr-ckpt-")
    save_checkpoint(tmp, w.model, lc.features, metrics=metrics,
                    extra={"epoch": epoch, "run_name": lc.run_name, "workflow": lc.workflow,
                           "mlflow_run_id": getattr(lc.tracker, "run_id", None)},
                    train_state={"epoch": epoch, "optimizer": w.optimizer.state_dict(),
                                 "scheduler": w.scheduler.state_dict(), "scaler": w.scaler.state_dict(),
                                 "history": history})
    if lc.tracker is not None:
        lc.tracker.log_metrics(metrics, step=epoch)
        if last and res.examples:
            with tempfile.TemporaryDirectory(prefix="vmr-plots-") as pd:
                save_plots(res.examples, pd, "val")
                lc.tracker.log_artifacts(pd, "plots")
    return tmp


# ---- the driver side ----------------------------------------------------------------------------------------------


def storage_filesystem(storage_path: str):
    """``(path, pyarrow filesystem or None)`` for ``RunConfig``: an ``s3://`` path gets a pyarrow S3 filesystem
    that honours ``AWS_ENDPOINT_URL(_S3)`` and the region (as :mod:`vmr.storage` does); others go as they are.
    Credentials in the driver's ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN`` are given to
    the filesystem explicitly: Ray Train's controller runs in a process that may predate them (a local Ray started
    earlier); without them the nodes' own credentials (instance roles, ~/.aws) are used."""
    if storage.scheme(storage_path) != "s3":
        return (storage.strip(storage_path) if storage.scheme(storage_path) == "file" else storage_path), None
    kwargs: dict = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        kwargs["endpoint_override"] = endpoint
        if endpoint.startswith("http://"):
            kwargs["scheme"] = "http"
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    if region:
        kwargs["region"] = region
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        kwargs["access_key"] = os.environ["AWS_ACCESS_KEY_ID"]
        kwargs["secret_key"] = os.environ["AWS_SECRET_ACCESS_KEY"]
        if os.environ.get("AWS_SESSION_TOKEN"):
            kwargs["session_token"] = os.environ["AWS_SESSION_TOKEN"]
    return storage.strip(storage_path).rstrip("/"), pafs.S3FileSystem(**kwargs)


def checkpoint_uri(storage_path: str, run_name: str, checkpoint) -> str:
    """The vmr-storage URI of a Ray Train checkpoint of run ``run_name`` under ``storage_path``."""
    return storage.join(storage_path, run_name, os.path.basename(str(checkpoint.path).rstrip("/")))


@dataclass
class FitResult:
    """What a training run left: checkpoint URIs (``best`` by the score attribute, ``latest``), the metrics the best
    and the latest checkpoints were reported with, and the run folder."""

    run_dir: str
    latest: str | None
    best: str | None
    latest_metrics: dict
    best_metrics: dict
    error: BaseException | None = None


def fit(loop: LoopConfig, trainer_cfg: TrainerConfig, datasets: dict, storage_path: str, run_name: str,
        callbacks: list | None = None) -> FitResult:
    """Run a ``TorchTrainer`` over ``datasets`` (``{"train": ds, "val": ds}``) with ``trainer_cfg``; checkpoints go to
    ``{storage_path}/{run_name}``. A run of that name already there is resumed (see the module docstring).
    ``callbacks``: Ray Train callbacks for ``RunConfig`` (a Tune trial passes ``TuneReportCallback``)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    if trainer_cfg.num_workers < 1:
        raise ConfigError(f"trainer.num_workers must be >= 1, got {trainer_cfg.num_workers}")
    score = loop.score_attribute
    path, fs = storage_filesystem(storage_path)
    env = forwarded_env()  # no credentials: Ray logs runtime_env
    run_config = ray.train.RunConfig(
        name=run_name, storage_path=path, storage_filesystem=fs,
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=trainer_cfg.num_to_keep or None,
                                                     checkpoint_score_attribute=score or None,
                                                     checkpoint_score_order=trainer_cfg.score_order),
        failure_config=ray.train.FailureConfig(max_failures=trainer_cfg.max_failures),
        worker_runtime_env={"env_vars": env} if env else {},
        logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        callbacks=list(callbacks or []),
    )
    resources = {"CPU": trainer_cfg.cpus_per_worker}
    if trainer_cfg.use_gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config={"loop": loop},
        scaling_config=ray.train.ScalingConfig(num_workers=trainer_cfg.num_workers, use_gpu=trainer_cfg.use_gpu,
                                               resources_per_worker=resources),
        run_config=run_config, datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
    )
    error = None
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as e:
        error, result = e, None
    run_dir = storage.join(storage_path, run_name)
    if result is None:
        return FitResult(run_dir, None, None, {}, {}, error)
    if result.error is not None:
        error = result.error
    latest = checkpoint_uri(storage_path, run_name, result.checkpoint) if result.checkpoint else None
    latest_metrics = dict(result.metrics or {})
    best, best_metrics = latest, latest_metrics
    if score and result.best_checkpoints:
        ranked = [(c, m) for c, m in result.best_checkpoints if score in (m or {})]
        if ranked:
            pick = max if trainer_cfg.score_order == "max" else min
            c, m = pick(ranked, key=lambda cm: cm[1][score])
            best, best_metrics = checkpoint_uri(storage_path, run_name, c), dict(m)
    if latest_metrics == {} and latest:  # a finished run re-run: nothing reported this time; read the card
        latest_metrics = read_card(latest).metrics
        if best == latest:
            best_metrics = latest_metrics
    return FitResult(run_dir, latest, best, latest_metrics, best_metrics, error)


__all__ = ["TrainerConfig", "DebugConfig", "LoopConfig", "train_loop_per_worker", "fit", "FitResult",
           "storage_filesystem", "checkpoint_uri", "epoch_line"]
