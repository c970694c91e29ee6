import json

import numpy as np
import pytest

from vmr.errors import InputError
from vmr.metrics.io import prediction_row, read_ground_truth, read_predictions, write_jsonl
from vmr.metrics.moment_detr import (
    eval_highlight,
    eval_moment_retrieval,
    eval_submission,
    query_average_precision,
    ranking_average_precision,
)
from vmr.metrics.video_query import summarize_ious, top1_iou, video_query_metrics


# ------------------------------------------------------------------------------------------- golden: QVHighlights val
@pytest.fixture(scope="module")
def qvh(shared_data):
    d = shared_data / "annotations" / "qvhighlights"
    preds = read_predictions(str(d / "sample_val_preds.jsonl"))
    gt = read_ground_truth(str(d / "highlight_val_release.jsonl"))
    reference = json.loads((d / "sample_val_preds_metrics_raw.json").read_text())
    return preds, gt, reference


def test_reproduces_reference_metrics_exactly(qvh):
    preds, gt, reference = qvh
    ours = eval_submission(preds, gt)
    # every key of every section, including the HL-* highlight metrics, and the key order of the reference file
    assert list(ours) == list(reference)
    assert list(ours["brief"]) == list(reference["brief"])
    for section, values in reference.items():
        assert ours[section] == values, section
    mr_keys = [k for k in reference["brief"] if k.startswith("MR-")]
    assert len(mr_keys) == 8
    assert json.dumps(ours, indent=4) == json.dumps(reference, indent=4)


def test_reference_numbers_move_when_predictions_change(qvh):
    """The golden match is not an accident of the inputs: shifting every top-1 window lowers R1 and mAP."""
    preds, gt, reference = qvh
    shifted = []
    for row in preds:
        w = [list(x) for x in row["pred_relevant_windows"]]
        w[0] = [w[0][0] + 20.0, w[0][1] + 20.0, w[0][2]]
        shifted.append({**row, "pred_relevant_windows": w})
    mr = eval_moment_retrieval(shifted, gt)
    assert mr["full"]["MR-R1"]["0.5"] < reference["full"]["MR-R1"]["0.5"] - 10
    assert mr["full"]["MR-mAP"]["average"] < reference["full"]["MR-mAP"]["average"]


# --------------------------------------------------------------------------------------------- moment-detr by hand
def _row(qid, windows, **kw):
    return {"qid": qid, "vid": f"v{qid}", "pred_relevant_windows": windows, **kw}


def _gt(qid, windows, **kw):
    return {"qid": qid, "vid": f"v{qid}", "duration": 150, "relevant_windows": windows, **kw}


def test_ap_counts_a_late_hit_and_a_duplicate_as_false_positive():
    gt = np.array([[0.0, 10.0]])
    # a miss ranked first, then the hit: precision at the hit is 1/2
    np.testing.assert_allclose(query_average_precision(np.array([[20, 30, 0.9], [0, 10, 0.8]]), gt), 0.5)
    # the same window twice: the second is a false positive after full recall: AP stays 1
    np.testing.assert_allclose(query_average_precision(np.array([[0, 10, 0.9], [0, 10, 0.8]]), gt), 1.0)
    # ranked by score, not by list order
    np.testing.assert_allclose(query_average_precision(np.array([[20, 30, 0.1], [0, 10, 0.8]]), gt), 1.0)
    # two ground-truth windows, one found: AP 0.5
    two = np.array([[0.0, 10.0], [50.0, 60.0]])
    np.testing.assert_allclose(query_average_precision(np.array([[0, 10, 0.9]]), two), 0.5)


def test_ap_depends_on_the_iou_threshold():
    gt = np.array([[0.0, 10.0]])
    pred = np.array([[0.0, 6.0, 1.0]])  # IoU 0.6
    ap = query_average_precision(pred, gt)
    thresholds = np.round(np.arange(0.5, 0.96, 0.05), 2)
    np.testing.assert_array_equal(ap, (thresholds <= 0.6).astype(float))


