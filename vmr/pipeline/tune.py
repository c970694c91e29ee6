"""Hyperparameter sweeps on Ray Tune: every trial one finetuning run (Ray Train), ASHA on the validation metric, every
trial an MLflow child run of one parent run, the best config written out and its model registered.

Search spaces are data (``configs/tune.yaml``), one per model kind, keyed by the dotted training-config key they set::

    search_space:
      matr:
        model.matr.gamma: {loguniform: [0.01, 1.0]}       # soft-DTW smoothing
        model.matr.lambda_fg: {uniform: [0.25, 4.0]}      # loss weights
      a2fa:
        model.a2fa.kernel_size: {choice: [15, 21, 27]}    # F2SGD kernel size C

A value is one distribution: ``uniform``/``loguniform``/``quniform: [low, high(, q)]``, ``randint: [low, high)``,
``choice: [...]``, ``grid: [...]`` (every value, times ``num_samples``), or a plain value (fixed). The space of the
training config's model kind is used; each key is checked against the training config before any trial starts, so a
typo fails at once with the list of known keys. The helpers for spaces live in :mod:`vmr.pipeline.tune_space`.

Where things go (``name`` is the sweep's name)::

    {storage_path}/{name}/                     the Tune experiment (its state: what Tuner.restore resumes from)
    {storage_path}/{name}/best_config.yaml     the training config with the best trial's values (vmr finetune --config)
    {storage_path}/{name}-trials/{name}-<id>/  each trial's Ray Train run: checkpoints, vmr_config.yaml
    MLflow experiment ``vmr-tune``            parent run ``{name}`` (tags vmr.sweep, vmr.sweep.role=parent, vmr.best.*;
                                               artifacts best_config.yaml, trials.json); one child run per trial
                                               (tag mlflow.parentRunId, vmr.trial_id, vmr.trial.<key> = sampled value)

Choices where the issue is silent:

- A trial is the finetune workflow (:func:`vmr.pipeline.workflow.run_workflow`) with the trial's values as overrides,
  run from the Tune trial's actor; its epochs reach ASHA through Ray Train's ``TuneReportCallback``. The trial actor
  only waits on its Ray Train run, so it holds ``trial_cpus`` (0.01) CPUs: the workers hold the real resources.
- ASHA's time is the ``epoch`` the training loop reports (0-based), not Tune's iteration count, because a trial that
  resumes after a driver crash continues its training run at its next epoch.
- Footage and features are prepared once by the driver, by the workflow's own first step
  (:func:`vmr.pipeline.workflow.prepare_features`); trials run with ``data.features.extract=false``.
- The best trial is the one with the best validation score at any epoch (Tune's ``scope="all"``); its best
  checkpoint (by the score recorded in each checkpoint's card) is registered from the trial's child run, so the model
  version links to the run that trained it.
- A trial that ASHA stopped was killed before its workflow could close its MLflow run: the driver marks such runs
  ``KILLED`` with the tag ``vmr.trial.stopped_early=true``; an errored trial's run ``FAILED``.
- Resuming: the same ``name`` finds the experiment (``Tuner.can_restore``) and restores it with unfinished and
  errored trials resumed; a resumed trial's training run continues from its latest checkpoint (same run name) and its
  MLflow run continues (runs are found by name); the parent run is continued the same way.
- Without a running cluster a local Ray is started *with* its dashboard (see :func:`_init_ray`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import ray.tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from vmr import storage
from vmr.config import dump_yaml, redact, to_dict
from vmr.errors import ConfigError, SweepFailed
from vmr.models.checkpoint import CARD_FILE, ModelCard
from vmr.pipeline.tracking import Tracker, check_reachable, dashboard_command, registered_name_for, resolve_tracking_uri
from vmr.pipeline.train import storage_filesystem
from vmr.pipeline.tune_space import (  # re-exported: the search-space helpers are imported from here
    DISTRIBUTIONS,
    check_distribution,
    overrides_of,
    representative,
    to_tune,
)
from vmr.pipeline.workflow import default_config_files, prepare_features, resolve_config, resolve_paths, run_workflow

log = logging.getLogger(__name__)

# ---- the sweep -----------------------------------------------------------------------------------------------------

PARENT_ROLE, TRIAL_ROLE = "parent", "trial"
SWEEP_TAG, ROLE_TAG, TRIAL_TAG = "vmr.sweep", "vmr.sweep.role", "vmr.trial_id"
BEST_CONFIG_FILE = "best_config.yaml"


@dataclass
class AshaConfig:
    """ASHA (:class:`ray.tune.schedulers.ASHAScheduler`) on the validation metric. Time is the epoch the training
    loop reports (0-based), so ``grace_period: 2`` lets every trial train 3 epochs before it can be stopped;
    ``reduction_factor``: 1/rf of the trials go on at each rung. The largest time is the trials' ``train.epochs``."""

    grace_period: int = 2
    reduction_factor: float = 3.0


