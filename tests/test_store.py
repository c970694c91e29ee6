"""vmr.features.store: the feature store round trip (local and S3), the manifest, re-run checks, mixed settings, failures,
atomic writes under a killed writer, concurrent writers, video ids, and importing UniVTG-style npz features."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from vmr import cli
from vmr.errors import InputError
from vmr.features.settings import EXTRACTOR_VERSION, IMPORTED_EXTRACTOR_VERSION, FeatureSettings
from vmr.features.store import MANIFEST_KEYS, FeatureStore, import_npz_features, video_id_for

SETTINGS = FeatureSettings("ViT-B-32", "none", 0.5)


def _unit(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    f = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return f / np.linalg.norm(f, axis=1, keepdims=True)


def _entry(size: int = 1000, etag: str = "e1", settings: FeatureSettings = SETTINGS, **kw) -> dict:
    return dict(source_uri="s3://raw/x.mp4", source_size=size, source_etag=etag, duration=9.7, fps=settings.fps,
                model=settings.model, pretrained=settings.pretrained, extractor_version=settings.extractor_version, **kw)


def _round_trip(store: FeatureStore):
    ts = np.array([0.0, 2.002, 4.004, 6.006, 8.008])
    feats = _unit(5)
    store.write("league/m2", ts, feats, _entry())
    store.write("match1", ts[:3], feats[:3], _entry(etag="e2"))

    v = store.load("league/m2")
    assert v.video_id == "league/m2" and v.timestamps.dtype == np.float64 and v.features.dtype == np.float32
    np.testing.assert_array_equal(v.timestamps, ts)
    np.testing.assert_array_equal(v.features, feats)
    assert v.step == 2.0 and v.duration == 9.7
    assert set(MANIFEST_KEYS) <= set(v.entry)
    assert v.entry["n_frames"] == 5 and v.entry["dim"] == 16 and v.entry["timestamps"] == ts.tolist()
    assert v.entry["source_etag"] == "e1" and v.entry["created"].endswith("Z")

    assert store.video_ids() == ["league/m2", "match1"] and len(store) == 2
    assert "match1" in store and "match9" not in store and store.entry("match9") is None
    assert store.entries()["match1"]["source_etag"] == "e2"
    assert store.settings() == SETTINGS
    with pytest.raises(InputError, match="'match9' is not in the feature store"):
        store.load("match9")

    store.write_failures([{"uri": "s3://raw/bad.mp4", "reason": "truncated", "detail": "moov"}])
    assert store.failures() == [{"uri": "s3://raw/bad.mp4", "reason": "truncated", "detail": "moov"}]
    store.write_failures([])  # a later run replaces the table
    assert store.failures() == []


def test_round_trip_local(tmp_path):
    store = FeatureStore(str(tmp_path / "store"))
    assert store.entries() == {} and store.settings() is None and store.failures() == [] and len(store) == 0
    _round_trip(store)
    # the documented layout
    assert (tmp_path / "store/features/league/m2.npz").is_file()
    assert json.loads((tmp_path / "store/manifest/league/m2.json").read_text())["video_id"] == "league/m2"
    assert (tmp_path / "store/failures.json").is_file()


@pytest.mark.slow
def test_round_trip_s3(s3_server):
    base = s3_server.bucket() + "/store"
    _round_trip(FeatureStore(base))
    assert sorted(s3_server.keys(base)) == [  # keys in the bucket
        "store/failures.json", "store/features/league/m2.npz", "store/features/match1.npz",
        "store/manifest.parquet", "store/manifest/league/m2.json", "store/manifest/match1.json",
    ]


def test_write_rejects_what_later_stages_cannot_use(tmp_path):
    store = FeatureStore(str(tmp_path))
    ts = np.arange(4) * 2.0
    with pytest.raises(ValueError, match="L2-normalised"):
        store.write("a", ts, _unit(4) * 3, _entry())
    with pytest.raises(ValueError, match="timestamps"):
        store.write("a", ts[:3], _unit(4), _entry())
    with pytest.raises(ValueError, match="strictly increasing"):
        store.write("a", ts[::-1].copy(), _unit(4), _entry())
    with pytest.raises(ValueError, match="lacks"):
        store.write("a", ts, _unit(4), {"fps": 0.5})
    with pytest.raises(InputError, match="invalid video id"):
        store.write("../escape", ts, _unit(4), _entry())
    assert len(store) == 0 and not (tmp_path / "features").exists()


def test_is_current_and_mixed_settings(tmp_path):
    store = FeatureStore(str(tmp_path))
    store.write("m", np.arange(3) * 2.0, _unit(3), _entry(size=1000, etag="e1"))
    assert store.is_current("m", 1000, "e1", SETTINGS)
    assert not store.is_current("m", 1001, "e1", SETTINGS)  # the source changed
    assert not store.is_current("m", 1000, "e2", SETTINGS)
    assert not store.is_current("m", 1000, "e1", FeatureSettings("ViT-B-32", "none", 1.0))
    assert not store.is_current("m", 1000, "e1", FeatureSettings("ViT-B-32", "openai", 0.5))
    assert not store.is_current("m", 1000, "e1", FeatureSettings("ViT-B-32", "none", 0.5, "0"))
    assert not store.is_current("other", 1000, "e1", SETTINGS)

    other = FeatureSettings("ViT-B-32", "openai", 0.5)
    store.write("n", np.arange(3) * 2.0, _unit(3), _entry(settings=other))
    with pytest.raises(InputError, match="mixes extraction settings"):
        store.settings()


_WRITER = """
import sys, numpy as np
from vmr.features.store import FeatureStore
store = FeatureStore(sys.argv[1])
f = np.random.default_rng(0).normal(size=(60000, 64)).astype(np.float32)  # 15 MB per video
f /= np.linalg.norm(f, axis=1, keepdims=True)
ts = np.arange(len(f)) * 2.0
entry = dict(source_uri="x", source_size=1, source_etag="e", duration=120000.0, fps=0.5, model="m",
             pretrained="none", extractor_version="1")
