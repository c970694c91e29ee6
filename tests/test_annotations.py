"""Annotation loaders on the real files in ../shared/data/annotations, hand-made bad rows, format guessing and the
`vmr annotations check` command."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from vmr import annotations as ann
from vmr.annotations import activitynet_vrl, detect, sportsmoments
from vmr.annotations.records import OVERRUN_TOLERANCE, ActionInstance, TextMoment, VideoPair
from vmr.cli import main
from vmr.errors import InputError


def _data_lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


# ---- real files --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split,duplicates", [("val", 22), ("test", 42)])
def test_sportsmoments_real_split(shared_data, split, duplicates):
    path = shared_data / "annotations" / "sportsmoments" / f"{split}.csv"
    a = ann.load(str(path))
    r = a.report
    assert a.format == "sportsmoments"
    assert r.rows == _data_lines(path) - 1 == 10000
    assert r.valid == 10000 and r.duplicates == duplicates and r.errors == []
    assert len(a.records) == 10000 - duplicates
    assert len(ann.load(str(path), dedupe=False).records) == 10000
    assert len(a.class_names) == 29
    with path.open() as f:
        raw = list(csv.DictReader(f))
    first = a.records[0]
    assert isinstance(first, VideoPair)
    # the clip file names map to store ids without the extension; times are seconds in the reference clip
    assert first.query_video == raw[0]["query_id"].removesuffix(".mp4")
    assert first.target_video == raw[0]["reference_id"].removesuffix(".mp4")
    assert first.spans == ((float(raw[0]["reference_segment_start"]), float(raw[0]["reference_segment_end"])),)
    assert first.line == 2
    for p in a.records:
        (s, e), = p.spans
        assert 0 <= s < e <= p.target_duration
        assert p.query_video.split("__")[1].split("_")[0] == p.action_class


def test_sportsmoments_class_sets_are_disjoint_across_splits(shared_data):
    d = shared_data / "annotations" / "sportsmoments"
    val = {p.action_class for p in ann.load(str(d / "val.csv")).records}
    test = {p.action_class for p in ann.load(str(d / "test.csv")).records}
    assert len(val) == 4 and len(test) == 9 and not val & test


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_activitynet_vrl_real_split_without_store(shared_data, split):
    path = shared_data / "annotations" / "activitynet-vrl" / f"{split}.json"
    items = json.loads(path.read_text())
    r = ann.check(str(path))
    assert r.format == "activitynet-vrl"
    assert r.rows == r.valid == len(items) and r.errors == [] and r.unchecked == 0
    assert any("not converted" in n for n in r.notes)
    with pytest.raises(InputError, match="frame rate"):
        ann.load(str(path))


def test_activitynet_vrl_converts_with_the_store_duration(shared_data, make_feature_store):
    path = shared_data / "annotations" / "activitynet-vrl" / "val.json"
    items = json.loads(path.read_text())
    lengths = json.loads((path.parent / "length.json").read_text())
    vids = sorted({it["id"] for it in items})[:3]
    fps = {vids[0]: 30.0, vids[1]: 25.0, vids[2]: 29.97}
    durations = {v: lengths[v]["n_frames"] / fps[v] for v in vids}
    store = make_feature_store(durations)
    a = ann.load(str(path), store=store, on_error="skip")
    mine = [it for it in items if it["id"] in vids]
    assert len(a.records) == len(mine) > 0
    for rec in a.records:
        assert isinstance(rec, ActionInstance)
        it = items[rec.line - 1]
        sec = 16 / fps[rec.video_id]
        (l0, l1), (g0, g1) = it["location"], it["groundtruth"]
        assert rec.context == pytest.approx((l0 * sec, l1 * sec))
        assert (rec.start, rec.end) == pytest.approx(((l0 + g0) * sec, (l0 + g1) * sec))
        assert rec.context[0] <= rec.start < rec.end <= rec.context[1] <= durations[rec.video_id]
        assert rec.action_class == str(it["label"])
    # every other video is reported missing from the store, by record number
    assert len(a.report.errors) == len(items) - len(mine)
    assert all("not in the feature store" in e["error"] for e in a.report.errors)
    other = next(i for i, it in enumerate(items, 1) if it["id"] not in vids)
    assert a.report.errors[0]["line"] == other


def test_activitynet_vrl_refuses_an_implausible_frame_rate(shared_data, make_feature_store, tmp_path):
    path = tmp_path / "vrl.json"
    path.write_text(json.dumps([{"id": "vidA", "label": 3, "location": [0, 10], "groundtruth": [2, 4]}]))
    (tmp_path / "length.json").write_text(json.dumps({"vidA": {"n_frames": 3000, "n_feat": 187}}))
    store = make_feature_store({"vidA": 1.0})  # 3000 frames in 1 s: the store holds something else
    with pytest.raises(InputError, match=r"vrl.json:1: .*imply 3000.0 fps"):
        ann.load(str(path), store=store)


@pytest.mark.parametrize("name", ["highlight_train_release", "highlight_val_release", "highlight_test_release",
                                  "highlight_test_with_gt"])
def test_qvhighlights_real_files(shared_data, name):
    path = shared_data / "annotations" / "qvhighlights" / f"{name}.jsonl"
    a = ann.load(str(path))
    assert a.report.rows == len(a.records) == _data_lines(path)
    assert a.report.errors == [] and a.report.duplicates == 0
    lines = path.read_text().splitlines()
    for rec in a.records[:50]:
        assert json.loads(lines[rec.line - 1])["qid"] == int(rec.qid)
    for rec in a.records:
        assert isinstance(rec, TextMoment)
        for s, e in rec.spans:
            assert 0 <= s < e <= rec.duration
    has_gt = sum(1 for r in a.records if r.spans)
    assert has_gt == (0 if name == "highlight_test_release" else len(a.records))


def test_charades_sta_real_files(shared_data):
    d = shared_data / "annotations" / "charades-sta"
    lengths = {r["id"]: float(r["length"]) for r in csv.DictReader((d / "Charades_v1_test.csv").open())}
    test = ann.load(str(d / "charades_sta_test.txt"))
    assert test.report.rows == len(test.records) == _data_lines(d / "charades_sta_test.txt") == 3720
    # the real test split overruns the Charades_v1 lengths by up to 1.5 s on 562 lines: clipped and counted
    assert test.report.clipped == 562 and test.report.errors == []
    for rec in test.records:
        (s, e), = rec.spans
        assert rec.duration == lengths[rec.vid] and 0 <= s < e <= rec.duration
    train = ann.check(str(d / "charades_sta_train.txt"))
    assert train.rows == _data_lines(d / "charades_sta_train.txt") == 12408
    assert [e["line"] for e in train.errors] == [8252, 8440, 9623, 9624]
    assert train.errors[0]["error"] == "segment end 7 s is not after its start 8 s"
    assert train.skipped == 4 and train.valid == 12404
    assert train.unchecked == 12404  # train videos are not in Charades_v1_test.csv: said, not hidden
    with pytest.raises(InputError, match=r"charades_sta_train.txt:8252: segment end 7 s .*and 3 more"):
        ann.load(str(d / "charades_sta_train.txt"))


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_activitynet_captions_real_files(shared_data, split):
    path = shared_data / "annotations" / "activitynet-captions" / f"{split}.json"
    data = json.loads(path.read_text())
    n = sum(len(v["sentences"]) for v in data.values())
    a = ann.load(str(path), on_error="skip")
    assert a.report.rows == n
    assert a.report.valid == len(a.records) + a.report.duplicates
    assert len(a.report.errors) == (4 if split == "train" else 0)
    for rec in a.records:
        (s, e), = rec.spans
        assert 0 <= s < e <= rec.duration == data[rec.vid]["duration"]
        assert rec.sentence == data[rec.vid]["sentences"][int(rec.qid.rsplit("#", 1)[1])].strip()
    if split == "train":
        e = a.report.errors[0]
        assert "v_N7ppHQNikv8" in e["error"] and "not after its start" in e["error"]


REAL_FORMATS = [
    ("sportsmoments/test.csv", "sportsmoments"),
    ("activitynet-vrl/val.json", "activitynet-vrl"),
    ("qvhighlights/highlight_val_release.jsonl", "qvhighlights"),
    ("qvhighlights/highlight_test_release.jsonl", "qvhighlights"),
    ("charades-sta/charades_sta_test.txt", "charades-sta"),
    ("activitynet-captions/val.json", "activitynet-captions"),
]


@pytest.mark.parametrize("rel,fmt", REAL_FORMATS)
def test_format_is_guessed_from_content(shared_data, rel, fmt):
    assert ann.guess_file_format(str(shared_data / "annotations" / rel)) == fmt


def test_format_guessing_of_match_files_and_failures(tmp_path):
    assert detect.guess_format("video_id,action_class,start,end\nm1,goal,1,2\n") == "matches"
    assert detect.guess_format("start,end,video_id,action_class,notes\n") == "matches"
    with pytest.raises(InputError, match="--format"):
        detect.guess_format("hello world\n", "notes.txt")
    with pytest.raises(InputError, match="--format"):
        detect.guess_format('[{"id": 1}]')
    p = tmp_path / "renamed.txt"  # the content decides, not the extension
    p.write_text('{"qid": 1, "vid": "a", "query": "x", "duration": 10}\n')
    assert ann.guess_file_format(str(p)) == "qvhighlights"


# ---- hand-made bad rows ------------------------------------------------------------------------------------------

SM_HEADER = ",".join(sportsmoments.COLUMNS)


def _write(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_sportsmoments_bad_rows_are_reported_with_their_lines(tmp_path):
    (tmp_path / "id_class_mapping.json").write_text(json.dumps({"1": "lbw", "5": "run out"}))
    rows = [
        "aaa__5_1.mp4,bbb__5_2.mp4,10.0,20.0,5,60.0",    # 2 good
        "aaa__5_1.mp4,bbb__5_2.mp4,20.0,10.0,5,60.0",    # 3 end before start
        "aaa__5_1.mp4,bbb__5_2.mp4,50.0,70.0,5,60.0",    # 4 outside the duration
        "aaa__9_1.mp4,bbb__9_2.mp4,10.0,20.0,9,60.0",    # 5 unknown class
        "aaa__5_1.mp4,bbb__5_2.mp4,10.0,20.0",           # 6 malformed: too few fields
        "aaa__5_1.mp4,bbb__5_2.mp4,ten,20.0,5,60.0",     # 7 malformed: not a number
        "aaa__5_1.mp4,bbb__1_2.mp4,10.0,20.0,5,60.0",    # 8 class in the id disagrees
        "aaa__5_1.mp4,bbb__5_2.mp4,10.0,20.0,5,60.0",    # 9 duplicate of line 2
        "",                                              # blank lines are not rows
        "aaa__5_1.mp4,bbb__5_2.mp4,59.0,61.5,5,60.0",    # 11 overruns by 1.5 s: clipped
    ]
    path = _write(tmp_path, "pairs.csv", SM_HEADER + "\n" + "\n".join(rows) + "\n")
    r = ann.check(path)
    errors = {e["line"]: e["error"] for e in r.errors}
    assert sorted(errors) == [3, 4, 5, 6, 7, 8]
    assert errors[3] == "segment end 10 s is not after its start 20 s"
    assert errors[4] == "segment [50, 70) s is outside video 'bbb__5_2''s duration 60 s"
    assert errors[5] == "unknown class 9 (not in id_class_mapping.json)"
    assert errors[6].startswith("malformed row: 4 fields")
    assert errors[7] == "reference_segment_start is 'ten', not a number"
    assert "names class 1 but action_class is 5" in errors[8]
    assert (r.rows, r.valid, r.duplicates, r.skipped, r.clipped) == (9, 3, 1, 6, 1)
    with pytest.raises(InputError, match=r"pairs.csv:3: segment end 10 s is not after its start 20 s \(and 5 more"):
        ann.load(path)
    good = ann.load(path, on_error="skip")
    assert [p.line for p in good.records] == [2, 11] and good.records[1].spans == ((59.0, 60.0),)


def test_sportsmoments_checked_against_the_store(tmp_path, make_feature_store):
    store = make_feature_store({"aaa__5_1": 8.0, "bbb__5_2": 60.0, "ccc__5_3": 30.0})
    rows = [
        "aaa__5_1.mp4,bbb__5_2.mp4,10.0,20.0,5,60.0",    # 2 good
        "zzz__5_9.mp4,bbb__5_2.mp4,10.0,20.0,5,60.0",    # 3 query missing from the store
        "aaa__5_1.mp4,yyy__5_9.mp4,10.0,20.0,5,60.0",    # 4 reference missing from the store
        "aaa__5_1.mp4,ccc__5_3.mp4,10.0,20.0,5,60.0",    # 5 file's duration disagrees with the store's
    ]
    path = _write(tmp_path, "pairs.csv", SM_HEADER + "\n" + "\n".join(rows) + "\n")
    r = ann.check(path, store=store.uri)
    errors = {e["line"]: e["error"] for e in r.errors}
    assert sorted(errors) == [3, 4, 5]
    assert errors[3] == f"video 'zzz__5_9' is not in the feature store {store.uri}"
    assert errors[4] == f"video 'yyy__5_9' is not in the feature store {store.uri}"
    assert errors[5] == f"reference_duration 60 s of video 'ccc__5_3' disagrees with the feature store {store.uri} (30 s)"
    # with a folder prefix, the ids map to the store's ids under that folder
    pref = make_feature_store({"sm/aaa__5_1": 8.0, "sm/bbb__5_2": 60.0})
    one = _write(tmp_path, "one.csv", SM_HEADER + "\n" + rows[0] + "\n")
    a = ann.load(one, store=pref, video_id_prefix="sm/")
    assert a.records[0].query_video == "sm/aaa__5_1" and a.report.errors == []


def test_header_problems_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match=r"bad.csv:1: header lacks \['reference_duration'\]"):
        ann.load(_write(tmp_path, "bad.csv", SM_HEADER.rsplit(",", 1)[0] + "\n"), "sportsmoments")
    with pytest.raises(InputError, match="empty file"):
        ann.load(_write(tmp_path, "empty.csv", ""), "matches")
    with pytest.raises(InputError, match="not found"):
        ann.load(str(tmp_path / "missing.csv"), "matches")
    with pytest.raises(InputError, match="not valid JSON"):
        ann.load(_write(tmp_path, "broken.json", '{"v_a": {"duration": 3,'), "activitynet-captions")


def test_match_annotations_bad_rows(tmp_path, make_feature_store):
    (tmp_path / "classes.txt").write_text("# soccer\ngoal\ncorner kick\n")
    rows = [
        "m1,goal,10,12.5",          # 2 good
        "m1,corner kick,30,28",     # 3 end before start
        "m1,goal,95,105",           # 4 outside the 100 s video
        "m1,bicycle kick,5,6",      # 5 unknown class
        "m1,goal,5",                # 6 malformed
        "m9,goal,1,2",              # 7 missing from the store
        "m1,goal,10,12.5",          # 8 duplicate
        "m1,goal,-1,2",             # 9 before 0
    ]
    path = _write(tmp_path, "matches.csv", "video_id,action_class,start,end\n" + "\n".join(rows) + "\n")
    store = make_feature_store({"m1": 100.0})
    r = ann.check(path, store=store)
    errors = {e["line"]: e["error"] for e in r.errors}
    assert sorted(errors) == [3, 4, 5, 6, 7, 9]
    assert errors[3] == "instance end 28 s is not after its start 30 s"
    assert errors[4] == "instance [95, 105) s is outside video 'm1''s duration 100 s"
    assert errors[5] == "unknown class 'bicycle kick' (not in the class list)"
    assert errors[6] == "malformed row: 3 fields, the header has 4"
    assert "'m9' is not in the feature store" in errors[7]
    assert "starts before 0" in errors[9]
    assert (r.rows, r.valid, r.duplicates) == (8, 2, 1)
    # without a store nothing is known about durations: ranges beyond it pass, and the rows are counted unchecked
    r2 = ann.check(path)
    assert sorted(e["line"] for e in r2.errors) == [3, 5, 6, 9] and r2.unchecked == 4
    recs = ann.load(path, store=store, on_error="skip").records
    assert recs == [ActionInstance("m1", "goal", 10.0, 12.5, line=2)]


def test_qvhighlights_bad_rows(tmp_path, make_feature_store):
    good = {"qid": 1, "query": "a goal", "duration": 150, "vid": "v1", "relevant_windows": [[0, 16], [20, 30]]}
    rows = [
        good,                                                              # 1
        {**good, "qid": 2, "relevant_windows": [[16, 4]]},                 # 2 end before start
        {**good, "qid": 3, "relevant_windows": [[140, 160]]},              # 3 outside
        "{not json",                                                       # 4 malformed
        {k: v for k, v in good.items() if k != "vid"},                     # 5 missing key
        {**good, "qid": 1, "query": "another sentence"},                   # 6 qid repeated, other content
        good,                                                              # 7 duplicate
        {**good, "qid": 8, "vid": "v_missing"},                            # 8 not in store
        {**good, "qid": 9, "duration": 120},                               # 9 duration disagrees with the store
    ]
    text = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n"
    path = _write(tmp_path, "q.jsonl", text)
    store = make_feature_store({"v1": 150.0})
    r = ann.check(path, store=store)
    errors = {e["line"]: e["error"] for e in r.errors}
    assert sorted(errors) == [2, 3, 4, 5, 6, 8, 9]
    assert errors[2] == "relevant_windows[0] end 4 s is not after its start 16 s"
    assert errors[3] == "relevant_windows[0] [140, 160) s is outside video 'v1''s duration 150 s"
    assert errors[4].startswith("malformed row: not valid JSON")
    assert errors[5] == "malformed row: missing ['vid']"
    assert errors[6] == "qid 1 repeats line 1 with different content"
    assert "'v_missing' is not in the feature store" in errors[8]
    assert "duration 120 s of video 'v1' disagrees" in errors[9]
    assert r.duplicates == 1


def test_charades_bad_rows_and_store_durations(tmp_path, make_feature_store):
    rows = ["AAAAA 1.0 5.5##person opens a door.", "AAAAA 6 2##person sits.", "AAAAA 25.0 40.0##too late.",
            "AAAAA 1.0##no end.", "AAAAA 1 2 person without separator", "BBBBB 1 2##missing video.",
            "AAAAA 28.5 31.0##overruns by 1 s."]
    path = _write(tmp_path, "charades_sta_test.txt", "\n".join(rows) + "\n")
    store = make_feature_store({"AAAAA": 30.0})
    r = ann.check(path, store=store)
    errors = {e["line"]: e["error"] for e in r.errors}
    assert sorted(errors) == [2, 3, 4, 5, 6]
    assert errors[2] == "segment end 2 s is not after its start 6 s"
    assert errors[3] == "segment [25, 40) s is outside video 'AAAAA''s duration 30 s"
    assert errors[4].startswith("malformed row: expected 'VID start end' before '##'")
    assert errors[5] == "malformed row: expected 'VID start end##sentence'"
    assert "'BBBBB' is not in the feature store" in errors[6]
    assert r.clipped == 1 and r.unchecked == 0
    last = ann.load(path, store=store, on_error="skip").records[-1]
    assert last.spans == ((28.5, 30.0),) and last.qid == "AAAAA#7"
    assert 31.0 - 30.0 <= OVERRUN_TOLERANCE


def test_captions_bad_records(tmp_path):
    data = {
        "v_a": {"duration": 50.0, "timestamps": [[0, 10], [12, 8], [40, 60]], "sentences": ["one.", "two.", "three."]},
        "v_b": {"duration": 20.0, "timestamps": [[0, 10]], "sentences": ["x.", "y."]},
        "v_c": {"timestamps": [[0, 1]], "sentences": ["z."]},
    }
    path = _write(tmp_path, "captions.json", json.dumps(data))
    r = ann.check(path)
    errors = {e["line"]: e["error"] for e in r.errors}
    assert errors == {
        2: "video 'v_a' sentence 1: timestamp end 8 s is not after its start 12 s",
        3: "video 'v_a' sentence 2: timestamp [40, 60) s is outside video 'v_a''s duration 50 s",
        4: "video 'v_b': malformed record: 1 timestamps for 2 sentences",
        5: "video 'v_c' sentence 0: malformed record: missing ['duration']",
    }
    assert (r.rows, r.valid) == (5, 1)


def test_vrl_bad_records(tmp_path):
    (tmp_path / "length.json").write_text(json.dumps({"a": {"n_frames": 1600, "n_feat": 100}}))
    items = [
        {"id": "a", "label": 1, "location": [0, 50], "groundtruth": [10, 20]},     # 1 good
        {"id": "a", "label": 1, "location": [60, 50], "groundtruth": [1, 2]},      # 2 location reversed
        {"id": "a", "label": 1, "location": [0, 50], "groundtruth": [10, 60]},     # 3 gt past the location
        {"id": "a", "label": 1, "location": [90, 120], "groundtruth": [1, 2]},     # 4 past n_feat
        {"id": "a", "label": "x", "location": [0, 50], "groundtruth": [1, 2]},     # 5 malformed label
        {"id": "a", "location": [0, 50], "groundtruth": [1, 2]},                   # 6 missing key
        {"id": "b", "label": 1, "location": [0, 50], "groundtruth": [1, 2]},       # 7 not in length.json
    ]
    path = _write(tmp_path, "val.json", json.dumps(items))
    assert ann.guess_file_format(path) == "activitynet-vrl"
    r = ann.check(path)
    errors = {e["line"]: e["error"] for e in r.errors}
    assert errors == {
        2: "video 'a': location end 50 is not after its start 60",
        3: "video 'a': groundtruth [10, 60] (relative to location) ends past the location's 50 features",
        4: "video 'a': location [90, 120] is outside the video's 100 features (length.json)",
        5: "video 'a': label 'x' is not a feature index",
        6: "malformed record: missing ['label']",
    }
    assert r.unchecked == 1 and r.valid == 2
    recs = activitynet_vrl.load(path, convert=False, on_error="skip").records
    assert [x.location for x in recs] == [(0, 50), (0, 50)]


# ---- the CLI -----------------------------------------------------------------------------------------------------


def test_check_cli_json_on_a_real_file(shared_data, capsys):
    rc = main(["annotations", "check", str(shared_data / "annotations" / "sportsmoments" / "test.csv"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert {k: out[k] for k in ("format", "rows", "valid", "duplicates", "errors")} == {
        "format": "sportsmoments", "rows": 10000, "valid": 10000, "duplicates": 42, "errors": []}


def test_check_cli_on_a_bad_file(tmp_path, capsys, make_feature_store):
    path = _write(tmp_path, "m.csv", "video_id,action_class,start,end\nm1,goal,3,1\nm1,goal,1,3\nm2,goal,1,3\n")
    store = make_feature_store({"m1": 10.0})
    rc = main(["annotations", "check", path, "--format", "matches", "--store", store.uri, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert out["format"] == "matches" and out["rows"] == 3 and out["valid"] == 1 and out["duplicates"] == 0
    assert out["errors"] == [{"line": 2, "error": "instance end 1 s is not after its start 3 s"},
                             {"line": 4, "error": f"video 'm2' is not in the feature store {store.uri}"}]
    rc = main(["annotations", "check", path])
    text = capsys.readouterr().out
    assert rc == 1 and f"{path}:2: instance end 1 s is not after its start 3 s" in text and "3 rows" in text


def test_check_cli_unreadable_file_is_one_line(tmp_path, capsys):
    rc = main(["annotations", "check", str(tmp_path / "nope.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip().count("\n") == 0 and "not found" in err
    rc = main(["annotations", "check", _write(tmp_path, "x.txt", "what is this\n")])
    err = capsys.readouterr().err
    assert rc == 2 and "--format" in err and "Traceback" not in err


# ---- object storage ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_files_and_side_files_on_s3(s3_server, shared_data, tmp_path, capsys):
    """Annotations usually sit in a bucket: the side files (length.json, id_class_mapping.json) are found next to the
    file there too, and the check runs against a feature store in S3."""
    base = s3_server.bucket()
    d = shared_data / "annotations"
    for rel in ("sportsmoments/test.csv", "sportsmoments/id_class_mapping.json", "activitynet-vrl/val.json",
                "activitynet-vrl/length.json"):
        s3_server.upload(d / rel, f"{base}/{rel}")
    r = ann.check(f"{base}/sportsmoments/test.csv")
    assert (r.format, r.rows, r.duplicates, r.errors) == ("sportsmoments", 10000, 42, [])
    assert any("id_class_mapping.json" in n for n in r.notes)
    r = ann.check(f"{base}/activitynet-vrl/val.json")
    assert r.rows == 829 and r.errors == [] and any("length.json" in n for n in r.notes)

    from vmr.features.store import FeatureStore

    store = FeatureStore(f"{base}/features")
    ts = np.arange(20) / 2.0
    f = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    store.write("m1", ts, f, dict(source_uri="s3://x/m1.mp4", source_size=1, source_etag="e", duration=10.0, fps=2.0,
                                  model="ViT-B-32", pretrained="none", extractor_version="test"))
    s3_server.upload(_write(tmp_path, "m.csv", "video_id,action_class,start,end\nm1,goal,1,3\nm1,goal,8,13\n"),
                     f"{base}/matches/m.csv")
    rc = main(["annotations", "check", f"{base}/matches/m.csv", "--store", store.uri, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1 and out["errors"] == [{"line": 3, "error": "instance [8, 13) s is outside video 'm1''s duration 10 s"}]
