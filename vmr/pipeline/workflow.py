"""The pretrain and finetune workflows, shared by ``vmr pretrain|finetune`` and ``workflows/pretrain.py|finetune.py``.

One top-level config per workflow (:class:`PretrainWorkflowConfig`, :class:`FinetuneWorkflowConfig`, defined in
:mod:`vmr.pipeline.workflow_config` and re-exported here) composes the sections of the components (data, model, train,
trainer, tracking), resolved once from YAML files and ``key=value`` overrides (:mod:`vmr.config`), saved as
``vmr_config.yaml`` in the run folder and logged to MLflow (``config.yaml`` artifact, every key a param).

A run, step by step (each step prints what it did; :func:`run_workflow` calls one private function per step)::

    paths        workdir (default ./vmr-data): demo/, features/, runs/, mlflow.db; every one overridable
    footage      data.videos, or the synthetic demo archive rendered into {workdir}/demo when absent
    features     vmr.pipeline.extract (Ray Data) into the feature store; videos already current are skipped
    samples      pretrain: random clips of every video (vmr.data.pretrain_clips), drawn for data.clip_draws rounds, and a
                 held-out set of clips drawn with another seed; finetune/video: match annotations -> class-disjoint
                 train/val/test pairs (vmr.data.match_pairs.build_match_pairs); finetune/text: QVHighlights-format jsonl files
                 (derived from the demo's match annotations when none are given) and their CLIP sentence embeddings
    datasets     vmr.pipeline.datasets (Ray Data, padded rows; materialised once unless trainer.materialize=false)
    baseline     finetune/video: the training-free cosine baseline on the validation split (and test), printed
                 and logged next to the model's numbers
    training     vmr.pipeline.train.fit (Ray Train TorchTrainer); resumes a run of the same name
    model        the best checkpoint logged to MLflow and registered (vmr-matr / vmr-a2fa; pretraining:
                 vmr-matr-pretrained), evaluated on the test split next to the baseline (finetune)

Choices where the issue is silent:

- The run name defaults to ``{workflow}-{kind}-{UTC time}``; pass ``--run-name`` (or ``run_name=``) to name it and to
  resume it later.
- ``init_from: auto`` (finetune) starts MATR from the newest ``vmr-matr-pretrained`` version in the same MLflow
  store, and from random weights (with a warning) when there is none; A2FA has no pretraining. An explicit URI must
  load, have the same kind and the same feature settings as the finetuning data.
- The model's input width follows the feature store (``in_dim``/``dim`` are set from the features' dimension).
- Pretraining has no labels: its validation is the localisation of held-out random clips (drawn with seed + 1).
- Text demo: the demo has no sentences, so each (video, action class) becomes the sentence
  ``data.text.template`` (``"a player performs a {action}"``) with every instance of the class in the video as its
  windows; videos are split train/val/test. With random CLIP weights the sentence embeddings carry no meaning:
  this checks the plumbing of the text task end to end, it is not a quality result.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import ray

from vmr import storage
from vmr.config import dump_yaml, redact, to_dict
from vmr.data.demo import render_demo_archive
from vmr.data.specs import SpecDataset, make_loader
from vmr.errors import ConfigError, InputError, TrainingError
from vmr.features.clip import RANDOM_WEIGHTS_NOTICE
from vmr.features.store import FeatureStore
from vmr.models.checkpoint import build_model, check_features, load_model
from vmr.pipeline.datasets import sample_dataset
from vmr.pipeline.extract import ExtractConfig, run_extract
from vmr.pipeline.ray_session import ensure_ray, quiet_ray_data
from vmr.pipeline.tracking import (
    Tracker,
    check_reachable,
    dashboard_command,
    latest_version,
    registered_name_for,
    resolve_tracking_uri,
)
from vmr.pipeline.train import FitResult, LoopConfig, fit
from vmr.pipeline.workflow_config import (  # re-exported: the workflow's configs are imported from here
    CONFIG_CLASSES,
    WORKFLOWS,
    DataConfig,
    DemoConfig,
    FeaturesConfig,
    FinetuneWorkflowConfig,
    ModelSection,
    Paths,
    PretrainWorkflowConfig,
    TextDataConfig,
    TrackingConfig,
    WorkflowConfig,
    bundled_configs,
    configs_dir,
    default_config_files,
    resolve_config,
    resolve_paths,
)
from vmr.pipeline.workflow_samples import (  # re-exported: derive_text_annotations; benchmarks make samples
    derive_text_annotations,
    pair_specs,
    pretrain_specs,
    split_hint,
    text_specs,
)
from vmr.train.loop import evaluate, evaluate_baseline, prefixed

log = logging.getLogger(__name__)


@dataclass
class WorkflowResult:
    """What a run produced (also written as ``vmr_summary.json`` into the run folder)."""

    workflow: str
    run_name: str
    run_dir: str
    best_checkpoint: str | None
    latest_checkpoint: str | None
    metrics: dict
    test_metrics: dict
    baseline: dict
    tracking_uri: str
    experiment: str
    mlflow_run_id: str
    registered: str
    dashboard: str
    seconds: float
    samples: dict = field(default_factory=dict)      # samples per split
    init_from: str = ""                              # what finetuning started from ("" = random weights)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _announce_default(msg: str) -> None:
    print(msg, flush=True)


@dataclass
class _Run:
    """What the steps of one run share: the workflow, its resolved config (``run_name`` set) and where things go."""

    workflow: str
    cfg: WorkflowConfig
    paths: Paths
    announce: Callable[[str], None]
    kind: str
    task: str              # "video" (MATR) or "text" (A2FA)
    run_name: str
    run_dir: str           # {storage_path}/{run_name}: checkpoints, vmr_config.yaml, vmr_summary.json
    tracking_uri: str
    experiment: str


def run_workflow(workflow: str, cfg: WorkflowConfig, *, announce: Callable[[str], None] = _announce_default,
                 config_files: list[str] | None = None, specs: dict | None = None,
                 train_callbacks: list | None = None) -> WorkflowResult:
    """Run ``workflow`` (``pretrain``/``finetune``) with the resolved ``cfg`` (see the module docstring).

    ``specs``: ``{"train": [...], "val": [...], "test": [...]}`` samples made by the caller (scheduled retraining's
    pairs), used instead of the ones the config describes; ``train_callbacks``: Ray Train callbacks (a Tune trial's
    ``TuneReportCallback``)."""
    began = time.perf_counter()
    run = _begin(workflow, cfg, config_files, announce)
    store = _footage_and_features(run)
    settings = store.settings()
    dim = int(next(iter(store.entries().values()))["dim"])
    model_cfg = _model_config(run.cfg, dim, announce)
    specs, context = _samples(run, store, specs)
    tracker = _start_tracking(run, settings)
    baseline, init_ref, init_from = _baseline_and_init_weights(run, store, model_cfg, specs, tracker)
    result = _datasets_and_training(run, model_cfg, specs, context, LoopConfig(
        kind=run.kind, model_config=to_dict(model_cfg), task=run.task, features=vars(settings) | {"dim": dim},
        train=run.cfg.train, n_train=len(specs["train"]), run_name=run.run_name, run_dir=run.run_dir,
        workflow=workflow, init_weights=init_ref, tracker=tracker, baseline=baseline,
        score_attribute=_score_attribute(run), debug=run.cfg.debug), train_callbacks)
    registered, test_metrics = _register_and_test(run, store, specs, context, result, tracker)
    tracker.finish("FINISHED")
    out = WorkflowResult(
        workflow=workflow, run_name=run.run_name, run_dir=run.run_dir, best_checkpoint=result.best,
        latest_checkpoint=result.latest, metrics=result.best_metrics, test_metrics=test_metrics, baseline=baseline,
        tracking_uri=run.tracking_uri, experiment=run.experiment, mlflow_run_id=tracker.run_id or "",
        registered=registered, dashboard=dashboard_command(run.tracking_uri), seconds=time.perf_counter() - began,
        samples={k: len(v) for k, v in specs.items()}, init_from=init_from)
    storage.write_text_atomic(storage.join(run.run_dir, "vmr_summary.json"),
                              json.dumps(out.to_json(), indent=1, default=str))
    return out


def _begin(workflow: str, cfg: WorkflowConfig, config_files: list[str] | None, announce) -> _Run:
    """Check the config, name the run, and check that MLflow answers before any compute."""
    if workflow == "pretrain" and cfg.model.kind != "matr":
        raise ConfigError("pretraining is MATR's (random-clip self-supervision); A2FA has none: use vmr finetune")
    kind = cfg.model.kind
    paths = resolve_paths(cfg)
    os.makedirs(paths.workdir, exist_ok=True)
    run_name = cfg.run_name or f"{workflow}-{kind}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    cfg = dataclasses.replace(cfg, run_name=run_name)
    if config_files:
        announce(f"config: {', '.join(config_files)}")
    tracking_uri = resolve_tracking_uri(cfg.tracking.tracking_uri, paths.workdir)
    check_reachable(tracking_uri)  # before any compute
    return _Run(workflow=workflow, cfg=cfg, paths=paths, announce=announce, kind=kind,
                task="video" if kind == "matr" else "text", run_name=run_name,
                run_dir=storage.join(paths.storage_path, run_name), tracking_uri=tracking_uri,
                experiment=cfg.tracking.experiment or f"vmr-{workflow}")


def _footage_and_features(run: _Run) -> FeatureStore:
    """The feature store of the run's footage (see :func:`prepare_features`), which must hold videos."""
    store = prepare_features(run.cfg, run.paths, run.announce)
    if len(store) == 0:
        raise InputError(f"the feature store {run.paths.store} holds no videos (extraction failed or data.videos is "
                         "empty)")
    return store


