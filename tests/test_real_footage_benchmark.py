"""benchmarks/real_footage.py builds the same items for the same seed, other items for another seed, and every
item's ground truth lies inside its target.

The items are built from the normal-speed variants only (0.5 samples/s features). Features are cached outside the
repository, in the benchmark's own cache (``VMR_BENCH_CACHE``, else ``~/.cache/vmr-bench/real_footage``), so after
the first run (which extracts about 150 frames with the seeded random CLIP weights) a build takes seconds.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("real_footage_benchmark", ROOT / "benchmarks" / "real_footage.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve the module's annotations through sys.modules
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def build(bench, shared_data):
    cache = Path(os.environ.get("VMR_BENCH_CACHE", bench.DEFAULT_CACHE)).expanduser()

    def run(seed: int):
        return bench.build_items(cache, seed, variants=("normal",), videos_dir=shared_data / "videos")

    return run


@pytest.fixture(scope="module")
def items(build):
    return build(0)


def test_same_seed_same_items(build, items):
    again = build(0)
    assert [it.name for it in again] == [it.name for it in items]
    for a, b in zip(items, again):
        assert a.kind == b.kind and a.gt == pytest.approx(b.gt)
        np.testing.assert_allclose(a.query, b.query, atol=1e-6)
        np.testing.assert_allclose(a.target, b.target, atol=1e-6)
        np.testing.assert_allclose(a.target_times, b.target_times)


def test_other_seed_other_items(build, items):
    other = build(1)

    def layout(its):
        return [(it.name, tuple(round(x, 6) for x in it.gt), it.target.shape, it.query.shape) for it in its]

    assert layout(other) != layout(items)


def test_kinds_counts_and_shapes(bench, items):
    splice = [it for it in items if it.kind == "splice"]
    recurring = [it for it in items if it.kind == "recurring"]
    assert len(splice) == bench.N_SPLICE
    assert recurring and all(it.info["variant"] == "normal" for it in recurring)
    for it in items:
        n, d = it.query.shape
        m, d2 = it.target.shape
        assert d == d2 and n >= 1 and m >= n
        assert it.target_times.shape == (m,) and np.all(np.diff(it.target_times) > 0)
        assert it.query.dtype == np.float32 and it.target.dtype == np.float32


def test_ground_truth_inside_target(items):
    for it in items:
        start, end = it.gt
        assert it.target_times[0] - 1e-9 <= start < end <= it.target_times[-1] + it.step + 1e-9, it.name


def test_splice_query_is_outside_the_ground_truth_segment(items):
    for it in items:
        if it.kind != "splice":
            continue
        q0, q1 = it.info["query_rows"]
        gt_segment = [s for s in it.info["segments"] if s["source"] == it.info["source"]]
        assert len(gt_segment) == 1  # one segment per source video
        s0, s1 = gt_segment[0]["rows"]
        assert q1 <= s0 or s1 <= q0
        assert 3 <= len(it.info["segments"]) <= 5


def test_recurring_target_holds_no_other_instance(bench, items):
    events = bench.load_events()
    for it in items:
        if it.kind != "recurring":
            continue
        t0, t1 = it.info["target_s_in_video"]
        g0, g1 = it.info["gt_s_in_video"]
        q0, q1 = it.info["query_s"]
        assert t0 <= g0 + bench.STEP and g1 - bench.STEP <= t1
        for e in events:
            if e.video_id == it.info["video"] and e.action_class == it.info["class"] and e.start != g0:
                assert e.end <= t0 + 1e-9 or e.start >= t1 - 1e-9, (it.name, e)
        assert q1 <= t0 + 1e-9 or q0 >= t1 - 1e-9


def test_adaptive_cosine_run(bench):
    rng = np.random.default_rng(0)
    background = rng.normal(size=(1, 16))
    event = rng.normal(size=(1, 16))
    target = np.repeat(background, 10, axis=0) + 0.01 * rng.normal(size=(10, 16))
    target[4:7] = event + 0.01 * rng.normal(size=(3, 16))
    query = np.repeat(event, 2, axis=0)
    times = np.arange(10) * 2.0
    pred = bench.adaptive_cosine_run(query, target, times, 2.0)
    assert pred.shape == (1, 3)
    assert pred[0, :2].tolist() == [8.0, 14.0]
