"""vmr.Localizer and ``vmr localize``: real demo videos, real extraction (seeded random CLIP), a briefly trained MATR
checkpoint, the cosine baseline, sliding windows over a 90-minute target, the plot, MLflow model URIs, and one-line
errors for every kind of bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from vmr.cli import main
from vmr.data.samples import Sample, collate
from vmr.errors import InputError
from vmr.features.store import FeatureStore
from vmr.models.checkpoint import FeatureMismatchError, load_model
from vmr.search.localizer import Localizer, Moment, plan_windows, window_cores
from vmr.spans import nms_1d, temporal_iou

torch.set_num_threads(2)


def _iou(m, span) -> float:
    return float(temporal_iou(np.array([m.start, m.end]), np.asarray(span, dtype=np.float64)))


def _cli(capsys, *argv):
    """Run ``vmr`` in-process: (exit code, stdout, stderr)."""
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


# ---- windows ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,w,o", [(5400, 180, 90), (1000, 180, 90), (181, 180, 90), (100, 180, 90), (97, 20, 7),
                                   (50, 10, 0), (50, 10, 9), (10, 3, 5)])
def test_windows_cover_the_target_and_their_cores_tile_it(n, w, o):
    wins = plan_windows(n, w, o)
    assert wins[0][0] == 0 and wins[-1][1] == n
    assert all(e - s == min(w, n) for s, e in wins)  # one length: one batch shape, no short tail window
    for (s0, e0), (s1, _e1) in zip(wins, wins[1:]):
        assert s0 < s1 and s1 <= e0 and e0 - s1 >= min(o, w - 1)  # consecutive, overlapping by at least o
    cores = window_cores(wins)
    assert cores[0][0] == -np.inf and cores[-1][1] == np.inf
    for (_a0, b0), (a1, _b1) in zip(cores, cores[1:]):
        assert b0 == a1  # the cores tile the target: every row is owned by exactly one window
    for (s, e), (a, b), k in zip(wins, cores, range(len(wins))):
        # a moment up to the overlap long, centred in the core, lies inside its window
        half = min(o, w - 1) / 2.0
        if k > 0:
            assert a - half >= s - 1e-9
        if k < len(wins) - 1:
            assert b + half <= e + 1e-9


# ---- finding a clip -----------------------------------------------------------------------------------------------


def test_baseline_finds_a_clip_cut_from_the_target(localize_demo):
    """The query clip is re-encoded from match02 and extracted now, in this process: it must land on the stored
    features' clock (same seeded CLIP, same sampling)."""
    loc = Localizer("baseline", localize_demo.store_uri)
    moments = loc.localize("match02", localize_demo.clip, top_k=3)
    assert 1 <= len(moments) <= 3 and all(isinstance(m, Moment) for m in moments)
    assert [m.score for m in moments] == sorted((m.score for m in moments), reverse=True)
    assert _iou(moments[0], localize_demo.clip_span) > 0.7, (moments[0], localize_demo.clip_span)


def test_a_target_file_uses_its_stored_features_or_is_extracted(localize_demo):
    path = localize_demo.videos["match02"]
    with_store = Localizer("baseline", localize_demo.store_uri)
    by_id = with_store.localize("match02", localize_demo.clip, top_k=3)
    by_file = with_store.localize(path, localize_demo.clip, top_k=3)
    assert by_file == by_id  # the store holds this very file: its features are used
    extracted = Localizer("baseline", features=localize_demo.settings).localize(path, localize_demo.clip, top_k=3)
    assert [(m.start, m.end) for m in extracted] == [(m.start, m.end) for m in by_id]
    np.testing.assert_allclose([m.score for m in extracted], [m.score for m in by_id], atol=1e-4)


def test_a_checkpoint_on_a_target_that_fits_one_window_gives_the_models_own_predictions(localize_demo,
                                                                                       localize_checkpoint):
    model, card = load_model(localize_checkpoint)
    vf = localize_demo.store.load("match01")
    query = localize_demo.store.load("match03").features[5:11]
    loc = Localizer(localize_checkpoint, localize_demo.store_uri, window_s=1000)
    got = loc.localize("match01", query, top_k=4)
    batch = collate([Sample("s", "match01", vf.features, vf.timestamps, vf.step, query)])
    with torch.no_grad():
        want = nms_1d(model.predict(model(batch), batch, top_k=10)[0], model.config.nms_iou, 4)
    np.testing.assert_allclose([[m.start, m.end, m.score] for m in got], want, atol=1e-5)