@dataclass
class SweepConfig:
    """``vmr tune`` settings (``configs/tune.yaml`` documents each). ``name`` ("" = ``sweep-<kind>-<UTC time>``)
    names the sweep: its Tune experiment ``{storage_path}/{name}``, the trials' training runs
    ``{storage_path}/{name}-trials/{name}-<trial id>`` and the MLflow parent run; the same name resumes a sweep.
    ``storage_path`` "" = ``{workdir}/tune`` (a path or ``s3://``); ``register_as`` "" = the training config's
    registry name (``vmr-matr``/``vmr-a2fa``), ``none`` = do not register; ``tracking_uri`` "" = the training
    config's; ``trial_cpus``: CPU slots each trial's driver holds (it only waits on its Ray Train run; Ray needs a
    non-zero request)."""

    name: str = ""
    train_config: list[str] = field(default_factory=list)
    train_overrides: list[str] = field(default_factory=list)
    metric: str = ""
    mode: Literal["max", "min"] = "max"
    num_samples: int = 16
    max_concurrent_trials: int = 4
    trial_cpus: float = 0.01
    seed: int = 0
    asha: AshaConfig = field(default_factory=AshaConfig)
    search_space: dict[str, dict] = field(default_factory=dict)
    storage_path: str = ""
    register_as: str = ""
    tracking_uri: str = ""
    experiment: str = "vmr-tune"

    def validate(self) -> None:
        if self.num_samples < 1 or self.max_concurrent_trials < 0:
            raise ConfigError("num_samples must be >= 1 and max_concurrent_trials >= 0 (0 = no limit)")
        if self.asha.grace_period < 1 or self.asha.reduction_factor <= 1:
            raise ConfigError("asha.grace_period must be >= 1 and asha.reduction_factor > 1")
        if self.trial_cpus <= 0:
            raise ConfigError(f"trial_cpus must be > 0 (a small fraction is enough), got {self.trial_cpus}")


@dataclass
class TrialContext:
    """What every trial needs besides its sampled values (passed with ``tune.with_parameters``)."""

    name: str
    train_files: list[str]
    train_overrides: list[str]
    trials_path: str
    tracking_uri: str
    experiment: str
    parent_run_id: str
    workdir: str


@dataclass
class SweepResult:
    """What a sweep produced: the best trial (id, MLflow run id, its sampled ``params`` and ``metric_value``), the
    best config file, the registered model (``models:/name/version`` or ""), every trial's outcome, where it all is."""

    name: str
    metric: str
    best_trial: str
    best_run_id: str
    params: dict
    metric_value: float
    best_config: str
    best_checkpoint: str
    registered: str
    trials: list[dict]
    parent_run_id: str
    tracking_uri: str
    experiment: str
    experiment_dir: str
    restored: bool
    dashboard: str
    seconds: float

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def text(self) -> str:
        done = sum(t["status"] == "TERMINATED" for t in self.trials)
        stopped = sum(bool(t.get("stopped_early")) for t in self.trials)
        lines = [f"sweep {self.name}: {len(self.trials)} trials ({done} ended, {stopped} of them stopped early by "
                 f"ASHA) in {self.seconds / 60:.1f} min{' (resumed)' if self.restored else ''}",
                 f"  best trial {self.best_trial}: {self.metric} {self.metric_value:.3f} with "
                 + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.params.items()),
                 f"  best config: {self.best_config}  (vmr finetune --config {self.best_config})",
                 f"  best checkpoint: {self.best_checkpoint}"]
        if self.registered:
            lines.append(f"  registered model: {self.registered}")
        lines += [f"  MLflow: parent run {self.parent_run_id} in experiment {self.experiment!r} at {redact(self.tracking_uri)}",
                  f"  dashboard: {self.dashboard}",
                  f"  resume after a crash: the same command with name={self.name}"]
        return "\n".join(lines)