print("ready", flush=True)
for i in range(1000):
    store.write(f"v{i:03d}", ts, f, entry)
"""


def test_killed_writer_leaves_no_partial_file(tmp_path):
    """kill -9 a process in the middle of writing: every file under its final name is complete, and every manifest
    entry has its complete features."""
    root = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(root)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.time() + 120
    while time.time() < deadline and len(list((root / "features").glob("v*.npz"))) < 3:
        time.sleep(0.05)
    time.sleep(0.137)  # somewhere inside a later write
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    store = FeatureStore(str(root))
    finals = sorted(p.name for p in (root / "features").iterdir() if not p.name.startswith("."))
    assert len(finals) >= 3
    for name in finals:  # a features file under its final name is always whole
        with np.load(root / "features" / name) as z:
            assert z["features"].shape == (60000, 64)
    entries = store.entries()
    assert entries and set(entries) <= {n[:-4] for n in finals}
    for vid in entries:
        assert store.load(vid).features.shape == (60000, 64)


def test_concurrent_writers_of_different_videos(tmp_path):
    store = FeatureStore(str(tmp_path))
    errors = []

    def write(i):
        try:
            FeatureStore(str(tmp_path)).write(f"batch{i % 3}/v{i}", np.arange(5) * 2.0, _unit(5, seed=i), _entry())
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(store) == 24
    for i in range(24):
        np.testing.assert_array_equal(store.load(f"batch{i % 3}/v{i}").features, _unit(5, seed=i))


def test_video_id_for(tmp_path):
    assert video_id_for("s3://raw/match1.mp4", "s3://raw") == "match1"
    assert video_id_for("s3://raw/league/m2.mkv", "s3://raw/") == "league/m2"
    assert video_id_for("s3://raw/league/m2.mkv", "s3://raw/league/m2.mkv") == "m2"
    assert video_id_for(str(tmp_path / "a" / "b.c.webm"), str(tmp_path)) == "a/b.c"
    assert video_id_for(f"file://{tmp_path}/x.mov", str(tmp_path)) == "x"


def test_import_univtg_features(shared_data, tmp_path, capsys):
    src = shared_data / "features/univtg-sample/vid.npz"
    raw = np.load(src)["features"]  # 15 x 512, not normalised
    ids = import_npz_features(str(src), str(tmp_path / "store"), 2.0, "ViT-B-32", "openai")
    assert ids == ["vid"]
    v = FeatureStore(str(tmp_path / "store")).load("vid")
    np.testing.assert_allclose(v.timestamps, np.arange(15) * 2.0)
    np.testing.assert_allclose(np.linalg.norm(v.features, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(v.features * np.linalg.norm(raw, axis=1, keepdims=True), raw, rtol=1e-4, atol=1e-4)
    e = v.entry
    assert (e["fps"], e["duration"], e["n_frames"], e["dim"]) == (0.5, 30.0, 15, 512)
    assert e["source_uri"] == str(src) and e["source_size"] == src.stat().st_size
    assert (e["model"], e["pretrained"], e["extractor_version"]) == ("ViT-B-32", "openai", IMPORTED_EXTRACTOR_VERSION)
    assert IMPORTED_EXTRACTOR_VERSION != EXTRACTOR_VERSION  # imported rows never pass for extracted ones

    # the CLI, on a folder with a subfolder
    folder = tmp_path / "npz"
    (folder / "league").mkdir(parents=True)
    np.savez(folder / "a.npz", features=raw[:4])
    np.savez(folder / "league/b.npz", features=raw.astype(np.float16))
    assert cli.main(["import-features", "--src", str(folder), "--out", str(tmp_path / "s2"), "--clip-seconds", "1",
                     "--model", "ViT-B-32", "--pretrained", "openai", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["imported"] == ["a", "league/b"]
    assert FeatureStore(str(tmp_path / "s2")).load("league/b").timestamps.tolist() == list(np.arange(15.0))

    np.savez(folder / "bad.npz", clip=raw)
    assert cli.main(["import-features", "--src", str(folder / "bad.npz"), "--out", str(tmp_path / "s3"),
                     "--clip-seconds", "2", "--model", "m", "--pretrained", "p"]) == 2
    assert "no 'features' array" in capsys.readouterr().err
