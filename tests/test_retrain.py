"""Scheduled retraining (vmr/pipeline/retrain.py, workflows/retrain.py).

Planning tests use real demo footage under incoming/ and a real feature store whose manifest entries are written from
the files' real sizes and etags (features are random unit rows: what is tested is what counts as new). The end-to-end
test runs rounds of new footage through extraction (Ray Data, random CLIP), finetuning (Ray Train) and the MLflow
registry.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from vmr import storage
from vmr.demo_data import render_demo_archive
from vmr.errors import InputError
from vmr.pairs import MatchPairConfig
from vmr.pipeline.retrain import (
    Ledger, NewAnnotations, RetrainConfig, build_round_pairs, plan_round, read_new_annotations)
from vmr.store import ExtractSettings, FeatureStore

SETTINGS = ExtractSettings(model="ViT-S-32", pretrained="none", fps=1.0)


def _fake_extract(store: FeatureStore, video_uri: str, video_id: str, duration: float, settings=SETTINGS) -> None:
    """A manifest entry for the real file (its size and etag), with random unit features at ``settings.fps``."""
    info = storage.info(video_uri)
    n = int(duration * settings.fps)
    f = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    store.write(video_id, (np.arange(n) + 0.5) / settings.fps, f, dict(
        source_uri=info.uri, source_size=info.size, source_etag=info.etag, duration=duration, fps=settings.fps,
        model=settings.model, pretrained=settings.pretrained, extractor_version=settings.extractor_version))


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    """A rendered demo archive: 4 short matches, annotations and class list (the incoming/ layout)."""
    out = tmp_path_factory.mktemp("footage")
    return render_demo_archive(str(out), n_videos=4, seed=3, duration_range=(80, 100), size=(96, 72), fps=4,
                               length_range=(3, 5), max_instances=10)


def _incoming(tmp_path, footage, videos, rows=None, name="round1.csv"):
    """Copy ``videos`` (ids) of the footage and their annotation rows into ``tmp_path/incoming``."""
    inc = tmp_path / "incoming"
    (inc / "videos").mkdir(parents=True, exist_ok=True)
    (inc / "annotations").mkdir(parents=True, exist_ok=True)
    for vid in videos:
        (inc / "videos" / f"{vid}.mp4").write_bytes(open(footage["videos"][vid], "rb").read())
    rows = rows if rows is not None else [r for r in footage["instances"] if r["video_id"] in videos]
    text = "video_id,action_class,start,end\n" + "".join(
        f"{r['video_id']},{r['action_class']},{r['start']},{r['end']}\n" for r in rows)
    (inc / "annotations" / name).write_text(text)
    return inc


def test_plan_finds_videos_the_manifest_has_not_seen_and_unconsumed_annotation_files(tmp_path, footage):
    inc = _incoming(tmp_path, footage, ["match01", "match02", "match03"])
    store = FeatureStore(str(tmp_path / "store"))
    cfg = RetrainConfig(incoming=str(inc), store=store.uri)
    _fake_extract(store, str(inc / "videos" / "match01.mp4"), "match01", footage["durations"]["match01"])

    plan = plan_round(cfg, Ledger(), store)
    assert sorted(j.video_id for j in plan.new_videos) == ["match02", "match03"]
    assert plan.current_videos == ["match01"]
    assert [f.uri for f in plan.new_files] == [str(inc / "annotations" / "round1.csv")]
    assert not plan.nothing_new and "2 videos to extract, 1 annotation files" in plan.describe()

    # the videos extracted and the file consumed: nothing new, and it says so
    for vid in ("match02", "match03"):
        _fake_extract(store, str(inc / "videos" / f"{vid}.mp4"), vid, footage["durations"][vid])
    ledger = Ledger(files={f.uri: f.etag for f in plan.new_files})
    again = plan_round(cfg, ledger, store)
    assert again.nothing_new and again.describe().startswith("nothing new under incoming/")
    assert sorted(again.current_videos) == ["match01", "match02", "match03"] and len(again.seen_files) == 1

    # a consumed file that changes is new again; so is a video replaced by another file under the same name
    (inc / "annotations" / "round1.csv").write_text((inc / "annotations" / "round1.csv").read_text() + "\n")
    (inc / "videos" / "match02.mp4").write_bytes(open(footage["videos"]["match04"], "rb").read())
    changed = plan_round(cfg, ledger, store)
    assert [f.uri for f in changed.new_files] == [str(inc / "annotations" / "round1.csv")]
    assert [j.video_id for j in changed.new_videos] == ["match02"]


def test_plan_skips_videos_that_failed_as_bad_input_until_they_change(tmp_path, footage):
    inc = _incoming(tmp_path, footage, ["match01"])
    (inc / "videos" / "broken.mp4").write_bytes(b"not a video at all")
    store = FeatureStore(str(tmp_path / "store"))
    _fake_extract(store, str(inc / "videos" / "match01.mp4"), "match01", footage["durations"]["match01"])
    cfg = RetrainConfig(incoming=str(inc), store=store.uri)
    broken = storage.info(str(inc / "videos" / "broken.mp4"))
    ledger = Ledger(files={str(inc / "annotations" / "round1.csv"): storage.info(
        str(inc / "annotations" / "round1.csv")).etag},
        bad_videos={broken.uri: {"etag": broken.etag, "reason": "unreadable"}})
    plan = plan_round(cfg, ledger, store)
    assert plan.nothing_new and plan.known_bad == [broken.uri]
    assert "1 known-bad videos skipped" in plan.describe()
    (inc / "videos" / "broken.mp4").write_bytes(open(footage["videos"]["match02"], "rb").read())  # fixed upload
    assert [j.video_id for j in plan_round(cfg, ledger, store).new_videos] == ["broken"]


def test_plan_of_an_empty_or_missing_incoming_prefix_is_nothing_new(tmp_path):
    store = FeatureStore(str(tmp_path / "store"))
    plan = plan_round(RetrainConfig(incoming=str(tmp_path / "nothing-here"), store=store.uri), Ledger(), store)
    assert plan.nothing_new


def test_bad_annotation_rows_fail_the_round_or_are_skipped_and_listed(tmp_path, footage):
    rows = [r for r in footage["instances"] if r["video_id"] == "match01"]
    rows.append({"video_id": "match09", "action_class": "cover_drive", "start": 1.0, "end": 3.0})  # not extracted
    inc = _incoming(tmp_path, footage, ["match01"], rows=rows)
    store = FeatureStore(str(tmp_path / "store"))
    _fake_extract(store, str(inc / "videos" / "match01.mp4"), "match01", footage["durations"]["match01"])
    files = storage.list_files(str(inc / "annotations"), extensions={".csv"})
    with pytest.raises(InputError, match=r"1 bad annotation rows, nothing consumed.*round1.csv:%d" % (len(rows) + 1)):
        read_new_annotations(files, store, on_error="fail")
    got = read_new_annotations(files, store, on_error="skip")
    assert len(got.instances) == len(rows) - 1 and [s["line"] for s in got.skipped] == [len(rows) + 1]
    assert "match09" in got.skipped[0]["error"]


def _instances(footage, videos, file):
    return [dict(r, file=file) for r in footage["instances"] if r["video_id"] in videos]


def test_round_pairs_pin_old_classes_to_their_splits_and_train_on_new_queries(tmp_path, footage):
    store = FeatureStore(str(tmp_path / "store"))
    for vid, dur in footage["durations"].items():
        _fake_extract(store, footage["videos"][vid], vid, dur)
    pairs_cfg = MatchPairConfig(window_min=15.0, window_max=30.0, split_fractions=(0.5, 0.25, 0.25), seed=1)
    cfg = RetrainConfig(incoming="unused", store=store.uri, pairs=pairs_cfg)

    first = NewAnnotations(instances=_instances(footage, {"match01", "match02"}, "a.csv"))
    r1 = build_round_pairs(Ledger(), first, set(), store, cfg)
    assert r1.train and r1.heldout
    assert not {p.action_class for p in r1.train} & {p.action_class for p in r1.heldout}

    # round 2: the ledger pins round 1's classes; train pairs only for queries from the new file
    ledger = Ledger(instances=first.instances, class_split=r1.class_split, files={"a.csv": "x"})
    second = NewAnnotations(instances=_instances(footage, {"match03", "match04"}, "b.csv"))
    r2 = build_round_pairs(ledger, second, set(), store, cfg)
    for c, s in r1.class_split.items():
        assert r2.class_split[c] == s
    assert r2.train and all(p.query_video in ("match03", "match04") for p in r2.train)
    assert r2.stats["new_instances"] == len(second.instances) and r2.stats["old_instances"] == len(first.instances)
    heldout_classes = {c for c, s in r2.class_split.items() if s == "test"}
    assert {p.action_class for p in r2.heldout} <= heldout_classes
    assert not {p.action_class for p in r2.train} & heldout_classes
    # every instance seen so far is in the held-out split's reach: old held-out pairs are kept
    assert {p.pair_id for p in r1.heldout} <= {p.pair_id for p in r2.heldout}

    cfg_all = RetrainConfig(incoming="unused", store=store.uri, pairs=pairs_cfg, train_on="all")
    r2_all = build_round_pairs(ledger, second, set(), store, cfg_all)
    assert len(r2_all.train) > len(r2.train)


def test_ledger_round_trips_and_refuses_a_newer_version(tmp_path):
    ledger = Ledger(files={"s3://b/incoming/annotations/a.csv": "etag1"}, class_split={"x": "train"},
                    instances=[{"video_id": "m", "action_class": "x", "start": 1.0, "end": 2.0, "file": "a"}],
                    rounds=[{"round": 1, "decision": "promoted"}])
    ledger.save(str(tmp_path))
    assert Ledger.load(str(tmp_path)) == ledger
    assert Ledger.load(str(tmp_path / "none")) == Ledger()
    (tmp_path / "ledger.json").write_text(json.dumps({"version": 99}))
    with pytest.raises(InputError, match="newer vmr"):
        Ledger.load(str(tmp_path))