def _abs(uri: str) -> str:
    return uri if storage.is_remote(uri) else os.path.abspath(uri)


def trial_run_name(sweep: str, trial_id: str) -> str:
    return f"{sweep}-{trial_id}"


def _trial_overrides(ctx: TrialContext, params: dict, trial_id: str) -> list[str]:
    """A trial's training overrides: the sweep's, its sampled values, then where its run goes (which win)."""
    return [*ctx.train_overrides, *overrides_of(params),
            f"run_name={trial_run_name(ctx.name, trial_id)}", f"data.workdir={ctx.workdir}",
            f"trainer.storage_path={ctx.trials_path}", "data.features.extract=false", "tracking.register_as=none",
            f"tracking.tracking_uri={ctx.tracking_uri}", f"tracking.experiment={ctx.experiment}"]


def run_trial(config: dict, ctx: TrialContext) -> None:
    """The Tune trainable: one finetuning run (:func:`vmr.pipeline.workflow.run_workflow`) with the trial's values,
    its epochs reported to Tune (``TuneReportCallback``), tracked as an MLflow child of the sweep's parent run. A
    trial restarted after a driver crash continues its training run (same run name) and its MLflow run."""
    trial_id = ray.tune.get_context().get_trial_id()
    run_name = trial_run_name(ctx.name, trial_id)
    cfg, _ = resolve_config("finetune", ctx.train_files, _trial_overrides(ctx, config, trial_id))
    # the child run exists before the workflow starts it, so the workflow continues it (runs are found by name)
    child = Tracker(ctx.tracking_uri, ctx.experiment)
    child.start_run(run_name, {}, tags={"mlflow.parentRunId": ctx.parent_run_id, SWEEP_TAG: ctx.name,
                                        ROLE_TAG: TRIAL_ROLE, TRIAL_TAG: trial_id,
                                        **{f"vmr.trial.{k}": v for k, v in config.items()}})
    run_workflow("finetune", cfg, announce=lambda s: print(f"[{trial_id}] {s}", flush=True),
                 train_callbacks=[TuneReportCallback()])


def _check_space(space: dict, files: list[str], overrides: list[str]) -> None:
    """Every key of ``space`` must be a key of the training config that accepts the distribution's values."""
    for key, spec in space.items():
        check_distribution(key, spec)
        try:
            resolve_config("finetune", files, [*overrides, *overrides_of({key: representative(spec)})])
        except ConfigError as e:
            raise ConfigError(f"search_space key {key!r} does not fit the training config: {e}") from None


def _best_checkpoint(run_dir: str, metric: str, mode: str) -> tuple[str, dict]:
    """The checkpoint of a training run folder with the best ``metric`` in its card (vmr checkpoints record the
    metrics they were saved with); ("", {}) when there is none."""
    if not storage.exists(run_dir):
        return "", {}
    best, best_metrics = "", {}
    fs = storage.filesystem(run_dir)
    for child in sorted(fs.ls(storage.strip(run_dir), detail=False)):
        name = child.rstrip("/").rsplit("/", 1)[-1]
        if not name.startswith("checkpoint_"):
            continue
        ckpt = storage.join(run_dir, name)
        card_uri = storage.join(ckpt, CARD_FILE)
        if not storage.exists(card_uri):
            continue
        m = ModelCard.from_json(storage.read_text(card_uri), ckpt).metrics
        if metric not in m:
            continue
        better = (not best or (m[metric] > best_metrics[metric] if mode == "max" else m[metric] < best_metrics[metric]))
        if better:
            best, best_metrics = ckpt, m
    return best, best_metrics


