"""The pretrain and finetune workflows, shared by ``vmr pretrain|finetune`` and ``workflows/pretrain.py|finetune.py``.

One top-level config per workflow (:class:`PretrainWorkflowConfig`, :class:`FinetuneWorkflowConfig`) composes the
sections of the components (data, model, train, trainer, tracking), resolved once from YAML files and ``key=value``
overrides (:mod:`vmr.config`), saved as ``vmr_config.yaml`` in the run folder and logged to MLflow (``config.yaml``
artifact, every key a param).

A run, step by step (each step prints what it did)::

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
from pathlib import Path
from typing import Callable, Literal

from vmr import storage
from vmr.config import dump_yaml, redact, resolve, to_dict
from vmr.data.match_pairs import MatchPairConfig
from vmr.data.pretrain_clips import PretrainConfig
from vmr.errors import ConfigError, InputError, TrainingError
from vmr.features.settings import DEFAULT_FPS, DEFAULT_MODEL, DEFAULT_PRETRAINED
from vmr.models.a2fa import A2FAConfig
from vmr.models.matr import MATRConfig
from vmr.pipeline.datasets import StreamConfig
from vmr.pipeline.train import DebugConfig, TrainerConfig
from vmr.train.loop import TrainConfig

log = logging.getLogger(__name__)

WORKFLOWS = ("pretrain", "finetune")


@dataclass
class DemoConfig:
    """The synthetic archive rendered when ``data.videos`` is empty (see :func:`vmr.data.demo.render_demo_archive`):
    ``duration_range`` seconds per video, ``size`` (width, height) pixels, ``fps`` frames per second of the footage,
    ``length_range`` seconds per action instance."""

    n_videos: int = 12
    seed: int = 0
    duration_range: tuple[float, float] = (60.0, 120.0)
    size: tuple[int, int] = (320, 240)
    fps: int = 10
    length_range: tuple[float, float] = (6.0, 16.0)
    max_instances: int = 6


@dataclass
class FeaturesConfig:
    """The feature store and how it is filled: ``store`` ("" = ``{workdir}/features``); ``fps`` samples per second;
    the CLIP ``model`` and ``pretrained`` weights (``none`` = random, demo/tests only); ``extract=false`` uses the
    store as it is. ``batch_size``/``max_actors``: see ``vmr extract``."""

    store: str = ""
    fps: float = DEFAULT_FPS
    model: str = DEFAULT_MODEL
    pretrained: str = DEFAULT_PRETRAINED
    extract: bool = True
    batch_size: int | None = None
    max_actors: int | None = None
    seed: int = 0


@dataclass
class TextDataConfig:
    """Text-query data: QVHighlights-format jsonl files (``train``/``val``/``test`` URIs; ``test`` optional). All
    empty = derived from the match annotations (``template`` with ``{action}``; videos split by ``splits``)."""

    train: str = ""
    val: str = ""
    test: str = ""
    template: str = "a player performs a {action}"
    splits: tuple[float, float, float] = (0.6, 0.2, 0.2)


@dataclass
class DataConfig:
    """Where the data is and how samples are made. ``workdir`` holds what the workflow makes by default (demo
    footage, features, runs, the MLflow store). ``videos``/``annotations`` "" = the demo archive and its
    ``matches.csv``. ``clip_draws``: rounds of random pretraining clips in the training set (each round draws
    ``clips.clips_per_video`` clips per video, plus an augmented copy of each); ``val_clips_per_video``: held-out
    clips per video for pretraining validation. ``stream``: lengths and data actors (rows: ``max_target`` target
    rows, ``max_query`` query rows)."""

    workdir: str = "vmr-data"
    videos: str = ""
    annotations: str = ""
    demo: DemoConfig = field(default_factory=DemoConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    pairs: MatchPairConfig = field(default_factory=MatchPairConfig)
    clips: PretrainConfig = field(default_factory=PretrainConfig)
    clip_draws: int = 4
    val_clips_per_video: int = 2
    text: TextDataConfig = field(default_factory=TextDataConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)


@dataclass
class ModelSection:
    """``kind`` picks the model (and the task: ``matr`` = video queries, ``a2fa`` = text queries); the other
    section is ignored."""

    kind: Literal["matr", "a2fa"] = "matr"
    matr: MATRConfig = field(default_factory=MATRConfig)
    a2fa: A2FAConfig = field(default_factory=A2FAConfig)

    def config(self):
        return self.matr if self.kind == "matr" else self.a2fa


@dataclass
class TrackingConfig:
    """MLflow: ``tracking_uri`` ("" = ``MLFLOW_TRACKING_URI``, else ``sqlite:///{workdir}/mlflow.db``), the
    ``experiment`` ("" = ``vmr-pretrain`` / ``vmr-finetune``), the registry name ``register_as`` ("" = ``vmr-matr``
    / ``vmr-a2fa``, ``vmr-matr-pretrained`` for pretraining; ``none`` = do not register)."""

    tracking_uri: str = ""
    experiment: str = ""
    register_as: str = ""


@dataclass
class WorkflowConfig:
    run_name: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainConfig = field(default_factory=TrainConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)


@dataclass
class PretrainWorkflowConfig(WorkflowConfig):
    """``vmr pretrain``: self-supervised MATR pretraining on random clips of every video."""


@dataclass
class FinetuneWorkflowConfig(WorkflowConfig):
    """``vmr finetune``: MATR on video-query pairs, or A2FA on text queries (``model.kind``). ``init_from``: a
    checkpoint or MLflow model URI to start from, ``auto`` (see the module docstring) or "" (random weights)."""

    init_from: str = "auto"


CONFIG_CLASSES = {"pretrain": PretrainWorkflowConfig, "finetune": FinetuneWorkflowConfig}


# ---- config files -------------------------------------------------------------------------------------------------


def configs_dir() -> Path | None:
    """``./configs`` when it exists, else the ``configs/`` folder of the source tree vmr is installed from."""
    for cand in (Path.cwd() / "configs", Path(__file__).resolve().parents[2] / "configs"):
        if cand.is_dir():
            return cand
    return None


def bundled_configs(*names: str) -> list[str]:
    """Paths of ``configs/{name}`` for each name (see :func:`configs_dir`); a clear error when any is missing."""
    d = configs_dir()
    if d is None or not all((d / n).is_file() for n in names):
        raise ConfigError(f"{', '.join('configs/' + n for n in names)} not found; run from the vmr source folder or "
                          "pass --config FILE")
    return [str(d / n) for n in names]


def default_config_files(workflow: str) -> list[str]:
    """The embedded demo's config files (used when no ``--config`` is given): ``configs/demo.yaml`` and
    ``configs/demo_{workflow}.yaml``."""
    return bundled_configs("demo.yaml", f"demo_{workflow}.yaml")


def resolve_config(workflow: str, files: list[str] | None, overrides: list[str]) -> tuple[WorkflowConfig, list[str]]:
    """The workflow's config from ``files`` (None/empty = the demo's) and ``overrides``; returns it and the files
    used."""
    if workflow not in CONFIG_CLASSES:
        raise ConfigError(f"unknown workflow {workflow!r}; one of {WORKFLOWS}")
    files = list(files or []) or default_config_files(workflow)
    return resolve(CONFIG_CLASSES[workflow], files, overrides), files


# ---- the run ------------------------------------------------------------------------------------------------------


@dataclass
class Paths:
    workdir: str
    videos: str
    annotations: str
    store: str
    storage_path: str
    demo: str
    demo_videos: bool


def resolve_paths(cfg: WorkflowConfig) -> Paths:
    wd = os.path.abspath(cfg.data.workdir)
    demo = os.path.join(wd, "demo")
    videos = cfg.data.videos or os.path.join(demo, "videos")
    annotations = cfg.data.annotations or (os.path.join(demo, "annotations", "matches.csv")
                                           if not cfg.data.videos else "")
    return Paths(workdir=wd, videos=videos, annotations=annotations,
                 store=cfg.data.features.store or os.path.join(wd, "features"),
                 storage_path=cfg.trainer.storage_path or os.path.join(wd, "runs"), demo=demo,
                 demo_videos=not cfg.data.videos)


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


def run_workflow(workflow: str, cfg: WorkflowConfig, *, announce: Callable[[str], None] = _announce_default,
                 config_files: list[str] | None = None, specs: dict | None = None,
                 train_callbacks: list | None = None) -> WorkflowResult:
    """Run ``workflow`` (``pretrain``/``finetune``) with the resolved ``cfg`` (see the module docstring).

    ``specs``: ``{"train": [...], "val": [...], "test": [...]}`` samples made by the caller (scheduled retraining's
    pairs), used instead of the ones the config describes; ``train_callbacks``: Ray Train callbacks (a Tune trial's
    ``TuneReportCallback``)."""
    began = time.perf_counter()
    if workflow == "pretrain" and cfg.model.kind != "matr":
        raise ConfigError("pretraining is MATR's (random-clip self-supervision); A2FA has none: use vmr finetune")
    kind = cfg.model.kind
    task = "video" if kind == "matr" else "text"
    paths = resolve_paths(cfg)
    os.makedirs(paths.workdir, exist_ok=True)
    run_name = cfg.run_name or f"{workflow}-{kind}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    cfg = dataclasses.replace(cfg, run_name=run_name)
    if config_files:
        announce(f"config: {', '.join(config_files)}")
    from vmr.pipeline.tracking import check_reachable, resolve_tracking_uri

    check_reachable(resolve_tracking_uri(cfg.tracking.tracking_uri, paths.workdir))  # before any compute
    if cfg.data.features.pretrained.lower() == "none":
        announce("note: CLIP has RANDOM weights (data.features.pretrained=none): the offline demo's features carry no "
                 "visual meaning beyond colour and layout statistics; use pretrained=openai for real footage")

    # footage and features
    if paths.demo_videos and not storage.exists(paths.videos):
        from vmr.data.demo import render_demo_archive

        d = cfg.data.demo
        announce(f"rendering the demo archive ({d.n_videos} videos) into {paths.demo} ...")
        render_demo_archive(paths.demo, n_videos=d.n_videos, seed=d.seed, duration_range=tuple(d.duration_range),
                            size=tuple(d.size), fps=d.fps, length_range=tuple(d.length_range),
                            max_instances=d.max_instances, progress=lambda s: announce("  " + s))
    from vmr.pipeline.ray_session import ensure_ray

    where = ensure_ray()
    if where:
        announce(where)
    store = _features(cfg, paths, announce)
    settings = store.settings()
    dim = int(next(iter(store.entries().values()))["dim"])
    model_cfg = _model_config(cfg, dim, announce)

    # samples
    context: dict = {}
    if specs is not None:
        specs = dict(specs)
        announce("samples given by the caller: " + ", ".join(f"{k} {len(v)}" for k, v in specs.items()))
    elif workflow == "pretrain":
        specs = _pretrain_specs(cfg, store, announce)
    elif task == "video":
        specs = _pair_specs(cfg, paths, store, announce)
    else:
        specs, context = _text_specs(cfg, paths, store, announce)
    for split in ("train", "val"):
        if not specs.get(split):
            raise InputError(f"no {split} samples: {_split_hint(workflow, task)}")

    # tracking
    from vmr.pipeline.tracking import Tracker, dashboard_command, registered_name_for, resolve_tracking_uri

    tracking_uri = resolve_tracking_uri(cfg.tracking.tracking_uri, paths.workdir)
    experiment = cfg.tracking.experiment or f"vmr-{workflow}"
    resolved = dataclasses.replace(cfg, data=dataclasses.replace(
        cfg.data, videos=paths.videos, annotations=paths.annotations,
        features=dataclasses.replace(cfg.data.features, store=paths.store)),
        trainer=dataclasses.replace(cfg.trainer, storage_path=paths.storage_path))
    config_yaml = dump_yaml(resolved)
    run_dir = storage.join(paths.storage_path, run_name)
    storage.write_text_atomic(storage.join(run_dir, "vmr_config.yaml"), config_yaml)
    tracker = Tracker(tracking_uri, experiment)
    tracker.start_run(run_name, to_dict(resolved), config_yaml=config_yaml,
                      tags={"vmr.workflow": workflow, "vmr.kind": kind, "vmr.task": task, "vmr.run_dir": run_dir,
                            "vmr.features": json.dumps(vars(settings))})
    announce(f"MLflow: {tracker.run_url()}{' (resumed)' if tracker.resumed else ''} at {redact(tracking_uri)}")

    # baseline, init weights
    baseline: dict = {}
    if workflow == "finetune" and task == "video":
        baseline = _baseline(cfg, store, specs["val"], "val", announce)
        tracker.log_metrics(baseline, step=0)
    init_ref, init_from = None, ""
    if workflow == "finetune":
        init_ref, init_from = _init_weights(cfg, model_cfg, store, tracking_uri, announce)
        tracker.set_tags({"vmr.init_from": init_from or "random weights"})

    # datasets and training
    from vmr.pipeline.datasets import sample_dataset
    from vmr.pipeline.ray_session import quiet_ray_data
    from vmr.pipeline.train import LoopConfig, fit

    quiet_ray_data()  # its progress bars stay: on a terminal they show the samples being materialised
    stream = cfg.data.stream
    datasets = {"train": sample_dataset(specs["train"], paths.store, stream, shuffle_seed=cfg.train.seed,
                                        context=context or None),
                "val": sample_dataset(specs["val"], paths.store, stream, context=context or None)}
    if cfg.trainer.materialize:
        announce(f"materialising {len(specs['train'])} train and {len(specs['val'])} val samples ...")
        datasets = {k: v.materialize() for k, v in datasets.items()}
    score = cfg.trainer.score_attribute or ("val/loss" if workflow == "pretrain" else
                                             ("val/mIoU" if task == "video" else "val/mAP"))
    trainer_cfg = cfg.trainer
    if workflow == "pretrain" and not cfg.trainer.score_attribute:
        trainer_cfg = dataclasses.replace(cfg.trainer, score_order="min")
    loop = LoopConfig(kind=kind, model_config=to_dict(model_cfg), task=task, features=vars(settings) | {"dim": dim},
                      train=cfg.train, n_train=len(specs["train"]), run_name=run_name, run_dir=run_dir,
                      workflow=workflow,
                      init_weights=init_ref, tracker=tracker, baseline=baseline, score_attribute=score,
                      debug=cfg.debug)
    announce(f"training {kind} ({_param_count(model_cfg, kind):,} parameters) for {cfg.train.epochs} epochs on "
             f"{cfg.trainer.num_workers} worker(s){' with GPUs' if cfg.trainer.use_gpu else ''}: "
             f"{len(specs['train'])} train / {len(specs['val'])} val samples; checkpoints in {run_dir}")
    result = fit(loop, trainer_cfg, datasets, paths.storage_path, run_name, callbacks=train_callbacks)
    if result.error is not None:
        tracker.finish("FAILED")
        raise TrainingError(f"training failed: {_first_line(result.error)} (checkpoints so far in {run_dir}; run "
                            f"again with --run-name {run_name} to resume)") from result.error

    # register, test
    registered = ""
    name = cfg.tracking.register_as or (
        "vmr-matr-pretrained" if workflow == "pretrain" else registered_name_for(kind))
    if result.best and name.lower() != "none":
        version = tracker.log_model(result.best, name, tags={"vmr.run_name": run_name,
                                                             "vmr.checkpoint": result.best})
        registered = f"models:/{name}/{version.version}"
        announce(f"registered {registered} (from {result.best})")
    test_metrics: dict = {}
    if workflow == "finetune" and specs.get("test") and result.best:
        test_metrics = _test(cfg, store, specs["test"], result.best, task, context, tracker, announce)
    tracker.finish("FINISHED")
    out = WorkflowResult(
        workflow=workflow, run_name=run_name, run_dir=run_dir, best_checkpoint=result.best,
        latest_checkpoint=result.latest, metrics=result.best_metrics, test_metrics=test_metrics, baseline=baseline,
        tracking_uri=tracking_uri, experiment=experiment, mlflow_run_id=tracker.run_id or "", registered=registered,
        dashboard=dashboard_command(tracking_uri), seconds=time.perf_counter() - began,
        samples={k: len(v) for k, v in specs.items()}, init_from=init_from)
    storage.write_text_atomic(storage.join(run_dir, "vmr_summary.json"),
                              json.dumps(out.to_json(), indent=1, default=str))
    return out


def _first_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:400] or type(e).__name__


def _split_hint(workflow: str, task: str) -> str:
    if workflow == "pretrain":
        return "are there videos in the feature store (data.clips.clips_per_video > 0)?"
    if task == "video":
        return ("the annotations give too few classes, or no target window fits (data.pairs.window_min/max, "
                "data.pairs.split_fractions)")
    return "the text annotation files have no rows for this split"


def _param_count(model_cfg, kind: str) -> int:
    from vmr.models.checkpoint import build_model

    return sum(p.numel() for p in build_model(kind, model_cfg).parameters())


def _model_config(cfg: WorkflowConfig, dim: int, announce):
    """The model config with its input width set to the features' dimension."""
    mc = cfg.model.config()
    field_name = "in_dim" if cfg.model.kind == "matr" else "dim"
    if getattr(mc, field_name) != dim:
        announce(f"model.{cfg.model.kind}.{field_name} = {dim} (the features' dimension)")
        mc = dataclasses.replace(mc, **{field_name: dim})
    return mc


