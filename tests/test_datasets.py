"""The plain PyTorch data path and the Ray Data path give the same padded batches for the same specs."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vmr.data.pretrain_clips import ClipSpec, PretrainConfig, sample_clip_specs, video_extents
from vmr.data.samples import Sample, collate
from vmr.data.specs import (
    FeatureCache,
    SpecDataset,
    crop_to_max,
    make_loader,
    materialize,
    spec_from_record,
    spec_to_record,
)

MAX_T, MAX_Q = 64, 16


def _specs(store, n_clips=2, seed=3):
    cfg = PretrainConfig(clip_min=1.0, clip_max=12.0, target_window_s=(10.0, 50.0), clips_per_video=n_clips, seed=seed)
    return sample_clip_specs(video_extents(store), cfg)


def _assert_batches_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


# ---- torch path -------------------------------------------------------------------------------------------------


def test_loader_gives_fixed_shape_batches_whose_foreground_is_the_clip(pretraining_store):
    specs = _specs(pretraining_store)
    ds = SpecDataset(specs, pretraining_store.uri, max_target=MAX_T, max_query=MAX_Q)  # a URI: opened lazily
    seen = 0
    for batch in make_loader(ds, batch_size=4):
        b = len(batch["sample_id"])
        assert batch["target"].shape == (b, MAX_T, 64) and batch["query"].shape == (b, MAX_Q, 64)
        for i in range(b):
            start, end = batch["spans"][i, 0].tolist()
            times = batch["target_times"][i][batch["target_mask"][i]]
            assert times[0] <= start < end <= times[-1] + batch["step"][i] + 1e-9
            assert batch["fg"][i].sum() >= 1 and not (batch["fg"][i].bool() & ~batch["target_mask"][i]).any()
        seen += b
    assert seen == len(specs)
    # windows of up to 50 s = 100 rows are cropped to 64 rows around the clip; long queries are resampled to 16
    assert any(len(materialize(s, pretraining_store).target) > MAX_T for s in specs)
    assert any(len(materialize(s, pretraining_store).query) > MAX_Q for s in specs)


def test_worker_processes_give_the_same_batches(pretraining_store):
    specs = _specs(pretraining_store)[:12]
    ds = SpecDataset(specs, pretraining_store.uri, max_target=MAX_T, max_query=MAX_Q)
    single = list(make_loader(ds, batch_size=4))
    multi = list(make_loader(ds, batch_size=4, num_workers=2))
    for a, b in zip(single, multi, strict=True):
        _assert_batches_equal(a, b)
    shuffled = list(make_loader(ds, batch_size=4, shuffle=True, seed=1))
    assert sorted(sum((b["sample_id"] for b in shuffled), [])) == sorted(s.sample_id for s in specs)
    assert [b["sample_id"] for b in shuffled] == [b["sample_id"] for b in make_loader(ds, 4, shuffle=True, seed=1)]


def test_crop_false_keeps_collates_error_for_too_long_samples(pretraining_store):
    specs = [s for s in _specs(pretraining_store) if len(materialize(s, pretraining_store).target) > MAX_T]
    ds = SpecDataset(specs, pretraining_store, max_target=MAX_T, max_query=MAX_Q, crop=False)
    with pytest.raises(ValueError, match="more than max_target"):
        next(iter(make_loader(ds, batch_size=2)))


def _sample(m: int, spans, n_query: int = 5, kind: str = "video", step: float = 0.5, sid: str = "s") -> Sample:
    rng = np.random.default_rng(m)
    t = rng.normal(size=(m, 8)).astype(np.float32)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    q = rng.normal(size=(n_query, 8)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return Sample(sample_id=sid, target_id="v", target=t, target_times=3.0 + step * np.arange(m), step=step, query=q,
                  spans=np.asarray(spans, dtype=np.float64).reshape(-1, 2), query_kind=kind)


@settings(max_examples=80, deadline=None)
@given(m=st.integers(2, 200), data=st.data())
def test_crop_keeps_every_ground_truth_row_inside_a_window_of_max_rows(m, data):
    n_spans = data.draw(st.integers(0, 3))
    rows = sorted(data.draw(st.lists(st.integers(0, m - 1), min_size=2 * n_spans, max_size=2 * n_spans)))
    spans = [(3.0 + 0.5 * rows[2 * i], 3.0 + 0.5 * rows[2 * i + 1] + 0.2) for i in range(n_spans)]
    s = _sample(m, spans, sid=data.draw(st.text(min_size=1, max_size=8)))
    fg = np.flatnonzero(s.foreground())
    width = fg[-1] - fg[0] + 1 if len(fg) else 1
    max_t = data.draw(st.integers(width, max(width, m + 5)))
    c = crop_to_max(s, max_target=max_t, seed=data.draw(st.integers(0, 3)))
    assert len(c.target) == min(m, max_t)
    start, end = c.target_times[0], c.target_times[-1] + c.step
    assert np.all(c.spans >= start - 1e-9) and np.all(c.spans <= end + 1e-9)
    # the same target rows are foreground before and after the crop: nothing of the ground truth is lost
    np.testing.assert_array_equal(c.target[c.foreground()], s.target[fg])
    # and the crop is a function of the sample id and seed, so every data path crops alike
    np.testing.assert_array_equal(crop_to_max(s, max_target=max_t, seed=0).target_times,
                                  crop_to_max(s, max_target=max_t, seed=0).target_times)


def test_crop_places_the_window_at_random_around_the_ground_truth():
    s0 = _sample(100, [(3.0 + 0.5 * 40, 3.0 + 0.5 * 50)])
    starts = {crop_to_max(Sample(**{**s0.__dict__, "sample_id": f"s{i}"}), max_target=30).target_times[0]
              for i in range(60)}
    assert len(starts) > 10  # window start varies (uniform among the 21 windows containing rows 40..49)
    assert min(starts) >= 3.0 + 0.5 * 20 and max(starts) <= 3.0 + 0.5 * 40
    with pytest.raises(ValueError, match="ground truth covers 10 target rows, more than max_target=8"):
        crop_to_max(s0, max_target=8)


def test_query_fitting_resamples_video_and_truncates_text():
    v = crop_to_max(_sample(10, [(3.0, 4.0)], n_query=40), max_query=16)
    assert v.query.shape == (16, 8)
    np.testing.assert_allclose(np.linalg.norm(v.query, axis=1), 1.0, atol=1e-5)
    t0 = _sample(10, [(3.0, 4.0)], n_query=40, kind="text")
    t = crop_to_max(t0, max_query=16)
    np.testing.assert_array_equal(t.query, t0.query[:16])
    assert crop_to_max(t0, max_target=10, max_query=40) is t0


def test_feature_cache_is_lru_and_ships_empty(pretraining_store):
    cache = FeatureCache(pretraining_store.uri, max_videos=2)
    a = cache.load("match/a")
    assert cache.load("match/a") is a
    cache.load("match/b")
    cache.load("c")  # evicts match/a
    assert cache.load("match/a") is not a
    assert (cache.hits, cache.misses) == (1, 4)
    clone = pickle.loads(pickle.dumps(cache))
    assert clone.misses == 0 and clone.load("c").video_id == "c" and clone.misses == 1


def test_spec_records_round_trip_and_unknown_specs_fail_early(pretraining_store):
    for spec in _specs(pretraining_store)[:6]:
        rec = spec_to_record(spec)
        assert rec["kind"] == "clip" and rec["sample_id"] == spec.sample_id
        assert spec_from_record(rec) == spec
    with pytest.raises(TypeError, match="no materializer registered"):
        SpecDataset([object()], pretraining_store)
    with pytest.raises(TypeError, match="unknown spec kind"):
        spec_from_record({"kind": "nope", "spec": "{}"})


def test_annotation_pairs_and_sentences_go_through_the_same_dataset(pretraining_store):
    pairs = pytest.importorskip("vmr.data.pairs")
    pair = pairs.PairSpec(pair_id="p1", query_video="match/a", query_start=2.0, query_end=6.0, target_video="c",
                          target_start=10.0, target_end=70.0, spans=((30.0, 34.0),), action_class="goal",
                          split="train")
    text = pairs.TextSpec(qid="q1", vid="match/b", sentence="a goal", spans=((5.0, 9.0), (20.0, 22.0)), split="train")
    emb = np.random.default_rng(0).normal(size=64).astype(np.float32)
    clip = _specs(pretraining_store)[0]
    ds = SpecDataset([pair, text, clip], pretraining_store, max_target=MAX_T, max_query=MAX_Q,
                     context={"text_features": {"a goal": emb / np.linalg.norm(emb)}})
    batch = next(iter(make_loader(ds, batch_size=3)))
    assert batch["sample_id"][:2] == ["p1", "q1"] and batch["target"].shape == (3, MAX_T, 64)
    assert batch["span_mask"].sum(1).tolist() == [1, 2, 1]
    assert batch["query_mask"][1].sum() == 1  # one sentence embedding
    for b in range(2):  # cropped to 64 rows around every ground-truth span, none lost
        assert batch["fg"][b].sum() == ds[b].foreground().sum()
    for spec in (pair, text):
        assert spec_from_record(spec_to_record(spec)) == spec


# ---- Ray path ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    old = ctx.execution_options.preserve_order, ctx.enable_progress_bars
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    yield ray
    ctx.execution_options.preserve_order, ctx.enable_progress_bars = old
    ray.shutdown()


@pytest.mark.slow
def test_ray_dataset_batches_equal_the_torch_path(local_ray, pretraining_store):
    from vmr.pipeline.datasets import StreamConfig, iter_model_batches, sample_dataset

    specs = _specs(pretraining_store)
    cfg = StreamConfig(max_target=MAX_T, max_query=MAX_Q, max_spans=3, rows_per_call=5, actors=1)
    ray_batches = list(iter_model_batches(sample_dataset(specs, pretraining_store.uri, cfg), batch_size=4))
    torch_batches = list(make_loader(SpecDataset(specs, pretraining_store, MAX_T, MAX_Q), batch_size=4))
    assert len(ray_batches) == len(torch_batches) == -(-len(specs) // 4)
    for a, b in zip(ray_batches, torch_batches):
        _assert_batches_equal(a, b)
        _assert_batches_equal(a, collate([SpecDataset(specs, pretraining_store, MAX_T, MAX_Q).sample(s)
                                           for s in specs if s.sample_id in a["sample_id"]], MAX_T, MAX_Q))


@pytest.mark.slow
def test_ray_train_worker_reads_its_shard_as_model_batches(local_ray, pretraining_store, tmp_path):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from vmr.pipeline.datasets import ModelBatchCollate, StreamConfig, sample_dataset

    specs = _specs(pretraining_store, n_clips=1)
    cfg = StreamConfig(max_target=MAX_T, max_query=MAX_Q, max_spans=2, rows_per_call=4, cpus_per_actor=0.5)

    def loop(_):
        import json
        import os
        import tempfile

        import ray.train

        shapes, ids = set(), []
        shard = ray.train.get_dataset_shard("train")
        for batch in shard.iter_torch_batches(batch_size=3, collate_fn=ModelBatchCollate()):
            shapes.add((tuple(batch["target"].shape[1:]), tuple(batch["query"].shape[1:])))
            ids += batch["sample_id"]
            assert batch["target_mask"].dtype == torch.bool and batch["fg"].sum() >= len(batch["sample_id"])
        with tempfile.TemporaryDirectory() as d:  # Train v2 keeps metrics with checkpoints: ship the result in one
            with open(os.path.join(d, "seen.json"), "w") as f:
                json.dump({"shapes": sorted(shapes), "ids": ids}, f)
            ray.train.report({"rows": len(ids)}, checkpoint=ray.train.Checkpoint.from_directory(d))

    trainer = TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
                           datasets={"train": sample_dataset(specs, pretraining_store.uri, cfg)},
                           run_config=RunConfig(storage_path=str(tmp_path), name="shard"))
    result = trainer.fit()
    with result.checkpoint.as_directory() as d:
        seen = json.loads((Path(d) / "seen.json").read_text())
    assert seen["shapes"] == [[[MAX_T, 64], [MAX_Q, 64]]]
    assert sorted(seen["ids"]) == sorted(s.sample_id for s in specs)


@pytest.mark.slow
def test_ray_skips_a_broken_spec_when_asked(local_ray, pretraining_store):
    from vmr.pipeline.datasets import StreamConfig, sample_dataset

    good = _specs(pretraining_store)[:3]
    bad = ClipSpec(sample_id="missing", video_id="not/there", clip_start=1, clip_end=2, target_start=0, target_end=5)
    cfg = StreamConfig(max_target=MAX_T, max_query=MAX_Q, max_spans=1, rows_per_call=3, on_error="skip")  # 2nd call: all bad
    rows = sample_dataset(good + [bad], pretraining_store.uri, cfg).take_all()
    assert [r["sample_id"] for r in rows] == [s.sample_id for s in good]
    with pytest.raises(Exception, match="not in the feature store"):
        sample_dataset([bad], pretraining_store.uri, StreamConfig(max_target=MAX_T, max_query=MAX_Q)).take_all()