@dataclass
class _Sweep:
    """A sweep's settings resolved against its training config: where its parts go (see the module docstring)."""

    cfg: SweepConfig
    name: str
    files: list[str]             # the training config files (absolute paths or URIs)
    base: Any                    # the training config (a FinetuneWorkflowConfig) every trial starts from
    kind: str
    space: dict                  # the search space of ``kind``
    overrides: list[str]         # every trial's training overrides before its sampled values
    workdir: str
    metric: str
    storage_path: str
    experiment_dir: str
    trials_path: str


def run_sweep(cfg: SweepConfig, *, announce: Callable[[str], None] = print) -> SweepResult:
    """Run (or resume) the sweep ``cfg`` (see the module docstring and :class:`SweepConfig`)."""
    began = time.perf_counter()
    sweep = _resolve_sweep(cfg)
    prepare_features(sweep.base, resolve_paths(sweep.base), announce)  # once, for every trial
    tracking_uri, parent = _start_parent_run(sweep, announce)
    ctx = TrialContext(name=sweep.name, train_files=sweep.files, train_overrides=sweep.overrides,
                       trials_path=sweep.trials_path, tracking_uri=tracking_uri, experiment=cfg.experiment,
                       parent_run_id=parent.run_id, workdir=sweep.workdir)
    tuner, restored = _tuner(sweep, ctx, announce)
    grid = tuner.fit()
    trials, best = _rank_trials(sweep, grid, tracking_uri, parent)
    best_config = _write_best_config(sweep, best, trials, parent)
    checkpoint, registered = _register_best(sweep, best, tracking_uri, announce)
    parent.set_tags({"vmr.best.trial_id": best["trial_id"], "vmr.best.run_id": best["run_id"],
                     "vmr.best.checkpoint": checkpoint, "vmr.best.model": registered, "vmr.best.config": best_config})
    parent.finish("FINISHED")
    return SweepResult(
        name=sweep.name, metric=sweep.metric, best_trial=best["trial_id"], best_run_id=best["run_id"],
        params=best["params"], metric_value=float(best["best"]), best_config=best_config, best_checkpoint=checkpoint,
        registered=registered, trials=trials, parent_run_id=parent.run_id, tracking_uri=tracking_uri,
        experiment=cfg.experiment, experiment_dir=sweep.experiment_dir, restored=restored,
        dashboard=dashboard_command(tracking_uri), seconds=time.perf_counter() - began)


def _resolve_sweep(cfg: SweepConfig) -> _Sweep:
    """Check the sweep's settings and search space against its training config before anything runs."""
    cfg.validate()
    files = [os.path.abspath(f) if not storage.is_remote(f) else f for f in cfg.train_config] \
        or default_config_files("finetune")
    base, _ = resolve_config("finetune", files, cfg.train_overrides)
    kind = base.model.kind
    if kind not in cfg.search_space or not cfg.search_space[kind]:
        raise ConfigError(f"search_space has no entry for the training config's model kind {kind!r} "
                          f"(it has: {sorted(cfg.search_space) or 'none'})")
    space = cfg.search_space[kind]
    workdir = os.path.abspath(base.data.workdir)
    overrides = [*cfg.train_overrides, f"data.workdir={workdir}"]
    _check_space(space, files, overrides)
    metric = cfg.metric or base.trainer.score_attribute or ("val/mIoU" if kind == "matr" else "val/mAP")
    name = cfg.name or f"sweep-{kind}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    storage_path = _abs(cfg.storage_path or os.path.join(workdir, "tune"))
    return _Sweep(cfg=cfg, name=name, files=files, base=base, kind=kind, space=space, overrides=overrides,
                  workdir=workdir, metric=metric, storage_path=storage_path,
                  experiment_dir=storage.join(storage_path, name), trials_path=storage.join(storage_path, f"{name}-trials"))