def _long_target(localize_demo, tmp_path, minutes=90, at_s=4800.0):
    """A 90-minute 'match' at 1 row/s made of the demo videos' rows, with the stretch of match02 around the query clip
    (5 s before to 5 s after) placed once, at ``at_s``; background rows never come from that stretch. Returns
    (store, video id, the clip's span in the long video)."""
    st = localize_demo.store
    a, b = localize_demo.clip_span
    m2 = st.load("match02")
    inside = (m2.timestamps >= a - 5) & (m2.timestamps < b + 5)
    pool = np.concatenate([st.load("match01").features, m2.features[~inside], st.load("match03").features])
    rng = np.random.default_rng(0)
    n = int(minutes * 60)
    rows = []
    while sum(len(r) for r in rows) < n:  # background: random runs of 5-20 consecutive pool rows
        s = int(rng.integers(0, len(pool) - 20))
        rows.append(pool[s:s + int(rng.integers(5, 21))])
    feats = np.concatenate(rows)[:n].copy()
    k = int(at_s)
    block = m2.features[inside]
    feats[k:k + len(block)] = block
    first = float(m2.timestamps[inside][0])
    store = FeatureStore(str(tmp_path / "long_store"))
    entry = dict(m2.entry)
    entry.update(source_uri="synthetic://long_match", source_size=n, source_etag="1", duration=float(n))
    for key in ("video_id", "n_frames", "timestamps", "created", "dim"):
        entry.pop(key, None)
    store.write("long_match", np.arange(n, dtype=np.float64), feats, entry)
    return store, "long_match", (at_s + (a - first), at_s + (b - first))


def test_a_90_minute_target_is_searched_in_sliding_windows(localize_demo, tmp_path):
    store, vid, span = _long_target(localize_demo, tmp_path)
    windowed = Localizer("baseline", store.uri, window_s=180)
    details = windowed.localize_details(vid, localize_demo.clip, top_k=5)
    assert len(details.windows) == len(plan_windows(5400, 180, 90)) == 59
    assert _iou(details.moments[0], span) > 0.7, (details.moments[0], span)
    whole = Localizer("baseline", store.uri).localize(vid, localize_demo.clip, top_k=1)
    assert (whole[0].start, whole[0].end) == (details.moments[0].start, details.moments[0].end)
    assert np.isfinite(details.curve).all() and len(details.curve) == 5400  # every row owned by one window
    for m in details.moments:
        assert 0 <= m.start < m.end <= 5400


def test_a_moment_across_a_window_edge_is_found_whole(localize_demo, tmp_path):
    """Windows of 60 s every 30 s: the clip placed over the edge at 60 s is seen whole by the window [30, 90)."""
    a, b = localize_demo.clip_span
    store, vid, span = _long_target(localize_demo, tmp_path, minutes=5, at_s=60.0 - 5 - (b - a) / 2)
    assert span[0] < 60 < span[1]
    got = Localizer("baseline", store.uri, window_s=60, overlap_s=30).localize(vid, localize_demo.clip, top_k=3)
    assert _iou(got[0], span) > 0.7, (got[0], span)


def test_a_checkpoint_slides_its_training_window_and_reports_on_the_video_clock(localize_demo, localize_checkpoint,
                                                                                tmp_path):
    """The card's 20 s training window: a 90-minute target runs as 539 windows; every moment returned is one the
    model predicts on the window that owns it, shifted to nothing (windows keep the video's timestamps)."""
    store, vid, _ = _long_target(localize_demo, tmp_path)
    loc = Localizer(localize_checkpoint, store.uri, batch_windows=32)
    assert loc.window_seconds(1.0) == 20.0
    query = localize_demo.store.load("match02").features[8:14]
    details = loc.localize_details(vid, query, top_k=5)
    assert len(details.windows) == len(plan_windows(5400, 20, 10))
    assert len(details.moments) == 5 and np.isfinite(details.curve).all()
    vf = store.load(vid)
    model = loc.model
    wins = plan_windows(5400, 20, 10)
    cores = window_cores(wins)
    for m in details.moments:
        centre = (m.start + m.end) / 2
        k = next(i for i, (lo, hi) in enumerate(cores) if lo <= centre < hi)
        s, e = wins[k]
        batch = collate([Sample("w", vid, vf.features[s:e], vf.timestamps[s:e], 1.0, query)])
        with torch.no_grad():
            preds = model.predict(model(batch), batch, top_k=10)[0]
        assert np.isclose(preds, [m.start, m.end, m.score], atol=1e-5).all(axis=1).any(), (m, preds)
        assert s <= m.start and m.end <= e


def test_text_queries_go_to_text_models_and_the_baseline(localize_demo):
    from vmr.models.a2fa import A2FA, A2FAConfig

    torch.manual_seed(0)
    a2fa = A2FA(A2FAConfig(dim=int(localize_demo.settings.dim), kernel_size=5))
    loc = Localizer(a2fa, localize_demo.store_uri, features=localize_demo.settings, window_s=20)
    details = loc.localize_details("match01", text="a red ball crosses the pitch", top_k=3)
    assert len(details.moments) == 3 and details.curve_label.startswith("best moment score")
    assert np.isfinite(details.curve).all()
    base = Localizer("baseline", localize_demo.store_uri).localize("match01", text="a red ball", top_k=2)
    duration = localize_demo.store.load("match01").duration
    assert len(base) == 2 and all(m.end - m.start in (4.0, 8.0, 16.0, 32.0, duration) for m in base)


