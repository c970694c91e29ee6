"""vmr.data.demo: the synthetic match archive is deterministic, its annotations agree with the rendered videos (the
action is on screen exactly during its annotated span), it reads back with the match-annotation loader, and the
default archive has the shape the demo and the class-disjoint splits need."""
from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest

from vmr import cli
from vmr.annotations import matches
from vmr.data.demo import ACTION_CLASSES, _plan, _render_video, plan_demo_archive, render_demo_archive
from vmr.errors import InputError
from vmr.features.video import decode_sampled, probe

SMALL = dict(n_videos=3, seed=5, duration_range=(24, 30), size=(160, 120), fps=5, length_range=(4.0, 8.0))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return render_demo_archive(str(tmp_path_factory.mktemp("demo") / "archive"), **SMALL)


def test_default_archive_layout():
    plan = plan_demo_archive()
    assert plan == plan_demo_archive(seed=0) and plan != plan_demo_archive(seed=1)
    assert list(plan) == [f"match{i:02d}" for i in range(1, 13)]
    videos_of = defaultdict(set)
    for vid, p in plan.items():
        assert 60 <= p["duration"] <= 120
        spans = [(x["start"], x["end"]) for x in p["instances"]]
        assert spans == sorted(spans) and len(spans) >= 2
        for (s, e), nxt in zip(spans, spans[1:] + [(p["duration"] + 1, None)]):
            assert 0 <= s and 6.0 <= e - s <= 16.0 and e + 4.0 <= nxt[0]  # no overlaps, background between actions
        for x in p["instances"]:
            videos_of[x["action_class"]].add(vid)
    assert len(videos_of) == len(ACTION_CLASSES) >= 6  # enough classes for class-disjoint train/val/test
    assert min(len(v) for v in videos_of.values()) >= 3  # every class recurs across videos


def test_files_and_annotations_agree_with_the_videos(small):
    assert small["classes"] == list(ACTION_CLASSES)
    ann = matches.load(small["annotations"])
    got = [(r.video_id, r.action_class, r.start, r.end) for r in ann.records]
    assert got == [(r["video_id"], r["action_class"], r["start"], r["end"]) for r in small["instances"]]
    planned = plan_demo_archive(SMALL["n_videos"], SMALL["seed"], duration_range=SMALL["duration_range"],
                                length_range=SMALL["length_range"])
    assert [i for p in planned.values() for i in p["instances"]] == small["instances"]
    for vid, uri in small["videos"].items():
        info = probe(uri)
        assert (info.width, info.height, info.avg_fps) == (160, 120, 5.0)
        assert info.duration == pytest.approx(small["durations"][vid], abs=1e-3)
        assert all(r.end <= info.duration for r in ann.records if r.video_id == vid)


def test_action_is_on_screen_exactly_during_its_span(small, tmp_path):
    """Render match01's background alone (same seed, no actions) and compare every frame with the real render."""
    import decord

    vid, duration, insts, vseed = _plan(SMALL["n_videos"], SMALL["seed"], SMALL["duration_range"],
                                        SMALL["length_range"], 6)[0]
    assert insts
    bare = tmp_path / "bare.mp4"
    _render_video(str(bare), np.random.default_rng(vseed), duration, [], 160, 120, SMALL["fps"])
    with_actions = decord.VideoReader(small["videos"][vid])
    background = decord.VideoReader(str(bare))
    n = len(with_actions)
    times = with_actions.get_frame_timestamp(np.arange(n))[:, 0]
    changed = (np.abs(with_actions.get_batch(list(range(n))).asnumpy().astype(int)
                      - background.get_batch(list(range(n))).asnumpy().astype(int)).max(axis=3) > 60).sum(axis=(1, 2))
    inside = np.zeros(n, bool)
    for x in insts:
        inside |= (times >= x.start - 1e-6) & (times < x.end - 1e-6)
    assert inside.any() and (~inside).any()
    assert changed[inside].min() > 30  # the action's shape: tens to hundreds of clearly different pixels
    assert changed[~inside].max() < 5  # elsewhere only compression differences


def test_same_seed_same_archive(small, tmp_path):
    again = render_demo_archive(str(tmp_path / "again"), **SMALL)
    assert again["instances"] == small["instances"] and again["durations"] == small["durations"]
    with open(small["annotations"]) as a, open(again["annotations"]) as b:
        assert a.read() == b.read()
    for vid in small["videos"]:
        t1, f1 = decode_sampled(small["videos"][vid], 1.0)
        t2, f2 = decode_sampled(again["videos"][vid], 1.0)
        np.testing.assert_array_equal(t1, t2)
        np.testing.assert_array_equal(f1, f2)
    other = render_demo_archive(str(tmp_path / "other"), **{**SMALL, "seed": 6, "n_videos": 1})
    assert other["instances"] != [i for i in small["instances"] if i["video_id"] == "match01"]


def test_demo_data_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli.main(["demo-data", "--out", str(out), "--videos", "1", "--min-seconds", "20", "--max-seconds", "20",
                     "--seed", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["durations"] == {"match01": 20.0}
    assert probe(str(out / "videos/match01.mp4")).width == 320
    assert (out / "annotations/matches.csv").read_text().startswith("video_id,action_class,start,end\n")
    assert (out / "annotations/classes.txt").read_text().split() == list(ACTION_CLASSES)

    assert cli.main(["demo-data", "--out", str(out), "--min-seconds", "5"]) == 2  # too short for an action
    assert "too short" in capsys.readouterr().err


def test_bad_arguments():
    with pytest.raises(InputError):
        plan_demo_archive(0)
    with pytest.raises(InputError):
        plan_demo_archive(duration_range=(90, 60))