def _start_parent_run(sweep: _Sweep, announce) -> tuple[str, Tracker]:
    """``(tracking URI, the sweep's MLflow parent run)``, started or continued (runs are found by name)."""
    cfg = sweep.cfg
    tracking_uri = resolve_tracking_uri(cfg.tracking_uri or sweep.base.tracking.tracking_uri, sweep.workdir)
    check_reachable(tracking_uri)
    parent = Tracker(tracking_uri, cfg.experiment)
    resolved = dataclasses.replace(cfg, name=sweep.name, train_config=sweep.files, metric=sweep.metric,
                                   storage_path=sweep.storage_path, search_space={sweep.kind: sweep.space})
    parent.start_run(sweep.name, to_dict(resolved), config_yaml=dump_yaml(resolved),
                     tags={"vmr.workflow": "tune", SWEEP_TAG: sweep.name, ROLE_TAG: PARENT_ROLE, "vmr.kind": sweep.kind,
                           "vmr.metric": sweep.metric, "vmr.experiment_dir": sweep.experiment_dir})
    announce(f"MLflow parent run: {parent.run_url()}{' (resumed)' if parent.resumed else ''} at {redact(tracking_uri)}")
    return tracking_uri, parent


def _tuner(sweep: _Sweep, ctx: TrialContext, announce) -> tuple[Any, bool]:
    """``(the Tuner, restored)``: the sweep's experiment restored when it exists (``Tuner.can_restore``), else new."""
    cfg = sweep.cfg
    trainable = ray.tune.with_resources(ray.tune.with_parameters(run_trial, ctx=ctx), {"CPU": cfg.trial_cpus})
    path, fs = storage_filesystem(sweep.storage_path)
    exp_path, _ = storage_filesystem(sweep.experiment_dir)
    if ray.tune.Tuner.can_restore(exp_path, storage_filesystem=fs):
        announce(f"resuming sweep {sweep.name} from {sweep.experiment_dir}: finished trials are kept, unfinished ones "
                 "continue")
        return ray.tune.Tuner.restore(exp_path, trainable, resume_unfinished=True, resume_errored=True,
                                      storage_filesystem=fs), True
    announce(f"sweep {sweep.name}: {cfg.num_samples} trials of {sweep.kind} over {', '.join(sweep.space)}; ASHA on "
             f"{sweep.metric} ({cfg.mode}), grace {cfg.asha.grace_period} epochs; up to "
             f"{cfg.max_concurrent_trials or 'any'} at once; experiment in {sweep.experiment_dir}")
    return ray.tune.Tuner(
        trainable, param_space=to_tune(sweep.space),
        tune_config=ray.tune.TuneConfig(
            metric=sweep.metric, mode=cfg.mode, num_samples=cfg.num_samples,
            max_concurrent_trials=cfg.max_concurrent_trials or None,
            search_alg=BasicVariantGenerator(random_state=cfg.seed, max_concurrent=cfg.max_concurrent_trials or 0),
            scheduler=ASHAScheduler(time_attr="epoch", max_t=max(1, sweep.base.train.epochs),
                                    grace_period=cfg.asha.grace_period, reduction_factor=cfg.asha.reduction_factor)),
        run_config=ray.tune.RunConfig(name=sweep.name, storage_path=path, storage_filesystem=fs,
                                      failure_config=ray.tune.FailureConfig(max_failures=1))), False


def _rank_trials(sweep: _Sweep, grid, tracking_uri: str, parent: Tracker) -> tuple[list[dict], dict]:
    """``(every trial's record, the best one)``; :class:`SweepFailed` (the parent run FAILED) when none reported
    the metric."""
    cfg = sweep.cfg
    trials = _record_trials(grid, sweep.name, sweep.metric, cfg.mode, tracking_uri, cfg.experiment)
    ranked = [t for t in trials if t.get("best") is not None]
    if not ranked:
        parent.finish("FAILED")
        errors = "; ".join(f"{t['trial_id']}: {t['error']}" for t in trials if t.get("error"))
        raise SweepFailed(f"no trial of sweep {sweep.name} reported {sweep.metric}" + (f" ({errors})" if errors else ""))
    pick = max if cfg.mode == "max" else min
    return trials, pick(ranked, key=lambda t: t["best"])


