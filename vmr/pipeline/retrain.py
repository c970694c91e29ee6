"""Scheduled retraining on new match footage: find what is new under ``incoming/``, extract it, build its pairs,
finetune the registry's champion on them, and promote the challenger only if it scores better on the same held-out
split. One call of :func:`run_retrain` is one *round*; cron (or ``ray job submit``) runs it on a schedule.

What the operator (or the recording system) uploads::

    {incoming}/videos/**.mp4|.mkv|...      match videos; a video's id is its path under videos/ without the extension
    {incoming}/annotations/**.csv          match annotations (:mod:`vmr.annotations.matches`):
                                           video_id,action_class,start,end (seconds), one action instance per line
    {incoming}/annotations/classes.txt     optional class list the rows are checked against

(the layout :func:`vmr.data.demo.render_demo_archive` writes, so a rendered demo archive is valid incoming footage).

What is *new*:

- a video is new when the feature store's manifest has no current entry for it (same source size and etag, same
  extraction settings): :func:`vmr.features.extraction.plan_extraction`, the test ``vmr extract`` skips by. A video that failed
  to decode as bad input is remembered with its etag in the ledger and not retried until the file changes (an
  infrastructure error is retried next round).
- an annotation file is new when the ledger has not consumed it at its current etag. A consumed file that changes is
  read again and its rows replace the ones it gave before.

The ledger (``{state}/ledger.json``, ``state`` defaulting to ``{store}/retrain``) is the retraining's memory: the
annotation files consumed (URI -> etag), their instances (so the annotations survive incoming/ being emptied), the
class -> split assignment (classes never move between splits, so the held-out split stays held out across rounds), the
videos that failed as bad input, and one line per round. It is written once, atomically, at the end of a round, so a
round killed midway is redone from the start by the next run (extraction skips the videos it already wrote, and the
round's finetuning run, found by name, continues from its checkpoints).

A round (:func:`run_retrain`)::

    plan         incoming/ vs manifest and ledger; nothing new -> return "nothing_new" (no MLflow run, no change)
    champion     the version the registry's alias names (models:/{model_name}@{champion_alias}), pinned by number
    extract      vmr.pipeline.extract over incoming/videos with the champion's feature settings (CLIP model, weights,
                 fps): only videos without a current manifest entry are decoded
    pairs        build_match_pairs over every instance seen so far, classes pinned to their earlier splits
    finetune     the finetune workflow from the champion's weights and architecture on the train pairs of the new
                 instances (val pairs for checkpoint selection); an MLflow child run of the round's run; the best
                 checkpoint is registered as a new version (the challenger) whatever the outcome
    decide       champion and challenger scored with vmr.train.loop.evaluate on the same held-out pairs; the alias moves
                 to the challenger only if it beats the champion on ``metric`` by more than ``min_improvement``
    record       both scores (champion/*, challenger/*), the decision (tag vmr.retrain.decision), round.json; then
                 the ledger

Choices where the issue is silent: the held-out split is the ``test`` split of the class-disjoint pairs (classes
never trained on, the same classes every round, growing as footage arrives); finetuning uses the pairs whose query
is a new instance (``train_on: all`` for everything seen); a round whose new annotations give no train pair (only
held-out or val classes) records itself and keeps the champion; rounds are numbered by the ledger, so "nothing new"
runs do not count; the extractor lists all of incoming/videos, so a known-bad video is tried again when a round runs
for other new footage (it is only not *new* by itself).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Callable, Literal

from vmr import storage
from vmr.annotations.records import ActionInstance
from vmr.config import redact
from vmr.data.match_pairs import MatchPairConfig
from vmr.errors import ConfigError, InputError

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
    """What a round would consume: ``new_videos`` (:class:`vmr.features.extraction.VideoJob` to extract), ``known_bad``
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
    :class:`vmr.features.store.FeatureStore`; ``settings``: the :class:`vmr.features.settings.FeatureSettings` new footage is extracted
    with (default: the store's own; an empty store makes every video new)."""
    from vmr.features.extraction import plan_extraction
    from vmr.features.settings import FeatureSettings

    plan = RetrainPlan()
    if settings is None:
        settings = store.settings() or FeatureSettings()  # an empty store: every video is new whatever the settings
    videos = plan_extraction(cfg.videos_uri, store, settings, allow_empty=True)
    plan.current_videos.extend(videos.skipped)
    for job in videos.todo:
        bad = ledger.bad_videos.get(job.uri)
        if bad is not None and bad.get("etag") == job.etag:
            plan.known_bad.append(job.uri)
        else:
            plan.new_videos.append(job)
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
    the ledger's classes pinned to their splits (new classes are dealt out by :func:`vmr.data.match_pairs.split_classes`).

    ``train``: with ``train_on="new"`` the train pairs whose query is a new instance, else all train pairs; ``val``:
    all val pairs; ``heldout``: all pairs of ``cfg.eval_split``. Pairs are deterministic for ``cfg.pairs.seed``, so a
    held-out pair of an old instance is the same pair in every round (unless new footage offers its class a new
    target window)."""
    from vmr.data.match_pairs import build_match_pairs

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


# ---- a round -------------------------------------------------------------------------------------------------------


@dataclass
class RetrainResult:
    """What a round did. ``status``: ``nothing_new`` (no run recorded), ``extracted`` (new videos, no new
    annotations), ``no_training_pairs`` (the new annotations gave no train pair, e.g. only held-out classes),
    ``promoted`` or ``kept`` (the champion alias moved to the challenger, or stayed). ``champion``/``challenger``:
    ``models:/name/version``; ``scores``: ``{"champion": {...}, "challenger": {...}}`` held-out metrics (percent)."""

    status: str
    message: str
    round: int = 0
    run_id: str = ""
    new_videos: list[str] = field(default_factory=list)
    new_files: list[str] = field(default_factory=list)
    champion: str = ""
    challenger: str = ""
    scores: dict = field(default_factory=dict)
    metric: str = ""
    pairs: dict = field(default_factory=dict)
    tracking_uri: str = ""
    seconds: float = 0.0

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def text(self) -> str:
        lines = [self.message]
        if self.scores:
            for who in ("champion", "challenger"):
                m = self.scores.get(who, {})
                shown = "  ".join(f"{k} {v:.2f}" for k, v in m.items() if k not in ("n", "loss"))
                lines.append(f"  {who:<10} {getattr(self, who)}: {shown}")
        if self.run_id:
            lines.append(f"  MLflow: run {self.run_id} (round {self.round}) at {redact(self.tracking_uri)}")
        return "\n".join(lines)


def _champion_version(client, name: str, alias: str):
    try:
        return client.get_model_version_by_alias(name, alias)
    except Exception:  # noqa: BLE001 - MlflowException: no such model or alias
        return None


def _extract_settings(card):
    """The extraction settings of the champion's features (new footage must be embedded the same way)."""
    from vmr.features.settings import EXTRACTOR_VERSION

    f = card.features
    if f.extractor_version != EXTRACTOR_VERSION:
        raise InputError(f"the champion was trained on features of extractor version {f.extractor_version}, this "
                         f"vmr extracts version {EXTRACTOR_VERSION}: new footage would not be comparable; retrain a "
                         "champion on re-extracted features first")
    return f


def _heldout_loader(specs: list, store, wcfg):
    from vmr.data.specs import SpecDataset, make_loader

    st = wcfg.data.stream
    ds = SpecDataset(specs, store, max_target=st.max_target, max_query=st.max_query, crop=st.crop, seed=st.seed)
    return make_loader(ds, wcfg.train.eval_batch_size or wcfg.train.batch_size)


def _model_overrides(card) -> list[str]:
    """Overrides that make the finetuning model the champion's architecture (its card's config)."""
    from vmr.pipeline.tune import overrides_of

    return [f"model.kind={card.kind}", *overrides_of({f"model.{card.kind}.{k}": v for k, v in card.config.items()})]


def run_retrain(cfg: RetrainConfig, *, announce: Callable[[str], None] = print) -> RetrainResult:
    """One retraining round (see the module docstring). Raises :class:`InputError` for bad input (no champion, bad
    annotation rows with ``on_annotation_error=fail``, no held-out pairs); nothing is consumed then."""
    from vmr.features.store import FeatureStore

    began = time.perf_counter()
    cfg.validate()
    store = FeatureStore(cfg.store)
    ledger = Ledger.load(cfg.state_uri)
    plan = plan_round(cfg, ledger, store)
    if plan.nothing_new:
        return RetrainResult(status="nothing_new", message=plan.describe(), seconds=time.perf_counter() - began)
    announce(plan.describe())

    from vmr.config import to_dict
    from vmr.models.checkpoint import check_features, load_model
    from vmr.pipeline.model_download import download_model
    from vmr.pipeline.tracking import Tracker, check_reachable, resolve_tracking_uri

    tracking_uri = resolve_tracking_uri(cfg.tracking_uri, cfg.workdir)
    check_reachable(tracking_uri)
    tracker = Tracker(tracking_uri, cfg.experiment)
    champ = _champion_version(tracker.client, cfg.model_name, cfg.champion_alias)
    if champ is None:
        raise InputError(f"no version of {cfg.model_name!r} has the alias {cfg.champion_alias!r} in MLflow at "
                         f"{redact(tracking_uri)}: register a model (vmr finetune) and set the alias, e.g. MlflowClient()"
                         f".set_registered_model_alias({cfg.model_name!r}, {cfg.champion_alias!r}, <version>)")
    champion_uri = f"models:/{cfg.model_name}/{champ.version}"
    scratch = os.path.join(os.path.abspath(cfg.workdir), "champion")
    shutil.rmtree(scratch, ignore_errors=True)
    champion_model, card = load_model(download_model(champion_uri, scratch, tracking_uri))
    features = _extract_settings(card)
    if len(store):
        check_features(card, store)
    announce(f"champion: {champion_uri} ({card.kind}, features {features.describe()})")

    # 1. new footage -> features (videos already current are skipped by the extractor)
    round_no = len(ledger.rounds) + 1
    jobs = {j.uri: j for j in plan.new_videos}
    if plan.new_videos:
        from vmr.pipeline.extract import ExtractConfig, run_extract

        ec = ExtractConfig.for_features(cfg.videos_uri, cfg.store, features, batch_size=cfg.extract.batch_size,
                                        num_gpus=cfg.extract.num_gpus, max_actors=cfg.extract.max_actors,
                                        seed=cfg.extract.seed)
        summary = run_extract(ec, announce=lambda s: announce("  " + s))
        announce("features: " + summary.text().replace("\n", "\n  "))
        from vmr.features.extraction import is_input_failure

        for f in summary.failed:
            if is_input_failure(f) and f["uri"] in jobs:
                ledger.bad_videos[f["uri"]] = {"etag": jobs[f["uri"]].etag, "reason": f["reason"]}

    # 2. new annotations -> pairs over everything seen, the new ones to train on
    new = read_new_annotations(plan.new_files, store, cfg.on_annotation_error)
    replaced = {f.uri for f in plan.new_files if f.uri in ledger.files}
    record = {"round": round_no, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "new_videos": sorted(j.video_id for j in plan.new_videos), "new_files": [f.uri for f in plan.new_files],
              "new_instances": len(new.instances), "skipped_rows": len(new.skipped)}
    pairs = None
    if plan.new_files:
        pairs = build_round_pairs(ledger, new, replaced, store, cfg)
        if not pairs.heldout:
            raise InputError(f"no {cfg.eval_split} pairs to compare challenger and champion on: the annotations have "
                             f"too few classes for class-disjoint splits (pairs.split_fractions) or no target window "
                             f"fits (pairs.window_min/max); nothing was consumed")
        by_split = {s: sorted(c for c, v in pairs.class_split.items() if v == s) for s in ("train", "val", "test")}
        announce(f"pairs: {len(pairs.train)} to train on ({cfg.train_on}), {len(pairs.val)} val, "
                 f"{len(pairs.heldout)} held-out ({cfg.eval_split}); classes: {by_split}")

    round_name = f"retrain-round-{round_no:04d}"
    tracker.start_run(round_name, to_dict(cfg), tags={"vmr.workflow": "retrain", "vmr.round": round_no,
                                                      "vmr.retrain.champion_before": champion_uri})
    tracker.log_text(json.dumps({**record, "skipped": new.skipped}, indent=1), "round.json")
    result = RetrainResult(status="", message="", round=round_no, run_id=tracker.run_id,
                           new_videos=record["new_videos"], new_files=record["new_files"], champion=champion_uri,
                           metric=cfg.metric, tracking_uri=tracking_uri,
                           pairs={s: len(getattr(pairs, s)) for s in ("train", "val", "heldout")} if pairs else {})
    if pairs is None or not pairs.train:
        result.status = "extracted" if pairs is None else "no_training_pairs"
        result.message = (f"round {round_no}: {len(plan.new_videos)} new videos extracted, no new annotations: "
                          "nothing to train on" if pairs is None else
                          f"round {round_no}: the new annotations gave no train pairs (their classes are "
                          f"{cfg.eval_split}/val classes): the champion stays")
    else:
        try:
            _finetune_and_decide(cfg, store, pairs, card, champion_model, champ, tracker, round_name, tracking_uri,
                                 result, announce)
        except BaseException:
            tracker.finish("FAILED")  # nothing is consumed: the next run redoes the round (and resumes its training)
            raise
    tracker.set_tags({"vmr.retrain.decision": result.status, "vmr.retrain.champion_after": (
        result.challenger if result.status == "promoted" else champion_uri)})
    tracker.finish("FINISHED")

    # 3. the ledger, last: a round killed before this point is redone by the next run
    for f in plan.new_files:
        ledger.files[f.uri] = f.etag
    ledger.instances = [r for r in ledger.instances if r.get("file") not in replaced] + new.instances
    if pairs is not None:
        ledger.class_split = dict(pairs.class_split)
    ledger.rounds.append({**record, "status": result.status, "run_id": tracker.run_id, "champion": champion_uri,
                          "challenger": result.challenger, "scores": result.scores})
    ledger.save(cfg.state_uri)
    result.seconds = time.perf_counter() - began
    return result


def _finetune_and_decide(cfg, store, pairs, card, champion_model, champ, tracker, round_name, tracking_uri, result,
                         announce) -> None:
    """Finetune the champion on the round's pairs (the finetune workflow, as an MLflow child of the round's run),
    score champion and challenger on the same held-out pairs, and move the alias if the challenger is better."""
    from vmr.models.checkpoint import load_model
    from vmr.pipeline.tracking import Tracker
    from vmr.pipeline.workflow import resolve_config, run_workflow
    from vmr.train.loop import evaluate, prefixed

    workdir = os.path.abspath(cfg.workdir)
    f = card.features
    overrides = [*cfg.finetune_overrides, *_model_overrides(card),
                 f"init_from={result.champion}", f"run_name={round_name}-finetune", f"data.workdir={workdir}",
                 f"data.videos={cfg.videos_uri}",  # the footage is ours (an empty one means the demo archive)
                 f"data.features.store={store.uri}", "data.features.extract=false", f"data.features.model={f.model}",
                 f"data.features.pretrained={f.pretrained}", f"data.features.fps={f.fps}",
                 f"tracking.tracking_uri={tracking_uri}", f"tracking.experiment={cfg.experiment}",
                 f"tracking.register_as={cfg.model_name}"]
    files = [cfg.finetune_config] if cfg.finetune_config else None
    wcfg, _ = resolve_config("finetune", files, overrides)
    # the child run exists before the workflow starts it, so the workflow continues it (runs are found by name)
    Tracker(tracking_uri, cfg.experiment).start_run(f"{round_name}-finetune", {}, tags={
        "mlflow.parentRunId": tracker.run_id, "vmr.round": result.round})
    out = run_workflow("finetune", wcfg, specs={"train": pairs.train, "val": pairs.val},
                       announce=lambda s: announce("  " + s))
    if not out.registered or not out.best_checkpoint:
        raise InputError(f"finetuning produced no registered model ({out.run_dir})")
    result.challenger = out.registered
    challenger_version = out.registered.rsplit("/", 1)[-1]

    loader = _heldout_loader(pairs.heldout, store, wcfg)
    challenger_model, _ = load_model(out.best_checkpoint)
    scores = {}
    for who, model in (("champion", champion_model), ("challenger", challenger_model)):
        scores[who] = evaluate(model, loader, card.task, top_k=wcfg.train.eval_top_k).metrics
        tracker.log_metrics(prefixed(scores[who], who), step=result.round)
    result.scores = scores
    if cfg.metric not in scores["champion"]:
        raise InputError(f"metric {cfg.metric!r} is not one of the held-out metrics {sorted(scores['champion'])}")
    a, b = scores["champion"][cfg.metric], scores["challenger"][cfg.metric]
    better = b > a + cfg.min_improvement
    client = tracker.client
    for version, who in ((champ.version, "champion"), (challenger_version, "challenger")):
        client.set_model_version_tag(cfg.model_name, str(version), f"vmr.retrain.round{result.round}.{cfg.metric}",
                                     f"{scores[who][cfg.metric]:.4f}")
    if better:
        client.set_registered_model_alias(cfg.model_name, cfg.champion_alias, challenger_version)
        result.status = "promoted"
        result.message = (f"round {result.round}: challenger {result.challenger} beats champion {result.champion} on "
                          f"{len(pairs.heldout)} held-out pairs ({cfg.metric} {b:.2f} vs {a:.2f}): "
                          f"@{cfg.champion_alias} moved to version {challenger_version}")
    else:
        result.status = "kept"
        result.message = (f"round {result.round}: challenger {result.challenger} does not beat champion "
                          f"{result.champion} by more than {cfg.min_improvement:g} on {len(pairs.heldout)} held-out "
                          f"pairs ({cfg.metric} {b:.2f} vs {a:.2f}): @{cfg.champion_alias} stays")
    tracker.log_metrics({"heldout/pairs": len(pairs.heldout), "promoted": float(better)}, step=result.round)
