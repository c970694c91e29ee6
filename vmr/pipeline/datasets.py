"""Ray Data datasets of training samples for Ray Train workers.

A dataset starts as rows of specs (:func:`vmr.data.specs.spec_to_record`: cheap to shuffle and split), and an actor pool
(:class:`MaterializeBatch`, each actor with its own LRU cache of loaded videos) turns them into padded, fixed-shape
numpy columns: every row has the same shape, so Ray Data can re-batch freely and every training batch has one shape.

Columns (one row per sample; ``M = max_target``, ``N = max_query``, ``K = max_spans``)::

    query (N, Dq) float32, query_mask (N,) bool, target (M, D) float32, target_mask (M,) bool,
    target_times (M,) float64 s, step () float64 s, spans (K, 2) float64 s, span_mask (K,) bool, fg (M,) float32,
    sample_id, target_id, query_id: str

On a Ray Train worker::

    shard = ray.train.get_dataset_shard("train")
    for batch in shard.iter_torch_batches(batch_size=32, collate_fn=ModelBatchCollate(device)):
        out = model(batch)   # exactly the layout of vmr.data.samples.collate(samples, max_target, max_query)

(:func:`iter_model_batches` is the same call.) The rows are made by :func:`vmr.data.samples.collate` itself and
:func:`to_model_batch` trims the span padding back to the batch's largest span count, so a batch equals ``collate`` of
the same samples, bit for bit.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import ray
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from vmr.data.samples import collate
from vmr.data.specs import FeatureCache, crop_to_max, materialize, spec_from_record, spec_to_record

log = logging.getLogger(__name__)

TENSOR_COLUMNS = ("query", "query_mask", "target", "target_mask", "target_times", "step", "spans", "span_mask", "fg")
ID_COLUMNS = ("sample_id", "target_id", "query_id")
_BOOL_COLUMNS = ("query_mask", "target_mask", "span_mask")


@dataclass
class StreamConfig:
    """How specs become padded training rows. Lengths are rows; each actor uses ``cpus_per_actor`` CPUs."""

    max_target: int = 512
    max_query: int = 128
    max_spans: int = 8
    rows_per_call: int = 16
    actors: int = 1
    cpus_per_actor: float = 1.0
    cache_size: int = 32
    crop: bool = True
    seed: int = 0
    on_error: Literal["raise", "skip"] = "raise"


def spec_dataset(specs: Sequence, shuffle_seed: int | None = None) -> ray.data.Dataset:
    """A dataset with one row per spec (``kind``, ``sample_id``, ``spec`` json); with ``shuffle_seed`` the rows are
    shuffled in a seeded order first (specs are small, so this is cheap)."""
    if not specs:
        raise ValueError("no specs to build a dataset from")
    records = [spec_to_record(s) for s in specs]
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(records)
    return ray.data.from_items(records)


class MaterializeBatch:
    """``map_batches`` callable class: a numpy batch of spec records -> a numpy batch of padded sample rows (the
    columns in the module docstring). A spec that fails raises, or with ``on_error="skip"`` is logged and left out."""

    def __init__(self, store, max_target: int, max_query: int, max_spans: int, crop: bool = True, seed: int = 0,
                 cache_size: int = 32, on_error: str = "raise", context: dict | None = None):
        self.features = FeatureCache(store, cache_size)
        self.max_target, self.max_query, self.max_spans = max_target, max_query, max_spans
        self.crop, self.seed, self.on_error = crop, seed, on_error
        self.context = dict(context or {})

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        samples = []
        for kind, spec_json in zip(batch["kind"], batch["spec"]):
            try:
                spec = spec_from_record({"kind": kind, "spec": spec_json})
                s = materialize(spec, self.features, **self.context)
                if self.crop:
                    s = crop_to_max(s, self.max_target, self.max_query, self.seed)
                if len(s.spans) > self.max_spans:
                    raise ValueError(f"{s.sample_id}: {len(s.spans)} spans, more than max_spans={self.max_spans}")
                samples.append(s)
            except Exception as e:
                if self.on_error != "skip":
                    raise
                log.warning("skipping sample %s: %s", spec_json[:200], e)
        if not samples:
            return {}
        return padded_columns(samples, self.max_target, self.max_query, self.max_spans)


def padded_columns(samples: list, max_target: int, max_query: int, max_spans: int) -> dict[str, np.ndarray]:
    """Samples -> fixed-shape numpy columns: :func:`vmr.data.samples.collate` with spans padded to ``max_spans``."""
    b = collate(samples, max_target=max_target, max_query=max_query)
    out = {k: b[k].numpy() for k in TENSOR_COLUMNS}
    k = out["spans"].shape[1]
    if k < max_spans:
        out["spans"] = np.concatenate([out["spans"], np.zeros((len(samples), max_spans - k, 2))], axis=1)
        out["span_mask"] = np.concatenate([out["span_mask"], np.zeros((len(samples), max_spans - k), bool)], axis=1)
    for key in ID_COLUMNS:
        out[key] = np.array(b[key], dtype=object)
    return out


def sample_dataset(specs: Sequence, store, config: StreamConfig, shuffle_seed: int | None = None,
                   context: dict | None = None) -> ray.data.Dataset:
    """Specs -> a lazily materialised dataset of padded rows. ``store`` should be a URI (each actor opens it) or a
    picklable store object; ``context`` goes to the materializers (e.g. ``text_features``). Pass the result to a
    trainer as ``datasets={"train": ...}``. A trainer iterates the same rows every epoch: for fresh pretraining clips
    per epoch, build one dataset per epoch (``sample_clip_specs(..., epoch=e)``) or concatenate several epochs' specs
    into one dataset read once."""
    return spec_dataset(specs, shuffle_seed).map_batches(
        MaterializeBatch,
        fn_constructor_kwargs=dict(store=store, max_target=config.max_target, max_query=config.max_query,
                                   max_spans=config.max_spans, crop=config.crop, seed=config.seed,
                                   cache_size=config.cache_size, on_error=config.on_error, context=context),
        batch_size=config.rows_per_call,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=config.actors),
        num_cpus=config.cpus_per_actor,
    )


def to_model_batch(batch: dict[str, np.ndarray]) -> dict:
    """A numpy batch of padded rows -> the :func:`vmr.data.samples.collate` layout (CPU torch tensors, id lists), with the
    span padding trimmed to the batch's largest span count (at least 1), as ``collate`` pads it."""
    out = {}
    for key in TENSOR_COLUMNS:
        arr = np.asarray(batch[key])
        if key in _BOOL_COLUMNS:
            arr = arr.astype(bool)
        if not (arr.flags.writeable and arr.flags.c_contiguous):
            arr = np.array(arr, copy=True, order="C")  # Ray hands out read-only views; torch wants its own memory
        out[key] = torch.from_numpy(arr)
    k = max(int(out["span_mask"].sum(dim=1).max()), 1) if len(out["span_mask"]) else 1
    out["spans"] = out["spans"][:, :k].contiguous()
    out["span_mask"] = out["span_mask"][:, :k].contiguous()
    for key in ID_COLUMNS:
        out[key] = [str(x) for x in batch[key]]
    return out


class ModelBatchCollate(NumpyBatchCollateFn):
    """``iter_torch_batches(collate_fn=ModelBatchCollate(device))``: :func:`to_model_batch`, then the tensors moved
    to ``device`` (Ray does not move a batch holding id lists itself)."""

    def __init__(self, device: str | torch.device | None = None):
        self.device = torch.device(device) if device is not None else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict:
        out = to_model_batch(batch)
        if self.device is not None and self.device.type != "cpu":
            out = {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                   for k, v in out.items()}
        return out


def iter_model_batches(data, batch_size: int, device: str | torch.device | None = None, **kwargs):
    """Iterate a ``ray.data.Dataset`` or a Ray Train shard (``DataIterator``) as model batches on ``device``
    (``None``: CPU). ``kwargs`` go to ``iter_torch_batches`` (``drop_last``, ``local_shuffle_buffer_size``, ...)."""
    return data.iter_torch_batches(batch_size=batch_size, collate_fn=ModelBatchCollate(device), **kwargs)
