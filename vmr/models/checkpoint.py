"""The one model checkpoint format: a directory (local path or any :mod:`vmr.storage` URI) holding::

    model.pt               the model's ``state_dict`` (CPU tensors, ``torch.save``)
    vmr_checkpoint.json    the model card: kind, task, model config, feature settings, vmr version, metrics, extra
    train_state.pt         optional: optimizer/scheduler/epoch state to resume training (never needed for inference);
                           tensors and plain containers only, loaded with ``weights_only=True`` (never unpickled
                           objects: a crafted file cannot run code on resume)

The card is written last, so a directory with a card always has complete weights (a save killed midway leaves no
card, and :func:`load_model` refuses it). Ray Train checkpoints *are* such directories (plus ``train_state.pt``), and
the MLflow model that :mod:`vmr.pipeline.tracking` registers wraps one, so every way a model is stored loads alike:

- ``/path/ckpt``, ``file:///path/ckpt``, ``s3://bucket/runs/x/checkpoint_epoch0003``: a checkpoint directory;
- a Ray Train run folder (``{storage_path}/{run name}``): its newest ``checkpoint_*`` directory by name;
- ``models:/vmr-matr/latest``, ``models:/vmr-matr/3``, ``models:/vmr-matr@champion``, ``runs:/<run id>/model``: MLflow
  model URIs, resolved against ``MLFLOW_TRACKING_URI`` by the ``mlflow`` model source (:data:`MODEL_SOURCES`, an entry
  point: :func:`vmr.pipeline.model_download.download_model`), looked up only for such URIs, so this module needs
  neither MLflow nor Ray and never imports the pipeline layer.

A model records the features it was trained on (CLIP model name, pretrained tag, sampling fps, extractor version,
dimension): :func:`check_features` refuses, with a message naming both settings, to run it on features made otherwise.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import io
import json
import os
import pickle
import posixpath
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from vmr import storage
from vmr.errors import FeatureMismatchError, InputError
from vmr.features.settings import FeatureSettings

FORMAT_VERSION = 1

# Model config fields added after checkpoints were first written, per kind, with the value that reproduces how a
# checkpoint *without* the field was trained (the field's default for new models may differ): loading an older card
# fills them in, so its model computes what it computed when it was saved.
ADDED_CONFIG_FIELDS: dict[str, dict[str, Any]] = {
    # input centring, the similarity prior and run proposals came after the first checkpoints, trained without them
    "matr": {"center": "none", "prior": "none", "proposals": "offsets", "align": "subsequence"},
}
CARD_FILE = "vmr_checkpoint.json"
WEIGHTS_FILE = "model.pt"
TRAIN_STATE_FILE = "train_state.pt"
MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")

# model kind -> (module, class, config class, task); the task says what the query is ("video" clip or "text")
MODEL_KINDS: dict[str, tuple[str, str, str, str]] = {
    "matr": ("vmr.models.matr", "MATR", "MATRConfig", "video"),
    "a2fa": ("vmr.models.a2fa", "A2FA", "A2FAConfig", "text"),
}


@dataclass
class ModelCard:
    """What a checkpoint says about its model. ``config`` is the model config as a dict (``MATRConfig`` /
    ``A2FAConfig`` fields); ``metrics`` are numbers at save time (e.g. validation R1/mIoU); ``extra`` holds
    provenance (epoch, run name, MLflow run id, workflow). ``source`` is where it was loaded from (not saved)."""

    kind: str
    task: str
    config: dict
    features: FeatureSettings
    vmr_version: str
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    created: str = ""
    format_version: int = FORMAT_VERSION
    source: str = ""

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d.pop("source")
        return json.dumps(d, indent=1, sort_keys=True, default=_json_default)

    @classmethod
    def from_json(cls, text: str, source: str = "") -> "ModelCard":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{source or 'checkpoint'}: {CARD_FILE} is not valid JSON: {e}") from None
        version = int(d.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise InputError(f"{source}: checkpoint format {version} is newer than this vmr understands "
                             f"({FORMAT_VERSION}); upgrade vmr")
        missing = [k for k in ("kind", "config", "features") if k not in d]
        if missing:
            raise InputError(f"{source}: {CARD_FILE} lacks {missing}")
        if d["kind"] not in MODEL_KINDS:
            raise InputError(f"{source}: unknown model kind {d['kind']!r}; known: {sorted(MODEL_KINDS)}")
        config = {**ADDED_CONFIG_FIELDS.get(d["kind"], {}), **d["config"]}
        return cls(
            kind=d["kind"], task=d.get("task") or MODEL_KINDS[d["kind"]][3], config=config,
            features=FeatureSettings.of(d["features"]), vmr_version=str(d.get("vmr_version", "")),
            metrics=dict(d.get("metrics") or {}), extra=dict(d.get("extra") or {}), created=str(d.get("created", "")),
            format_version=version, source=source)


def _json_default(x):
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, (set, tuple)):
        return list(x)
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


# ---- models -------------------------------------------------------------------------------------------------------


def model_classes(kind: str) -> tuple[type, type]:
    """``(model class, config class)`` of a model kind (``"matr"``, ``"a2fa"``)."""
    import importlib

    if kind not in MODEL_KINDS:
        raise InputError(f"unknown model kind {kind!r}; known: {sorted(MODEL_KINDS)}")
    mod_name, cls_name, cfg_name, _ = MODEL_KINDS[kind]
    mod = importlib.import_module(mod_name)
    return getattr(mod, cls_name), getattr(mod, cfg_name)


def build_model(kind: str, config: Any = None) -> nn.Module:
    """A freshly initialised model of ``kind`` from its config dataclass or a dict of its fields (unknown keys are
    an error: a checkpoint from another vmr version that renamed a field fails here, clearly)."""
    from vmr.config import from_dict

    model_cls, config_cls = model_classes(kind)
    if config is None:
        config = config_cls()
    elif isinstance(config, dict):
        config = from_dict(config_cls, config, where=f"{kind} model config")
    return model_cls(config)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP / ``torch.compile`` wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def task_of(kind: str) -> str:
    return MODEL_KINDS[kind][3] if kind in MODEL_KINDS else "video"


# ---- saving -------------------------------------------------------------------------------------------------------


def make_card(model: nn.Module, features: Any, metrics: dict | None = None, extra: dict | None = None) -> ModelCard:
    """The card of ``model`` (unwrapped from DDP) trained on ``features`` (anything :meth:`FeatureSettings.of`
    reads)."""
    import vmr
    from vmr.config import to_dict

    model = unwrap(model)
    kind = getattr(model, "kind", None)
    if kind not in MODEL_KINDS:
        raise ValueError(f"cannot checkpoint a {type(model).__name__}: its kind {kind!r} is not one of "
                         f"{sorted(MODEL_KINDS)}")
    feats = FeatureSettings.of(features)
    if not feats.dim:  # the model's input width is the feature dimension
        feats = dataclasses.replace(feats, dim=int(getattr(model.config, "in_dim", 0) or getattr(model.config, "dim", 0)))
    return ModelCard(
        kind=kind, task=task_of(kind), config=to_dict(model.config), features=feats,
        vmr_version=vmr.__version__, metrics={k: _plain_number(v) for k, v in (metrics or {}).items()},
        extra=dict(extra or {}), created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def _plain_number(v):
    if hasattr(v, "item"):
        v = v.item()
    return v


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def plain_state(obj):
    """``obj`` with NumPy scalars as Python numbers and NumPy arrays as tensors, recursively through dicts, lists and
    tuples, so that ``torch.load(..., weights_only=True)`` reads it back (it refuses NumPy objects)."""
    if isinstance(obj, dict):
        return {k: plain_state(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain_state(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# What train states written before :func:`plain_state` hold besides tensors: NumPy scalars in the metrics history.
# Rebuilding a NumPy scalar from its dtype and bytes calls no other code, so these two are allowed when reading them.
_OLD_TRAIN_STATE_GLOBALS = ("numpy.dtype", "numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar")


def read_train_state(blob: bytes, where: str) -> dict:
    """A ``train_state.pt``'s dict, read with ``weights_only=True`` (tensors, numbers, strings and containers only;
    NumPy scalars of older vmr versions too). :class:`InputError` naming ``where`` for anything else (a file that
    would need arbitrary unpickling, which can run code) or an unreadable file."""
    try:
        return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise InputError(f"{where}: unreadable {TRAIN_STATE_FILE}: {' '.join(str(e).split())[:200]}") from None
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(blob))
    except Exception:  # noqa: BLE001 - not even a readable zip: reported as unreadable below
        unsafe = ["?"]
    others = [g for g in unsafe if g not in _OLD_TRAIN_STATE_GLOBALS]
    if others:
        raise InputError(f"{where}: {TRAIN_STATE_FILE} holds objects other than tensors and plain values "
                         f"({', '.join(others[:3])}); refusing to unpickle it (that can run code): resume only from "
                         "checkpoints written by vmr, or start the run again without this checkpoint")
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # NumPy 1
        from numpy.core.multiarray import scalar
    allowed = [np.dtype, scalar, *{type(np.dtype(c)) for c in "?bhilqBHILQefdg"}]  # the numeric dtypes' classes
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise InputError(f"{where}: unreadable {TRAIN_STATE_FILE}: {' '.join(str(e).split())[:200]}") from None


def save_checkpoint(dir_or_uri: str, model: nn.Module, features: Any, *, metrics: dict | None = None,
                    extra: dict | None = None, train_state: dict | None = None) -> ModelCard:
    """Write ``model`` (unwrapped from DDP, weights moved to CPU) as a checkpoint directory at ``dir_or_uri`` (a path
    or storage URI; created if needed). ``features``: the feature settings it was trained on (an
    ``FeatureSettings``, a ``FeatureStore``, a manifest entry, ...). ``train_state`` (optimizer, scheduler, epoch,
    ...) is stored beside it for resuming. Files are written atomically, the card last. Returns the card."""
    card = make_card(model, features, metrics, extra)
    state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    storage.makedirs(dir_or_uri)
    storage.write_bytes_atomic(storage.join(dir_or_uri, WEIGHTS_FILE), _torch_bytes(state))
    if train_state is not None:
        storage.write_bytes_atomic(storage.join(dir_or_uri, TRAIN_STATE_FILE), _torch_bytes(plain_state(train_state)))
    storage.write_text_atomic(storage.join(dir_or_uri, CARD_FILE), card.to_json())
    card.source = storage.normalize(dir_or_uri)
    return card


# ---- finding and loading ------------------------------------------------------------------------------------------


def is_mlflow_uri(uri: str) -> bool:
    return str(uri).startswith(MLFLOW_SCHEMES)


def _has_card(uri: str) -> bool:
    return storage.exists(storage.join(uri, CARD_FILE))


def _newest_checkpoint_in(uri: str) -> str | None:
    """The newest ``checkpoint_*`` directory (with a card) directly under a Ray Train run folder, by name (Ray Train
    names them by epoch in vmr, or by time): None if there is none."""
    fs = storage.filesystem(uri)
    root = storage.strip(uri)
    try:
        children = fs.ls(root, detail=True)
    except FileNotFoundError:
        return None
    names = sorted(posixpath.basename(c["name"].rstrip("/")) for c in children if c.get("type") == "directory")
    for name in reversed([n for n in names if n.startswith("checkpoint_")]):
        cand = storage.join(uri, name)
        if _has_card(cand):
            return cand
    return None


def find_checkpoint(uri: str) -> str:
    """The checkpoint directory that ``uri`` (a path or storage URI, not an MLflow URI) names: itself when it holds a
    card, its parent when it is the card or weights file, or the newest ``checkpoint_*`` of a Ray Train run folder.
    :class:`InputError` when there is none."""
    uri = str(uri)
    if posixpath.basename(storage.strip(uri)) in (CARD_FILE, WEIGHTS_FILE, TRAIN_STATE_FILE):
        uri = storage.parent(uri)
    if not storage.exists(uri):
        raise InputError(f"model checkpoint not found: {uri}")
    if _has_card(uri):
        return storage.normalize(uri)
    newest = _newest_checkpoint_in(uri)
    if newest is not None:
        return newest
    for sub in ("artifacts/checkpoint", "checkpoint"):  # an MLflow pyfunc model folder downloaded by hand
        if _has_card(storage.join(uri, sub)):
            return storage.normalize(storage.join(uri, sub))
    raise InputError(f"{uri} is not a vmr checkpoint: no {CARD_FILE} in it (nor a checkpoint_* folder with one); "
                     "pass a checkpoint directory, a Ray Train run folder, or an MLflow model URI (models:/name/latest)")


def read_card(uri: str, tracking_uri: str | None = None) -> ModelCard:
    """The card of the checkpoint that ``uri`` names (see :func:`find_checkpoint`), without loading the weights."""
    if is_mlflow_uri(uri):
        with _mlflow_local(uri, tracking_uri) as local:
            card = read_card(local)
        card.source = uri
        return card
    ckpt = find_checkpoint(uri)
    return ModelCard.from_json(storage.read_text(storage.join(ckpt, CARD_FILE)), source=ckpt)


MODEL_SOURCES = "vmr.model_sources"  # entry-point group: name -> fetch(uri, dst_dir, tracking_uri) -> checkpoint dir


def _model_source(name: str, uri: str):
    """The fetch function registered as entry point ``name`` of :data:`MODEL_SOURCES` (``mlflow``:
    :func:`vmr.pipeline.model_download.download_model`, declared in ``pyproject.toml``). The library finds MLflow's
    download this way instead of importing the pipeline layer, which imports this module."""
    found = importlib.metadata.entry_points(group=MODEL_SOURCES, name=name)
    if not found:
        raise InputError(f"cannot load {uri}: no '{name}' model source is installed (entry point group "
                         f"{MODEL_SOURCES}); install vmr with its pipeline (pip install vmr) or pass a checkpoint folder")
    return next(iter(found)).load()


class _mlflow_local:
    """Context manager: an MLflow model URI downloaded to a temporary local folder (removed afterwards)."""

    def __init__(self, uri: str, tracking_uri: str | None = None):
        self.uri = uri
        self.tracking_uri = tracking_uri
        self.tmp = None

    def __enter__(self) -> str:
        fetch = _model_source("mlflow", self.uri)
        self.tmp = tempfile.mkdtemp(prefix="vmr-model-")
        return fetch(self.uri, self.tmp, self.tracking_uri)

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def load_model(uri: str | os.PathLike, device: str | torch.device = "cpu",
               tracking_uri: str | None = None) -> tuple[nn.Module, ModelCard]:
    """Load a model for inference: ``(model in eval mode on device, its ModelCard)``.

    ``uri``: a checkpoint directory (local path, ``file://``, ``s3://``, ``gs://``), a file inside one, a Ray Train
    run folder (its newest checkpoint), or an MLflow model URI (``models:/vmr-matr/latest``,
    ``models:/vmr-matr@champion``, ``runs:/<run id>/model``; looked up at ``tracking_uri``, else
    ``MLFLOW_TRACKING_URI``). Raises :class:`InputError` when nothing loadable is there, the card is from a newer
    format, or the weights do not fit the model the card describes."""
    uri = os.fspath(uri)
    if is_mlflow_uri(uri):
        with _mlflow_local(uri, tracking_uri) as local:
            model, card = load_model(local, device)
        card.source = uri
        return model, card
    ckpt = find_checkpoint(uri)
    card = ModelCard.from_json(storage.read_text(storage.join(ckpt, CARD_FILE)), source=ckpt)
    try:
        blob = storage.read_bytes(storage.join(ckpt, WEIGHTS_FILE))
    except FileNotFoundError:
        raise InputError(f"{ckpt}: {WEIGHTS_FILE} is missing") from None
    state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    model = build_model(card.kind, card.config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = " ".join(str(e).split())[:300]
        raise InputError(f"{ckpt}: the weights do not fit a {card.kind} model with the card's config: {first}") from None
    return model.to(device).eval(), card


def checkpoints_in(run_dir: str) -> list[str]:
    """The ``checkpoint_*`` directories with a card directly under a run folder, oldest first (by name: vmr names
    them ``checkpoint_epoch{NNNN}``)."""
    fs = storage.filesystem(run_dir)
    try:
        children = fs.ls(storage.strip(run_dir), detail=True)
    except FileNotFoundError:
        return []
    names = sorted(posixpath.basename(c["name"].rstrip("/")) for c in children if c.get("type") == "directory")
    return [storage.join(run_dir, n) for n in names if n.startswith("checkpoint_") and _has_card(storage.join(run_dir, n))]


def load_state(uri: str) -> tuple[dict, dict | None, ModelCard]:
    """``(state_dict, train_state or None, card)`` of a checkpoint directory, on the CPU, without building the model
    (for resuming training). InputError when a file is missing or unreadable (e.g. a copy cut short)."""
    ckpt = find_checkpoint(uri)
    card = ModelCard.from_json(storage.read_text(storage.join(ckpt, CARD_FILE)), source=ckpt)
    try:
        state = torch.load(io.BytesIO(storage.read_bytes(storage.join(ckpt, WEIGHTS_FILE))), map_location="cpu",
                           weights_only=True)
        path = storage.join(ckpt, TRAIN_STATE_FILE)
        train_state = read_train_state(storage.read_bytes(path), ckpt) if storage.exists(path) else None
    except FileNotFoundError as e:
        raise InputError(f"{ckpt}: incomplete checkpoint ({e})") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise InputError(f"{ckpt}: unreadable checkpoint: {' '.join(str(e).split())[:200]}") from None
    return state, train_state, card


def load_train_state(uri: str) -> dict | None:
    """The ``train_state.pt`` dict of a checkpoint directory (None when it has none)."""
    path = storage.join(find_checkpoint(uri), TRAIN_STATE_FILE)
    if not storage.exists(path):
        return None
    return read_train_state(storage.read_bytes(path), storage.parent(path))


def check_features(card: ModelCard | FeatureSettings, store_settings: Any, *, what: str = "") -> None:
    """Refuse (:class:`FeatureMismatchError`) to use a model on features made with other settings than the ones it
    was trained on. ``store_settings``: a ``FeatureStore``, ``FeatureSettings``, manifest entry or
    ``FeatureSettings``; ``what`` names those features in the message (e.g. the store URI)."""
    trained = FeatureSettings.of(card)
    given = FeatureSettings.of(store_settings)
    diff = trained.differences(given)
    if diff:
        name = f"{card.kind} model" if isinstance(card, ModelCard) else "model"
        src = f" from {card.source}" if isinstance(card, ModelCard) and card.source else ""
        where = what or getattr(store_settings, "uri", "") or "the given features"
        raise FeatureMismatchError(
            f"the {name}{src} was trained on features of {trained.describe()}, but {where} has features of {given.describe()} "
            f"(different: {', '.join(diff)}); extract the videos again with the model's settings (vmr extract "
            f"--model {trained.model} --pretrained {trained.pretrained} --fps {trained.fps:g}) or use a model "
            "trained on these features")


__all__ = [
    "FORMAT_VERSION", "CARD_FILE", "WEIGHTS_FILE", "TRAIN_STATE_FILE", "MODEL_KINDS", "FeatureMismatchError",
    "FeatureSettings", "ModelCard", "model_classes", "build_model", "unwrap", "make_card", "save_checkpoint",
    "find_checkpoint", "read_card", "load_model", "load_train_state", "load_state", "read_train_state", "plain_state",
    "checkpoints_in", "check_features", "is_mlflow_uri",
]
