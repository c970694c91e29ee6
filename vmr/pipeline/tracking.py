"""MLflow for vmr runs: one experiment per workflow, one run per training, the resolved config as params, per-epoch
metrics, artifacts (config, plots), and the model logged and registered (``vmr-matr``, ``vmr-a2fa``).

Where runs go:

- ``MLFLOW_TRACKING_URI`` when set (an ``http://`` server, ``sqlite:///...``, ``databricks``, ...), else the
  workflow's ``tracking.tracking_uri``, else ``sqlite:///<workdir>/mlflow.db`` with artifacts in ``<workdir>/mlartifacts``
  (the artifact folder is set when the experiment is created, so runs never land in a stray ``./mlruns``).
  :func:`dashboard_command` prints the matching ``mlflow ui`` line.
- Every call names its run explicitly (``MlflowClient``), so the driver and the rank-0 training worker never depend on
  a process-global active run. On a multi-node cluster use a tracking *server*: a sqlite file on the head node is not
  reachable from the workers.

Run identity: a run carries the tag ``vmr.run_name``; :meth:`Tracker.start_run` with a name that already has a run in
the experiment continues that run (resume), instead of starting a second one.

Params: the flattened resolved config (``train.lr``, ``model.matr.d_model``, ...), with secret-looking keys
(``password``, ``secret``, ``token``, ``access_key``, ``credential``) and the password part of ``user:pass@`` URIs
replaced by ``***``. MLflow params cannot change, so on resume a changed value is recorded in a tag
``vmr.changed.<key>`` (and the new config is logged as ``config.resume-<n>.yaml``), never silently dropped.

The logged model is an MLflow *pyfunc* that wraps the vmr checkpoint directory (``artifacts/checkpoint``);
:func:`vmr.models.checkpoint.load_model` accepts ``models:/vmr-matr/latest``, ``models:/vmr-matr@champion`` and
``runs:/<id>/model`` through :func:`vmr.pipeline.model_download.download_model`. Its ``predict`` takes a list of
``{"query": (N, D), "target": (M, D), "target_times": (M,) s, "step": s}`` dicts and returns per item a list of
``[start_s, end_s, score]``, best first.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from urllib.parse import urlsplit, urlunsplit

import mlflow
import mlflow.pyfunc as _pyfunc
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from vmr import storage
from vmr.config import SECRET_KEY, flatten, redact
from vmr.data.samples import Sample, collate
from vmr.errors import ConfigError, ServiceUnavailable
from vmr.log_filters import without_log_message
from vmr.models.checkpoint import find_checkpoint, load_model, read_card
from vmr.pipeline.model_download import _artifact_progress_bars_on_a_terminal_only, _process_uris

log = logging.getLogger(__name__)

RUN_NAME_TAG = "vmr.run_name"
WORKFLOW_TAG = "vmr.workflow"
MODEL_ARTIFACT = "model"
REGISTERED_NAMES = {"matr": "vmr-matr", "a2fa": "vmr-a2fa"}
_PARAM_MAX = 6000  # MLflow's param value limit (characters)


# ---- where runs go ------------------------------------------------------------------------------------------------


def default_tracking_uri(workdir: str) -> str:
    """``sqlite:///<absolute workdir>/mlflow.db``."""
    return "sqlite:///" + os.path.join(os.path.abspath(workdir), "mlflow.db")


def default_artifact_root(workdir: str) -> str:
    return "file://" + os.path.join(os.path.abspath(workdir), "mlartifacts")


def resolve_tracking_uri(configured: str = "", workdir: str = ".") -> str:
    """``MLFLOW_TRACKING_URI``, else ``configured``, else :func:`default_tracking_uri` of ``workdir``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured or default_tracking_uri(workdir)
    if uri.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(uri[len("sqlite:///"):]) or ".", exist_ok=True)
    return uri


def check_reachable(tracking_uri: str, timeout: float = 5.0) -> None:
    """:class:`ServiceUnavailable` (one line) when ``tracking_uri`` is an MLflow server that does not answer
    ``GET /health`` within ``timeout`` seconds: checked before a run spends any compute (MLflow's client would retry
    for minutes, and only once the run is being tracked). Local stores (``sqlite:``, paths) need no check."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    parts = urlsplit(tracking_uri)
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")  # /health needs no credentials
    url = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
    try:
        urllib.request.urlopen(url, timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # it answered
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ServiceUnavailable(
            f"the MLflow tracking server at {redact(tracking_uri)} does not answer ({reason}); start it, or point "
            "tracking.tracking_uri / MLFLOW_TRACKING_URI at a running one, then run the command again") from None


def dashboard_command(tracking_uri: str) -> str:
    """The command that shows these runs: ``mlflow ui --backend-store-uri ...`` for a local store, the server's
    address otherwise."""
    tracking_uri = redact(tracking_uri)
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri} (an MLflow server)"
    return f"mlflow ui --backend-store-uri {tracking_uri} --port 5000   # then open http://127.0.0.1:5000"


