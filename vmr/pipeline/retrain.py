"""Scheduled retraining on new match footage: find what is new under ``incoming/``, extract it, build its pairs,
finetune the registry's champion on them, and promote the challenger only if it scores better on the same held-out
split. One call of :func:`run_retrain` is one *round*; cron (or ``ray job submit``) runs it on a schedule.

What the operator (or the recording system) uploads::

    {incoming}/videos/**.mp4|.mkv|...      match videos; a video's id is its path under videos/ without the extension
    {incoming}/annotations/**.csv          match annotations (:mod:`vmr.annotations.matches`):
                                           video_id,action_class,start,end (seconds), one action instance per line
    {incoming}/annotations/classes.txt     optional class list the rows are checked against

(the layout :func:`vmr.demo_data.render_demo_archive` writes, so a rendered demo archive is valid incoming footage).

What is *new*:

- a video is new when the feature store's manifest has no current entry for it (same source size and etag, same
  extraction settings): :func:`vmr.extraction.plan_extraction`, the test ``vmr extract`` skips by. A video that failed
  to decode as bad input is remembered with its etag in the ledger and not retried until the file changes (an
  infrastructure error is retried next round).
- an annotation file is new when the ledger has not consumed it at its current etag. A consumed file that changes is
  read again and its rows replace the ones it gave before.

The ledger (``{state}/ledger.json``, ``state`` defaulting to ``{store}/retrain``) is the retraining's memory: the
annotation files consumed (URI -> etag), their instances (so the annotations survive incoming/ being emptied), the
class -> split assignment (classes never move between splits, so the held-out split stays held out across rounds), the
videos that failed as bad input, and one line per round. It is written once, atomically, at the end of a round, so a
round killed midway is redone from the start by the next run (extraction skips the videos it already wrote).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Literal

from vmr import storage
from vmr.annotations.records import ActionInstance
from vmr.errors import ConfigError, InputError
from vmr.pairs import MatchPairConfig

log = logging.getLogger(__name__)

LEDGER_FILE = "ledger.json"
LEDGER_VERSION = 1
ANNOTATION_EXTENSIONS = {".csv"}


# ---- config --------------------------------------------------------------------------------------------------------


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


# ---- the ledger ----------------------------------------------------------------------------------------------------


@dataclass
class Ledger:
    """What earlier rounds consumed (see the module docstring). ``instances`` rows are
    ``{video_id, action_class, start, end, file}`` (seconds; ``file`` the annotation file that gave it)."""

    files: dict[str, str] = field(default_factory=dict)
    instances: list[dict] = field(default_factory=list)
    class_split: dict[str, str] = field(default_factory=dict)
    bad_videos: dict[str, dict] = field(default_factory=dict)  # uri -> {etag, reason}
    rounds: list[dict] = field(default_factory=list)

    @classmethod
    def load(cls, state_uri: str) -> "Ledger":
        uri = storage.join(state_uri, LEDGER_FILE)
        try:
            d = json.loads(storage.read_text(uri))
        except FileNotFoundError:
            return cls()
        except json.JSONDecodeError as e:
            raise InputError(f"{uri} is not valid JSON ({e}); restore it from a backup, or remove it to start the "
                             "retraining memory afresh (every annotation file is then read as new)") from None
        if int(d.get("version", 0)) > LEDGER_VERSION:
            raise InputError(f"{uri} was written by a newer vmr (ledger version {d['version']}); upgrade vmr")
        return cls(files=dict(d.get("files", {})), instances=list(d.get("instances", [])),
                   class_split=dict(d.get("class_split", {})), bad_videos=dict(d.get("bad_videos", {})),
                   rounds=list(d.get("rounds", [])))

    def save(self, state_uri: str) -> None:
        d = {"version": LEDGER_VERSION, **dataclasses.asdict(self)}
        storage.write_text_atomic(storage.join(state_uri, LEDGER_FILE), json.dumps(d, indent=1, sort_keys=True))

    def action_instances(self, exclude_files: set[str] = frozenset()) -> list[ActionInstance]:
        """The consumed instances as records, leaving out those of ``exclude_files`` (files read again)."""
        return [ActionInstance(video_id=r["video_id"], action_class=r["action_class"], start=float(r["start"]),
                               end=float(r["end"])) for r in self.instances if r.get("file") not in exclude_files]


# ---- what is new ---------------------------------------------------------------------------------------------------


@dataclass
class RetrainPlan:
    """What a round would consume: ``new_videos`` (:class:`vmr.extraction.VideoJob` to extract), ``known_bad``
    (video URIs skipped: they failed as bad input at this etag before), ``current_videos`` (ids already in the store),
    ``new_files`` (annotation :class:`vmr.storage.FileInfo` new or changed since consumed) and ``seen_files``
    (annotation files already consumed at their etag)."""

    new_videos: list = field(default_factory=list)
    known_bad: list[str] = field(default_factory=list)
    current_videos: list[str] = field(default_factory=list)
    new_files: list = field(default_factory=list)
    seen_files: list[str] = field(default_factory=list)

    @property
    def nothing_new(self) -> bool:
        return not self.new_videos and not self.new_files

    def describe(self) -> str:
        if self.nothing_new:
            bad = f", {len(self.known_bad)} known-bad videos skipped" if self.known_bad else ""
            return (f"nothing new under incoming/: {len(self.current_videos)} videos and {len(self.seen_files)} "
                    f"annotation files already seen{bad}")
        return (f"new under incoming/: {len(self.new_videos)} videos to extract, {len(self.new_files)} annotation "
                f"files ({len(self.current_videos)} videos and {len(self.seen_files)} files already seen)")


def _list(uri: str, extensions) -> list[storage.FileInfo]:
    if not storage.exists(uri):
        return []
    return storage.list_files(uri, extensions=extensions)


def plan_round(cfg: RetrainConfig, ledger: Ledger, store, settings=None) -> RetrainPlan:
    """Compare ``incoming/`` with the store's manifest and the ledger (module docstring). ``store``: a
    :class:`vmr.store.FeatureStore`; ``settings``: the :class:`vmr.store.ExtractSettings` new footage is extracted
    with (default: the store's own; an empty store makes every video new)."""
    from vmr.extraction import VideoJob
    from vmr.store import ExtractSettings, video_id_for
    from vmr.video import VIDEO_EXTENSIONS

    plan = RetrainPlan()
    videos = _list(cfg.videos_uri, VIDEO_EXTENSIONS)
    if settings is None:
        settings = store.settings() or ExtractSettings(model="", pretrained="", fps=1.0)
    entries = store.entries() if videos else {}
    by_id: dict[str, storage.FileInfo] = {}
    for f in videos:
        vid = video_id_for(f.uri, cfg.videos_uri)
        if vid in by_id:
            raise InputError(f"{by_id[vid].uri} and {f.uri} would both be stored as video {vid!r}; rename one")
        by_id[vid] = f
        e = entries.get(vid)
        current = (e is not None and int(e.get("source_size", -1)) == f.size and str(e.get("source_etag")) == f.etag
                   and ExtractSettings.from_entry(e) == settings)
        bad = ledger.bad_videos.get(f.uri)
        if current:
            plan.current_videos.append(vid)
        elif bad is not None and bad.get("etag") == f.etag:
            plan.known_bad.append(f.uri)
        else:
            plan.new_videos.append(VideoJob(uri=f.uri, video_id=vid, size=f.size, etag=f.etag))
    for f in _list(cfg.annotations_uri, ANNOTATION_EXTENSIONS):
        if ledger.files.get(f.uri) == f.etag:
            plan.seen_files.append(f.uri)
        else:
            plan.new_files.append(f)
    return plan


# ---- annotations and pairs -----------------------------------------------------------------------------------------


@dataclass
class NewAnnotations:
    """The instances read from a round's new annotation files (``instances``: ledger rows with ``file``), and the
    rows left out (``skipped``: ``{"file", "line", "error"}``, only with ``on_annotation_error: skip``)."""

    instances: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)


