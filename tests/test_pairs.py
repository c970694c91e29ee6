"""Pairs from annotations: the match-annotation pair builder (property tests), record -> spec conversion, and
materialising specs on a real local feature store."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmr import annotations as ann
from vmr.annotations.records import ActionInstance, TextMoment
from vmr.data.match_pairs import MatchPairConfig, build_match_pairs, split_classes
from vmr.data.pairs import (
    SPLITS,
    PairSpec,
    TextSpec,
    embed_sentences,
    materialize_pair,
    materialize_text,
    pairs_from_records,
    text_specs_from_records,
)
from vmr.data.samples import collate
from vmr.errors import ConfigError, InputError

EPS = 1e-6


# ---- the match pair builder --------------------------------------------------------------------------------------


@st.composite
def matches(draw):
    """Random match annotations: a few videos (durations s) and instances of a few classes inside them."""
    n_videos = draw(st.integers(1, 4))
    durations = {f"match{v}": draw(st.floats(20.0, 900.0)) for v in range(n_videos)}
    n_classes = draw(st.integers(3, 6))
    instances = []
    for i in range(draw(st.integers(3, 40))):
        vid = f"match{draw(st.integers(0, n_videos - 1))}"
        d = durations[vid]
        length = draw(st.floats(0.5, min(40.0, d)))
        start = draw(st.floats(0.0, 1.0)) * (d - length)
        instances.append(ActionInstance(vid, f"class{draw(st.integers(0, n_classes - 1))}", start, start + length,
                                        line=i + 2))
    wmin = draw(st.floats(5.0, 120.0))
    config = MatchPairConfig(window_min=wmin, window_max=wmin + draw(st.floats(0.0, 200.0)),
                             pairs_per_instance=draw(st.integers(1, 3)), other_video_prob=draw(st.floats(0.0, 1.0)))
    return instances, durations, config, draw(st.integers(0, 2**31))


def _check_pairs(instances, durations, config, result):
    by_cv: dict = {}
    for r in instances:
        by_cv.setdefault((r.action_class, r.video_id), []).append((r.start, r.end))
    # classes are disjoint across splits and every instance's class has a split
    seen: dict = {}
    for split in SPLITS:
        for p in result[split]:
            assert p.split == split
            assert seen.setdefault(p.action_class, split) == split
    assert set(result.stats["class_split"]) == {r.action_class for r in instances}
    for split, specs in result.items():
        for p in specs:
            assert result.stats["class_split"][p.action_class] == split
            d = durations[p.target_video]
            w0, w1 = p.target_start, p.target_end
            # the window lies in the video and has a length from the configured range (clipped to the video)
            assert 0.0 <= w0 < w1 <= d + EPS
            assert min(config.window_min, d) - EPS <= w1 - w0 <= max(config.window_max, 0) + EPS
            # the query is one instance of the class
            assert (p.query_start, p.query_end) in by_cv[(p.action_class, p.query_video)]
            # ground truth: at least one span, each inside the target, each an instance of the class
            assert p.spans
            for s, e in p.spans:
                assert w0 - EPS <= s < e <= w1 + EPS
            # no instance of the class is cut by the window: each is inside (and a span) or outside
            for u0, u1 in by_cv[(p.action_class, p.target_video)]:
                if p.query_video == p.target_video and (u0, u1) == (p.query_start, p.query_end):
                    continue
                overlap = min(u1, w1) - max(u0, w0)
                inside = u0 >= w0 - EPS and u1 <= w1 + EPS
                assert inside or overlap <= EPS, (u0, u1, w0, w1)
                if inside:
                    assert any(abs(s - u0) <= EPS and abs(e - u1) <= EPS for s, e in p.spans)
            # in the query's own video, the target never shows the query instance itself
            if p.query_video == p.target_video:
                assert min(p.query_end, w1) - max(p.query_start, w0) <= EPS


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(matches())
def test_match_pairs_properties(case):
    instances, durations, config, seed = case
    try:
        result = build_match_pairs(instances, durations, config, seed)
    except InputError as e:  # fewer classes than splits: a clear error, never a partial result
        assert "need at least 3 action classes" in str(e)
        assert len({r.action_class for r in instances}) < 3
        return
    _check_pairs(instances, durations, config, result)
    total = sum(len(v) for v in result.values())
    assert total + result.stats["unplaced"] == len(instances) * config.pairs_per_instance
    # deterministic for a seed, whatever the input order
    shuffled = list(instances)
    random.Random(seed).shuffle(shuffled)
    again = build_match_pairs(shuffled, durations, config, seed)
    assert dict(again) == dict(result) and again.stats == result.stats


def _league(n_videos=6, n_classes=8, per_video=25, duration=3000.0, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for v in range(n_videos):
        starts = np.sort(rng.uniform(0, duration - 20, size=per_video))
        for s in starts:
            out.append(ActionInstance(f"m{v}", f"c{rng.integers(n_classes)}", float(s), float(s + rng.uniform(1, 8))))
    return out, {f"m{v}": duration for v in range(n_videos)}


def test_match_pairs_seed_changes_pairs_but_not_their_validity():
    instances, durations = _league()
    cfg = MatchPairConfig()
    a, b = build_match_pairs(instances, durations, cfg, seed=1), build_match_pairs(instances, durations, cfg, seed=2)
    assert dict(a) != dict(b)
    for r in (a, b):
        _check_pairs(instances, durations, cfg, r)
        assert r.stats["unplaced"] == 0
        assert all(r[s] for s in SPLITS)


def test_other_video_probability_is_honoured():
    instances, durations = _league()
    always = build_match_pairs(instances, durations, MatchPairConfig(other_video_prob=1.0), seed=0)
    never = build_match_pairs(instances, durations, MatchPairConfig(other_video_prob=0.0), seed=0)
    specs_always = [p for v in always.values() for p in v]
    specs_never = [p for v in never.values() for p in v]
    assert all(p.query_video != p.target_video for p in specs_always)
    # with probability 0 the target is in the query's own match whenever that match has another instance of the class
    same_possible = {(r.video_id, r.action_class) for r in instances
                     if sum(1 for x in instances if (x.video_id, x.action_class) == (r.video_id, r.action_class)) > 1}
    assert all(p.query_video == p.target_video for p in specs_never if (p.query_video, p.action_class) in same_possible)


def test_match_pair_windows_and_multiple_spans():
    # one 1000 s match with goals at 100, 130, 160 and one far away at 900; a second match with one goal
    goals = [(100.0, 104.0), (130.0, 133.0), (160.0, 166.0), (900.0, 905.0)]
    inst = [ActionInstance("a", "goal", s, e) for s, e in goals] + [ActionInstance("b", "goal", 50.0, 55.0)]
    inst += [ActionInstance("a", "corner", 300.0, 310.0), ActionInstance("b", "corner", 20.0, 25.0),
             ActionInstance("a", "card", 400.0, 402.0), ActionInstance("b", "card", 80.0, 82.0)]
    cfg = MatchPairConfig(window_min=60.0, window_max=120.0, pairs_per_instance=5, other_video_prob=0.0)
    res = build_match_pairs(inst, {"a": 1000.0, "b": 200.0}, cfg, seed=0)
    goal_split = res.stats["class_split"]["goal"]
    specs = [p for p in res[goal_split] if p.action_class == "goal"]
    _check_pairs(inst, {"a": 1000.0, "b": 200.0}, cfg, res)
    q130 = [p for p in specs if p.query_start == 130.0]
    assert len(q130) == 5
    for p in q130:  # same match: the window avoids [130, 133), so it holds exactly one of the other goals
        assert p.target_video == "a" and p.spans in (((100.0, 104.0),), ((160.0, 166.0),), ((900.0, 905.0),))
        assert p.target_end <= 130.0 or p.target_start >= 133.0
    # a query in match b has no other goal there: its targets come from match a, and may hold several goals
    qb = [p for p in specs if p.query_video == "b"]
    assert qb and all(p.target_video == "a" for p in qb)


def test_too_few_classes_is_a_clear_error():
    inst = [ActionInstance("a", "goal", 1.0, 2.0), ActionInstance("a", "goal", 5.0, 6.0),
            ActionInstance("a", "card", 8.0, 9.0)]
    with pytest.raises(InputError, match=r"train/val/test splits need at least 3 action classes, the annotations "
                                         r"have 2 \(card, goal\)"):
        build_match_pairs(inst, {"a": 100.0})
    # with two splits, two classes are enough
    res = build_match_pairs(inst, {"a": 100.0}, MatchPairConfig(split_fractions=(0.5, 0.5, 0.0)))
    assert set(res.stats["class_split"].values()) == {"train", "val"} and res["test"] == []


def test_class_split_counts_pins_and_stability():
    classes = [f"class{i}" for i in range(20)]
    cfg = MatchPairConfig()
    s = split_classes(classes, cfg, seed=3)
    counts = {k: sum(1 for v in s.values() if v == k) for k in SPLITS}
    assert counts == {"train": 14, "val": 3, "test": 3}
    assert s == split_classes(list(reversed(classes)), cfg, seed=3)
    assert s != split_classes(classes, cfg, seed=4)
    pinned = MatchPairConfig(class_splits={"class0": "test", "class1": "test"})
    sp = split_classes(classes, pinned, seed=3)
    assert sp["class0"] == sp["class1"] == "test"
    assert sum(1 for v in sp.values() if v == "test") == 3
    # adding a class moves few of the others
    more = split_classes(classes + ["class20"], cfg, seed=3)
    assert sum(1 for c in classes if more[c] != s[c]) <= 2


def test_bad_configs_and_inputs():
    inst, durations = _league(n_videos=2)
    with pytest.raises(ConfigError, match="window_min"):
        build_match_pairs(inst, durations, MatchPairConfig(window_min=100, window_max=50))
    with pytest.raises(ConfigError, match="split_fractions"):
        build_match_pairs(inst, durations, MatchPairConfig(split_fractions=(0.5, 0.2, 0.2)))
    with pytest.raises(InputError, match="no duration for 1 annotated videos .*m1"):
        build_match_pairs(inst, {"m0": 3000.0})
    with pytest.raises(InputError, match="not inside the video's duration"):
        build_match_pairs(inst, {"m0": 3000.0, "m1": 10.0})


def test_single_instance_classes_are_counted_not_hidden(caplog):
    inst = [ActionInstance("a", c, 10.0 * i, 10.0 * i + 2) for i, c in enumerate(["x", "y", "z", "z"])]
    res = build_match_pairs(inst, {"a": 600.0}, MatchPairConfig(window_min=5.0, window_max=9.0))
    assert res.stats["unplaced"] == 2
    assert "2 of 4" in caplog.text


def test_match_pairs_from_a_loaded_file(tmp_path, make_feature_store):
    rows = ["video_id,action_class,start,end"]
    inst, durations = _league(n_videos=3, n_classes=5, per_video=12, duration=600.0, seed=5)
    rows += [f"{r.video_id},{r.action_class},{r.start!r},{r.end!r}" for r in inst]
    path = tmp_path / "matches.csv"
    path.write_text("\n".join(rows) + "\n")
    store = make_feature_store(durations)
    loaded = ann.load(str(path), store=store)
    assert len(loaded.records) == len(inst)
    res = build_match_pairs(loaded.records, store, MatchPairConfig(window_min=30, window_max=90), seed=0)
    _check_pairs(loaded.records, durations, MatchPairConfig(window_min=30, window_max=90), res)
    spec = next(p for v in res.values() for p in v)
    sample = materialize_pair(spec, store)
    centres = sample.target_times + sample.step / 2  # a row belongs to the window when its centre does
    assert centres[0] >= spec.target_start and centres[-1] < spec.target_end
    assert centres[0] - sample.step < spec.target_start and centres[-1] + sample.step >= spec.target_end
    assert sample.foreground().any()


# ---- records -> specs --------------------------------------------------------------------------------------------


def test_sportsmoments_pairs_from_the_real_file(shared_data):
    a = ann.load(str(shared_data / "annotations" / "sportsmoments" / "test.csv"))
    with pytest.raises(InputError, match="duration is unknown"):
        pairs_from_records(a.records, "test")
    # a clip is often the query of one pair and the reference of another; durations of the others made up here
    durations = {p.query_video: 5.0 for p in a.records} | {p.target_video: p.target_duration for p in a.records}
    specs = pairs_from_records(a.records, "test", durations=durations)
    assert len(specs) == len(a.records) == 9958
    assert len({p.pair_id for p in specs}) == len(specs)
    for p, r in zip(specs, a.records):
        assert (p.query_start, p.query_end) == (0.0, durations[r.query_video])
        assert (p.target_start, p.target_end) == (0.0, r.target_duration)
        assert p.spans == r.spans and p.target_start <= p.spans[0][0] < p.spans[0][1] <= p.target_end
        assert p.split == "test" and p.action_class == r.action_class
    # durations that contradict the file are an error, not a ground truth outside its target
    wrong = {p.query_video: 5.0 for p in a.records}
    with pytest.raises(InputError, match="lies outside the target"):
        pairs_from_records(a.records, "test", durations=wrong)


def test_sportsmoments_pair_materialised_from_a_store(shared_data, make_feature_store):
    a = ann.load(str(shared_data / "annotations" / "sportsmoments" / "val.csv"))
    rec = a.records[0]
    store = make_feature_store({rec.query_video: 7.3, rec.target_video: rec.target_duration})
    checked = ann.load(str(shared_data / "annotations" / "sportsmoments" / "val.csv"), store=store, on_error="skip")
    assert checked.records[0] == rec  # the first row's clips are in the store: no error for it
    spec = pairs_from_records([rec], "val", durations=store)[0]
    s = materialize_pair(spec, store)
    assert s.query.shape == (15, 8)  # 7.3 s at 2 rows per second: rows at 0, 0.5, ..., 7.0
    assert len(s.target) == len(store.load(rec.target_video).timestamps)
    (g0, g1), = s.spans
    fg_times = s.target_times[s.foreground()]
    assert fg_times[0] + 0.25 >= g0 and fg_times[-1] + 0.25 < g1


def test_vrl_pairs_from_converted_records(shared_data, make_feature_store):
    path = shared_data / "annotations" / "activitynet-vrl" / "val.json"
    items = json.loads(path.read_text())
    lengths = json.loads((path.parent / "length.json").read_text())
    label = items[0]["label"]
    vids = sorted({it["id"] for it in items if it["label"] == label})[:4]
    store = make_feature_store({v: lengths[v]["n_frames"] / 30.0 for v in vids})
    recs = [r for r in ann.load(str(path), store=store, on_error="skip").records]
    assert {r.video_id for r in recs} == set(vids)
    specs = pairs_from_records(recs, "val", seed=0, queries_per_target=2)
    assert specs.stats["no_query"] == 0 and len(specs) == 2 * len(recs)
    targets = {(r.video_id, r.context): r for r in recs}
    for p in specs:
        t = targets[(p.target_video, (p.target_start, p.target_end))]
        assert p.spans == ((t.start, t.end),)
        assert p.query_video != p.target_video  # the class has other videos, so the query comes from one of them
        assert any((r.video_id, r.start, r.end) == (p.query_video, p.query_start, p.query_end) for r in recs)
    assert pairs_from_records(recs, "val", seed=0, queries_per_target=2) == specs
    sample = materialize_pair(specs[0], store)
    assert sample.foreground().any() and len(sample.query) > 0


def test_pairs_from_records_rejects_match_instances_and_text():
    with pytest.raises(InputError, match="build_match_pairs"):
        pairs_from_records([ActionInstance("a", "goal", 1.0, 2.0)], "train")
    with pytest.raises(InputError, match="text_specs_from_records"):
        pairs_from_records([TextMoment("q", "v", "s", 10.0, ((1.0, 2.0),))], "train")
    with pytest.raises(ConfigError):
        pairs_from_records([], "training")


# ---- materialising -------------------------------------------------------------------------------------------------


def test_materialize_pair_rows_and_clock(make_feature_store):
    store = make_feature_store({"m1": 100.0, "m2": 50.0})
    spec = PairSpec("p1", "m1", 10.0, 14.0, "m2", 5.0, 35.0, ((12.0, 20.0), (30.0, 33.0)), "goal", "train")
    s = materialize_pair(spec, store)
    m1, m2 = store.load("m1"), store.load("m2")
    # rows whose interval centre lies in the window: 10.0 ... 13.5 s for the query, 5.0 ... 34.5 s for the target
    assert np.array_equal(s.query, m1.features[20:28])
    assert np.array_equal(s.target, m2.features[10:70])
    assert np.array_equal(s.target_times, m2.timestamps[10:70]) and s.target_times[0] == 5.0
    assert s.step == 0.5 and s.spans.tolist() == [[12.0, 20.0], [30.0, 33.0]]
    assert s.foreground().sum() == 16 + 6
    assert s.meta["query_rows"] == (20, 28) and s.meta["target_rows"] == (10, 70)
    batch = collate([s, materialize_pair(PairSpec("p2", "m2", 0.0, 3.0, "m1", 0.0, 100.0, ((1.0, 2.0),), "goal",
                                                  "train"), store)])
    assert batch["target"].shape == (2, 200, 8) and batch["query"].shape == (2, 8, 8)
    assert batch["sample_id"] == ["p1", "p2"]


def test_materialize_pair_errors(make_feature_store):
    store = make_feature_store({"m1": 100.0, "m2": 50.0})
    with pytest.raises(InputError, match=r"p: the target window \[60.000, 70.000\) s of 'm2' holds no feature rows"):
        materialize_pair(PairSpec("p", "m1", 1.0, 2.0, "m2", 60.0, 70.0, ((61.0, 62.0),), "x", "train"), store)
    with pytest.raises(InputError, match=r"ground truth \[40.000, 45.000\) s has no row in the target"):
        materialize_pair(PairSpec("p", "m1", 1.0, 2.0, "m2", 0.0, 30.0, ((40.0, 45.0),), "x", "train"), store)
    with pytest.raises(InputError, match="not in the feature store"):
        materialize_pair(PairSpec("p", "nope", 1.0, 2.0, "m2", 0.0, 30.0, ((4.0, 5.0),), "x", "train"), store)


def test_specs_round_trip_through_the_sample_registry(make_feature_store):
    from vmr.data.specs import SpecDataset, spec_from_record, spec_to_record

    store = make_feature_store({"m1": 100.0, "m2": 50.0})
    pair = PairSpec("p1", "m1", 10.0, 14.0, "m2", 5.0, 35.0, ((12.0, 20.0),), "goal", "train")
    text = TextSpec("q1", "m2", "a goal", ((3.0, 9.0),), "val")
    for spec in (pair, text):
        assert spec_from_record(json.loads(json.dumps(spec_to_record(spec)))) == spec
    ds = SpecDataset([pair, pair], store, context={})
    batch = ds.collate([ds[0], ds[1]])
    assert batch["target"].shape == (2, 60, 8)


def test_text_specs_embedded_and_materialised(shared_data, make_feature_store):
    from vmr.features.clip import ClipEncoder

    path = shared_data / "annotations" / "qvhighlights" / "highlight_val_release.jsonl"
    records = ann.load(str(path)).records[:6]
    specs = text_specs_from_records(records, "val")
    assert [s.qid for s in specs] == [r.qid for r in records] and specs[0].spans == records[0].spans
    encoder = ClipEncoder("ViT-S-32", "none", device="cpu", seed=0)  # the smallest CLIP: the test needs any text tower
    feats = embed_sentences(specs + specs[:2], encoder, batch_size=4)
    assert set(feats) == {s.sentence for s in specs}
    one = encoder.encode_text([specs[0].sentence])[0]
    np.testing.assert_allclose(feats[specs[0].sentence], one, atol=1e-5)
    store = make_feature_store({r.vid: r.duration for r in records}, dim=encoder.dim)
    s = materialize_text(specs[0], store, feats)
    assert s.query.shape == (1, encoder.dim) and s.query_kind == "text"
    assert len(s.target) == len(store.load(specs[0].vid).timestamps) and s.foreground().any()
    with pytest.raises(InputError, match="embed_sentences"):
        materialize_text(TextSpec("q", specs[0].vid, "never embedded", ((0.0, 1.0),), "val"), store, feats)


def test_match_pair_config_resolves_from_overrides():
    from vmr.config import resolve

    cfg = resolve(MatchPairConfig, overrides=["window_min=30", "split_fractions=[0.6,0.2,0.2]",
                                              "class_splits={goal: test}", "pairs_per_instance=2"])
    assert (cfg.window_min, cfg.window_max, cfg.split_fractions) == (30.0, 180.0, (0.6, 0.2, 0.2))
    assert cfg.class_splits == {"goal": "test"} and cfg.pairs_per_instance == 2
    with pytest.raises(ConfigError, match="unknown config key"):
        resolve(MatchPairConfig, overrides=["window=30"])