def test_a_checkpoint_in_object_storage_loads_and_its_card_sets_the_window(localize_demo, localize_checkpoint,
                                                                           s3_server):
    import dataclasses

    base = s3_server.bucket()
    s3_server.upload_tree(localize_checkpoint, base + "/runs/finetune/checkpoint_000003")
    query = localize_demo.store.load("match03").features[5:11]
    remote = Localizer(base + "/runs/finetune", localize_demo.store_uri)  # a run folder: its newest checkpoint
    assert remote.window_seconds(1.0) == 20.0
    assert remote.localize("match01", query, top_k=3) == Localizer(localize_checkpoint, localize_demo.store_uri
                                                                   ).localize("match01", query, top_k=3)
    card = dataclasses.replace(remote.card, extra={"max_target": 40})  # training crop in rows, at the card's fps
    assert Localizer(remote.model, card=card).window_seconds(0.5) == 20.0
    assert Localizer(remote.model, card=dataclasses.replace(card, extra={})).window_seconds(1.0) == 180.0
    assert Localizer("baseline").window_seconds(1.0) is None  # the baseline scores whole videos


# ---- MLflow -------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_registered_mlflow_model_loads_by_alias(localize_demo, localize_checkpoint, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from vmr.pipeline.tracking import Tracker

    uri = "sqlite:///" + str(tmp_path / "mlflow.db")
    tracker = Tracker(uri, "localize-test", artifact_root="file://" + str(tmp_path / "artifacts"))
    tracker.start_run("finetune", {"model": {"kind": "matr"}})
    version = tracker.log_model(localize_checkpoint, registered_name="vmr-matr")
    MlflowClient(uri, registry_uri=uri).set_registered_model_alias("vmr-matr", "champion", version.version)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    query = localize_demo.store.load("match03").features[5:11]
    want = Localizer(localize_checkpoint, localize_demo.store_uri).localize("match01", query, top_k=3)
    for model_uri in ("models:/vmr-matr@champion", "models:/vmr-matr/latest"):
        loc = Localizer(model_uri, localize_demo.store_uri)
        assert loc.card.extra["window_s"] == 20.0
        assert loc.localize("match01", query, top_k=3) == want
    code = main(["localize", "--query", localize_demo.clip, "--target", "match02", "--store",
                 localize_demo.store_uri, "--model", "models:/vmr-matr@nosuchalias", "--json"])
    assert code == 2


# ---- the CLI ------------------------------------------------------------------------------------------------------


