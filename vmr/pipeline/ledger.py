"""The retraining's memory and what a round takes from ``incoming/`` against it (see :mod:`vmr.pipeline.retrain`
for the layout of ``incoming/`` and what *new* means): the :class:`Ledger` (``{state}/ledger.json``), the plan of what
is new (:func:`plan_round`), the rows of new annotation files (:func:`read_new_annotations`) and the round's pairs
over every instance seen so far (:func:`build_round_pairs`). Times are seconds."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from vmr import storage
from vmr.annotations import matches
from vmr.annotations.records import ActionInstance, VideoIndex
from vmr.data.match_pairs import build_match_pairs
from vmr.errors import InputError
from vmr.features.extraction import plan_extraction
from vmr.features.settings import FeatureSettings
from vmr.pipeline.retrain_config import RetrainConfig

LEDGER_FILE = "ledger.json"
LEDGER_VERSION = 1
ANNOTATION_EXTENSIONS = {".csv"}


@dataclass
class Ledger:
    """What earlier rounds consumed (see :mod:`vmr.pipeline.retrain`). ``instances`` rows are
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
