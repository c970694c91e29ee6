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
round's finetuning run, found by name, continues from its checkpoints). It lives in :mod:`vmr.pipeline.ledger` with the
plan of what is new and the round's pairs, the settings in :mod:`vmr.pipeline.retrain_config`; both are re-exported
here.

A round (:func:`run_retrain`, one private function per step)::

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
from typing import Any, Callable

from vmr.config import redact, to_dict
from vmr.data.specs import SpecDataset, make_loader
from vmr.errors import InputError
from vmr.features.extraction import is_input_failure
from vmr.features.settings import EXTRACTOR_VERSION
from vmr.features.store import FeatureStore
from vmr.models.checkpoint import check_features, load_model
from vmr.pipeline.extract import ExtractConfig, run_extract
from vmr.pipeline.ledger import (  # re-exported: the ledger's names are imported from here
    ANNOTATION_EXTENSIONS,
    LEDGER_FILE,
    LEDGER_VERSION,
    Ledger,
    NewAnnotations,
    RetrainPlan,
    RoundPairs,
    build_round_pairs,
    plan_round,
    read_new_annotations,
)
from vmr.pipeline.retrain_config import RetrainConfig, RetrainExtract  # re-exported
from vmr.train.loop import evaluate, prefixed

# MLflow (vmr.pipeline.tracking, model_download, workflow) and Ray Tune (tune_space) are imported inside the functions
# of a round that has something new: a round with nothing new (cron, on a schedule) needs neither, and `vmr retrain`
# with nothing new takes 3.0 s with them deferred, 4.2 s with MLflow imported here (measured on the 2-core dev machine).

log = logging.getLogger(__name__)


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
    f = card.features
    if f.extractor_version != EXTRACTOR_VERSION:
        raise InputError(f"the champion was trained on features of extractor version {f.extractor_version}, this "
                         f"vmr extracts version {EXTRACTOR_VERSION}: new footage would not be comparable; retrain a "
                         "champion on re-extracted features first")
    return f


def _heldout_loader(specs: list, store, wcfg):
    st = wcfg.data.stream
    ds = SpecDataset(specs, store, max_target=st.max_target, max_query=st.max_query, crop=st.crop, seed=st.seed)
    return make_loader(ds, wcfg.train.eval_batch_size or wcfg.train.batch_size)


def _model_overrides(card) -> list[str]:
    """Overrides that make the finetuning model the champion's architecture (its card's config)."""
    from vmr.pipeline.tune_space import overrides_of  # Ray Tune: see the imports

    return [f"model.kind={card.kind}", *overrides_of({f"model.{card.kind}.{k}": v for k, v in card.config.items()})]


@dataclass
class _Champion:
    """The model a round finetunes and must beat: its registry version, ``models:/name/version``, weights, card."""

    version: Any
    uri: str
    model: Any
    card: Any


def run_retrain(cfg: RetrainConfig, *, announce: Callable[[str], None] = print) -> RetrainResult:
    """One retraining round (see the module docstring). Raises :class:`InputError` for bad input (no champion, bad
    annotation rows with ``on_annotation_error=fail``, no held-out pairs); nothing is consumed then."""
    began = time.perf_counter()
    cfg.validate()
    store = FeatureStore(cfg.store)
    ledger = Ledger.load(cfg.state_uri)
    plan = plan_round(cfg, ledger, store)
    if plan.nothing_new:
        return RetrainResult(status="nothing_new", message=plan.describe(), seconds=time.perf_counter() - began)
    announce(plan.describe())
    from vmr.pipeline.tracking import Tracker, check_reachable, resolve_tracking_uri  # MLflow: see the imports

    tracking_uri = resolve_tracking_uri(cfg.tracking_uri, cfg.workdir)
    check_reachable(tracking_uri)
    tracker = Tracker(tracking_uri, cfg.experiment)
    champion = _champion(cfg, store, tracker.client, tracking_uri, announce)
    round_no = len(ledger.rounds) + 1
    _extract_new_footage(cfg, plan, champion.card.features, ledger, announce)
    new, replaced, pairs = _new_pairs(cfg, plan, ledger, store, announce)
    record = {"round": round_no, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "new_videos": sorted(j.video_id for j in plan.new_videos), "new_files": [f.uri for f in plan.new_files],
              "new_instances": len(new.instances), "skipped_rows": len(new.skipped)}
    result = _tracked_round(cfg, store, pairs, champion, tracker, record, new, announce)
    _update_ledger(cfg, ledger, plan, new, replaced, pairs, record, result)
    result.seconds = time.perf_counter() - began
    return result


