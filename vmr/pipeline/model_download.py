"""Fetch an MLflow model URI to a local folder: the one place the library's :func:`vmr.models.checkpoint.load_model`
reaches MLflow, through the ``vmr.model_sources`` entry point (``mlflow``) declared in ``pyproject.toml``; the library
itself never imports MLflow or this package.

:func:`download_model` is a leaf: it returns the vmr checkpoint folder inside the downloaded model and knows nothing of
checkpoints beyond the card's file name.
"""
from __future__ import annotations

import contextlib
import os
import sys

import mlflow
import mlflow.tracking._model_registry.utils as reg
import mlflow.tracking._tracking_service.utils as trk

from vmr.config import redact
from vmr.errors import InputError
from vmr.models.checkpoint import CARD_FILE


@contextlib.contextmanager
def _artifact_progress_bars_on_a_terminal_only():
    """MLflow's artifact up/download progress bars while the block runs only when stderr is a terminal: in a log
    file (a Ray job, CI, ``> log``) they are a screenful of carriage returns per model."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(key)
    if not sys.stderr.isatty():
        os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


class _process_uris:
    """Context manager: MLflow's process-wide tracking and registry URIs set to ``uri``, and everything restored
    afterwards (mlflow's globals *and* the ``MLFLOW_TRACKING_URI``/``MLFLOW_REGISTRY_URI`` variables it sets)."""

    _ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")

    def __init__(self, uri: str):
        self.uri = uri

    def __enter__(self):
        self.saved = (trk._tracking_uri, reg._registry_uri, {k: os.environ.get(k) for k in self._ENV})
        trk.set_tracking_uri(self.uri)
        reg.set_registry_uri(self.uri)

    def __exit__(self, *exc):
        tracking, registry, env = self.saved
        trk.set_tracking_uri(tracking)
        reg._registry_uri = registry
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def download_model(uri: str, dst: str, tracking_uri: str | None = None) -> str:
    """Download an MLflow model URI (``models:/name/latest``, ``models:/name@alias``, ``models:/name/3``,
    ``runs:/<id>/model``) to ``dst`` and return the vmr checkpoint directory inside it. Uses ``tracking_uri``, else
    ``MLFLOW_TRACKING_URI``, else MLflow's default. InputError when it cannot be found."""
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()
    db = tracking_uri[len("sqlite:///"):] if tracking_uri.startswith("sqlite:///") else ""
    if db and not os.path.exists(db):  # opening it would create an empty store where no run was ever written
        raise InputError(f"cannot fetch model {uri}: there is no MLflow store at {tracking_uri}; set "
                         "MLFLOW_TRACKING_URI to the one that holds it, or pass a checkpoint folder as the model")
    try:
        with _process_uris(tracking_uri), _artifact_progress_bars_on_a_terminal_only():
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst)
    except Exception as e:  # noqa: BLE001 - MlflowException, connection errors
        msg = " ".join(str(e).split())[:300]
        raise InputError(f"cannot fetch model {uri} from MLflow at {redact(tracking_uri)}: {msg}") from None
    for root, _dirs, files in sorted(os.walk(local)):
        if CARD_FILE in files:
            return root
    raise InputError(f"{uri} (MLflow at {redact(tracking_uri)}) is not a vmr model: no {CARD_FILE} in it")


__all__ = ["download_model"]