def prepare_features(cfg: WorkflowConfig, paths: Paths, announce: Callable[[str], None]) -> FeatureStore:
    """Footage and features, the first step of a workflow and of a sweep (whose trials then run with
    ``data.features.extract=false`` and share the store): the demo archive rendered into ``paths.demo`` when the
    config uses it and it is not there, Ray started (or joined), and the footage's features extracted into
    ``paths.store`` with ``cfg.data.features`` (videos already current are skipped) unless ``extract`` is false.
    Returns the store, which may be empty."""
    fc = cfg.data.features
    random_weights = RANDOM_WEIGHTS_NOTICE.format(model=fc.model)
    if fc.pretrained.lower() == "none":
        announce("note: CLIP has RANDOM weights (data.features.pretrained=none): the offline demo's features carry no "
                 "visual meaning beyond colour and layout statistics; use pretrained=openai for real footage")
    if paths.demo_videos and not storage.exists(paths.videos):
        d = cfg.data.demo
        announce(f"rendering the demo archive ({d.n_videos} videos) into {paths.demo} ...")
        render_demo_archive(paths.demo, n_videos=d.n_videos, seed=d.seed, duration_range=tuple(d.duration_range),
                            size=tuple(d.size), fps=d.fps, length_range=tuple(d.length_range),
                            max_instances=d.max_instances, progress=lambda s: announce("  " + s))
    where = ensure_ray()
    if where:
        announce(where)
    if fc.extract:
        ec = ExtractConfig.for_features(paths.videos, paths.store, fc, batch_size=fc.batch_size,
                                        max_actors=fc.max_actors, seed=fc.seed)

        def tell(line: str) -> None:
            if line != random_weights:  # the note above said it
                announce("  " + line)

        summary = run_extract(ec, announce=tell)
        announce("features: " + summary.text().replace("\n", "\n  "))
    return FeatureStore(paths.store)