def _champion(cfg: RetrainConfig, store, client, tracking_uri: str, announce) -> _Champion:
    """The version the registry's alias names, pinned by number, downloaded and loaded; its features must match the
    store's."""
    from vmr.pipeline.model_download import download_model  # MLflow: see the imports

    champ = _champion_version(client, cfg.model_name, cfg.champion_alias)
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
    return _Champion(version=champ, uri=champion_uri, model=champion_model, card=card)


def _extract_new_footage(cfg: RetrainConfig, plan: RetrainPlan, features, ledger: Ledger, announce) -> None:
    """New footage -> features with the champion's settings (videos already current are skipped by the extractor);
    videos that fail as bad input are remembered in the ledger with their etag."""
    if not plan.new_videos:
        return
    jobs = {j.uri: j for j in plan.new_videos}
    ec = ExtractConfig.for_features(cfg.videos_uri, cfg.store, features, batch_size=cfg.extract.batch_size,
                                    num_gpus=cfg.extract.num_gpus, max_actors=cfg.extract.max_actors,
                                    seed=cfg.extract.seed)
    summary = run_extract(ec, announce=lambda s: announce("  " + s))
    announce("features: " + summary.text().replace("\n", "\n  "))
    for f in summary.failed:
        if is_input_failure(f) and f["uri"] in jobs:
            ledger.bad_videos[f["uri"]] = {"etag": jobs[f["uri"]].etag, "reason": f["reason"]}


def _new_pairs(cfg: RetrainConfig, plan: RetrainPlan, ledger: Ledger, store,
               announce) -> tuple[NewAnnotations, set[str], RoundPairs | None]:
    """``(the new annotations, the consumed files read again, the round's pairs or None without new files)``: pairs
    over everything seen, the new ones to train on; a round without held-out pairs stops here."""
    new = read_new_annotations(plan.new_files, store, cfg.on_annotation_error)
    replaced = {f.uri for f in plan.new_files if f.uri in ledger.files}
    if not plan.new_files:
        return new, replaced, None
    pairs = build_round_pairs(ledger, new, replaced, store, cfg)
    if not pairs.heldout:
        raise InputError(f"no {cfg.eval_split} pairs to compare challenger and champion on: the annotations have "
                         f"too few classes for class-disjoint splits (pairs.split_fractions) or no target window "
                         f"fits (pairs.window_min/max); nothing was consumed")
    by_split = {s: sorted(c for c, v in pairs.class_split.items() if v == s) for s in ("train", "val", "test")}
    announce(f"pairs: {len(pairs.train)} to train on ({cfg.train_on}), {len(pairs.val)} val, "
             f"{len(pairs.heldout)} held-out ({cfg.eval_split}); classes: {by_split}")
    return new, replaced, pairs


def _tracked_round(cfg: RetrainConfig, store, pairs: RoundPairs | None, champion: _Champion, tracker, record: dict,
                   new: NewAnnotations, announce) -> RetrainResult:
    """The round's MLflow run: finetune and decide when there are train pairs, else say why not; the decision as
    tags. A failure marks the run FAILED (nothing is consumed: the next run redoes the round)."""
    round_no = record["round"]
    round_name = f"retrain-round-{round_no:04d}"
    tracker.start_run(round_name, to_dict(cfg), tags={"vmr.workflow": "retrain", "vmr.round": round_no,
                                                      "vmr.retrain.champion_before": champion.uri})
    tracker.log_text(json.dumps({**record, "skipped": new.skipped}, indent=1), "round.json")
    result = RetrainResult(status="", message="", round=round_no, run_id=tracker.run_id,
                           new_videos=record["new_videos"], new_files=record["new_files"], champion=champion.uri,
                           metric=cfg.metric, tracking_uri=tracker.tracking_uri,
                           pairs={s: len(getattr(pairs, s)) for s in ("train", "val", "heldout")} if pairs else {})
    if pairs is None or not pairs.train:
        result.status = "extracted" if pairs is None else "no_training_pairs"
        result.message = (f"round {round_no}: {len(record['new_videos'])} new videos extracted, no new annotations: "
                          "nothing to train on" if pairs is None else
                          f"round {round_no}: the new annotations gave no train pairs (their classes are "
                          f"{cfg.eval_split}/val classes): the champion stays")
    else:
        try:
            wcfg = _finetune_config(cfg, store, champion, round_name, tracker.tracking_uri)
            checkpoint = _finetune(cfg, wcfg, pairs, tracker, round_name, result, announce)
            _decide(cfg, wcfg, store, pairs, champion, checkpoint, tracker, result)
        except BaseException:
            tracker.finish("FAILED")  # nothing is consumed: the next run redoes the round (and resumes its training)
            raise
    tracker.set_tags({"vmr.retrain.decision": result.status, "vmr.retrain.champion_after": (
        result.challenger if result.status == "promoted" else champion.uri)})
    tracker.finish("FINISHED")
    return result


