"""The settings of a scheduled-retraining round (:class:`RetrainConfig`; ``configs/retrain.yaml`` documents each),
shared by the round (:mod:`vmr.pipeline.retrain`, which re-exports them) and its ledger (:mod:`vmr.pipeline.ledger`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from vmr import storage
from vmr.data.match_pairs import MatchPairConfig
from vmr.errors import ConfigError


@dataclass
class RetrainExtract:
    """How new footage is extracted. The CLIP model, weights tag and sampling rate are *not* settings here: they are
    the champion's (its card's feature settings), so that new features are comparable with the old ones."""

    batch_size: int | None = None
    num_gpus: float | None = None
    max_actors: int | None = None
    seed: int = 0  # seed of random CLIP weights (``pretrained: none``, tests and the demo only)


@dataclass
class RetrainConfig:
    """One retraining round. URIs are paths or storage URIs.

    ``incoming``: the prefix new footage lands under (module docstring). ``store``: the feature store. ``state``:
    where the ledger lives (default ``{store}/retrain``). ``model_name``: the registered model; ``champion_alias``
    names the model to finetune and to beat. ``metric``: the held-out metric compared (``mIoU``, ``R1@0.5``, ...;
    higher is better); the challenger is promoted when it beats the champion by more than ``min_improvement``
    (percentage points). ``eval_split``: the held-out split of the match pairs (classes never trained on).
    ``train_on``: ``new`` finetunes on the train pairs whose query is a new instance (the champion has seen the rest),
    ``all`` on every train pair seen so far. ``on_annotation_error``: ``fail`` stops the round on a bad annotation row
    (nothing is consumed; fix the file and the next round reads it again), ``skip`` leaves bad rows out and logs them
    to the round's MLflow run. ``finetune_config``/``finetune_overrides``: the finetuning settings (a YAML file and
    ``key=value`` overrides, as for ``workflows/finetune.py``)."""

    incoming: str = ""
    store: str = ""
    state: str = ""
    model_name: str = "vmr-matr"
    champion_alias: str = "champion"
    metric: str = "mIoU"
    min_improvement: float = 0.0
    eval_split: Literal["val", "test"] = "test"
    train_on: Literal["new", "all"] = "new"
    on_annotation_error: Literal["fail", "skip"] = "fail"
    pairs: MatchPairConfig = field(default_factory=MatchPairConfig)
    extract: RetrainExtract = field(default_factory=RetrainExtract)
    finetune_config: str = ""
    finetune_overrides: list[str] = field(default_factory=list)
    tracking_uri: str = ""
    experiment: str = "vmr-retrain"
    workdir: str = "vmr-data/retrain"  # local scratch and the default MLflow store (sqlite) when none is configured

    def validate(self) -> None:
        if not self.incoming:
            raise ConfigError("incoming is required: the prefix new footage lands under (path, s3://, gs://)")
        if not self.store:
            raise ConfigError("store is required: the feature store (path, s3://, gs://)")
        if not self.model_name or not self.champion_alias:
            raise ConfigError("model_name and champion_alias are required")
        self.pairs.validate()

    @property
    def state_uri(self) -> str:
        return self.state or storage.join(self.store, "retrain")

    @property
    def videos_uri(self) -> str:
        return storage.join(self.incoming, "videos")

    @property
    def annotations_uri(self) -> str:
        return storage.join(self.incoming, "annotations")
