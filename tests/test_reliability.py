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


# ---- damaged store files: one line naming the file, the other videos unaffected, a re-run repairs -----------------


def _write_video(store, vid: str, source_uri: str, size: int, etag: str, rows: int = 12, dim: int = 512) -> None:
    rng = np.random.default_rng(abs(hash(vid)) % 1000)
    f = rng.normal(size=(rows, dim)).astype(np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    store.write(vid, np.arange(rows) + 0.5, f, dict(
        source_uri=source_uri, source_size=size, source_etag=etag, duration=float(rows), fps=1.0,
        model="ViT-B-32", pretrained="none", extractor_version=SETTINGS.extractor_version))


def _cut(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_damaged_features_and_entries_give_one_line_and_hide_nothing_else(tmp_path, capsys):
    from vmr.cli import main
    from vmr.features.store import FeatureStore

    store = FeatureStore(str(tmp_path / "store"))
    for vid in ("v0", "v1", "v2"):
        _write_video(store, vid, f"synthetic://{vid}", 100, "1")
    _cut(tmp_path / "store/features/v0.npz")
    _cut(tmp_path / "store/manifest/v1.json")
    with pytest.raises(InputError) as e:
        store.load("v0")
    assert "damaged features file" in str(e.value) and "features/v0.npz" in str(e.value)
    assert "vmr extract" in str(e.value) and "\n" not in str(e.value)
    entry = json.loads((tmp_path / "store/manifest/v0.json").read_text())
    del entry["features_sha256"]  # as vmr < 0.2 wrote it: the cut zip itself is reported
    (tmp_path / "store/manifest/v0.json").write_text(json.dumps(entry))
    with pytest.raises(InputError, match=r"damaged features file .*v0\.npz \(BadZipFile"):
        store.load("v0")
    assert sorted(store.entries()) == ["v0", "v2"]  # the damaged entry hides only its own video
    with pytest.raises(InputError, match=r"damaged manifest entry .*manifest/v1\.json.*vmr extract"):
        store.entry("v1")
    assert store.load("v2").features.shape == (12, 512)
    # the same bytes cut short without the size check noticing (same length): the checksum catches them
    blob = bytearray((tmp_path / "store/features/v2.npz").read_bytes())
    blob[-200] ^= 0xFF
    (tmp_path / "store/features/v2.npz").write_bytes(bytes(blob))
    with pytest.raises(InputError, match="sha256"):
        store.load("v2")
    # through the CLI: one line, exit code 2, no traceback
    capsys.readouterr()
    code = main(["localize", "--text", "a sentence", "--model", "baseline", "--store", store.uri, "--target", "v0",
                 "--pretrained", "none"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "features/v0.npz" in err and "Traceback" not in err
    # import-features names the damaged source file
    src = tmp_path / "src"
    src.mkdir()
    np.savez(src / "q.npz", features=np.ones((4, 8), np.float32))
    _cut(src / "q.npz")
    code = main(["import-features", "--src", str(src), "--out", str(tmp_path / "imported"), "--clip-seconds", "2",
                 "--model", "ViT-B-32", "--pretrained", "none"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "q.npz" in err


def test_the_current_test_checks_the_features_and_a_rerun_repairs_them(tmp_path, rendered_videos):
    from vmr import storage
    from vmr.features.clip import ClipEncoder
    from vmr.features.extraction import extract_into_store, plan_extraction
    from vmr.features.store import FeatureStore

    src = tmp_path / "raw"
    src.mkdir()
    for name in ("a", "b", "c", "d"):
        (src / f"{name}.mp4").write_bytes(name.encode() * 1000)  # planning lists files, it never decodes them
    listed = {Path(f.uri).stem: f for f in storage.list_files(str(src))}
    store = FeatureStore(str(tmp_path / "store"))
    for vid, f in listed.items():
        _write_video(store, vid, f.uri, f.size, f.etag)
    settings = FeatureSettings("ViT-B-32", "none", 1.0)
    assert plan_extraction(str(src), store, settings).skipped == ["a", "b", "c", "d"]
    _cut(tmp_path / "store/features/a.npz")  # truncated
    (tmp_path / "store/features/b.npz").unlink()  # deleted
    _cut(tmp_path / "store/manifest/c.json")  # a damaged entry: redone, and the others still planned
    # an entry written before the features' size and checksum were recorded stays current while its file is whole
    e = json.loads((tmp_path / "store/manifest/d.json").read_text())
    for k in ("features_size", "features_sha256"):
        e.pop(k)
    (tmp_path / "store/manifest/d.json").write_text(json.dumps(e))
    plan = plan_extraction(str(src), store, settings)
    assert sorted(j.video_id for j in plan.todo) == ["a", "b", "c"] and plan.skipped == ["d"]
    _cut(tmp_path / "store/features/d.npz")
    assert [j.video_id for j in plan_extraction(str(src), store, settings).todo] == ["a", "b", "c", "d"]
    assert not store.is_current("a", listed["a"].size, listed["a"].etag, settings)

    # a real re-extraction repairs a cut features file
    video = tmp_path / "real" / "clip.mkv"
    video.parent.mkdir()
    shutil.copy(rendered_videos / "h264.mkv", video)
    encoder = ClipEncoder("ViT-S-32", "none", device="cpu", seed=0)
    store = FeatureStore(str(tmp_path / "s32"))
    first = extract_into_store(str(video), store, encoder, 1.0)
    _cut(tmp_path / "s32/features/clip.npz")
    again = extract_into_store(str(video), store, encoder, 1.0)
    assert np.allclose(again.features, first.features, atol=1e-5)
    assert store.load("clip").entry["features_size"] == (tmp_path / "s32/features/clip.npz").stat().st_size


# ---- dependencies -------------------------------------------------------------------------------------------------


def test_the_installed_s3fs_is_at_least_the_pinned_one():
    """pyproject pins s3fs (left free, pip resolved s3fs 0.4.2 of 2020 next to a current boto3)."""
    import importlib.metadata

    import tomllib
    from packaging.requirements import Requirement

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [Requirement(d) for d in deps if Requirement(d).name == "s3fs"]
    assert pin.specifier and all(s.operator == ">=" for s in pin.specifier)
    installed = importlib.metadata.version("s3fs")
    assert pin.specifier.contains(installed), f"s3fs {installed} installed; pyproject asks {pin}: pip install -e .[dev]"
    assert int(installed.split(".")[0]) >= 2026


# ---- unreachable services: one line, exit code 1 (retryable) ------------------------------------------------------


def _closed_port() -> int:
    """A loopback port nothing listens on (bound and released: connecting to it is refused)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_object_store_is_a_retryable_one_line_error(monkeypatch, tmp_path, capsys):
    from vmr.cli import main

    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    code = main(["extract", "--videos", "s3://bucket/x", "--out", str(tmp_path / "out"), "--pretrained", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1, err
    assert len(err) == 1 and "cannot reach the object store at " + endpoint in err[0] and "not found" not in err[0]
    code = main(["import-features", "--src", "s3://bucket/feats", "--out", str(tmp_path / "s"), "--clip-seconds", "2",
                 "--model", "ViT-B-32", "--pretrained", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and endpoint in err[0]


def _warm_imports() -> None:
    """Import what the commands below load, so that their timing measures the work, not the imports."""
    import open_clip  # noqa: F401

    import vmr.pipeline.extract  # noqa: F401
    import vmr.search.localizer  # noqa: F401


def test_without_network_the_default_weights_fail_within_seconds(monkeypatch, tmp_path, rendered_videos, capsys):
    """This machine has no route to the Hugging Face hub: the default ``--pretrained openai`` (not cached here) of
    extract, localize --model baseline and embed-text fails in under 5 s with one line naming the way out."""
    import time

    from vmr.cli import main
    from vmr.features import clip

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: nothing to fall back on
    clip.hub_offline_reason.cache_clear()
    if clip.hub_offline_reason() == "":
        pytest.skip("the Hugging Face hub answers from this machine")
    _warm_imports()
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(rendered_videos / "h264.mkv", raw / "a.mkv")
    commands = [
        ["extract", "--videos", str(raw), "--out", str(tmp_path / "store")],
        ["localize", "--query", str(raw / "a.mkv"), "--target", str(raw / "a.mkv"), "--model", "baseline"],
        ["embed-text", "a sentence"],
    ]
    for argv in commands:
        capsys.readouterr()
        t0 = time.perf_counter()
        code = main(argv)
        seconds = time.perf_counter() - t0
        err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("vmr ")]
        assert code == 1 and len(err) == 1, (argv, err)
        assert "--pretrained none" in err[0] and "checkpoint path" in err[0] and "no network" in err[0]
        assert seconds < 5, (argv, seconds)
    # offline mode set explicitly: no probe at all, the same line
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    clip.hub_offline_reason.cache_clear()
    try:
        assert main(["embed-text", "a sentence"]) == 1
        assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err
    finally:
        clip.hub_offline_reason.cache_clear()


# ---- smaller: one warning, no stray MLflow store, row errors, CLI flags in messages --------------------------------


def test_the_random_weights_warning_is_said_once_per_command(capsys, caplog):
    import logging

    from vmr.cli import main

    for argv in (["embed-text", "a ball", "--pretrained", "none"],
                 ["embed-text", "a ball", "--pretrained", "none", "--json"]):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert main(argv) == 0
        out = capsys.readouterr()
        said = (out.out + out.err).count("RANDOM weights") - out.out.count('"notice": "WARNING') \
            + sum("RANDOM weights" in r.getMessage() for r in caplog.records)
        assert said == 1, (argv, out, caplog.records)


def test_localize_without_a_model_leaves_no_mlflow_store_behind(monkeypatch, tmp_path, capsys):
    from vmr.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = tmp_path / "store"
    from vmr.features.store import FeatureStore

    _write_video(FeatureStore(str(store)), "v0", "synthetic://v0", 10, "1")
    assert main(["localize", "--text", "a ball", "--store", str(store), "--target", "v0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no MLflow store" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_annotations_check_reports_an_impossible_video_id_as_its_rows_error(tmp_path, capsys):
    import json as _json

    from vmr.cli import main
    from vmr.features.store import FeatureStore

    _write_video(FeatureStore(str(tmp_path / "store")), "v0", "synthetic://v0", 10, "1")
    csv = tmp_path / "m.csv"
    csv.write_text("video_id,action_class,start,end\nv0,drive,1,5\n../x,drive,1,5\nv0,cut,3,8\n")
    assert main(["annotations", "check", str(csv), "--store", str(tmp_path / "store"), "--json"]) == 1
    report = _json.loads(capsys.readouterr().out)
    assert report["rows"] == 3 and report["valid"] == 2
    assert [e["line"] for e in report["errors"]] == [3] and "../x" in report["errors"][0]["error"]


def test_the_moment_detr_qid_mismatch_names_the_cli_flag():
    from vmr.metrics.moment_detr import eval_moment_retrieval

    gt = [{"qid": q, "vid": "v", "duration": 10.0, "relevant_windows": [[1.0, 3.0]]} for q in (1, 2)]
    preds = [{"qid": 1, "vid": "v", "pred_relevant_windows": [[1.0, 3.0, 1.0]]}]
    with pytest.raises(InputError, match="--shared-only"):
        eval_moment_retrieval(preds, gt)


# ---- one store, one set of settings: racing writers -----------------------------------------------------------------


@pytest.mark.parametrize("where", ["local", "s3"])
def test_racing_claims_on_one_store_have_one_winner(where, tmp_path, s3_server):
    """Eight threads claim one empty store for four different fps at the same instant: the first conditional create
    of settings.json wins; exactly the claims with the winner's settings succeed."""
    import threading

    from vmr.features.store import FeatureStore

    uri = str(tmp_path / "store") if where == "local" else s3_server.bucket() + "/store"
    barrier = threading.Barrier(8)
    outcome: dict[int, str] = {}

    def claim(i: int) -> None:
        store = FeatureStore(uri)
        barrier.wait()
        try:
            store.claim_settings(FeatureSettings("ViT-S-32", "none", 1.0 + i % 4))
            outcome[i] = "ok"
        except InputError as e:
            outcome[i] = str(e)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    won = FeatureStore(uri).recorded_settings()
    winners = sorted(i for i, o in outcome.items() if o == "ok")
    assert len(outcome) == 8 and won is not None
    assert winners == [i for i in range(8) if 1.0 + i % 4 == won.fps]
    assert all("\n" not in o and "settings.json" in o for o in outcome.values() if o != "ok")


@pytest.mark.slow
def test_two_extractions_with_different_settings_into_one_store_one_succeeds(s3_server, rendered_videos, tmp_path):
    """Two real `vmr extract` processes started together on the same S3 store with different fps: one extracts, the
    other stops before any work with one line; the store holds one setting only."""
    from vmr.features.store import FeatureStore

    bucket = s3_server.bucket()
    s3_server.upload(rendered_videos / "h264.mkv", bucket + "/raw/a.mkv")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(s3_server.env(), PYTHONUNBUFFERED="1")
    procs = [subprocess.Popen(
        [sys.executable, "-m", "vmr.cli", "extract", "--videos", bucket + "/raw", "--out", bucket + "/features",
         "--model", "ViT-S-32", "--pretrained", "none", "--fps", fps, "--batch-size", "8"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT) for fps in ("1", "2")]
    results = [(p.wait(600), *p.communicate()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], [(r[0], r[2][-2000:]) for r in results]
    loser = next(r for r in results if r[0] == 2)
    errors = [line for line in loser[2].splitlines() if line.startswith("vmr extract: error:")]
    # refused at the claim of settings.json, or (had the winner already stored a video) by its entries' settings
    assert len(errors) == 1 and ("settings.json" in errors[0] or "other settings" in errors[0])
    store = FeatureStore(bucket + "/features")
    assert store.settings() == store.recorded_settings() and sorted(store.entries()) == ["a"]


def test_an_mlflow_server_down_at_the_start_stops_the_run_before_any_compute(tmp_path, capsys, monkeypatch):
    """A tracking server that is not running (its port closed): one line and exit code 1 in seconds, before the demo
    archive is rendered or Ray is started."""
    import time

    import ray

    from vmr.cli import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    if ray.is_initialized():
        pytest.skip("a Ray session of another test is running in this process")
    uri = f"http://127.0.0.1:{_closed_port()}"
    t0 = time.perf_counter()
    code = main(["finetune", f"data.workdir={tmp_path / 'work'}", f"tracking.tracking_uri={uri}"])
    seconds = time.perf_counter() - t0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("vmr ")]
    assert code == 1 and len(err) == 1 and f"MLflow tracking server at {uri} does not answer" in err[0]
    assert seconds < 10 and not ray.is_initialized()
    assert not (tmp_path / "work" / "demo").exists() and not list((tmp_path / "work").rglob("*.npz"))