def _samples(run: _Run, store, specs: dict | None) -> tuple[dict, dict]:
    """``(specs per split, context)``: the caller's, or the workflow's samples (``context``: text features)."""
    cfg, announce = run.cfg, run.announce
    context: dict = {}
    if specs is not None:
        specs = dict(specs)
        announce("samples given by the caller: " + ", ".join(f"{k} {len(v)}" for k, v in specs.items()))
    elif run.workflow == "pretrain":
        specs = pretrain_specs(cfg, store, announce)
    elif run.task == "video":
        specs = pair_specs(cfg, run.paths, store, announce)
    else:
        specs, context = text_specs(cfg, run.paths, store, announce)
    for split in ("train", "val"):
        if not specs.get(split):
            raise InputError(f"no {split} samples: {split_hint(run.workflow, run.task)}")
    return specs, context


def _start_tracking(run: _Run, settings) -> Tracker:
    """Save the resolved config into the run folder and start (or continue) the run's MLflow run."""
    cfg, paths = run.cfg, run.paths
    resolved = dataclasses.replace(cfg, data=dataclasses.replace(
        cfg.data, videos=paths.videos, annotations=paths.annotations,
        features=dataclasses.replace(cfg.data.features, store=paths.store)),
        trainer=dataclasses.replace(cfg.trainer, storage_path=paths.storage_path))
    config_yaml = dump_yaml(resolved)
    storage.write_text_atomic(storage.join(run.run_dir, "vmr_config.yaml"), config_yaml)
    tracker = Tracker(run.tracking_uri, run.experiment)
    tracker.start_run(run.run_name, to_dict(resolved), config_yaml=config_yaml,
                      tags={"vmr.workflow": run.workflow, "vmr.kind": run.kind, "vmr.task": run.task,
                            "vmr.run_dir": run.run_dir, "vmr.features": json.dumps(vars(settings))})
    run.announce(f"MLflow: {tracker.run_url()}{' (resumed)' if tracker.resumed else ''} at "
                 f"{redact(run.tracking_uri)}")
    return tracker


