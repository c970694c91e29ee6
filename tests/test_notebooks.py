"""The notebooks under notebooks/ are executed (nbclient, this venv's kernel) against the outputs of a real sweep
(``demo_sweep``: its MLflow store, feature store, demo footage and registered model), so that they never rot."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _execute(name: str, tmp_path: Path) -> list:
    """Run every cell of notebooks/<name>; returns the executed cells (an error in a cell fails the test)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    # a generous iopub_timeout: on a busy machine a cell's output can arrive seconds after its reply, and nbclient
    # would otherwise drop it
    NotebookClient(nb, timeout=600, iopub_timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    return [c for c in nb.cells if c.cell_type == "code"]


def _text(cells) -> str:
    out = []
    for c in cells:
        for o in c.get("outputs", []):
            if o.get("output_type") == "stream":
                out.append(o["text"])
            elif "data" in o:
                out.append(o["data"].get("text/plain", ""))
    return "\n".join(out)


def _images(cells) -> int:
    return sum("image/png" in o.get("data", {}) for c in cells for o in c.get("outputs", []))


def test_review_runs_notebook_compares_the_trials_of_a_sweep(demo_sweep, tmp_path, monkeypatch):
    monkeypatch.setenv("VMR_TRACKING_URI", demo_sweep["tracking_uri"])
    monkeypatch.setenv("VMR_EXPERIMENT", "vmr-tune")
    monkeypatch.setenv("VMR_SWEEP", "demo-sweep")
    cells = _execute("review_runs.ipynb", tmp_path)
    text = _text(cells)
    result = demo_sweep["result"]
    for expected in ("sweep: demo-sweep", f"best trial: {result['best_trial']}",
                     f"registered: {result['registered']}", *(t["trial_id"] for t in result["trials"])):
        assert expected in text, (expected, text)  # the sweep, its winner, one table row per trial
    assert _images(cells) >= 2  # the metric per epoch, and the hyperparameters against the score


def test_inspect_predictions_notebook_shows_moments_on_the_timeline_and_their_frames(demo_sweep, tmp_path,
                                                                                     monkeypatch):
    wd = demo_sweep["workdir"]
    monkeypatch.setenv("VMR_MODEL", demo_sweep["result"]["registered"])
    monkeypatch.setenv("VMR_TRACKING_URI", demo_sweep["tracking_uri"])
    monkeypatch.setenv("VMR_STORE", str(wd / "features"))
    monkeypatch.setenv("VMR_ANNOTATIONS", str(wd / "demo" / "annotations" / "matches.csv"))
    monkeypatch.setenv("VMR_TOP_K", "3")
    cells = _execute("inspect_predictions.ipynb", tmp_path)
    text = _text(cells)
    for expected in ("query:", "target:", "best IoU with a ground truth"):
        assert expected in text, (expected, text)
    table = next(o["data"]["text/plain"] for c in cells for o in c.get("outputs", [])
                 if "best IoU" in o.get("data", {}).get("text/plain", ""))
    assert len([line for line in table.splitlines()[1:] if line.strip()]) == 3  # VMR_TOP_K moments
    assert _images(cells) == 2  # the timeline, and the frames decoded at the moments
