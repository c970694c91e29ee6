import numpy as np
import pytest
import torch

from vmr.data.samples import Sample, collate
from vmr.models.baseline import CosineBaseline, CosineBaselineConfig, window_scores
from vmr.spans import temporal_iou


def _video(rng, m, d=64):
    """Temporally smooth unit-norm features (neighbouring frames look alike, as in real footage)."""
    walk = np.cumsum(rng.normal(size=(m, d)), axis=0) + 3 * rng.normal(size=(1, d))
    return (walk / np.linalg.norm(walk, axis=1, keepdims=True)).astype(np.float32)


def _noisy(rng, x, scale=0.05):
    y = x + scale * rng.normal(size=x.shape)
    return (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)


def _clip_sample(rng, m=150, i0=60, i1=84, step=0.5, t0=100.0, sid="s"):
    target = _video(rng, m)
    times = t0 + step * np.arange(m)
    query = _noisy(rng, target[i0:i1])
    span = [times[i0], times[i1 - 1] + step]
    return Sample(sid, f"t{sid}", target, times, step, query, spans=[span])


WINDOWS = CosineBaselineConfig(method="windows")


@pytest.mark.parametrize("method, min_iou", [("windows", 0.7), ("run", 0.3)])
def test_finds_a_clip_of_the_target(method, min_iou):
    """A noisy copy of a stretch of a smooth random walk. The run method has no length to go by, and the walk's
    neighbouring rows resemble the clip's edges, so its moment spills over them (real footage: test_real_*)."""
    rng = np.random.default_rng(0)
    for trial in range(5):
        i0 = int(rng.integers(0, 110))
        s = _clip_sample(rng, i0=i0, i1=i0 + int(rng.integers(10, 40)), t0=float(rng.uniform(0, 1000)))
        out = CosineBaseline(CosineBaselineConfig(method=method)).localize(s.query, s.target, s.target_times, s.step,
                                                                            top_k=5)
        assert out.shape[1] == 3 and 1 <= len(out) <= 5
        assert (np.diff(out[:, 2]) <= 0).all()  # best first
        assert temporal_iou(out[0, :2], s.spans[0]) > min_iou, (trial, out[0], s.spans[0])
        assert out[0, 0] <= np.mean(s.spans[0]) <= out[0, 1]  # the moment holds the clip's centre


def test_the_run_follows_an_event_of_any_length_in_static_footage():
    """A fixed camera: a static scene with small noise, and an event (a direction added to the frames) lasting 4 rows
    in the query and 16 rows in the target (a replay slowed 4x): the run covers the slowed event, windows of
    0.5-2x the query's length cannot."""
    rng = np.random.default_rng(5)
    d = 64
    scene, event = rng.normal(size=d), rng.normal(size=d)

    def frames(n, on):
        x = scene + 0.05 * rng.normal(size=(n, d))
        x[on] += 0.5 * event + 0.05 * rng.normal(size=(int(np.sum(on)), d))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    on = np.zeros(80, dtype=bool)
    on[30:46] = True
    target, query = frames(80, on), frames(4, np.ones(4, dtype=bool))
    times = 2.0 * np.arange(80)
    run = CosineBaseline().localize(query, target, times, 2.0)
    windows = CosineBaseline(WINDOWS).localize(query, target, times, 2.0)
    assert temporal_iou(run[0, :2], [60.0, 92.0]) > 0.8
    assert temporal_iou(windows[0, :2], [60.0, 92.0]) < 0.6


def test_finds_a_clip_played_at_half_speed():
    rng = np.random.default_rng(1)
    s = _clip_sample(rng, i0=30, i1=70)
    query = s.query[::2]  # 20 rows standing for 40 rows of the target: the 2x window length covers it
    out = CosineBaseline(WINDOWS).localize(query, s.target, s.target_times, s.step)
    assert temporal_iou(out[0, :2], s.spans[0]) > 0.7


def test_score_prefers_the_exact_window_over_parts_and_supersets():
    rng = np.random.default_rng(2)
    target = torch.from_numpy(_video(rng, 100))
    query = target[40:60]
    scores = window_scores(query, target, [10, 20, 40])
    exact = scores[20][40]
    assert exact == pytest.approx(1.0, abs=1e-5)
    assert scores[10][45] < exact and scores[40][30] < exact  # a part inside, a superset around
    assert int(torch.argmax(scores[20])) == 40


def test_batch_respects_padding_and_matches_single_items():
    rng = np.random.default_rng(3)
    short = _clip_sample(rng, m=60, i0=10, i1=30, sid="a")
    long = _clip_sample(rng, m=150, i0=90, i1=130, sid="b")
    batch = collate([short, long])
    # poison the padding: padded target rows of item 0 copy its query, padded query rows are random; a baseline
    # that ignored the masks would move its window there
    m, n = len(short.target), len(short.query)
    fill = batch["target"].shape[1] - m
    batch["target"][0, m:] = torch.from_numpy(np.resize(short.query, (fill, short.query.shape[1])))
    batch["query"][0, n:] = torch.from_numpy(_video(rng, batch["query"].shape[1] - n))
    base = CosineBaseline(WINDOWS)
    preds = base.predict(base(batch), batch, top_k=3)
    assert len(preds) == 2
    for pred, s in zip(preds, [short, long]):
        single = base.localize(s.query, s.target, s.target_times, s.step, top_k=3)
        np.testing.assert_allclose(pred, single, rtol=1e-6, atol=1e-6)
        assert pred[:, 0].min() >= s.target_times[0] and pred[:, 1].max() <= s.target_times[-1] + s.step + 1e-9
        assert temporal_iou(pred[0, :2], s.spans[0]) > 0.7


def test_fixed_lengths_in_seconds_and_empty_inputs():
    rng = np.random.default_rng(4)
    s = _clip_sample(rng, i0=20, i1=40)  # 10 s at 0.5 s per row
    base = CosineBaseline(CosineBaselineConfig(lengths_s=(10.0,)))
    out = base.localize(s.query[:3], s.target, s.target_times, s.step, top_k=None)
    assert np.allclose(out[:, 1] - out[:, 0], 10.0)
    assert base.localize(s.query[:0], s.target, s.target_times, s.step).shape == (0, 3)
    with pytest.raises(ValueError, match="share D"):
        base.localize(s.query[:, :10], s.target, s.target_times, s.step)


def test_real_clip_features_find_their_own_segment(shared_data):
    """Real CLIP ViT-B/32 frame features (one row per 2 s): a 12 s excerpt is found in its 30 s video."""
    feats = np.load(shared_data / "features" / "univtg-sample" / "vid.npz")["features"].astype(np.float32)
    step = 2.0
    times = step * np.arange(len(feats))
    out = CosineBaseline().localize(feats[5:11], feats, times, step)
    assert temporal_iou(out[0, :2], [10.0, 22.0]) > 0.7