def _baseline_and_init_weights(run: _Run, store, model_cfg, specs: dict, tracker) -> tuple[dict, object, str]:
    """Finetuning only: ``(the cosine baseline's val metrics, init weights ref, their URI)`` (``{}``/None/"")."""
    baseline: dict = {}
    if run.workflow == "finetune" and run.task == "video":
        baseline = _baseline(run.cfg, store, specs["val"], "val", run.announce)
        tracker.log_metrics(baseline, step=0)
    init_ref, init_from = None, ""
    if run.workflow == "finetune":
        init_ref, init_from = _init_weights(run.cfg, model_cfg, store, run.tracking_uri, run.announce)
        tracker.set_tags({"vmr.init_from": init_from or "random weights"})
    return baseline, init_ref, init_from


def _score_attribute(run: _Run) -> str:
    """The metric that ranks checkpoints: ``trainer.score_attribute``, else the workflow's default."""
    return run.cfg.trainer.score_attribute or ("val/loss" if run.workflow == "pretrain" else
                                               ("val/mIoU" if run.task == "video" else "val/mAP"))


def _datasets_and_training(run: _Run, model_cfg, specs: dict, context: dict, loop: LoopConfig,
                           train_callbacks: list | None) -> FitResult:
    """The Ray Data datasets of the train and val samples, then Ray Train on them; a failed run is a
    :class:`TrainingError` (its MLflow run marked FAILED)."""
    cfg, paths = run.cfg, run.paths
    quiet_ray_data()  # its progress bars stay: on a terminal they show the samples being materialised
    stream = cfg.data.stream
    datasets = {"train": sample_dataset(specs["train"], paths.store, stream, shuffle_seed=cfg.train.seed,
                                        context=context or None),
                "val": sample_dataset(specs["val"], paths.store, stream, context=context or None)}
    if cfg.trainer.materialize:
        run.announce(f"materialising {len(specs['train'])} train and {len(specs['val'])} val samples ...")
        datasets = {k: v.materialize() for k, v in datasets.items()}
    trainer_cfg = cfg.trainer
    if run.workflow == "pretrain" and not cfg.trainer.score_attribute:
        trainer_cfg = dataclasses.replace(cfg.trainer, score_order="min")
    run.announce(f"training {run.kind} ({_param_count(model_cfg, run.kind):,} parameters) for {cfg.train.epochs} "
                 f"epochs on {cfg.trainer.num_workers} worker(s){' with GPUs' if cfg.trainer.use_gpu else ''}: "
                 f"{len(specs['train'])} train / {len(specs['val'])} val samples; checkpoints in {run.run_dir}")
    result = fit(loop, trainer_cfg, datasets, paths.storage_path, run.run_name, callbacks=train_callbacks)
    if result.error is not None:
        loop.tracker.finish("FAILED")
        raise TrainingError(f"training failed: {_first_line(result.error)} (checkpoints so far in {run.run_dir}; "
                            f"run again with --run-name {run.run_name} to resume)") from result.error
    return result