def test_r1_uses_the_best_overlapping_window_and_buckets_split_windows():
    gt = [_gt(1, [[0, 5], [100, 140]])]  # a 5 s (short) and a 40 s (long) window
    preds = [_row(1, [[100, 140, 0.9], [0, 5, 0.5]])]
    mr = eval_moment_retrieval(preds, gt)
    assert mr["full"]["MR-R1"]["0.95"] == 100.0  # paired with [100, 140], not the first window
    assert mr["long"]["MR-R1"]["0.5"] == 100.0
    assert mr["short"]["MR-R1"]["0.5"] == 0.0  # in the short bucket only [0, 5] remains
    assert mr["short"]["MR-mAP"]["0.5"] == 50.0  # found second, precision 1/2
    assert "middle" not in mr  # no window in (10, 30]
    assert mr["full"]["MR-mAP"]["average"] == 100.0


def test_empty_prediction_is_a_miss():
    gt = [_gt(1, [[0, 10]]), _gt(2, [[0, 10]])]
    mr = eval_moment_retrieval([_row(1, [[0, 10, 1.0]]), _row(2, [])], gt)
    assert mr["full"]["MR-R1"]["0.5"] == 50.0 and mr["full"]["MR-mAP"]["average"] == 50.0


def test_qid_sets_must_match_unless_shared_only():
    gt = [_gt(1, [[0, 10]]), _gt(2, [[0, 10]])]
    preds = [_row(1, [[0, 10, 1.0]])]
    with pytest.raises(InputError, match="same qids"):
        eval_submission(preds, gt)
    assert eval_submission(preds, gt, match_number=False)["brief"]["MR-full-R1@0.5"] == 100.0
    with pytest.raises(InputError, match="duplicate"):
        eval_submission(preds + preds, gt, match_number=False)


def test_ranking_ap_by_hand():
    assert ranking_average_precision([1, 0, 1], [0.9, 0.8, 0.7]) == pytest.approx((1 + 2 / 3) / 2)
    assert ranking_average_precision([0, 1], [0.9, 0.1]) == pytest.approx(0.5)
    assert ranking_average_precision([1, 1, 0], [0.2, 0.3, 0.1]) == pytest.approx(1.0)
    assert ranking_average_precision([0, 0], [0.2, 0.3]) == 0.0
    assert ranking_average_precision([1, 1], [0.2, 0.3]) == 1.0


def test_highlight_hit_and_padding_rule():
    gt = [_gt(1, [[0, 4]], duration=8, relevant_clip_ids=[0, 1], saliency_scores=[[4, 4, 4], [1, 1, 2]])]
    # top clip 0 is VeryGood for everyone; only 3 of the 4 clips scored: the 4th counts as score 0
    hl = eval_highlight([_row(1, [[0, 4, 1]], pred_saliency_scores=[0.9, 0.5, 0.1])], gt)
    assert hl["HL-min-VeryGood"] == {"HL-mAP": 100.0, "HL-Hit1": 100.0}
    # Fair (>= 2): clip 1 is positive only for annotator 3, ranked 2nd after positive clip 0: AP 1 there too
    assert hl["HL-min-Fair"]["HL-mAP"] == 100.0
    # a top-scored clip that is negative for everyone: no hit
    hl = eval_highlight([_row(1, [[0, 4, 1]], pred_saliency_scores=[0.1, 0.5, 0.9, 0.0])], gt)
    assert hl["HL-min-VeryGood"]["HL-Hit1"] == 0.0
    assert hl["HL-min-VeryGood"]["HL-mAP"] == pytest.approx(33.33)  # clip 0 ranked 3rd: precision 1/3


# ----------------------------------------------------------------------------------------------------- video query
def test_video_query_metrics_by_hand():
    gt = [_gt("a", [[0, 10]]), _gt("b", [[0, 10]]), _gt("c", [[0, 10]])]
    preds = [
        _row("a", [[50, 60, 0.1], [0, 10, 0.9]]),  # unsorted: the top-scored window [0, 10] is scored, IoU 1
        _row("b", [[0, 4, 0.7]]),                  # IoU 0.4
        _row("zzz", [[0, 10, 1.0]]),               # not in the ground truth: ignored, counted
    ]                                              # "c" has no prediction: IoU 0
    m = video_query_metrics(preds, gt)
    assert m["n"] == 3 and m["n_missing"] == 1 and m["n_extra"] == 1
    assert m["R1@0.3"] == pytest.approx(200 / 3)
    assert m["R1@0.5"] == pytest.approx(100 / 3) and m["R1@0.7"] == pytest.approx(100 / 3)
    assert m["mIoU"] == pytest.approx(100 * 1.4 / 3)


