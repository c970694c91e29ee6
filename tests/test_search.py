"""Localizer.search and ``vmr search``: every video of a feature store, in-process and on Ray Data (a real local
cluster), on a local store and on a store in S3 (a real SeaweedFS server)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vmr.cli import main
from vmr.features.store import FeatureStore
from vmr.pipeline.search import search_store
from vmr.search.localizer import Localizer, SearchHit
from vmr.spans import temporal_iou

torch.set_num_threads(2)


def _iou(h, span) -> float:
    return float(temporal_iou(np.array([h.start, h.end]), np.asarray(span, dtype=np.float64)))


def test_search_finds_the_clip_in_the_video_it_was_cut_from(localize_demo):
    hits = Localizer("baseline").search(localize_demo.clip, localize_demo.store_uri, top_k=5)
    assert 1 <= len(hits) <= 5 and all(isinstance(h, SearchHit) for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[0].video_id == "match02" and _iou(hits[0], localize_demo.clip_span) > 0.7, hits[0]
    assert {h.video_id for h in hits} <= set(localize_demo.videos)


def test_search_equals_localizing_each_video_and_keeping_the_best(localize_demo, localize_checkpoint):
    """Windows of different videos share batches in search; the result must not depend on that."""
    loc = Localizer(localize_checkpoint, localize_demo.store_uri, batch_windows=5)
    query = localize_demo.store.load("match01").features[20:26]
    hits = loc.search(query, top_k=6)
    each = []
    for vid in localize_demo.videos:
        each += [(vid, m.start, m.end, m.score) for m in loc.localize(vid, query, top_k=6)]
    each.sort(key=lambda x: -x[3])
    np.testing.assert_allclose([[h.start, h.end, h.score] for h in hits], [x[1:] for x in each[:6]], atol=1e-5)
    assert [h.video_id for h in hits] == [x[0] for x in each[:6]]


def test_videos_shorter_than_the_query_are_skipped(localize_demo, tmp_path):
    store = FeatureStore(str(tmp_path / "mixed"))
    for vid in ("match01", "match03"):
        vf = localize_demo.store.load(vid)
        entry = {k: v for k, v in vf.entry.items() if k not in ("video_id", "n_frames", "timestamps", "created", "dim")}
        store.write(vid, vf.timestamps, vf.features, entry)
    vf = localize_demo.store.load("match02")
    entry = {k: v for k, v in vf.entry.items() if k not in ("video_id", "n_frames", "timestamps", "created", "dim")}
    entry["duration"] = 5.0
    store.write("short", vf.timestamps[:5], vf.features[:5], entry)
    result = Localizer("baseline").search_details(vf.features[10:18], store.uri, top_k=3)
    assert result.skipped == ["short"] and result.videos == 2
    assert {h.video_id for h in result.hits} <= {"match01", "match03"}


@pytest.mark.slow
def test_ray_data_search_equals_the_in_process_search(localize_demo, localize_checkpoint):
    import ray

    loc = Localizer(localize_checkpoint, localize_demo.store_uri)
    query = localize_demo.store.load("match03").features[4:10]
    plain = search_store(loc, query, top_k=5, use_ray=False)
    # a private local cluster: never one that another job started on this machine with `ray start`
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        on_ray = search_store(loc, query, top_k=5, use_ray=True)
    finally:
        ray.shutdown()
    assert on_ray.ray and not plain.ray
    assert [h.video_id for h in on_ray.hits] == [h.video_id for h in plain.hits]
    np.testing.assert_allclose([[h.start, h.end, h.score] for h in on_ray.hits],
                               [[h.start, h.end, h.score] for h in plain.hits], atol=1e-5)


def test_search_on_a_store_and_clip_in_s3(localize_demo, s3_server):
    base = s3_server.bucket()
    s3_server.upload_tree(localize_demo.root / "store", base + "/features")
    s3_server.upload(localize_demo.clip, base + "/queries/clip.mp4")
    remote = Localizer("baseline").search(base + "/queries/clip.mp4", base + "/features", top_k=3)
    local = Localizer("baseline").search(localize_demo.clip, localize_demo.store_uri, top_k=3)
    assert [(h.video_id, h.start, h.end) for h in remote] == [(h.video_id, h.start, h.end) for h in local]
    np.testing.assert_allclose([h.score for h in remote], [h.score for h in local], atol=1e-5)


def test_cli_search_json_and_table(localize_demo, capsys):
    code = main(["search", "--query", localize_demo.clip, "--corpus", localize_demo.store_uri, "--model", "baseline",
                 "--top-k", "4", "--json", "--no-ray"])
    out = capsys.readouterr()
    assert code == 0, out.err
    got = json.loads(out.out)
    assert got["corpus"] == localize_demo.store_uri and got["videos"] == 3 and got["skipped"] == []
    assert len(got["hits"]) == 4 and all(set(h) == {"video", "start", "end", "score"} for h in got["hits"])
    assert got["hits"][0]["video"] == "match02"
    assert "searching 3 videos" in out.err  # progress goes to stderr, stdout stays JSON
    code = main(["search", "--query", localize_demo.clip, "--corpus", localize_demo.store_uri, "--model", "baseline",
                 "--top-k", "2"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and lines[0].split() == ["video", "start_s", "end_s", "score"] and len(lines) == 3
    assert lines[1].split()[0] == "match02"
