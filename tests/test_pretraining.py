"""Random-clip pretraining samples: the ground truth stays on the clip's frames under every augmentation."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmr import config as vconfig
from vmr.data.pretrain_clips import (
    AUGMENTATIONS,
    ClipSpec,
    PretrainConfig,
    add_noise,
    materialize_clip,
    resample_rows,
    resampled_length,
    sample_clip_specs,
    video_extents,
)
from vmr.data.samples import collate
from vmr.errors import ConfigError, InputError
from vmr.features.store import FeatureStore, VideoFeatures


def _video(video_id: str, n: int, step: float, offset: float = 0.0, jitter: float = 0.0, dim: int = 16, seed: int = 0):
    """Random unit features; timestamps ``offset + i*step`` plus a jitter in ``[0, jitter*step)``."""
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, dim)).astype(np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    t = offset + step * np.arange(n) + rng.uniform(0, jitter * step, n) * (jitter > 0)
    return VideoFeatures(video_id=video_id, timestamps=t, features=f, entry={"fps": 1.0 / step, "duration": n * step})


configs = st.builds(
    PretrainConfig,
    clip_unit=st.sampled_from(["seconds", "fraction"]),
    clip_min=st.floats(0.05, 0.5),
    clip_max=st.floats(0.5, 1.0),
    max_clip_fraction=st.floats(0.1, 1.0),
    target_window_s=st.one_of(st.none(), st.tuples(st.floats(1.0, 20.0), st.floats(20.0, 60.0))),
    clips_per_video=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs, n=st.integers(1, 120), step=st.floats(0.1, 2.0), offset_frac=st.floats(0.0, 0.6),
       jitter=st.sampled_from([0.0, 0.2]), epoch=st.integers(0, 5), seconds_scale=st.floats(1.0, 10.0))
def test_ground_truth_is_inside_the_target_and_covers_exactly_the_clip_rows(cfg, n, step, offset_frac, jitter, epoch,
                                                                           seconds_scale):
    if cfg.clip_unit == "seconds":  # clip lengths in seconds of the order of the video, not only fractions of a second
        cfg = PretrainConfig(**{**vconfig.to_dict(cfg), "clip_min": cfg.clip_min * seconds_scale,
                                "clip_max": cfg.clip_max * seconds_scale,
                                "target_window_s": cfg.target_window_s})
    vf = _video("v", n, step, offset=offset_frac * step, jitter=jitter)
    v0, v1 = float(vf.timestamps[0]), float(vf.timestamps[-1] + vf.step)
    specs = sample_clip_specs({"v": (v0, v1)}, cfg, epoch=epoch)
    assert len(specs) == 2 * cfg.clips_per_video  # the original and one augmented copy per clip
    by_clip: dict[str, list] = {}
    for spec in specs:
        assert v0 <= spec.target_start <= spec.clip_start < spec.clip_end <= spec.target_end <= v1 + 1e-9
        s = materialize_clip(spec, vf)
        start, end = s.spans[0]
        t = s.target_times
        assert t[0] <= start < end <= t[-1] + s.step + 1e-9  # the ground truth lies inside the target
        q0, q1 = s.meta["query_rows"]
        w0, _ = s.meta["target_rows"]
        fg = np.flatnonzero(s.foreground())
        # the ground truth marks exactly the target rows the query was cut from, whatever the augmentation
        np.testing.assert_array_equal(fg, np.arange(q0 - w0, q1 - w0))
        np.testing.assert_array_equal(s.target[fg], vf.features[q0:q1])
        np.testing.assert_allclose(np.linalg.norm(s.query, axis=1), 1.0, atol=1e-5)
        assert len(s.query) == resampled_length(q1 - q0, spec.augmentation, spec.factor)
        by_clip.setdefault(spec.sample_id.rsplit(":", 1)[0], []).append(s)
    for pair in by_clip.values():  # original and augmented copy share target and ground truth
        assert [p.meta["augmentation"] for p in pair][0] == "none" and pair[1].meta["augmentation"] in AUGMENTATIONS
        np.testing.assert_array_equal(pair[0].spans, pair[1].spans)
        np.testing.assert_array_equal(pair[0].target_times, pair[1].target_times)


def _pair(aug: str, n_rows: int = 12, **spec_kw):
    vf = _video("v", 40, 0.5, dim=32, seed=3)
    base = dict(video_id="v", clip_start=5.0, clip_end=5.0 + n_rows * 0.5, target_start=0.0, target_end=20.0)
    orig = materialize_clip(ClipSpec(sample_id="o", **base), vf)
    aug_s = materialize_clip(ClipSpec(sample_id="a", augmentation=aug, **base, **spec_kw), vf)
    return vf, orig, aug_s


def test_original_query_is_the_clip_frames_and_reverse_really_reverses():
    vf, orig, rev = _pair("reverse")
    np.testing.assert_array_equal(orig.query, vf.features[10:22])
    np.testing.assert_array_equal(rev.query, orig.query[::-1])
    np.testing.assert_array_equal(rev.spans, [[5.0, 11.0]])


def test_noise_keeps_unit_norm_perturbs_by_sigma_and_is_reproducible():
    _, orig, noisy = _pair("noise", noise_sigma=0.3, seed=7)
    np.testing.assert_allclose(np.linalg.norm(noisy.query, axis=1), 1.0, atol=1e-5)
    cos = np.sum(orig.query * noisy.query, axis=1)
    # noise of relative norm 0.3 then re-normalisation: cos ~ 1/sqrt(1 + 0.09) = 0.958
    assert 0.9 < cos.mean() < 0.99
    _, _, again = _pair("noise", noise_sigma=0.3, seed=7)
    np.testing.assert_array_equal(noisy.query, again.query)
    _, _, other = _pair("noise", noise_sigma=0.3, seed=8)
    assert not np.array_equal(noisy.query, other.query)
    np.testing.assert_allclose(add_noise(orig.query, 0.0, np.random.default_rng(0)), orig.query, atol=1e-6)


@pytest.mark.parametrize("aug,factor,expected", [("slow", 2.0, 24), ("slow", 1.5, 18), ("fast", 2.0, 6),
                                                 ("fast", 1.5, 8), ("fast", 30.0, 1)])
def test_slow_and_fast_change_the_row_count_by_the_factor(aug, factor, expected):
    _, orig, s = _pair(aug, factor=factor)
    assert len(s.query) == expected
    np.testing.assert_array_equal(s.spans, orig.spans)


def test_resampling_keeps_the_order_and_the_ends_of_the_clip():
    eye = np.eye(10, dtype=np.float32)
    slow = resample_rows(eye, 20)
    fast = resample_rows(eye, 5)
    for out in (slow, fast):
        peaks = out.argmax(axis=1)
        assert np.all(np.diff(peaks) >= 0)  # time runs forward
    assert slow.argmax(1)[0] == 0 and slow.argmax(1)[-1] == 9
    np.testing.assert_allclose(resample_rows(eye, 10), eye, atol=1e-6)  # factor 1 is the identity
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-6)


def test_specs_are_deterministic_per_seed_and_epoch_and_independent_of_other_videos():
    cfg = PretrainConfig(target_window_s=(10.0, 30.0), clips_per_video=3, seed=5)
    videos = {"a": 100.0, "b": 50.0}
    s1 = sample_clip_specs(videos, cfg, epoch=2)
    assert s1 == sample_clip_specs(videos, cfg, epoch=2)
    assert s1 != sample_clip_specs(videos, cfg, epoch=3)
    assert [s for s in s1 if s.video_id == "a"] == [s for s in sample_clip_specs({**videos, "c": 9.0}, cfg, 2)
                                                    if s.video_id == "a"]
    assert all(ClipSpec.from_dict(s.to_dict()) == s for s in s1)


def test_augmentation_mix_follows_the_weights():
    cfg = PretrainConfig(clips_per_video=400, weight_reverse=0, weight_noise=3, weight_slow=1, weight_fast=0)
    specs = sample_clip_specs({"v": 60.0}, cfg)
    augs = [s.augmentation for s in specs if s.augmentation != "none"]
    assert set(augs) == {"noise", "slow"}
    assert 0.65 < augs.count("noise") / len(augs) < 0.85
    assert all(1.5 <= s.factor <= 2.0 for s in specs if s.augmentation == "slow")
    only_aug = sample_clip_specs({"v": 60.0}, PretrainConfig(include_original=False, clips_per_video=5))
    assert len(only_aug) == 5 and all(s.augmentation != "none" for s in only_aug)


def test_clip_lengths_follow_the_configured_distribution():
    cfg = PretrainConfig(clip_min=2.0, clip_max=6.0, max_clip_fraction=1.0, clips_per_video=300)
    lens = np.array([s.clip_end - s.clip_start for s in sample_clip_specs({"v": 600.0}, cfg)[::2]])
    assert lens.min() >= 2.0 and lens.max() <= 6.0 and abs(lens.mean() - 4.0) < 0.25
    frac = PretrainConfig(clip_unit="fraction", clip_min=0.1, clip_max=0.2, target_window_s=(40.0, 40.0))
    for s in sample_clip_specs({"v": 300.0}, frac):
        assert s.target_end - s.target_start == pytest.approx(40.0)
        assert 4.0 - 1e-9 <= s.clip_end - s.clip_start <= 8.0 + 1e-9
    long_ = sample_clip_specs({"v": 600.0}, PretrainConfig(clips_per_video=1, clips_per_minute=2.0))
    assert len(long_) == 2 * (1 + 20)


def test_config_from_yaml_overrides_and_bad_values():
    cfg = vconfig.resolve(PretrainConfig, overrides=["target_window_s=[10, 30]", "weight_fast=0", "clip_unit=fraction",
                                                     "clip_min=0.1", "clip_max=0.5"])
    assert cfg.target_window_s == (10.0, 30.0) and cfg.weight_fast == 0.0
    with pytest.raises(ConfigError):
        vconfig.resolve(PretrainConfig, overrides=["clip_min=5", "clip_max=1"])
    with pytest.raises(ConfigError):
        vconfig.resolve(PretrainConfig, overrides=["slow_factor=[0.5, 2]"])
    with pytest.raises(ConfigError):
        vconfig.resolve(PretrainConfig, overrides=["clip_unit=fraction", "clip_max=2"])


def test_spec_outside_the_features_is_a_clear_error():
    vf = _video("v", 10, 1.0)
    spec = ClipSpec(sample_id="x", video_id="v", clip_start=50.0, clip_end=52.0, target_start=40.0, target_end=60.0)
    with pytest.raises(InputError, match="does not fit the features"):
        materialize_clip(spec, vf)
    with pytest.raises(InputError):
        sample_clip_specs({"v": 0.0}, PretrainConfig())


def test_real_clip_features_make_a_padded_pretraining_batch(shared_data):
    f = np.load(shared_data / "features" / "univtg-sample" / "vid.npz")["features"].astype(np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    vf = VideoFeatures(video_id="univtg", timestamps=2.0 * np.arange(len(f)), features=f, entry={"fps": 0.5})
    cfg = PretrainConfig(clip_min=4.0, clip_max=10.0, clips_per_video=4, seed=1)
    samples = [materialize_clip(s, vf) for s in sample_clip_specs({"univtg": 30.0}, cfg)]
    batch = collate(samples, max_target=15, max_query=12)
    assert batch["target"].shape == (8, 15, 512) and batch["query"].shape == (8, 12, 512)
    for b, s in enumerate(samples):
        q0, q1 = s.meta["query_rows"]
        assert batch["fg"][b].sum().item() == q1 - q0
        # the original query is made of the target frames under its ground truth (real CLIP rows, not synthetic)
        if s.meta["augmentation"] == "none":
            np.testing.assert_array_equal(batch["query"][b, : q1 - q0].numpy(), batch["target"][b][batch["fg"][b] > 0])


def test_extents_come_from_the_store_manifest_and_clips_stay_on_the_frames(tmp_path):
    store = FeatureStore(str(tmp_path / "store"))
    entry = dict(source_uri="x", source_size=1, source_etag="e", duration=10.0, fps=2.0, model="m", pretrained="p",
                 extractor_version="1")
    vf = _video("late/start", 19, 0.5, offset=0.25)
    store.write("late/start", vf.timestamps, vf.features, entry)
    extents = video_extents(store)
    assert extents == {"late/start": (0.25, pytest.approx(0.25 + 9.5))}
    cfg = PretrainConfig(clip_min=0.05, clip_max=0.2, clips_per_video=50)
    for spec in sample_clip_specs(extents, cfg):
        s = materialize_clip(spec, store)
        assert s.foreground().sum() >= 1