def test_cli_json_and_plot_in_a_real_process(localize_demo, localize_checkpoint, tmp_path):
    png = tmp_path / "out.png"
    a, b = localize_demo.clip_span
    proc = subprocess.run(
        [sys.executable, "-m", "vmr.cli", "localize", "--query", localize_demo.clip, "--target", "match02",
         "--store", localize_demo.store_uri, "--model", localize_checkpoint, "--top-k", "3", "--json",
         "--plot", str(png), "--gt", str(a), str(b)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["target"] == "match02" and set(out) >= {"target", "moments"}
    moments = out["moments"]
    assert 1 <= len(moments) <= 3 and all(set(m) == {"start", "end", "score"} for m in moments)
    assert [m["score"] for m in moments] == sorted((m["score"] for m in moments), reverse=True)
    assert all(0 <= m["start"] < m["end"] <= out["duration"] + 1e-6 for m in moments)
    assert "RANDOM weights" in proc.stderr  # the random-CLIP notice reaches the user
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    h, w = matplotlib.image.imread(str(png)).shape[:2]
    assert w > 800 and h > 400


def test_cli_table_and_baseline_overrides(localize_demo, capsys):
    code, out, err = _cli(capsys, "localize", "--query", localize_demo.clip, "--target",
                          localize_demo.videos["match02"], "--model", "baseline", "--clip-model", "ViT-S-32",
                          "--pretrained", "none", "--fps", "1", "--top-k", "2")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[1].split() == ["rank", "start_s", "end_s", "score"] and len(lines) == 4
    start, end = map(float, lines[2].split()[1:3])
    assert _iou(Moment(start, end, 0), localize_demo.clip_span) > 0.7


def test_plot_shows_thumbnails_curve_moments_and_ground_truth(localize_demo, localize_checkpoint, tmp_path):
    from vmr.search.plots import plot_localization, thumbnails

    loc = Localizer(localize_checkpoint, localize_demo.store_uri)
    details = loc.localize_details("match02", localize_demo.clip, top_k=3)
    assert details.curve is not None and details.curve_label == "foreground probability"
    times, frames = thumbnails(details.target_uri, details.moments[0].start, details.moments[0].end)
    assert frames.shape == (4, 120, 160, 3) and np.all(np.diff(times) > 0)
    assert details.moments[0].start <= times[0] and times[-1] < details.moments[0].end
    assert "not a video" in thumbnails("synthetic://x.npz", 0, 1)
    path = plot_localization(details, str(tmp_path / "p.png"), gt=localize_demo.clip_span)
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


# ---- bad input: one line, exit 2, no traceback ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_inputs(localize_demo, cut_clip, tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_inputs")
    (d / "notes.txt").write_text("not a video")
    (d / "broken.mp4").write_bytes(os.urandom(4096))
    short = cut_clip(localize_demo.videos["match01"], str(d / "short.mp4"), 0.0, 4.0)
    other = FeatureStore(str(d / "other_fps_store"))
    vf = localize_demo.store.load("match01")
    entry = {k: v for k, v in vf.entry.items() if k not in ("video_id", "n_frames", "timestamps", "created", "dim")}
    entry["fps"] = 2.0
    other.write("match01", vf.timestamps / 2, vf.features, entry)
    empty = d / "empty_store"
    empty.mkdir()
    return dict(dir=d, txt=str(d / "notes.txt"), broken=str(d / "broken.mp4"), short=short, other=other.uri,
                empty=str(empty))


def _bad_cases(demo, ckpt, bad):
    q, store = demo.clip, demo.store_uri
    return [
        (["localize", "--query", str(bad["dir"] / "missing.mp4"), "--target", "match02", "--store", store,
          "--model", "baseline"], "query clip not found"),
        (["localize", "--query", bad["txt"], "--target", "match02", "--store", store, "--model", "baseline"],
         "unsupported format '.txt'"),
        (["localize", "--query", bad["broken"], "--target", "match02", "--store", store, "--model", "baseline"],
         "not a video"),
        (["localize", "--query", q, "--target", bad["short"], "--model", ckpt], "longer than the target"),
        (["localize", "--query", q, "--target", "match99", "--store", store, "--model", "baseline"],
         "neither a video in the feature store"),
        (["localize", "--query", q, "--target", "match02", "--store", store, "--model",
          str(bad["dir"] / "no_checkpoint")], "model checkpoint not found"),
        (["localize", "--text", "a goal", "--target", "match02", "--store", store, "--model", ckpt],
         "not a text query"),
        (["localize", "--query", q, "--target", "match01", "--store", bad["other"], "--model", ckpt],
         "different: fps"),
        (["localize", "--query", q, "--target", "match02", "--store", store, "--model", "baseline", "--gt", "5", "3"],
         "START < END"),
        (["search", "--query", q, "--corpus", bad["empty"], "--model", "baseline"], "is empty"),
        (["search", "--query", q, "--corpus", bad["other"], "--model", ckpt], "different: fps"),
    ]


def test_every_bad_input_is_one_line_and_exit_2(localize_demo, localize_checkpoint, bad_inputs, capsys):
    for argv, expected in _bad_cases(localize_demo, localize_checkpoint, bad_inputs):
        code, out, err = _cli(capsys, *argv)
        assert code == 2, (argv, code, out, err)
        lines = [line for line in err.strip().splitlines() if "RANDOM weights" not in line]
        assert len(lines) == 1 and lines[0].startswith(f"vmr {argv[0]}: error: "), (argv, err)
        assert expected in lines[0], (expected, lines[0])
        assert "Traceback" not in err


def test_a_bad_input_in_a_real_process_prints_no_traceback(localize_demo, bad_inputs):
    proc = subprocess.run(
        [sys.executable, "-m", "vmr.cli", "localize", "--query", bad_inputs["txt"], "--target", "match02",
         "--store", localize_demo.store_uri, "--model", "baseline"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "unsupported format" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_feature_mismatch_is_refused_in_the_library_too(localize_demo, localize_checkpoint, bad_inputs):
    loc = Localizer(localize_checkpoint, bad_inputs["other"])
    with pytest.raises(FeatureMismatchError, match="fps"):
        loc.localize("match01", np.zeros((3, int(localize_demo.settings.dim)), np.float32) + 0.05)
    with pytest.raises(InputError, match="exactly one"):
        Localizer("baseline", localize_demo.store_uri).localize("match01")


def test_vmr_exports_the_localizer_lazily():
    code = ("import sys, vmr; assert 'torch' not in sys.modules; "
            "from vmr.search.localizer import Localizer; assert vmr.Localizer is Localizer; "
            "assert 'ray' not in sys.modules and 'mlflow' not in sys.modules; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "ok", proc.stderr