def _register_and_test(run: _Run, store, specs: dict, context: dict, result: FitResult,
                       tracker) -> tuple[str, dict]:
    """Register the best checkpoint (``models:/name/version``, "" when not) and, finetuning, score it on the test
    split next to the baseline."""
    cfg = run.cfg
    registered = ""
    name = cfg.tracking.register_as or (
        "vmr-matr-pretrained" if run.workflow == "pretrain" else registered_name_for(run.kind))
    if result.best and name.lower() != "none":
        version = tracker.log_model(result.best, name, tags={"vmr.run_name": run.run_name,
                                                             "vmr.checkpoint": result.best})
        registered = f"models:/{name}/{version.version}"
        run.announce(f"registered {registered} (from {result.best})")
    test_metrics: dict = {}
    if run.workflow == "finetune" and specs.get("test") and result.best:
        test_metrics = _test(cfg, store, specs["test"], result.best, run.task, context, tracker, run.announce)
    return registered, test_metrics


def _first_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:400] or type(e).__name__


def _param_count(model_cfg, kind: str) -> int:
    return sum(p.numel() for p in build_model(kind, model_cfg).parameters())


def _model_config(cfg: WorkflowConfig, dim: int, announce):
    """The model config with its input width set to the features' dimension."""
    mc = cfg.model.config()
    field_name = "in_dim" if cfg.model.kind == "matr" else "dim"
    if getattr(mc, field_name) != dim:
        announce(f"model.{cfg.model.kind}.{field_name} = {dim} (the features' dimension)")
        mc = dataclasses.replace(mc, **{field_name: dim})
    return mc


def _torch_loader(cfg: WorkflowConfig, store, specs: list, context: dict | None = None):
    st = cfg.data.stream
    ds = SpecDataset(specs, store, max_target=st.max_target, max_query=st.max_query, crop=st.crop, seed=st.seed,
                     context=context)
    return make_loader(ds, cfg.train.eval_batch_size or cfg.train.batch_size)


def _baseline(cfg: WorkflowConfig, store, specs: list, split: str, announce) -> dict:
    res = evaluate_baseline(_torch_loader(cfg, store, specs), "video", top_k=cfg.train.eval_top_k)
    metrics = prefixed(res.metrics, "baseline")
    announce(f"cosine baseline on {split} ({len(specs)} pairs): " + "  ".join(
        f"{k} {v:.2f}" for k, v in res.metrics.items() if k != "n"))
    return metrics


