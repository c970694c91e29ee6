"""The workflows' configs: one top-level config per workflow (:class:`PretrainWorkflowConfig`,
:class:`FinetuneWorkflowConfig`) composed of the components' sections (data, model, train, trainer, tracking), the
config files they are resolved from (YAML files and ``key=value`` overrides, :mod:`vmr.config`), and the paths a run
uses (:func:`resolve_paths`). :mod:`vmr.pipeline.workflow` runs them and re-exports every name here."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vmr.config import resolve
from vmr.data.match_pairs import MatchPairConfig
from vmr.data.pretrain_clips import PretrainConfig
from vmr.errors import ConfigError
from vmr.features.settings import DEFAULT_FPS, DEFAULT_MODEL, DEFAULT_PRETRAINED
from vmr.models.a2fa import A2FAConfig
from vmr.models.matr import MATRConfig
from vmr.pipeline.datasets import StreamConfig
from vmr.pipeline.train import DebugConfig, TrainerConfig
from vmr.train.loop import TrainConfig

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
    """The sections every workflow has; ``run_name`` "" = ``{workflow}-{kind}-{UTC time}``."""

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


# ---- a run's paths ------------------------------------------------------------------------------------------------


@dataclass
class Paths:
    """Where a run reads and writes (absolute local paths or storage URIs); ``demo_videos``: the footage is the
    demo archive rendered into ``demo``."""

    workdir: str
    videos: str
    annotations: str
    store: str
    storage_path: str
    demo: str
    demo_videos: bool


def resolve_paths(cfg: WorkflowConfig) -> Paths:
    """The run's :class:`Paths`: each ``cfg`` setting, or its default under ``data.workdir``."""
    wd = os.path.abspath(cfg.data.workdir)
    demo = os.path.join(wd, "demo")
    videos = cfg.data.videos or os.path.join(demo, "videos")
    annotations = cfg.data.annotations or (os.path.join(demo, "annotations", "matches.csv")
                                           if not cfg.data.videos else "")
    return Paths(workdir=wd, videos=videos, annotations=annotations,
                 store=cfg.data.features.store or os.path.join(wd, "features"),
                 storage_path=cfg.trainer.storage_path or os.path.join(wd, "runs"), demo=demo,
                 demo_videos=not cfg.data.videos)