def _features(cfg: WorkflowConfig, paths: Paths, announce):
    from vmr.features.store import FeatureStore

    fc = cfg.data.features
    if fc.extract:
        from vmr.features.clip import RANDOM_WEIGHTS_NOTICE
        from vmr.pipeline.extract import ExtractConfig, run_extract

        ec = ExtractConfig.for_features(paths.videos, paths.store, fc, batch_size=fc.batch_size,
                                        max_actors=fc.max_actors, seed=fc.seed)
        said = RANDOM_WEIGHTS_NOTICE.format(model=fc.model)  # run_workflow printed its own note already

        def tell(line: str) -> None:
            if line != said:
                announce("  " + line)

        summary = run_extract(ec, announce=tell)
        announce("features: " + summary.text().replace("\n", "\n  "))
    store = FeatureStore(paths.store)
    if len(store) == 0:
        raise InputError(f"the feature store {paths.store} holds no videos (extraction failed or data.videos is "
                         "empty)")
    return store


def _pretrain_specs(cfg: WorkflowConfig, store, announce) -> dict:
    from vmr.data.pretrain_clips import sample_clip_specs, video_extents

    extents = video_extents(store)
    train = [s for r in range(cfg.data.clip_draws) for s in sample_clip_specs(extents, cfg.data.clips, epoch=r)]
    val_cfg = dataclasses.replace(cfg.data.clips, seed=cfg.data.clips.seed + 1,
                                  clips_per_video=cfg.data.val_clips_per_video, clips_per_minute=0.0)
    val = sample_clip_specs(extents, val_cfg, epoch=0)
    announce(f"pretraining samples: {len(train)} random clips of {len(extents)} videos ({cfg.data.clip_draws} "
             f"draws, originals and augmentations), {len(val)} held-out clips (seed {val_cfg.seed})")
    return {"train": train, "val": val}