def test_video_query_rejects_duplicates_and_uses_best_gt():
    gt = [_gt(1, [[0, 10], [20, 30]])]
    with pytest.raises(InputError, match="duplicate qid 1"):
        video_query_metrics([_row(1, [[0, 10, 1]]), _row(1, [[20, 30, 1]])], gt)
    assert video_query_metrics([_row(1, [[20, 30, 1]])], gt)["mIoU"] == pytest.approx(100.0)
    assert top1_iou(np.zeros((0, 3)), [[0, 1]]) == 0.0
    assert summarize_ious([1.0, 0.5, 0.29])["R1@0.3"] == pytest.approx(200 / 3)


# ------------------------------------------------------------------------------------------------------ jsonl i/o
def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize("line, message", [
    ('{"qid": 1, "pred_relevant_windows": [[0, 1, 0.5]]', r"preds.jsonl:2: not valid JSON"),
    ('[1, 2]', r"preds.jsonl:2: expected a JSON object"),
    ('{"pred_relevant_windows": []}', r"preds.jsonl:2: missing 'qid'"),
    ('{"qid": 2, "pred_relevant_windows": [[0, 1]]}', r"preds.jsonl:2: pred_relevant_windows\[0\].*\[start, end, score\]"),
    ('{"qid": 2, "pred_relevant_windows": [[5, 1, 0.3]]}', r"preds.jsonl:2: .*ends before it starts"),
    ('{"qid": 2, "pred_relevant_windows": [[0, NaN, 0.3]]}', r"preds.jsonl:2: .*finite"),
    ('{"qid": 1, "pred_relevant_windows": []}', r"preds.jsonl:2: duplicate qid 1 \(first on line 1\)"),
    ('{"qid": 2, "relevant_windows": [[0, 1]]}', r"preds.jsonl:2: missing 'pred_relevant_windows' \(is this a ground-truth"),
])
def test_prediction_errors_name_file_and_line(tmp_path, line, message):
    path = _write(tmp_path / "preds.jsonl", ['{"qid": 1, "pred_relevant_windows": [[0, 1, 0.5]]}', line])
    with pytest.raises(InputError, match=message):
        read_predictions(path)


@pytest.mark.parametrize("line, message", [
    ('{"qid": 1, "relevant_windows": [[0, 1, 2]]}', r"gt.jsonl:3: relevant_windows\[0\]"),
    ('{"qid": 1, "relevant_windows": [[0, 1]], "duration": -3}', r"gt.jsonl:3: 'duration' must be a positive number"),
    ('{"qid": 1, "relevant_windows": [], "relevant_clip_ids": [1, 2], "saliency_scores": [[1, 1, 1]]}',
     r"gt.jsonl:3: 'relevant_clip_ids' and 'saliency_scores'"),
    ('{"qid": 1, "pred_relevant_windows": []}', r"gt.jsonl:3: missing 'relevant_windows' \(is this a predictions"),
])
def test_ground_truth_errors_name_file_and_line(tmp_path, line, message):
    path = _write(tmp_path / "gt.jsonl", ['{"qid": 0, "relevant_windows": [[0, 1]]}', "", line])
    with pytest.raises(InputError, match=message):
        read_ground_truth(path)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_predictions(str(tmp_path / "nope.jsonl"))
    with pytest.raises(InputError, match="no rows"):
        read_ground_truth(_write(tmp_path / "empty.jsonl", [""]))


def test_write_then_read_round_trip(tmp_path):
    windows = np.array([[1.5, 4.0, 0.9], [10.0, 12.0, 0.2]], dtype=np.float32)
    rows = [prediction_row(np.int64(7), "match1", windows), prediction_row("q2", "match2", np.zeros((0, 3)))]
    uri = str(tmp_path / "out" / "preds.jsonl")
    write_jsonl(uri, rows)
    back = read_predictions(uri)
    assert back[0]["qid"] == 7 and back[0]["pred_relevant_windows"] == [[1.5, 4.0, pytest.approx(0.9)],
                                                                        [10.0, 12.0, pytest.approx(0.2)]]
    assert back[1] == {"qid": "q2", "vid": "match2", "pred_relevant_windows": []}
