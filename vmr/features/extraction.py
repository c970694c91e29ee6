"""Feature extraction without Ray: the pieces the Ray Data pipeline (:mod:`vmr.pipeline.extract`) composes, and
:func:`extract_video` to embed one video in-process (for the library, tests, and "extract the target if the store
lacks it" at inference).

One video's path: the source object is spilled to local disk if remote (:func:`spilled`, never held in memory) ->
the sampled frames are decoded in chunks with their container timestamps (:func:`vmr.features.video.iter_sampled_frames`) ->
preprocessed with open_clip's eval transform for the model (:class:`FramePreprocessor`) -> the CLIP image tower ->
L2-normalised rows -> :meth:`vmr.features.store.FeatureStore.write` with a manifest entry (:func:`manifest_entry`).

Failures: a :class:`vmr.features.video.DecodeError` is bad input (its ``.reason`` goes to the failures table); any other
exception while reading a video (the object store went away, a disk filled up) is an error, recorded with the reason
``"error: <type>: <message>"`` so that it is told apart from bad input (see :func:`failure_reason`).
"""
from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from vmr import storage
from vmr.errors import InputError
from vmr.features.settings import FeatureSettings
from vmr.features.store import FeatureStore, VideoFeatures, entry_is_current, video_id_for
from vmr.features.video import VIDEO_EXTENSIONS, DecodeError, iter_sampled_frames, probe

ERROR_PREFIX = "error: "  # failure reasons that are not bad input start with this


@dataclass(frozen=True)
class VideoJob:
    """One video to extract: where it is, its id in the store, and the size/etag the manifest records."""

    uri: str
    video_id: str
    size: int
    etag: str


@dataclass
class Plan:
    """What a run will do: ``todo`` videos to extract and ``skipped`` video ids already current in the store."""

    todo: list[VideoJob]
    skipped: list[str]


def list_videos(videos: str) -> list[storage.FileInfo]:
    """Every video file (``VIDEO_EXTENSIONS``, any case) under the ``videos`` URI or the file itself."""
    return storage.list_files(videos, extensions=VIDEO_EXTENSIONS)


def videos_by_id(videos: str, files: list[storage.FileInfo] | None = None) -> dict[str, storage.FileInfo]:
    """The video files under ``videos`` (listed unless ``files`` is given) keyed by video id. InputError when two
    files map to one id (``a.mp4`` and ``a.mkv``), which would overwrite each other."""
    by_id: dict[str, storage.FileInfo] = {}
    for f in list_videos(videos) if files is None else files:
        vid = video_id_for(f.uri, videos)
        if vid in by_id:
            raise InputError(f"{by_id[vid].uri} and {f.uri} would both be stored as video {vid!r}; rename one")
        by_id[vid] = f
    return by_id


def plan_extraction(videos: str, store: FeatureStore, settings: FeatureSettings, *,
                    allow_empty: bool = False) -> Plan:
    """List ``videos`` and split them into the ones to extract and the ones whose manifest entry is current
    (:func:`vmr.features.store.entry_is_current`: same source size and etag, same settings, features file whole;
    a damaged manifest entry or features file gets its video redone, which repairs it). InputError when there is
    no video (unless ``allow_empty``: then a missing or empty folder plans nothing), or two files map to one id."""
    if allow_empty and not storage.exists(videos):
        return Plan(todo=[], skipped=[])
    by_id = videos_by_id(videos)
    if not by_id:
        if allow_empty:
            return Plan(todo=[], skipped=[])
        raise InputError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) under {videos}")
    entries = store.entries()  # one listing instead of one request per video (a damaged entry is left out)
    sizes = store.feature_sizes()  # and one for the features files: a missing or cut one is redone
    todo, skipped = [], []
    for vid, f in by_id.items():
        if entry_is_current(entries.get(vid), f.size, f.etag, settings, features_size=sizes.get(vid)):
            skipped.append(vid)
        else:
            todo.append(VideoJob(uri=f.uri, video_id=vid, size=f.size, etag=f.etag))
    return Plan(todo=todo, skipped=skipped)