def _update_ledger(cfg: RetrainConfig, ledger: Ledger, plan: RetrainPlan, new: NewAnnotations, replaced: set[str],
                   pairs: RoundPairs | None, record: dict, result: RetrainResult) -> None:
    """The ledger, last: a round killed before this point is redone by the next run."""
    for f in plan.new_files:
        ledger.files[f.uri] = f.etag
    ledger.instances = [r for r in ledger.instances if r.get("file") not in replaced] + new.instances
    if pairs is not None:
        ledger.class_split = dict(pairs.class_split)
    ledger.rounds.append({**record, "status": result.status, "run_id": result.run_id, "champion": result.champion,
                          "challenger": result.challenger, "scores": result.scores})
    ledger.save(cfg.state_uri)


def _finetune(cfg: RetrainConfig, wcfg, pairs: RoundPairs, tracker, round_name: str, result: RetrainResult,
              announce) -> str:
    """Finetune the champion on the round's pairs (the finetune workflow with ``wcfg``, as an MLflow child of the
    round's run); its best checkpoint is registered as the challenger (``result.challenger``), and returned."""
    from vmr.pipeline.tracking import Tracker  # MLflow: see the imports
    from vmr.pipeline.workflow import run_workflow

    # the child run exists before the workflow starts it, so the workflow continues it (runs are found by name)
    Tracker(tracker.tracking_uri, cfg.experiment).start_run(f"{round_name}-finetune", {}, tags={
        "mlflow.parentRunId": tracker.run_id, "vmr.round": result.round})
    out = run_workflow("finetune", wcfg, specs={"train": pairs.train, "val": pairs.val},
                       announce=lambda s: announce("  " + s))
    if not out.registered or not out.best_checkpoint:
        raise InputError(f"finetuning produced no registered model ({out.run_dir})")
    result.challenger = out.registered
    return out.best_checkpoint


def _finetune_config(cfg: RetrainConfig, store, champion: _Champion, round_name: str, tracking_uri: str):
    """The finetune workflow's config: ``finetune_config`` with the champion's architecture, weights and feature
    settings, the round's store and run name, and the challenger registered as ``model_name``."""
    from vmr.pipeline.workflow import resolve_config  # MLflow: see the imports

    card = champion.card
    f = card.features
    overrides = [*cfg.finetune_overrides, *_model_overrides(card),
                 f"init_from={champion.uri}", f"run_name={round_name}-finetune", f"data.workdir={os.path.abspath(cfg.workdir)}",
                 f"data.videos={cfg.videos_uri}",  # the footage is ours (an empty one means the demo archive)
                 f"data.features.store={store.uri}", "data.features.extract=false", f"data.features.model={f.model}",
                 f"data.features.pretrained={f.pretrained}", f"data.features.fps={f.fps}",
                 f"tracking.tracking_uri={tracking_uri}", f"tracking.experiment={cfg.experiment}",
                 f"tracking.register_as={cfg.model_name}"]
    files = [cfg.finetune_config] if cfg.finetune_config else None
    wcfg, _ = resolve_config("finetune", files, overrides)
    return wcfg


def _decide(cfg: RetrainConfig, wcfg, store, pairs: RoundPairs, champion: _Champion, checkpoint: str, tracker,
            result: RetrainResult) -> None:
    """Score champion and challenger (``checkpoint``) on the same held-out pairs and move the alias to the
    challenger only if it beats the champion on ``cfg.metric`` by more than ``min_improvement``."""
    challenger_version = result.challenger.rsplit("/", 1)[-1]
    loader = _heldout_loader(pairs.heldout, store, wcfg)
    challenger_model, _ = load_model(checkpoint)
    scores = {}
    for who, model in (("champion", champion.model), ("challenger", challenger_model)):
        scores[who] = evaluate(model, loader, champion.card.task, top_k=wcfg.train.eval_top_k).metrics
        tracker.log_metrics(prefixed(scores[who], who), step=result.round)
    result.scores = scores
    if cfg.metric not in scores["champion"]:
        raise InputError(f"metric {cfg.metric!r} is not one of the held-out metrics {sorted(scores['champion'])}")
    a, b = scores["champion"][cfg.metric], scores["challenger"][cfg.metric]
    better = b > a + cfg.min_improvement
    client = tracker.client
    for version, who in ((champion.version.version, "champion"), (challenger_version, "challenger")):
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


__all__ = ["RetrainConfig", "RetrainExtract", "RetrainResult", "run_retrain", "Ledger", "LEDGER_FILE",
           "LEDGER_VERSION", "ANNOTATION_EXTENSIONS", "RetrainPlan", "plan_round", "NewAnnotations",
           "read_new_annotations", "RoundPairs", "build_round_pairs"]
