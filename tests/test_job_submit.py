"""``ray job submit`` of the pretrain workflow to a real Ray cluster started with ``ray start --head`` on loopback,
with token authentication on; the run must succeed and be found in MLflow.

The cluster is the ``ray_head`` fixture (tests/fixtures/ray_head.py): its own process group, ports and temp dir.
"""
from __future__ import annotations

import re
import secrets
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_ray_job_submit_runs_pretraining_and_lands_in_mlflow(ray_head, tmp_path):
    # token auth is on: a client with another token is refused
    wrong = {**ray_head.env, "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    refused = ray_head.ray("job", "list", "--address", ray_head.address, env=wrong, timeout=60)
    assert refused.returncode != 0

    workdir = tmp_path / "wd"
    job_id = f"vmr-pretrain-{uuid.uuid4().hex[:6]}"
    args = ["job", "submit", "--address", ray_head.address, "--submission-id", job_id, "--working-dir", str(ROOT),
            "--", "python", "workflows/pretrain.py", "--run-name", "job", "--workdir", str(workdir),
            "data.demo.n_videos=3", "data.demo.duration_range=[30,36]", "data.demo.size=[160,120]",
            "data.demo.length_range=[4,8]", "data.features.model=ViT-S-32", "data.stream.max_target=24",
            "data.stream.max_query=8", "data.clips.clip_min=4", "data.clips.clip_max=8", "data.clip_draws=1",
            "model.matr.d_model=32", "model.matr.ff_dim=64", "model.matr.enc_layers=1", "model.matr.dec_layers=1",
            "model.matr.heads=2", "model.matr.queries=4", "train.epochs=1", "train.batch_size=8"]
    submitted = ray_head.ray(*args, timeout=1500)
    status = ray_head.ray("job", "status", "--address", ray_head.address, job_id, timeout=60)
    said = re.sub(r"\x1b\[[0-9;]*m", "", status.stdout + status.stderr)
    assert re.search(rf"job '{job_id}' succeeded", said, re.I), (submitted.stdout[-4000:], submitted.stderr[-4000:])
    assert submitted.returncode == 0
    assert "registered models:/vmr-matr-pretrained/1" in submitted.stdout
    # the job's log reads as the workflow's own lines: each epoch once, no Ray Train report or state-API noise
    assert submitted.stdout.count("epoch 1/1 ") == 1, submitted.stdout[-4000:]
    assert "Reporting training result" not in submitted.stdout
    assert "Failed to query Ray Train Controller" not in submitted.stdout

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    exp = client.get_experiment_by_name("vmr-pretrain")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`vmr.run_name` = 'job'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["train.epochs"] == "1" and "train/loss" in runs[0].data.metrics
    assert (workdir / "runs" / "job" / "vmr_summary.json").is_file()