def params_from_config(config: dict) -> dict[str, str]:
    """Flattened ``{dotted.key: str(value)}`` of a nested config dict, secrets redacted, values cut to MLflow's
    limit."""
    out = {}
    for k, v in flatten(config).items():
        if SECRET_KEY.search(k.rsplit(".", 1)[-1]) and v not in (None, ""):
            v = "***"
        v = redact("" if v is None else str(v))
        out[k] = v[:_PARAM_MAX]
    return out


def _client(tracking_uri: str):
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


# ---- the tracker --------------------------------------------------------------------------------------------------


class Tracker:
    """One MLflow run of one experiment, addressed by id (picklable: only the URI, experiment and run id travel to the
    workers). ``artifact_root`` is used when the experiment is created (default: ``<workdir>/mlartifacts`` for a
    local sqlite/file store, the server's default otherwise)."""

    def __init__(self, tracking_uri: str, experiment: str, run_id: str | None = None, artifact_root: str | None = None):
        if not experiment:
            raise ConfigError("the MLflow experiment name is empty")
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_id = run_id
        self.artifact_root = artifact_root
        self.resumed = False

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    @property
    def client(self):
        if getattr(self, "_c", None) is None:
            self._c = _client(self.tracking_uri)
        return self._c

    def experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return exp.experiment_id
        root = self.artifact_root
        if root is None and not self.tracking_uri.startswith(("http://", "https://", "databricks")):
            base = self.tracking_uri.split(":///", 1)[-1] if "://" in self.tracking_uri else self.tracking_uri
            root = "file://" + os.path.join(os.path.dirname(os.path.abspath(base)), "mlartifacts")
        try:
            return self.client.create_experiment(self.experiment, artifact_location=root)
        except Exception:  # noqa: BLE001 - created concurrently by another process: take theirs
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                raise
            return exp.experiment_id

    def find_run(self, run_name: str):
        """The newest run of this experiment tagged ``vmr.run_name = run_name`` (None if there is none)."""
        quoted = run_name.replace("'", "\\'")
        runs = self.client.search_runs([self.experiment_id()], filter_string=f"tags.`{RUN_NAME_TAG}` = '{quoted}'",
                                       order_by=["attributes.start_time DESC"], max_results=1)
        return runs[0] if runs else None

    def start_run(self, run_name: str, config: dict, tags: dict | None = None, config_yaml: str = "") -> str:
        """Start the run ``run_name`` (or continue the existing one of that name): params from ``config`` (nested
        dict), ``tags``, and ``config_yaml`` logged as ``config.yaml``. Returns the run id."""
        params = params_from_config(config)
        existing = self.find_run(run_name)
        tags = {RUN_NAME_TAG: run_name, **{k: str(v) for k, v in (tags or {}).items()}}
        if existing is None:
            run = self.client.create_run(self.experiment_id(), run_name=run_name, tags=tags)
            self.run_id = run.info.run_id
            self._log_params(params)
            if config_yaml:
                self.log_text(config_yaml, "config.yaml")
            return self.run_id
        self.run_id = existing.info.run_id
        self.resumed = True
        self.client.update_run(self.run_id, status="RUNNING")
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, v)
        old = existing.data.params
        new = {k: v for k, v in params.items() if k not in old}
        changed = {k: v for k, v in params.items() if k in old and old[k] != v}
        self._log_params(new)
        if changed:
            n = int(existing.data.tags.get("vmr.resumes", "0")) + 1
            self.client.set_tag(self.run_id, "vmr.resumes", str(n))
            for k, v in changed.items():
                self.client.set_tag(self.run_id, f"vmr.changed.{k}"[:250], f"{old[k]} -> {v}"[:5000])
            if config_yaml:
                self.log_text(config_yaml, f"config.resume-{n}.yaml")
            log.warning("run %s resumed with changed settings: %s", run_name,
                        ", ".join(f"{k}: {old[k]} -> {v}" for k, v in changed.items()))
        return self.run_id

    def _log_params(self, params: dict) -> None:
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def _need_run(self) -> str:
        if not self.run_id:
            raise RuntimeError("no MLflow run: call start_run first")
        return self.run_id

    def log_metrics(self, metrics: dict, step: int) -> None:
        """Numeric entries of ``metrics`` (others are skipped) at ``step`` (the epoch)."""
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step)) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self._need_run(), metrics=items[i:i + 1000])

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self._need_run(), path, artifact_path)

    def log_artifacts(self, folder: str, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self._need_run(), folder, artifact_path)

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self._need_run(), text, name)

    def set_tags(self, tags: dict) -> None:
        for k, v in tags.items():
            self.client.set_tag(self._need_run(), k, str(v))

    def finish(self, status: str = "FINISHED") -> None:
        """Mark the run ``FINISHED``, ``FAILED`` or ``KILLED``."""
        if self.run_id:
            self.client.set_terminated(self.run_id, status)

    def run_url(self) -> str:
        exp = self.experiment_id()
        if self.tracking_uri.startswith(("http://", "https://")):
            return f"{redact(self.tracking_uri).rstrip('/')}/#/experiments/{exp}/runs/{self.run_id}"
        return f"experiment {self.experiment!r} ({exp}), run {self.run_id}"

    # ---- the model ----
    def log_model(self, checkpoint: str, registered_name: str | None = None, tags: dict | None = None):
        """Log the vmr checkpoint directory ``checkpoint`` (a path or storage URI) as the pyfunc model ``model`` of
        this run and, with ``registered_name``, register it (a new version, tagged with the card's feature settings
        and metrics). Returns the model version (or None when not registering)."""
        card = read_card(checkpoint)
        version_tags = {"vmr.kind": card.kind, "vmr.task": card.task,
                        **{f"vmr.features.{k}": str(v) for k, v in vars(card.features).items()},
                        **{f"metric.{k}": str(v) for k, v in card.metrics.items()}, **(tags or {})}
        with tempfile.TemporaryDirectory(prefix="vmr-logmodel-") as tmp:
            local = _local_tree(find_checkpoint(checkpoint), os.path.join(tmp, "checkpoint"))
            # mlflow's fluent API (and the registry's check of the logged model) use the process-wide URIs
            with _process_uris(self.tracking_uri), _quiet_model_logging():
                with mlflow.start_run(run_id=self._need_run()), warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # "add type hints to predict": inputs are free-form
                    info = mlflow.pyfunc.log_model(
                        name=MODEL_ARTIFACT, python_model=CheckpointModel(), artifacts={"checkpoint": local},
                        pip_requirements=["vmr", "torch", "numpy"], registered_model_name=registered_name or None,
                        metadata={"vmr_kind": card.kind, "vmr_task": card.task,
                                  "vmr_features": vars(card.features)})
        if not registered_name:
            return None
        version = str(info.registered_model_version)
        for k, v in version_tags.items():
            self.client.set_model_version_tag(registered_name, version, k, v)
        return self.client.get_model_version(registered_name, version)