def _pair_specs(cfg: WorkflowConfig, paths: Paths, store, announce) -> dict:
    from vmr import annotations
    from vmr.data.match_pairs import build_match_pairs

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
    """QVHighlights-format jsonl files from match annotations (see the module docstring): one query per (video,
    class), ``template.format(action=class with spaces)`` as the sentence, all its instances as windows; videos split
    by ``splits`` in sorted order. Returns ``{split: uri}`` for the non-empty splits."""
    from vmr import annotations
    from vmr.metrics.io import write_jsonl

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


def _text_specs(cfg: WorkflowConfig, paths: Paths, store, announce) -> tuple[dict, dict]:
    from vmr import annotations
    from vmr.data.pairs import embed_sentences, text_specs_from_records
    from vmr.features.clip import ClipEncoder

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


def _torch_loader(cfg: WorkflowConfig, store, specs: list, context: dict | None = None):
    from vmr.data.specs import SpecDataset, make_loader

    st = cfg.data.stream
    ds = SpecDataset(specs, store, max_target=st.max_target, max_query=st.max_query, crop=st.crop, seed=st.seed,
                     context=context)
    return make_loader(ds, cfg.train.eval_batch_size or cfg.train.batch_size)


def _baseline(cfg: WorkflowConfig, store, specs: list, split: str, announce) -> dict:
    from vmr.train.loop import evaluate_baseline, prefixed

    res = evaluate_baseline(_torch_loader(cfg, store, specs), "video", top_k=cfg.train.eval_top_k)
    metrics = prefixed(res.metrics, "baseline")
    announce(f"cosine baseline on {split} ({len(specs)} pairs): " + "  ".join(
        f"{k} {v:.2f}" for k, v in res.metrics.items() if k != "n"))
    return metrics


def _init_weights(cfg: FinetuneWorkflowConfig, model_cfg, store, tracking_uri: str, announce):
    """``(init weights as a Ray object ref, the URI they came from)`` for finetuning; ``(None, "")`` = random."""
    import ray

    from vmr.models.checkpoint import check_features, load_model

    uri = cfg.init_from
    if uri == "auto":
        if cfg.model.kind != "matr":
            return None, ""
        from vmr.pipeline.tracking import latest_version

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
    from vmr.models.checkpoint import build_model

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
    from vmr.models.checkpoint import load_model
    from vmr.train.loop import evaluate, evaluate_baseline, prefixed

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
           "WorkflowResult", "TrainingError", "summary_text", "derive_text_annotations", "default_config_files"]