def _write_best_config(sweep: _Sweep, best: dict, trials: list[dict], parent: Tracker) -> str:
    """The training config with the best trial's values, ready for ``vmr finetune --config``: written into the
    experiment folder and, with the trials' records, to the parent run. Returns its URI."""
    best_cfg, _ = resolve_config("finetune", sweep.files, [*sweep.overrides, *overrides_of(best["params"])])
    best_cfg = dataclasses.replace(best_cfg, run_name="")
    best_yaml = (f"# best config of sweep {sweep.name}: trial {best['trial_id']}, {sweep.metric} = {best['best']:.4f} "
                 f"({sweep.cfg.mode})\n"
                 + "".join(f"#   {k}: {v}\n" for k, v in best["params"].items()) + dump_yaml(best_cfg))
    best_config = storage.join(sweep.experiment_dir, BEST_CONFIG_FILE)
    storage.write_text_atomic(best_config, best_yaml)
    parent.log_text(best_yaml, BEST_CONFIG_FILE)
    parent.log_text(json.dumps(trials, indent=1, default=str), "trials.json")
    parent.log_metrics({f"best/{sweep.metric}": best["best"]}, step=0)
    return best_config


def _register_best(sweep: _Sweep, best: dict, tracking_uri: str, announce) -> tuple[str, str]:
    """``(the best trial's best checkpoint, its registered model URI)`` (either "" when there is none), registered
    from the trial's child run."""
    cfg = sweep.cfg
    checkpoint, _m = _best_checkpoint(storage.join(sweep.trials_path, best["run_name"]), sweep.metric, cfg.mode)
    registered = ""
    register_as = cfg.register_as or sweep.base.tracking.register_as or registered_name_for(sweep.kind)
    if checkpoint and register_as.lower() != "none":
        child = Tracker(tracking_uri, cfg.experiment, run_id=best["run_id"])
        version = child.log_model(checkpoint, register_as, tags={SWEEP_TAG: sweep.name, TRIAL_TAG: best["trial_id"],
                                                                 "vmr.checkpoint": checkpoint})
        registered = f"models:/{register_as}/{version.version}"
        announce(f"registered {registered} (trial {best['trial_id']}, {checkpoint})")
    return checkpoint, registered


def _record_trials(grid, name: str, metric: str, mode: str, tracking_uri: str, experiment: str) -> list[dict]:
    """One dict per trial (id, status, sampled params, best and last metric, epochs, MLflow run id), and the trials'
    MLflow runs closed: an ended trial's run that is still RUNNING was stopped early by ASHA (its workflow never
    reached the end), so it is marked KILLED with the tag ``vmr.trial.stopped_early``; an errored trial's FAILED."""
    tracker = Tracker(tracking_uri, experiment)
    out = []
    for result in grid:
        cfg = dict(result.config or {})
        trial_id = str((result.metrics or {}).get("trial_id") or os.path.basename(result.path.rstrip("/")))
        df = result.metrics_dataframe
        values = [float(v) for v in df[metric].dropna()] if df is not None and metric in df else []
        best = (max(values) if mode == "max" else min(values)) if values else None
        epochs = int(df["epoch"].max()) + 1 if df is not None and "epoch" in df and len(df) else 0
        run_name = trial_run_name(name, trial_id)
        run = tracker.find_run(run_name)
        row = {"trial_id": trial_id, "run_name": run_name, "run_id": run.info.run_id if run else "",
               "status": "ERROR" if result.error else "TERMINATED", "params": cfg, "best": best,
               "last": values[-1] if values else None, "epochs": epochs, "stopped_early": False,
               "error": str(result.error).splitlines()[0][:300] if result.error else ""}
        if run is not None and run.info.status == "RUNNING":
            if result.error:
                tracker.client.set_terminated(run.info.run_id, "FAILED")
            else:
                row["stopped_early"] = True
                tracker.client.set_tag(run.info.run_id, "vmr.trial.stopped_early", "true")
                tracker.client.set_terminated(run.info.run_id, "KILLED")
        out.append(row)
    return sorted(out, key=lambda r: r["trial_id"])


__all__ = ["SweepConfig", "AshaConfig", "SweepResult", "run_sweep", "run_trial", "to_tune", "check_distribution",
           "overrides_of", "trial_run_name", "DISTRIBUTIONS"]
