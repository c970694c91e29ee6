"""Scheduled retraining (vmr/pipeline/retrain.py, workflows/retrain.py).

Planning tests use real demo footage under incoming/ and a real feature store whose manifest entries are written from
the files' real sizes and etags (features are random unit rows: what is tested is what counts as new). The end-to-end
test runs rounds of new footage through extraction (Ray Data, random CLIP), finetuning (Ray Train) and the MLflow
registry.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from vmr import storage
from vmr.data.demo import render_demo_archive
from vmr.data.match_pairs import MatchPairConfig
from vmr.errors import InputError
from vmr.features.settings import FeatureSettings
from vmr.features.store import FeatureStore
from vmr.pipeline.retrain import (
    Ledger,
    NewAnnotations,
    RetrainConfig,
    build_round_pairs,
    plan_round,
    read_new_annotations,
)

SETTINGS = FeatureSettings(model="ViT-S-32", pretrained="none", fps=1.0)


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


# ---- rounds of new footage, end to end -------------------------------------------------------------------------------

RETRAIN_FINETUNE_YAML = """
data:
  stream: {max_target: 32, max_query: 8, actors: 1}
train: {epochs: 2, batch_size: 8, torch_threads: 1, plot_items: 0}
trainer: {num_workers: 1, num_to_keep: 2, max_failures: 1, score_attribute: val/mIoU}
"""


def _champion(tmp_path, tracking_uri: str) -> str:
    """A tiny random MATR on ViT-S-32 features, registered as vmr-matr with the alias champion; its version."""
    import torch
    from mlflow import MlflowClient

    from vmr.models.checkpoint import save_checkpoint
    from vmr.models.matr import MATR, MATRConfig
    from vmr.pipeline.tracking import Tracker

    torch.manual_seed(0)
    model = MATR(MATRConfig(in_dim=384, d_model=32, heads=2, ff_dim=64, enc_layers=1, dec_layers=1, queries=4))
    ckpt = tmp_path / "champion0"
    save_checkpoint(str(ckpt), model, FeatureSettings(model="ViT-S-32", pretrained="none", fps=0.5))
    tracker = Tracker(tracking_uri, "vmr-bootstrap")
    tracker.start_run("bootstrap", {})
    version = tracker.log_model(str(ckpt), "vmr-matr").version
    tracker.finish()
    MlflowClient(tracking_uri=tracking_uri).set_registered_model_alias("vmr-matr", "champion", version)
    return str(version)


def _round(cluster, config, tmp_path, name, *overrides):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "workflows" / "retrain.py"), "--config", str(config), *overrides,
                        "--json"], env=cluster.env, cwd=str(root), capture_output=True, text=True, timeout=1500)
    (tmp_path / f"{name}.log").write_text(r.stdout + r.stderr)
    assert r.returncode == 0, (r.stdout[-5000:], r.stderr[-5000:])
    line = [x for x in r.stdout.strip().splitlines() if x.startswith("{")][-1]
    return json.loads(line), r.stdout


@pytest.mark.slow
def test_rounds_of_new_footage_finetune_the_champion_and_move_the_alias_only_when_better(private_ray_cluster,
                                                                                          tmp_path):
    from mlflow import MlflowClient

    archive = render_demo_archive(str(tmp_path / "archive"), n_videos=6, seed=5, duration_range=(50, 60),
                                  size=(96, 72), fps=4, length_range=(3, 6), max_instances=8)
    wd = tmp_path / "wd"
    tracking_uri = f"sqlite:///{wd / 'mlflow.db'}"
    wd.mkdir()
    v0 = _champion(tmp_path, tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    (tmp_path / "finetune.yaml").write_text(RETRAIN_FINETUNE_YAML)
    store = FeatureStore(str(tmp_path / "store"))
    config = tmp_path / "retrain.yaml"
    config.write_text(yaml.safe_dump({
        "incoming": str(tmp_path / "incoming"), "store": store.uri, "tracking_uri": tracking_uri,
        "workdir": str(wd), "finetune_config": str(tmp_path / "finetune.yaml"), "extract": {"seed": 0},
        "pairs": {"window_min": 20.0, "window_max": 40.0, "split_fractions": [0.5, 0.25, 0.25],
                  "pairs_per_instance": 2}}))

    def alias():
        return str(client.get_model_version_by_alias("vmr-matr", "champion").version)

    def retrain_runs():
        exp = client.get_experiment_by_name("vmr-retrain")
        return client.search_runs([exp.experiment_id], "tags.`vmr.workflow` = 'retrain'") if exp else []

    def check_decision(res, before):
        """The round's run holds both held-out scores on the same pairs and the decision they imply."""
        run = client.get_run(res["run_id"])
        m = run.data.metrics
        assert m["champion/n"] == m["challenger/n"] == m["heldout/pairs"] > 0
        assert m["champion/mIoU"] == pytest.approx(res["scores"]["champion"]["mIoU"])
        assert m["challenger/mIoU"] == pytest.approx(res["scores"]["challenger"]["mIoU"])
        better = res["scores"]["challenger"]["mIoU"] > res["scores"]["champion"]["mIoU"] + res_min_improvement[0]
        challenger_version = res["challenger"].rsplit("/", 1)[-1]
        assert res["status"] == ("promoted" if better else "kept") == run.data.tags["vmr.retrain.decision"]
        assert alias() == (challenger_version if better else before)
        assert run.data.tags["vmr.retrain.champion_before"] == f"models:/vmr-matr/{before}"
        finetune = client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
        assert len(finetune) == 1 and finetune[0].info.status == "FINISHED"  # the finetuning is the round's child
        assert client.get_model_version("vmr-matr", challenger_version).run_id == finetune[0].info.run_id

    res_min_improvement = [0.0]
    # round 1: four new matches and their annotations; the store is empty
    inc = _incoming(tmp_path, archive, ["match01", "match02", "match03", "match04"], name="round1.csv")
    r1, out1 = _round(private_ray_cluster, config, tmp_path, "round1")
    assert r1["status"] in ("promoted", "kept") and r1["round"] == 1
    assert sorted(r1["new_videos"]) == ["match01", "match02", "match03", "match04"]
    assert sorted(store.video_ids()) == ["match01", "match02", "match03", "match04"]
    assert r1["champion"] == f"models:/vmr-matr/{v0}" and r1["pairs"]["train"] > 0
    check_decision(r1, v0)
    created = {v: store.entry(v)["created"] for v in store.video_ids()}

    # round 2: nothing new -> nothing happens, and it says so
    champion_before, versions_before, runs_before = alias(), len(client.search_model_versions("name='vmr-matr'")), \
        len(retrain_runs())
    r2, out2 = _round(private_ray_cluster, config, tmp_path, "round2")
    assert r2["status"] == "nothing_new" and "nothing new under incoming/" in out2
    assert alias() == champion_before and len(retrain_runs()) == runs_before
    assert len(client.search_model_versions("name='vmr-matr'")) == versions_before

    # round 3: two more matches; a challenger must now beat the champion by 1000 points, so the alias stays
    _incoming(tmp_path, archive, ["match05", "match06"], name="round3.csv")
    res_min_improvement[0] = 1000.0
    r3, out3 = _round(private_ray_cluster, config, tmp_path, "round3", "min_improvement=1000")
    assert r3["round"] == 2 and sorted(r3["new_videos"]) == ["match05", "match06"]
    assert r3["new_files"] == [str(inc / "annotations" / "round3.csv")]
    assert r3["status"] == "kept" and alias() == champion_before
    check_decision(r3, champion_before)
    assert r3["champion"] == f"models:/vmr-matr/{champion_before}"  # finetuned from the current champion
    # only the new videos were extracted: the earlier ones kept their manifest entries
    assert {v: store.entry(v)["created"] for v in created} == created
    assert len(store) == 6
    ledger = Ledger.load(str(tmp_path / "store" / "retrain"))
    assert [r["status"] for r in ledger.rounds] == [r1["status"], "kept"]
    assert len(ledger.files) == 2 and len(retrain_runs()) == runs_before + 1
    assert not (wd / "demo").exists()  # the finetuning used the incoming footage's features, nothing else


def test_cli_round_with_nothing_new_says_so_and_exits_0(tmp_path, capsys):
    from vmr.cli import main

    (tmp_path / "incoming" / "videos").mkdir(parents=True)
    code = main(["retrain", f"incoming={tmp_path / 'incoming'}", f"store={tmp_path / 'store'}", "--json"])
    out = capsys.readouterr().out
    assert code == 0 and "nothing new under incoming/" in out
    assert json.loads(out.strip().splitlines()[-1])["status"] == "nothing_new"


def test_cli_mistakes_end_with_one_line_and_exit_2(tmp_path, capsys):
    from vmr.cli import main

    assert main(["retrain", f"store={tmp_path}"]) == 2
    assert "incoming is required" in capsys.readouterr().err
    assert main(["retrain", f"incoming={tmp_path}", f"store={tmp_path}", "train_on=everything"]) == 2
    assert "train_on" in capsys.readouterr().err
