import json
import subprocess
import sys
from pathlib import Path

import pytest

from vmr.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def qvh_files(shared_data):
    d = shared_data / "annotations" / "qvhighlights"
    return (str(d / "sample_val_preds.jsonl"), str(d / "highlight_val_release.jsonl"),
            json.loads((d / "sample_val_preds_metrics_raw.json").read_text()))


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_eval_json_reproduces_reference_in_process(qvh_files, capsys, tmp_path):
    preds, gt, reference = qvh_files
    out = tmp_path / "metrics.json"
    assert main(["eval", "--predictions", preds, "--ground-truth", gt, "--json", "--output", str(out)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == reference
    assert "moment-detr (guessed" in captured.err
    assert json.loads(out.read_text()) == reference


def test_eval_subprocess_prints_one_json_object(qvh_files):
    preds, gt, reference = qvh_files
    proc = subprocess.run(
        [sys.executable, "-m", "vmr.cli", "eval", "--predictions", f"file://{preds}", "--ground-truth", gt,
         "--task", "moment-detr", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == reference
    assert proc.stderr == ""


def test_eval_video_query_guessed_and_table(tmp_path, capsys):
    gt = _jsonl(tmp_path / "gt.jsonl", [
        {"qid": "q1", "vid": "m1", "duration": 60, "relevant_windows": [[10, 20]]},
        {"qid": "q2", "vid": "m1", "duration": 60, "relevant_windows": [[30, 40]]},
    ])
    preds = _jsonl(tmp_path / "p.jsonl", [
        {"qid": "q1", "vid": "m1", "pred_relevant_windows": [[10, 20, 0.9]]},
        {"qid": "q2", "vid": "m1", "pred_relevant_windows": [[0, 5, 0.9]]},
    ])
    assert main(["eval", "--predictions", preds, "--ground-truth", gt, "--json"]) == 0
    captured = capsys.readouterr()
    m = json.loads(captured.out)
    assert "video-query (guessed" in captured.err
    assert m["R1@0.5"] == 50.0 and m["mIoU"] == 50.0 and m["n"] == 2 and m["n_missing"] == 0
    assert main(["eval", "--predictions", preds, "--ground-truth", gt, "--task", "video-query"]) == 0
    table = capsys.readouterr().out
    assert "R1@0.7" in table and "50.00" in table and "{" not in table


def test_eval_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"qid": 1, "pred_relevant_windows": [[0, 1, 0.5]]}\n{"qid": 2,\n')
    gt = _jsonl(tmp_path / "gt.jsonl", [{"qid": 1, "relevant_windows": [[0, 1]]}])
    assert main(["eval", "--predictions", str(bad), "--ground-truth", gt]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.jsonl:2: not valid JSON" in err and err.startswith("vmr eval: error:")
    assert main(["eval", "--predictions", str(tmp_path / "none.jsonl"), "--ground-truth", gt]) == 2
    assert "none.jsonl: no such file" in capsys.readouterr().err
    # qid sets differ: moment-detr refuses unless --shared-only
    preds = _jsonl(tmp_path / "p.jsonl", [{"qid": 1, "pred_relevant_windows": [[0, 1, 1]]},
                                          {"qid": 5, "pred_relevant_windows": [[0, 1, 1]]}])
    assert main(["eval", "--predictions", preds, "--ground-truth", gt, "--task", "moment-detr"]) == 2
    assert "same qids" in capsys.readouterr().err
    assert main(["eval", "--predictions", preds, "--ground-truth", gt, "--task", "moment-detr",
                 "--shared-only", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["brief"]["MR-full-R1@0.5"] == 100.0
