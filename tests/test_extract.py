"""`vmr extract`: the Ray Data pipeline against local files and a real S3 server (SeaweedFS), real videos of several
codecs and containers (rendered for the session with PyAV: mp4/h264, mkv/h264, webm/vp9, avi/mpeg4, mov/h264; see
tests/fixtures/videos.py), every kind of bad file, a run killed midway and an object store that goes away midway.

CLIP runs with random weights (``--pretrained none``, seeded identically in every process); ViT-S-32 instead of
ViT-B-32 keeps the tower fast on a CPU while exercising the same code.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fixtures.s3 import s3_credentials_in_env

from vmr import storage
from vmr.errors import InputError
from vmr.features.extraction import (
    FramePreprocessor,
    extract_into_store,
    extract_video,
    plan_extraction,
    preprocess_config,
)
from vmr.features.settings import FeatureSettings
from vmr.features.store import FeatureStore
from vmr.features.video import decode_sampled, probe, sample_times

ROOT = Path(__file__).resolve().parents[1]
MODEL = "ViT-S-32"
FPS = 1.0

# bad files in the test folder and the reason each must be recorded with
BAD = {
    "bad/empty.mp4": "empty file",
    "bad/truncated.mp4": "truncated",
    "bad/notvideo.mp4": "not a video",
    "bad/av1.mkv": "unsupported codec",
    "bad/short.mp4": "shorter than one sample",
}
GOOD = ["cup", "carphone", "asl/again", "car_vp9", "car_mpeg4", "car_mov"]  # video ids


@pytest.fixture(scope="module")
def videos(tmp_path_factory, rendered_videos) -> Path:
    """A folder of good videos (mp4/h264, mkv/h264 in a subfolder, webm/vp9, avi/mpeg4, mov/h264) and bad files."""
    root = tmp_path_factory.mktemp("videos")
    v = rendered_videos
    (root / "asl").mkdir()
    (root / "bad").mkdir()
    shutil.copy(v / "h264_faststart.mp4", root / "cup.mp4")  # 25 fps, 8 s
    shutil.copy(v / "ntsc.mp4", root / "carphone.mp4")
    shutil.copy(v / "h264.mkv", root / "asl/again.mkv")
    shutil.copy(v / "vp9.webm", root / "car_vp9.webm")
    shutil.copy(v / "mpeg4.avi", root / "car_mpeg4.avi")
    shutil.copy(v / "h264.mov", root / "car_mov.mov")
    (root / "notes.txt").write_text("not listed: no video extension")
    (root / "bad/empty.mp4").write_bytes(b"")
    mp4 = (v / "h264_faststart.mp4").read_bytes()
    (root / "bad/truncated.mp4").write_bytes(mp4[: len(mp4) * 2 // 5])
    (root / "bad/notvideo.mp4").write_text("this is a text file with a video extension\n" * 20)
    shutil.copy(v / "av1.mkv", root / "bad/av1.mkv")
    shutil.copy(v / "short.mp4", root / "bad/short.mp4")  # 0.5 s
    return root


@pytest.fixture(scope="module")
def encoder():
    from vmr.features.clip import ClipEncoder

    return ClipEncoder(MODEL, "none", device="cpu", seed=0)


@pytest.fixture(scope="module")
def ray_local():
    """A private local Ray cluster for this module's in-process runs (2 CPUs), shut down afterwards."""
    import logging

    import ray

    started = not ray.is_initialized()
    if started:
        with s3_credentials_in_env():  # the workers' own credentials for the S3 tests (never forwarded by vmr)
            ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    if started:
        ray.shutdown()


def _cfg(videos, out, **kw):
    from vmr.pipeline.extract import ExtractConfig

    return ExtractConfig(videos=str(videos), out=str(out), fps=FPS, model=MODEL, pretrained="none", **kw)


def _failures_by_name(failed: list[dict], base: str) -> dict[str, str]:
    return {storage.relative(f["uri"], base): f["reason"] for f in failed}


def _assert_store_whole(store: FeatureStore, expected_ids: list[str]) -> None:
    """Every expected video exactly once, each features file complete and matching its manifest entry."""
    entries = store.entries()
    assert sorted(entries) == sorted(expected_ids)
    feats = [f for f in storage.list_files(storage.join(store.uri, "features"))]
    assert sorted(storage.relative(f.uri, storage.join(store.uri, "features")) for f in feats) == sorted(
        f"{vid}.npz" for vid in expected_ids
    )
    for vid in expected_ids:
        vf = store.load(vid)  # raises on a row count that differs from the manifest
        assert vf.features.shape == (vf.entry["n_frames"], vf.entry["dim"])
        assert np.allclose(np.linalg.norm(vf.features, axis=1), 1.0, atol=1e-4)
        assert np.all(np.diff(vf.timestamps) > 0)
        assert vf.timestamps.tolist() == vf.entry["timestamps"]