def _init_weights(cfg: FinetuneWorkflowConfig, model_cfg, store, tracking_uri: str, announce):
    """``(init weights as a Ray object ref, the URI they came from)`` for finetuning; ``(None, "")`` = random."""
    uri = cfg.init_from
    if uri == "auto":
        if cfg.model.kind != "matr":
            return None, ""
        v = latest_version(tracking_uri, "vmr-matr-pretrained")
        if v is None:
            announce("WARNING: init_from=auto found no vmr-matr-pretrained model in MLflow (run vmr pretrain first); "
                     "finetuning from random weights")
            return None, ""
        uri = f"models:/vmr-matr-pretrained/{v.version}"
    if not uri:
        return None, ""
    model, card = load_model(uri, tracking_uri=tracking_uri)  # MLflow URIs: the store this workflow tracks to
    if card.kind != cfg.model.kind:
        raise ConfigError(f"init_from {uri} is a {card.kind} model, but model.kind is {cfg.model.kind}")
    check_features(card, store)
    fresh = build_model(card.kind, model_cfg)
    try:
        fresh.load_state_dict(model.state_dict(), strict=True)
    except RuntimeError:
        diff = {k: (card.config.get(k), v) for k, v in to_dict(model_cfg).items() if card.config.get(k) != v}
        raise ConfigError(f"init_from {uri} has another model size than model.{card.kind}: "
                          + ", ".join(f"{k}: checkpoint {a} vs config {b}" for k, (a, b) in diff.items())) from None
    announce(f"finetuning from {uri} ({card.source}; epoch {card.extra.get('epoch', '?')}, "
             f"run {card.extra.get('run_name', '?')})")
    return ray.put({k: v.cpu() for k, v in model.state_dict().items()}), uri


def _test(cfg: WorkflowConfig, store, specs: list, checkpoint: str, task: str, context: dict, tracker,
          announce) -> dict:
    model, _card = load_model(checkpoint)
    res = evaluate(model, _torch_loader(cfg, store, specs, context or None), task, top_k=cfg.train.eval_top_k)
    metrics = prefixed(res.metrics, "test")
    line = f"test split ({len(specs)} samples), best checkpoint: " + "  ".join(
        f"{k} {v:.2f}" for k, v in res.metrics.items() if k not in ("n", "loss"))
    if task == "video":
        base = evaluate_baseline(_torch_loader(cfg, store, specs), "video", top_k=cfg.train.eval_top_k)
        metrics.update(prefixed(base.metrics, "test_baseline"))
        line += "\n  cosine baseline on the same split:        " + "  ".join(
            f"{k} {v:.2f}" for k, v in base.metrics.items() if k != "n")
    announce(line)
    tracker.log_metrics(metrics, step=cfg.train.epochs)
    return metrics


def summary_text(r: WorkflowResult) -> str:
    """The closing lines: where the checkpoint, the MLflow run and the dashboard are."""
    lines = [f"{r.workflow} run {r.run_name} done in {r.seconds / 60:.1f} min"]
    shown = {k: v for k, v in r.metrics.items() if k.startswith("val/") and k != "val/n"}
    if shown:
        lines.append("  best validation: " + "  ".join(f"{k[4:]} {v:.2f}" for k, v in shown.items()))
    if r.baseline:
        lines.append("  cosine baseline: " + "  ".join(f"{k[9:]} {v:.2f}" for k, v in r.baseline.items()
                                                         if k != "baseline/n"))
    lines += [f"  checkpoint: {r.best_checkpoint} (latest: {r.latest_checkpoint})",
              f"  MLflow run: {r.mlflow_run_id} in experiment {r.experiment!r} at {redact(r.tracking_uri)}"]
    if r.registered:
        lines.append(f"  registered model: {r.registered}")
    lines += [f"  dashboard: {r.dashboard}",
              f"  resume / continue: the same command with --run-name {r.run_name}"]
    return "\n".join(lines)


__all__ = ["DemoConfig", "FeaturesConfig", "TextDataConfig", "DataConfig", "ModelSection", "TrackingConfig",
           "WorkflowConfig", "PretrainWorkflowConfig", "FinetuneWorkflowConfig", "resolve_config", "run_workflow",
           "WorkflowResult", "TrainingError", "summary_text", "derive_text_annotations", "default_config_files",
           "WORKFLOWS", "CONFIG_CLASSES", "configs_dir", "bundled_configs", "Paths", "resolve_paths",
           "prepare_features", "pretrain_specs", "pair_specs", "text_specs"]