@contextlib.contextmanager
def _quiet_model_logging():
    """While a model is logged: progress bars on a terminal only, and not MLflow's warning that a Python object is
    pickled: the object is vmr's stateless ``CheckpointModel``, and loading it needs vmr installed either way."""
    with _artifact_progress_bars_on_a_terminal_only(), \
            without_log_message("mlflow.pyfunc", "serialized using CloudPickle"):
        yield


def _local_tree(uri: str, dest: str) -> str:
    """A local copy of the directory ``uri`` (any storage URI) at ``dest``."""
    os.makedirs(dest, exist_ok=True)
    for f in storage.list_files(uri):
        rel = storage.relative(f.uri, uri)
        target = os.path.join(dest, *rel.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        storage.filesystem(f.uri).get_file(storage.strip(f.uri), target)
    return dest


class CheckpointModel(_pyfunc.PythonModel):
    """The MLflow pyfunc face of a vmr checkpoint (``artifacts["checkpoint"]``): see the module docstring."""

    _skip_type_hint_validation = True  # inputs are free-form dicts; no MLflow type-hint validation

    def load_context(self, context) -> None:
        self.model, self.card = load_model(context.artifacts["checkpoint"])

    def predict(self, context, model_input, params=None):
        items = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
        top_k = int((params or {}).get("top_k", 5))
        samples = []
        for i, it in enumerate(items):
            target = np.asarray(it["target"], dtype=np.float32)
            times = np.asarray(it.get("target_times", np.arange(len(target)) * float(it["step"])), dtype=np.float64)
            samples.append(Sample(sample_id=str(i), target_id=str(i), target=target, target_times=times,
                                  step=float(it["step"]), query=np.atleast_2d(np.asarray(it["query"], np.float32)),
                                  query_kind=self.card.task))
        batch = collate(samples)
        with torch.no_grad():
            out = self.model(batch)
            preds = self.model.predict(out, batch, top_k=top_k)
        return [p.tolist() for p in preds]


def registered_name_for(kind: str, configured: str | None = None) -> str:
    """The registry name of a model kind: ``configured`` when given, else ``vmr-matr`` / ``vmr-a2fa``."""
    return configured or REGISTERED_NAMES.get(kind, f"vmr-{kind}")


def latest_version(tracking_uri: str, name: str):
    """The newest version of registered model ``name`` (None if it has none)."""
    client = _client(tracking_uri)
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except Exception:  # noqa: BLE001
        return None
    return max(versions, key=lambda v: int(v.version), default=None)


__all__ = [
    "Tracker", "CheckpointModel", "dashboard_command", "default_tracking_uri",
    "resolve_tracking_uri", "check_reachable", "params_from_config", "redact", "registered_name_for", "latest_version",
    "RUN_NAME_TAG", "REGISTERED_NAMES",
]