# -- the in-process pieces ------------------------------------------------------------------------------------------
def test_decode_task_preprocessing_equals_the_encoders(encoder, rendered_videos):
    """Decode tasks preprocess from the model's config alone; the pixels must equal ClipEncoder.preprocess exactly."""
    _, frames = decode_sampled(str(rendered_videos / "h264_audio.mp4"), 0.5)
    pre = FramePreprocessor(preprocess_config(encoder))
    ours = pre(frames)
    theirs = encoder.preprocess(frames).numpy()
    assert ours.dtype == np.float32 and ours.shape == theirs.shape == (len(frames), 3, 224, 224)
    assert np.array_equal(ours, theirs)


def test_extract_video_one_row_per_sample_with_container_times(encoder, videos, tmp_path):
    vf = extract_video(str(videos / "cup.mp4"), encoder, FPS, chunk=3, batch_size=4)
    info = probe(str(videos / "cup.mp4"))
    want = sample_times(info.duration, FPS)
    assert vf.video_id == "cup" and len(vf.timestamps) == len(want) == vf.entry["n_frames"]
    # each row is the frame nearest its sample time: within half a frame period (25 fps source)
    assert np.all(np.abs(vf.timestamps - want) <= 0.5 / 25 + 1e-6)
    t, frames = decode_sampled(str(videos / "cup.mp4"), FPS)
    assert np.array_equal(vf.timestamps, t)
    assert np.allclose(vf.features, encoder.encode_frames(frames), atol=1e-5)
    assert vf.entry["source_size"] == (videos / "cup.mp4").stat().st_size
    assert (vf.entry["model"], vf.entry["pretrained"], vf.entry["fps"]) == (MODEL, "none", FPS)

    store = FeatureStore(str(tmp_path / "store"))
    first = extract_into_store(str(videos / "cup.mp4"), store, encoder, FPS)
    created = store.entry("cup")["created"]
    mtime = os.path.getmtime(store.features_uri("cup"))
    again = extract_into_store(str(videos / "cup.mp4"), store, encoder, FPS)  # current: not redone
    assert os.path.getmtime(store.features_uri("cup")) == mtime and store.entry("cup")["created"] == created
    assert np.array_equal(first.features, again.features)


def test_plan_skips_only_current_entries(tmp_path, rendered_videos):
    src = tmp_path / "raw"
    src.mkdir()
    shutil.copy(rendered_videos / "ntsc.mp4", src / "a.mp4")
    shutil.copy(rendered_videos / "h264_faststart.mp4", src / "b.MP4")  # extensions are matched in any case
    store = FeatureStore(str(tmp_path / "store"))
    settings = FeatureSettings(model=MODEL, pretrained="none", fps=FPS)
    plan = plan_extraction(str(src), store, settings)
    assert [j.video_id for j in plan.todo] == ["a", "b"] and plan.skipped == []

    info = storage.info(str(src / "a.mp4"))
    rows = np.eye(3, 8, dtype=np.float32)
    entry = dict(source_uri=info.uri, source_size=info.size, source_etag=info.etag, duration=4.0, fps=FPS,
                 model=MODEL, pretrained="none", extractor_version=settings.extractor_version)
    store.write("a", np.arange(3.0), rows, entry)
    plan = plan_extraction(str(src), store, settings)
    assert [j.video_id for j in plan.todo] == ["b"] and plan.skipped == ["a"]
    # another fps: nothing is current
    assert plan_extraction(str(src), store, FeatureSettings(MODEL, "none", 2.0)).skipped == []
    # the source changed (size and mtime): redone
    shutil.copy(rendered_videos / "h264_faststart.mp4", src / "a.mp4")
    assert plan_extraction(str(src), store, settings).skipped == []
    # two files, one id: refused rather than one overwriting the other
    shutil.copy(src / "a.mp4", src / "a.mkv")
    with pytest.raises(InputError, match="both be stored as video 'a'"):
        plan_extraction(str(src), store, settings)