def read_new_annotations(files: list, store, on_error: str = "fail") -> NewAnnotations:
    """Load each match-annotation file of ``files`` (:class:`vmr.storage.FileInfo`), checking video ids and ranges
    against ``store`` (so a row whose video failed to extract is an error, like a typo). ``on_error="fail"`` raises
    :class:`InputError` naming every bad row of every file; ``"skip"`` returns them in ``skipped``."""
    from vmr.annotations import matches
    from vmr.annotations.records import VideoIndex

    index = VideoIndex.from_store(store)
    out = NewAnnotations()
    problems = []
    for f in files:
        ann = matches.load(f.uri, index, on_error="skip")
        for e in ann.report.errors:
            problems.append({"file": f.uri, "line": e.get("line"), "error": e.get("error")})
        out.instances += [{"video_id": r.video_id, "action_class": r.action_class, "start": float(r.start),
                           "end": float(r.end), "file": f.uri} for r in ann.records]
    if problems and on_error == "fail":
        shown = "; ".join(f"{p['file']}:{p['line']}: {p['error']}" for p in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise InputError(f"{len(problems)} bad annotation rows, nothing consumed this round: {shown}{more}. Fix the "
                         "files (the next round reads them again) or set on_annotation_error=skip")
    out.skipped = problems
    return out


@dataclass
class RoundPairs:
    """A round's pairs: ``train`` (what is finetuned on), ``val`` (model selection during finetuning), ``heldout``
    (challenger vs champion), ``class_split`` (every class seen so far -> its split) and ``stats``."""

    train: list
    val: list
    heldout: list
    class_split: dict[str, str]
    stats: dict


def _instance_key(video_id: str, action_class: str, start: float, end: float) -> tuple:
    return (video_id, action_class, round(float(start), 3), round(float(end), 3))


def build_round_pairs(ledger: Ledger, new: NewAnnotations, replaced_files: set[str], store,
                      cfg: RetrainConfig) -> RoundPairs:
    """Pairs over every instance seen so far (the ledger's, minus those of ``replaced_files``, plus ``new``), with
    the ledger's classes pinned to their splits (new classes are dealt out by :func:`vmr.pairs.split_classes`).

    ``train``: with ``train_on="new"`` the train pairs whose query is a new instance, else all train pairs; ``val``:
    all val pairs; ``heldout``: all pairs of ``cfg.eval_split``. Pairs are deterministic for ``cfg.pairs.seed``, so a
    held-out pair of an old instance is the same pair in every round (unless new footage offers its class a new
    target window)."""
    from vmr.pairs import build_match_pairs

    old = ledger.action_instances(exclude_files=replaced_files)
    fresh = [ActionInstance(video_id=r["video_id"], action_class=r["action_class"], start=r["start"], end=r["end"])
             for r in new.instances]
    new_keys = {_instance_key(r.video_id, r.action_class, r.start, r.end) for r in fresh}
    pair_cfg = dataclasses.replace(cfg.pairs, class_splits={**ledger.class_split, **cfg.pairs.class_splits})
    unique: dict[tuple, ActionInstance] = {}
    for r in old + fresh:  # a row given by two files (or again by a changed file) is one instance
        unique.setdefault(_instance_key(r.video_id, r.action_class, r.start, r.end), r)
    pairs = build_match_pairs(list(unique.values()), store, pair_cfg)
    if cfg.train_on == "new":
        train = [p for p in pairs["train"] if _instance_key(p.query_video, p.action_class, p.query_start,
                                                            p.query_end) in new_keys]
    else:
        train = list(pairs["train"])
    stats = dict(pairs.stats, new_instances=len(fresh), old_instances=len(old), train_pairs=len(train))
    return RoundPairs(train=train, val=list(pairs["val"]), heldout=list(pairs[cfg.eval_split]),
                      class_split=dict(pairs.stats["class_split"]), stats=stats)
