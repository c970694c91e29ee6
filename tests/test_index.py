"""The vector index beside the feature store (vmr.search.index), the two-stage search (vmr.search.two_stage) and the
compacted manifest (FeatureStore.entries): on local stores, on a store in a real S3 server (SeaweedFS), through the
Localizer and the vmr command."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from vmr.cli import main
from vmr.errors import InputError
from vmr.features.store import FeatureStore
from vmr.pipeline.search import search_store
from vmr.search import index as index_mod
from vmr.search.index import VectorIndex, index_after_extract
from vmr.search.localizer import Localizer
from vmr.spans import temporal_iou

torch.set_num_threads(2)
DIM, FPS = 64, 0.5


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _write(store: FeatureStore, vid: str, feats: np.ndarray, etag: str = "1", created: str | None = None,
           model: str = "ViT-B-32") -> None:
    entry = dict(source_uri=f"synthetic://{vid}", source_size=len(feats), source_etag=etag, duration=len(feats) / FPS,
                 fps=FPS, model=model, pretrained="none", extractor_version="1")
    if created:
        entry["created"] = created
    store.write(vid, np.arange(len(feats)) / FPS, feats, entry)


def _synthetic_store(root, n_videos: int = 6, rows: int = 200, plant: dict | None = None, seed: int = 0):
    """A store of random unit rows; ``plant`` {video: start row} holds a noisy copy of the returned query there."""
    rng = np.random.default_rng(seed)
    theme = rng.normal(size=(1, DIM))  # the query's rows share a look (cosine ~0.6 between them), as a scene does
    query = _unit(theme / np.linalg.norm(theme) + 0.1 * rng.normal(size=(8, DIM)))
    store = FeatureStore(str(root))
    for i in range(n_videos):
        vid = f"v{i:02d}"
        f = _unit(rng.normal(size=(rows, DIM)))
        if plant and vid in plant:
            s = plant[vid]
            f[s:s + 8] = _unit(query + 0.05 * rng.normal(size=query.shape))
        _write(store, vid, f)
    return store, query


def _copy_store(localize_demo, dest) -> FeatureStore:
    """The demo store copied (its session copy must stay without an index: other tests search it exhaustively)."""
    shutil.copytree(localize_demo.root / "store", dest)
    return FeatureStore(str(dest))


def _iou(a, b) -> float:
    return float(temporal_iou(np.asarray(a, np.float64), np.asarray(b, np.float64)))


def _at(hit, vid: str, row: int) -> bool:
    """``hit`` is in ``vid`` with its centre on the 8-row copy planted at ``row`` (2 s per row)."""
    return hit.video_id == vid and row / FPS <= (hit.start + hit.end) / 2 <= (row + 8) / FPS


# ---- the index -----------------------------------------------------------------------------------------------------


def test_index_round_trip_in_s3(localize_demo, s3_server):
    base = s3_server.bucket() + "/features"
    s3_server.upload_tree(localize_demo.root / "store", base)
    report = VectorIndex(base).build()
    assert report.rebuilt and report.added == 3 and report.factory == "IDMap2,Flat"
    n_rows = sum(e["n_frames"] for e in localize_demo.store.entries().values())
    assert report.vectors == n_rows
    keys = s3_server.keys(base + "/index")
    assert "features/index/index.json" in keys and len(keys) == 3  # pointer, FAISS index, id table
    loaded = VectorIndex(base).open()
    assert loaded.ntotal == n_rows and loaded.video_ids() == sorted(localize_demo.videos)
    assert loaded.settings.matches(localize_demo.settings) and loaded.settings.dim == localize_demo.settings.dim
    # a stored row finds itself, mapped back to its video and row
    vf = localize_demo.store.load("match03")
    nb = loaded.search(vf.features[[7]], k=1)
    assert nb.video[0, 0] == "match03" and nb.rows[0, 0].tolist() == [7, 8] and nb.sim[0, 0] > 0.999
    remote = Localizer("baseline").search_details(localize_demo.clip, base, top_k=3)
    local = Localizer("baseline").search_details(localize_demo.clip, localize_demo.store_uri, top_k=3, exact=True)
    assert remote.path == "index" and local.path == "exact"
    assert [(h.video_id, h.start, h.end) for h in remote.hits] == [(h.video_id, h.start, h.end) for h in local.hits]


def test_new_videos_are_appended_without_a_rebuild(tmp_path):
    store, query = _synthetic_store(tmp_path / "s", plant={"v02": 50})
    first = VectorIndex(store).build()
    assert first.rebuilt and first.vectors == 6 * 200
    rng = np.random.default_rng(5)
    f = _unit(rng.normal(size=(150, DIM)))
    f[90:98] = _unit(query + 0.05 * rng.normal(size=query.shape))
    _write(store, "v99", f)
    again = VectorIndex(store).build()
    assert not again.rebuilt and (again.added, again.removed, again.kept) == (1, 0, 6)
    assert again.vectors == 6 * 200 + 150
    hits = Localizer("baseline").search_details(query, store.uri, top_k=2)
    assert hits.path == "index"
    assert any(_at(h, "v02", 50) for h in hits.hits) and any(_at(h, "v99", 90) for h in hits.hits), hits.hits
    assert VectorIndex(store).build().changed is False  # nothing new: the index is not rewritten


def test_a_re_extracted_video_replaces_its_rows_and_a_removed_one_leaves(tmp_path):
    store, query = _synthetic_store(tmp_path / "s", plant={"v01": 20})
    VectorIndex(store).build()
    old_rows = store.load("v01").features[:5]
    rng = np.random.default_rng(7)
    f = _unit(rng.normal(size=(120, DIM)))
    f[60:68] = _unit(query + 0.05 * rng.normal(size=query.shape))  # the moment moved in the new cut
    _write(store, "v01", f, etag="2", created="2030-01-01T00:00:00Z")
    (tmp_path / "s" / "manifest" / "v03.json").unlink()
    with pytest.raises(InputError, match="stale .1 videos new, 1 re-extracted, 1 removed|stale .0 videos new, "
                                         "1 re-extracted, 1 removed"):
        Localizer("baseline").search(query, store.uri, top_k=3)
    report = VectorIndex(store).build()
    assert (report.added, report.removed, report.kept) == (1, 2, 4)
    loaded = VectorIndex(store).open()
    assert loaded.ntotal == 4 * 200 + 120 and "v03" not in loaded.video_ids()
    assert loaded.search(old_rows, k=1).sim.max() < 0.9  # the old rows of v01 are gone
    nb = loaded.search(f[100:105], k=1)
    assert list(nb.video[:, 0]) == ["v01"] * 5 and nb.rows[:, 0, 0].tolist() == [100, 101, 102, 103, 104]
    hits = Localizer("baseline").search(query, store.uri, top_k=1)
    assert _at(hits[0], "v01", 60), hits


def test_a_stale_or_mismatched_index_is_refused_in_one_line(tmp_path, capsys):
    store, query = _synthetic_store(tmp_path / "s", plant={"v00": 10})
    VectorIndex(store).build()
    _write(store, "v50", _unit(np.random.default_rng(1).normal(size=(40, DIM))))
    with pytest.raises(InputError) as e:
        Localizer("baseline").search(query, store.uri)
    assert "stale (1 videos new, 0 re-extracted, 0 removed" in str(e.value) and "\n" not in str(e.value)
    assert Localizer("baseline").search_details(query, store.uri, exact=True).path == "exact"
    np.save(tmp_path / "q.npy", query)
    # the store re-made with another CLIP model under the old index
    other = FeatureStore(str(tmp_path / "s"))
    for vid in other.video_ids():
        vf = other.load(vid)
        _write(other, vid, vf.features, created="2031-01-01T00:00:00Z", model="ViT-L-14")
    with pytest.raises(InputError, match="built from features made with CLIP ViT-B-32.*model differ.*--rebuild"):
        VectorIndex(other).open()
    assert main(["index", "build", "--store", other.uri, "--json"]) == 0  # a build notices and starts afresh
    assert json.loads(capsys.readouterr().out)["rebuilt"] is True
    assert VectorIndex(other).open().settings.model == "ViT-L-14"
    # an index is required but absent: one line, exit code 2
    bare, _ = _synthetic_store(tmp_path / "bare", n_videos=2)
    with pytest.raises(InputError, match="has no vector index: run vmr index build"):
        Localizer("baseline").search(query, bare.uri, exact=False)


def test_a_killed_build_leaves_the_previous_index_in_use(tmp_path, monkeypatch):
    store, query = _synthetic_store(tmp_path / "s", plant={"v04": 30})
    VectorIndex(store).build()
    before = VectorIndex(store).pointer()
    _write(store, "v60", _unit(np.random.default_rng(2).normal(size=(50, DIM))))

    def killed(*_a, **_k):
        raise KeyboardInterrupt  # after the new FAISS file is written, before its id table and pointer

    monkeypatch.setattr(index_mod.VectorIndex, "_table_bytes", staticmethod(killed))
    with pytest.raises(KeyboardInterrupt):
        VectorIndex(store).build()
    monkeypatch.undo()
    assert VectorIndex(store).pointer() == before
    pointer, table = VectorIndex(store).check(entries={k: v for k, v in store.entries().items() if k != "v60"})
    assert "v60" not in table["video_id"].tolist() and VectorIndex(store).open(
        entries={k: v for k, v in store.entries().items() if k != "v60"}).ntotal == 6 * 200
    report = VectorIndex(store).build()  # the next build finishes the job and drops the orphaned file
    assert report.added == 1
    names = sorted(p.name for p in (tmp_path / "s" / "index").iterdir())
    assert len(names) == 5 and "index.json" in names  # this generation and the previous one


def test_ivf_pq_index_for_large_stores_and_pooled_vectors(tmp_path):
    store, query = _synthetic_store(tmp_path / "s", n_videos=6, rows=500, plant={"v03": 400, "v05": 10})
    report = VectorIndex(store).build(factory="IVF16,PQ8", pool=2)
    assert report.factory == "IVF16,PQ8" and report.vectors == 6 * 250
    hits = Localizer("baseline").search(query, store.uri, top_k=2)
    assert any(_at(h, "v03", 400) for h in hits) and any(_at(h, "v05", 10) for h in hits), hits
    assert index_mod.default_factory(1_800_000, 512) == "IVF2048,PQ64"
    assert index_mod.default_factory(50_000, 512) == "IDMap2,Flat"


# ---- two-stage search on the demo store ---------------------------------------------------------------------------


def test_two_stage_and_exhaustive_agree_on_the_demo_store(localize_demo, localize_checkpoint, tmp_path):
    store = _copy_store(localize_demo, tmp_path / "store")
    VectorIndex(store).build()
    base = Localizer("baseline")
    two = base.search_details(localize_demo.clip, store.uri, top_k=5)
    full = base.search_details(localize_demo.clip, store.uri, top_k=5, exact=True)
    assert two.path == "index" and full.path == "exact"
    assert (two.hits[0].video_id, two.hits[0].start, two.hits[0].end) == \
        (full.hits[0].video_id, full.hits[0].start, full.hits[0].end)
    assert two.hits[0].score == pytest.approx(full.hits[0].score, abs=1e-6)

    loc = Localizer(localize_checkpoint, store.uri, batch_windows=5)
    query = store.load("match01").features[20:26]
    two = loc.search_details(query, top_k=3)
    full = loc.search_details(query, top_k=3, exact=True)
    assert two.path == "index"
    agree = sum(any(h.video_id == f.video_id and _iou([h.start, h.end], [f.start, f.end]) > 0.5 for f in full.hits)
                for h in two.hits)
    assert agree >= 2, (two.hits, full.hits)
    one = loc.localize_details("match01", query, top_k=3, curve=False)
    one_exact = loc.localize_details("match01", query, top_k=3, curve=False, exact=True)
    assert one.path == "index" and one_exact.path == "exact" and one.moments
    assert any(_iou([m.start, m.end], [x.start, x.end]) > 0.5 for m in one.moments for x in one_exact.moments)


def test_cli_index_build_search_and_localize_say_which_path_ran(localize_demo, tmp_path, capsys):
    store = _copy_store(localize_demo, tmp_path / "store")
    assert main(["index", "build", "--store", store.uri]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("index rebuilt: IDMap2,Flat") and "3 videos added" in out.out
    assert main(["index", "build", "--store", store.uri, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["changed"] is False and got["kept"] == 3
    args = ["search", "--query", localize_demo.clip, "--corpus", store.uri, "--model", "baseline", "--top-k", "3",
            "--json"]
    assert main(args) == 0
    out = capsys.readouterr()
    got = json.loads(out.out)
    assert got["path"] == "index" and "vector index" in out.err
    assert main(args + ["--exact"]) == 0
    exact = json.loads(capsys.readouterr().out)
    assert exact["path"] == "exact" and exact["hits"][0] == got["hits"][0]
    loc_args = ["localize", "--query", localize_demo.clip, "--target", "match02", "--store", store.uri, "--model",
                "baseline", "--json"]
    assert main(loc_args) == 0
    assert json.loads(capsys.readouterr().out)["path"] == "index"
    assert main(loc_args + ["--exact"]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == "exact"
    assert main(["index", "build", "--store", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vmr index: error:") and "empty" in err and len(err.splitlines()) == 1


def test_search_store_takes_the_index_before_ray(localize_demo, tmp_path):
    store = _copy_store(localize_demo, tmp_path / "store")
    VectorIndex(store).build()
    result = search_store(Localizer("baseline"), localize_demo.clip, store.uri, top_k=2, use_ray=True)
    assert result.path == "index" and not result.ray


def test_the_extraction_hook_adds_new_videos_when_an_index_exists(tmp_path):
    store, query = _synthetic_store(tmp_path / "s", n_videos=3)
    said: list[str] = []
    assert index_after_extract(store, said.append) is None and said == []  # no index: nothing happens
    VectorIndex(store).build()
    _write(store, "v70", _unit(np.random.default_rng(3).normal(size=(30, DIM))))
    report = index_after_extract(store, said.append)
    assert report.added == 1 and said and said[0].startswith("vector index updated: 1 videos added")
    VectorIndex(store).open()  # current again


# ---- the compacted manifest ----------------------------------------------------------------------------------------


def test_the_compacted_manifest_is_read_first_and_rebuilt_when_stale(tmp_path):
    store, _ = _synthetic_store(tmp_path / "s", n_videos=4, rows=10)
    compact = tmp_path / "s" / "manifest.parquet"
    assert not compact.exists()
    first = store.entries()
    assert compact.exists() and first == store.entries(compact=False)
    stamp = compact.stat().st_mtime_ns
    assert store.entries() == first and compact.stat().st_mtime_ns == stamp  # current: read, not rewritten
    _write(store, "v10", _unit(np.random.default_rng(4).normal(size=(5, DIM))))  # new
    _write(store, "v01", _unit(np.random.default_rng(5).normal(size=(7, DIM))), etag="9")  # re-extracted
    (tmp_path / "s" / "manifest" / "v02.json").unlink()  # removed
    got = store.entries()
    assert got == store.entries(compact=False)
    assert sorted(got) == ["v00", "v01", "v03", "v10"] and got["v01"]["n_frames"] == 7
    assert compact.stat().st_mtime_ns != stamp
    compact.write_bytes(b"not parquet")  # damaged: ignored and rebuilt
    assert store.entries() == got
    import pyarrow.parquet as pq

    assert sorted(pq.read_table(compact).column("name").to_pylist()) == ["v00.json", "v01.json", "v03.json",
                                                                        "v10.json"]


def test_the_compacted_manifest_in_s3(s3_server):
    store, _ = _synthetic_store(s3_server.bucket() + "/s", n_videos=3, rows=10)
    first = store.entries()
    assert first == store.entries(compact=False) and "s/manifest.parquet" in s3_server.keys(store.uri)
    _write(store, "v09", _unit(np.random.default_rng(6).normal(size=(5, DIM))))
    assert sorted(store.entries()) == ["v00", "v01", "v02", "v09"]