def test_cli_usage_errors_are_one_line(tmp_path, capsys):
    from vmr.cli import main

    assert main(["extract", "--videos", str(tmp_path / "nope"), "--out", str(tmp_path / "s"), "--pretrained", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not found" in err[0]
    (tmp_path / "empty").mkdir()
    assert main(["extract", "--videos", str(tmp_path / "empty"), "--out", str(tmp_path / "s"), "--fps", "0"]) == 2
    assert "--fps must be a positive" in capsys.readouterr().err


# -- the Ray Data pipeline ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_pipeline_local_good_and_bad_files_then_rerun(ray_local, videos, tmp_path, capsys, encoder):
    from vmr.cli import main

    out = tmp_path / "store"
    argv = ["extract", "--videos", str(videos), "--out", str(out), "--model", MODEL, "--pretrained", "none",
            "--fps", str(FPS)]
    assert main(argv + ["--json"]) == 0  # bad input alone does not fail the run
    summary = json.loads(capsys.readouterr().out)
    assert set(summary) == {"ok", "skipped", "failed", "frames", "seconds"}
    assert (summary["ok"], summary["skipped"]) == (len(GOOD), 0)
    assert _failures_by_name(summary["failed"], str(videos)) == BAD
    store = FeatureStore(str(out))
    _assert_store_whole(store, GOOD)
    assert summary["frames"] == sum(e["n_frames"] for e in store.entries().values())
    assert _failures_by_name(store.failures(), str(videos)) == BAD  # stored beside the manifest

    # the pipeline's rows, in order, equal the in-process path's (decode -> preprocess -> tower per video)
    for vid, name in (("cup", "cup.mp4"), ("asl/again", "asl/again.mkv"), ("car_vp9", "car_vp9.webm")):
        ref = extract_video(str(videos / name), encoder, FPS, base=str(videos))
        got = store.load(vid)
        assert np.array_equal(got.timestamps, ref.timestamps)
        assert np.allclose(got.features, ref.features, atol=1e-4)
        e = got.entry
        f = storage.info(str(videos / name))
        assert (e["source_uri"], e["source_size"], e["source_etag"]) == (f.uri, f.size, f.etag)
        assert abs(e["duration"] - probe(str(videos / name)).duration) < 1e-6
        assert (e["model"], e["pretrained"], e["fps"]) == (MODEL, "none", FPS)

    # re-run after one source changed: only that one is redone; --strict turns the bad files into exit code 1
    mtime_cup = os.path.getmtime(store.features_uri("cup"))
    changed = tmp_path / "carphone.mp4"
    shutil.copy(videos / "carphone.mp4", changed)
    with open(changed, "ab") as fh:
        fh.write(b"\0" * 16)  # new size and mtime: a different object to the listing
    os.replace(changed, videos / "carphone.mp4")
    assert main(argv + ["--strict"]) == 1
    captured = capsys.readouterr()
    text = captured.out
    assert f"1 videos done, {len(GOOD) - 1} skipped, {len(BAD)} failed" in text
    for name, reason in BAD.items():
        assert any(name in line and reason in line for line in text.splitlines())
    assert (captured.out + captured.err).count("RANDOM weights") == 1  # announced once, on stderr
    assert os.path.getmtime(store.features_uri("cup")) == mtime_cup
    assert store.entry("carphone")["source_size"] == (videos / "carphone.mp4").stat().st_size
    _assert_store_whole(store, GOOD)


@pytest.mark.slow
def test_pipeline_s3_in_and_out(ray_local, s3_server, videos, encoder):
    bucket = s3_server.bucket()
    s3_server.upload_tree(videos, bucket + "/raw")
    spills_before = set(Path("/tmp").glob("vmr-spill-*"))
    from vmr.pipeline.extract import exit_code, run_extract

    said: list[str] = []
    summary = run_extract(_cfg(bucket + "/raw", bucket + "/features"), announce=said.append)
    assert (summary.ok, summary.skipped) == (len(GOOD), 0)
    assert _failures_by_name(summary.failed, bucket + "/raw") == BAD
    # progress: one line per video as it finishes, counted up to the total, with its outcome and the time left
    n = len(GOOD) + len(BAD)
    progress = [s for s in said if s.startswith("[")]
    assert [s.split("]")[0] for s in progress] == [f"[{k}/{n}" for k in range(1, n + 1)]
    assert sum(" frames " in s for s in progress) == len(GOOD) and sum("FAILED" in s for s in progress) == len(BAD)
    assert all(s.endswith(" s left") for s in progress)
    assert exit_code(summary, strict=False) == 0 and exit_code(summary, strict=True) == 1
    store = FeatureStore(bucket + "/features")
    _assert_store_whole(store, GOOD)
    assert _failures_by_name(store.failures(), bucket + "/raw") == BAD
    e = store.entry("asl/again")
    listed = {f.uri: f for f in storage.list_files(bucket + "/raw")}
    assert e["source_uri"] == bucket + "/raw/asl/again.mkv"
    assert e["source_etag"] == listed[e["source_uri"]].etag and e["source_size"] == listed[e["source_uri"]].size
    ref = extract_video(str(videos / "asl/again.mkv"), encoder, FPS)
    assert np.allclose(store.load("asl/again").features, ref.features, atol=1e-4)
    assert set(Path("/tmp").glob("vmr-spill-*")) <= spills_before  # spilled copies are removed

    again = run_extract(_cfg(bucket + "/raw", bucket + "/features"), announce=lambda s: None)
    assert (again.ok, again.skipped, len(again.failed)) == (0, len(GOOD), len(BAD))


def _clip_folder(rendered_videos: Path, dest: Path, n: int) -> list[str]:
    """``n`` of the rendered 1.6-3.6 s matroska clips copied to ``dest``; their video ids."""
    dest.mkdir(parents=True, exist_ok=True)
    clips = sorted((rendered_videos / "clips").glob("*.mkv"))[:n]
    for c in clips:
        shutil.copy(c, dest / c.name)
    return [c.stem for c in clips]


@pytest.mark.slow
def test_killed_run_resumes_every_video_exactly_once(ray_local, rendered_videos, tmp_path):
    ids = _clip_folder(rendered_videos, tmp_path / "raw", 12)
    out = tmp_path / "store"
    import ray

    # the killed driver joins this module's cluster, which outlives it (as a Ray cluster outlives a killed job)
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "vmr.cli", "extract", "--videos", str(tmp_path / "raw"), "--out", str(out),
           "--model", MODEL, "--pretrained", "none", "--fps", "2", "--batch-size", "2"]
    with open(tmp_path / "killed.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
        try:
            deadline = time.monotonic() + 400
            while time.monotonic() < deadline and proc.poll() is None:
                if len(list((out / "manifest").glob("*.json"))) >= 2:
                    break
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the driver, mid-run
            proc.wait(60)
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
    store = FeatureStore(str(out))
    done = sorted(store.entries())
    assert 2 <= len(done) < len(ids), "the run was not killed midway"
    for vid in done:  # what the killed run left is complete
        store.load(vid)
    for p in (out / "features").iterdir():  # any other file is a hidden temporary, never a final name
        assert p.stem in ids or p.name.startswith("."), p.name
    mtimes = {vid: os.path.getmtime(store.features_uri(vid)) for vid in done}

    from vmr.pipeline.extract import run_extract

    cfg = _cfg(tmp_path / "raw", out, batch_size=8)
    cfg.fps = 2.0
    summary = run_extract(cfg, announce=lambda s: None)
    assert (summary.ok, summary.skipped, summary.failed) == (len(ids) - len(done), len(done), [])
    _assert_store_whole(store, ids)
    assert {vid: os.path.getmtime(store.features_uri(vid)) for vid in done} == mtimes  # not redone


@pytest.mark.slow
def test_object_store_outage_midway_then_rerun(ray_local, rendered_videos, tmp_path, s3_private_server, monkeypatch):
    ids = _clip_folder(rendered_videos, tmp_path / "raw", 6)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # fail over a dead endpoint in about a second, not seven
    from vmr.pipeline.extract import exit_code, run_extract

    srv = s3_private_server
    bucket = srv.bucket()
    srv.upload_tree(tmp_path / "raw", bucket + "/raw")
    cfg = _cfg(bucket + "/raw", bucket + "/features", batch_size=2)
    cfg.fps = 2.0
    result: dict = {}

    def run():
        try:
            result["summary"] = run_extract(cfg, announce=lambda s: None)
        except Exception as e:  # noqa: BLE001 - checked below
            result["error"] = e

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and worker.is_alive():
        if any(k.endswith(".json") for k in srv.keys(bucket + "/features/manifest/")):
            break
        time.sleep(0.1)
    srv.kill()  # the object store goes away midway
    worker.join(600)
    assert not worker.is_alive()
    assert "error" not in result, result.get("error")  # the run ends with a summary, it does not crash
    summary = result["summary"]
    assert summary.ok < len(ids) and summary.errors  # the videos after the outage failed, as errors (not bad input)
    assert all(f["reason"].startswith("error: ") for f in summary.failed)
    assert exit_code(summary, strict=False) == 1

    srv.start()
    store = FeatureStore(bucket + "/features")
    done = sorted(store.entries())
    for vid in done:
        store.load(vid)  # whatever was written before the outage is complete
    again = run_extract(cfg, announce=lambda s: None)
    assert again.failed == [] and again.ok + again.skipped == len(ids) and again.skipped == len(done)
    _assert_store_whole(store, ids)
    assert store.failures() == []