@contextlib.contextmanager
def spilled(uri: str, spill_dir: str | None = None) -> Iterator[str]:
    """A local path holding ``uri``: the file itself when local, else a download streamed into a private temporary
    folder (under ``spill_dir``, default the system temp folder) that is removed on exit."""
    if not storage.is_remote(uri):
        yield storage.strip(uri)
        return
    folder = tempfile.mkdtemp(prefix="vmr-spill-", dir=spill_dir)
    try:
        yield storage.local_copy(uri, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class FramePreprocessor:
    """open_clip's eval image transform for a model, built from its preprocessing config alone (no weights), so that
    decode tasks can preprocess without loading CLIP. ``cfg`` is ``ClipEncoder.model.visual.preprocess_cfg`` (a dict:
    size, mean, std, interpolation, resize_mode, fill_color); the transform is the one
    ``open_clip.create_model_and_transforms`` returns for eval, applied per frame on a PIL image exactly as
    :meth:`vmr.features.clip.ClipEncoder.preprocess` does."""

    def __init__(self, cfg: dict):
        from open_clip.transform import PreprocessCfg, image_transform_v2

        self.cfg = dict(cfg)
        self._transform = image_transform_v2(PreprocessCfg(**self.cfg), is_train=False)
        size = self.cfg.get("size", 224)
        self.size = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """uint8 RGB frames (n, H, W, 3) -> float32 pixels (n, 3, S, S)."""
        import torch
        from PIL import Image

        if len(frames) == 0:
            return np.zeros((0, 3, *self.size), dtype=np.float32)
        return torch.stack([self._transform(Image.fromarray(f)) for f in frames]).numpy()


def preprocess_config(encoder) -> dict:
    """The preprocessing config of a :class:`vmr.features.clip.ClipEncoder`'s model (plain dict, picklable)."""
    return dict(encoder.model.visual.preprocess_cfg)


def iter_pixel_chunks(path: str, fps: float, preprocess, chunk: int = 4) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(timestamps (n,) float64 seconds, pixels (n, 3, S, S) float32)`` chunks of a local video's sampled frames.
    ``preprocess`` maps uint8 frames (n, H, W, 3) to pixels (a :class:`FramePreprocessor`, or ``ClipEncoder.preprocess``).
    Holds at most one chunk of decoded frames. Raises DecodeError (also midway through)."""
    for ts, frames in iter_sampled_frames(path, fps, chunk=chunk):
        pixels = preprocess(frames)
        del frames
        yield ts, np.asarray(pixels, dtype=np.float32)


def manifest_entry(job: VideoJob, duration: float, settings: FeatureSettings) -> dict:
    """The manifest entry fields the extractor supplies (the store adds video_id, n_frames, dim, timestamps, created)."""
    return dict(
        source_uri=job.uri, source_size=int(job.size), source_etag=str(job.etag), duration=float(duration),
        fps=float(settings.fps), model=settings.model, pretrained=settings.pretrained,
        extractor_version=settings.extractor_version,
    )


def failure_reason(error: BaseException) -> str:
    """The failures-table reason for an exception raised while reading one video: DecodeError's stable ``reason``
    for bad input, ``"error: <type>: <message>"`` (one line, shortened) for anything else."""
    if isinstance(error, DecodeError):
        return error.reason
    msg = " ".join(str(error).split())[:300]
    return f"{ERROR_PREFIX}{type(error).__name__}" + (f": {msg}" if msg else "")


def is_input_failure(failure: dict) -> bool:
    """True for a failure caused by the file itself (not an infrastructure error worth retrying)."""
    return not str(failure.get("reason", "")).startswith(ERROR_PREFIX)


def extract_video(
    uri: str,
    encoder,
    fps: float,
    *,
    video_id: str | None = None,
    base: str | None = None,
    chunk: int = 4,
    batch_size: int = 32,
    spill_dir: str | None = None,
) -> VideoFeatures:
    """Embed one video in this process: ``uri`` (any storage URI or path) -> :class:`VideoFeatures` with timestamps
    (n,) float64 seconds, features (n, dim) float32 L2-normalised, and the manifest entry ready for
    :meth:`FeatureStore.write`. ``encoder`` is a :class:`vmr.features.clip.ClipEncoder`; ``video_id`` defaults to the
    path under ``base`` (or the file name) without extension. Raises DecodeError for bad input."""
    src = storage.info(uri)
    vid = video_id or video_id_for(src.uri, base or src.uri)
    job = VideoJob(uri=src.uri, video_id=vid, size=src.size, etag=src.etag)
    settings = FeatureSettings(model=encoder.model_name, pretrained=encoder.pretrained, fps=float(fps))
    import torch

    times, feats = [], []
    with spilled(src.uri, spill_dir) as path:
        duration = probe(path).duration
        pending_t, pending_p = [], []
        for ts, pixels in iter_pixel_chunks(path, fps, encoder.preprocess, chunk=chunk):
            pending_t.append(ts)
            pending_p.append(pixels)
            if sum(len(p) for p in pending_p) >= batch_size:
                times.append(np.concatenate(pending_t))
                feats.append(encoder.encode_images(torch.from_numpy(np.concatenate(pending_p))))
                pending_t, pending_p = [], []
        if pending_p:
            times.append(np.concatenate(pending_t))
            feats.append(encoder.encode_images(torch.from_numpy(np.concatenate(pending_p))))
    if not times:
        raise DecodeError(src.uri, "shorter than one sample", "no frame was sampled")
    entry = manifest_entry(job, duration, settings)
    ts = np.concatenate(times)
    entry.update(video_id=vid, n_frames=int(len(ts)), timestamps=[float(t) for t in ts])
    f = np.concatenate(feats).astype(np.float32)
    entry["dim"] = int(f.shape[1])
    return VideoFeatures(video_id=vid, timestamps=ts, features=f, entry=entry)


def extract_into_store(uri: str, store: FeatureStore, encoder, fps: float, **kwargs) -> VideoFeatures:
    """:func:`extract_video` and write the result into ``store`` (skipping the work when the stored entry is
    current); returns the stored features."""
    src = storage.info(uri)
    vid = kwargs.get("video_id") or video_id_for(src.uri, kwargs.get("base") or src.uri)
    settings = FeatureSettings(model=encoder.model_name, pretrained=encoder.pretrained, fps=float(fps))
    if store.is_current(vid, src.size, src.etag, settings):
        try:
            return store.load(vid)
        except InputError:  # damaged without its size changing (checksum): extracted again below
            pass
    store.claim_settings(settings, redo={vid})
    vf = extract_video(uri, encoder, fps, **{**kwargs, "video_id": vid})
    store.write(vid, vf.timestamps, vf.features, vf.entry)
    return store.load(vid)
