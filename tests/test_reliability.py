"""Hardening: no code runs from a checkpoint, secrets stay out of files and logs, corrupt or racing stores are
reported and repaired, and unreachable services fail fast with one line. Real parts throughout (files, torch, the
loopback S3 server, closed loopback ports)."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from vmr.errors import InputError
from vmr.features.settings import FeatureSettings
from vmr.models.checkpoint import TRAIN_STATE_FILE, load_state, load_train_state, save_checkpoint
from vmr.models.matr import MATR, MATRConfig

ROOT = Path(__file__).resolve().parents[1]
DIM = 16
SETTINGS = FeatureSettings(model="ViT-B-32", pretrained="none", fps=1.0)


def _tiny_matr() -> MATR:
    torch.manual_seed(0)
    return MATR(MATRConfig(in_dim=DIM, d_model=16, ff_dim=32, enc_layers=1, dec_layers=1, heads=2, queries=2))


# ---- checkpoints: weights_only ------------------------------------------------------------------------------------


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: code run by the file's reader."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _train_state(model) -> dict:
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return {"epoch": 1, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "scaler": torch.amp.GradScaler("cuda", enabled=False).state_dict(),
            "history": [{"epoch": 0, "val/mIoU": np.float64(12.5), "val/n": np.int64(4)}]}


def test_a_crafted_train_state_runs_no_code_and_gives_one_line(tmp_path):
    ckpt = tmp_path / "ck"
    save_checkpoint(str(ckpt), _tiny_matr(), SETTINGS, train_state={"epoch": 0})
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save({"epoch": 0, "x": _Payload(str(marker))}, buf)
    (ckpt / TRAIN_STATE_FILE).write_bytes(buf.getvalue())
    for load in (load_state, load_train_state):
        with pytest.raises(InputError) as e:
            load(str(ckpt))
        assert not marker.exists()
        msg = str(e.value)
        assert "\n" not in msg and TRAIN_STATE_FILE in msg and str(ckpt) in msg and "refusing" in msg


def test_train_states_with_numpy_metrics_resume_old_and_new(tmp_path):
    model = _tiny_matr()
    state = _train_state(model)
    # new: numpy scalars become plain numbers on save, so the file is tensors and plain values only
    save_checkpoint(str(tmp_path / "new"), model, SETTINGS, train_state=state)
    blob = (tmp_path / "new" / TRAIN_STATE_FILE).read_bytes()
    plain = torch.load(io.BytesIO(blob), weights_only=True)
    assert plain["history"][0]["val/mIoU"] == 12.5 and type(plain["history"][0]["val/mIoU"]) is float
    # old: written with the numpy scalars in it (as vmr did before), still resumes
    save_checkpoint(str(tmp_path / "old"), model, SETTINGS, train_state={"epoch": 0})
    buf = io.BytesIO()
    torch.save(state, buf)
    (tmp_path / "old" / TRAIN_STATE_FILE).write_bytes(buf.getvalue())
    weights, old, _ = load_state(str(tmp_path / "old"))
    assert old["epoch"] == 1 and float(old["history"][0]["val/mIoU"]) == 12.5
    torch.optim.AdamW(model.parameters()).load_state_dict(old["optimizer"])
    assert set(weights) == set(model.state_dict())


# ---- secrets: never forwarded to Ray, so never in its logs --------------------------------------------------------


def _files_holding(root: Path, needles: list[str]) -> list[str]:
    """Every file under ``root`` whose bytes hold one of ``needles``."""
    found = []
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            try:
                data = p.read_bytes()
            except OSError:
                continue
            if any(n.encode() in data for n in needles):
                found.append(str(p.relative_to(root)))
    return found


@pytest.mark.slow
def test_s3_credentials_stay_out_of_ray_logs_and_output(s3_server, rendered_videos, tmp_path):
    """A real extraction through a local Ray that the command starts: the S3 secret key (which the server needs, so
    the workers had it) and a dummy MLflow password are in no file of that Ray's session folder and no printed line."""
    from fixtures.s3 import SECRET_KEY

    bucket = s3_server.bucket()
    s3_server.upload(rendered_videos / "h264.mkv", bucket + "/raw/a.mkv")
    s3_server.upload(rendered_videos / "ntsc.mp4", bucket + "/raw/b.mp4")
    ray_tmp = Path(tempfile.mkdtemp(prefix="vr", dir="/tmp"))  # short: Ray's socket paths live below it
    secrets = [SECRET_KEY, "dummy-mlflow-password-5b1f"]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    env.update(s3_server.env(), RAY_TMPDIR=str(ray_tmp), MLFLOW_TRACKING_PASSWORD=secrets[1], PYTHONUNBUFFERED="1")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "vmr.cli", "extract", "--videos", bucket + "/raw", "--out", bucket + "/features",
             "--model", "ViT-S-32", "--pretrained", "none", "--fps", "1", "--batch-size", "8", "--json"],
            env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout.strip().splitlines()[-1])["ok"] == 2
        sessions = list(ray_tmp.glob("ray/session_*"))
        assert sessions and any((s / "logs").is_dir() for s in sessions)
        assert _files_holding(ray_tmp, secrets) == []
        assert not any(s in done.stdout + done.stderr for s in secrets)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


# ---- secrets: redacted where a config is dumped or a tracking URI printed ----------------------------------------


def test_a_tracking_password_is_in_no_config_artifact_param_or_printed_line(mlflow_server, tmp_path):
    """A real MLflow server reached through ``http://user:password@host``: the config dumped for ``vmr_config.yaml``
    and logged as ``config.yaml``, the params, the run's address and the dashboard line all hide the password."""
    from mlflow import MlflowClient

    from vmr.config import dump_yaml, to_dict
    from vmr.pipeline.tracking import Tracker, dashboard_command
    from vmr.pipeline.workflow import resolve_config

    password = "pw-7d1c9e0a"
    uri = mlflow_server.uri.replace("http://", f"http://vmr-user:{password}@")
    cfg, _ = resolve_config("finetune", None, [f"tracking.tracking_uri={uri}", f"data.workdir={tmp_path}"])
    text = dump_yaml(cfg)
    assert password not in text and "http://vmr-user:***@127.0.0.1" in text
    tracker = Tracker(uri, "vmr-redaction")  # the server accepts (and ignores) the basic-auth credentials
    run_id = tracker.start_run("redacted", to_dict(cfg), config_yaml=text)
    client = MlflowClient(mlflow_server.uri)
    logged = (Path(client.download_artifacts(run_id, "config.yaml", str(tmp_path))).read_text())
    assert password not in logged and "vmr-user:***@" in logged
    params = client.get_run(run_id).data.params
    assert params["tracking.tracking_uri"] == uri.replace(password, "***")
    assert not any(password in v for v in params.values())
    for line in (tracker.run_url(), dashboard_command(uri)):
        assert password not in line and "vmr-user:***@" in line


# ---- file modes ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, mode):
    from vmr import storage

    old = os.umask(umask)
    try:
        storage.write_bytes_atomic(str(tmp_path / "a" / "f.json"), b"{}")
        storage.write_text_atomic(str(tmp_path / "a" / "f.json"), "{}")  # replacing keeps the rule
    finally:
        os.umask(old)
    assert (tmp_path / "a" / "f.json").stat().st_mode & 0o777 == mode
