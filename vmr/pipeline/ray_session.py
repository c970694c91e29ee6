"""Connecting to Ray, and keeping its console output to what a user reads.

- :func:`ensure_ray`: the running session, else the cluster in ``RAY_ADDRESS``, else a new local one. A local one
  gets its dashboard on a free loopback port, and its workers are told where that is (``RAY_API_SERVER_ADDRESS``):
  Ray Train's placement-group cleaner asks the state API (served by the dashboard) whether a training controller is
  still alive. Without the dashboard, or on a machine that runs several Ray instances (the state API cannot tell
  which is ours), it warns every second or two for the whole run, and in a sweep the CPUs of every trial that ASHA
  stops are never given back.
- The job's workers log at WARNING (``ray.LoggingConfig``), Ray Data's loggers too (``RAY_DATA_LOG_LEVEL``, unless
  it is set already: ``RAY_DATA_LOG_LEVEL=INFO`` brings its per-execution lines back). The full logs stay in the
  Ray session's log folder (``/tmp/ray/session_latest/logs`` for a local Ray).
- :func:`quiet_ray_data`: the same for Ray Data in this process; ``progress_bars=False`` also turns its progress
  bars off (benchmarks; extraction turns them off for its own dataset and prints a line per video instead).
- :func:`quiet_ray_train_worker`: Ray Train (2.60) logs every ``report`` at INFO on a logger named after its source
  file, which its own ``LoggingConfig`` does not reach; that logger is set to WARNING.
- :func:`forwarded_env`: the driver's settings that Ray workers get in their ``runtime_env`` (object store endpoint
  and region, MLflow's URI): never a credential, because Ray writes ``runtime_env`` to its logs in plain text. A
  local cluster started by this driver runs its workers with the driver's environment, credentials included; on a
  remote cluster the nodes bring their own (instance roles, their environment, ``~/.aws`` files).
- :func:`say`: a line to the console from inside a Ray Train worker. Ray Train replaces ``print`` there with a
  logger call that, with a redirected stdout, also prints, so ``print`` shows each line twice: ``say`` writes to
  stdout directly.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
from urllib.parse import urlsplit

# Ray is imported by the functions that use it: `vmr --help` imports this module (through vmr.pipeline.extract, which
# `vmr extract` registers its options from) and takes 0.2-0.3 s; importing Ray here would add 0.3-0.5 s to it.

LOG_LEVEL = "WARNING"
# Settings forwarded to Ray workers (see the module docstring): where the object store and tracking server are, how
# to retry them; no AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, no MLflow password or token.
FORWARDED_ENV = (
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_MAX_ATTEMPTS",
    "AWS_RETRY_MODE", "MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL",
)


def forwarded_env() -> dict[str, str]:
    """``{name: value}`` of the :data:`FORWARDED_ENV` settings set in this process, for a ``runtime_env``'s
    ``env_vars``; a URI with a password in it (``https://user:pw@host``) is left out."""
    out = {}
    for k in FORWARDED_ENV:
        v = os.environ.get(k)
        if not v:
            continue
        try:
            has_password = urlsplit(v).password is not None
        except ValueError:
            has_password = True
        if not has_password:
            out[k] = v
    return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_ray(num_cpus: int | None = None) -> str:
    """Connect to Ray (see the module docstring). ``num_cpus`` caps a new local cluster (default: all cores).
    Returns a line for the user: which cluster, and its dashboard's URL when this call started one ("" when Ray was
    already initialised)."""
    import ray

    if ray.is_initialized():
        return ""
    address = os.environ.get("RAY_ADDRESS") or None
    # a variable the environment sets already is left to it: the workers inherit it (a local Ray) or get it from the
    # job's runtime env (``ray job submit``), and naming it twice would be a runtime-env conflict
    env = {} if os.environ.get("RAY_DATA_LOG_LEVEL") else {"RAY_DATA_LOG_LEVEL": LOG_LEVEL}
    kwargs: dict = {"logging_level": logging.WARNING, "logging_config": ray.LoggingConfig(log_level=LOG_LEVEL)}
    if address in (None, "local"):
        port = _free_port()
        env["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
        kwargs.update(include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port, num_cpus=num_cpus)
    ctx = ray.init(address=address, runtime_env={"env_vars": env} if env else None, **kwargs)
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if address in (None, "local"):
        return f"Ray: a local cluster ({cpus} CPUs) for this run; its dashboard: {_url(ctx.dashboard_url)}"
    return f"Ray: the cluster at {address} ({cpus} CPUs)"


def _url(address: str | None) -> str:
    if not address:
        return "(none)"
    return address if "://" in address else f"http://{address}"


def quiet_ray_data(progress_bars: bool | None = None) -> None:
    """No per-execution log lines from Ray Data in this process and in the datasets it creates from now on;
    ``progress_bars=False`` turns their progress bars off too (None leaves them as they are)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    if progress_bars is not None:
        ctx.enable_progress_bars = progress_bars
    # no bars forwarded from workers (Ray Train's split coordinator, the workers' validation reads): there Ray Data
    # falls back to progress log lines, which the WARNING level keeps out of the console
    ctx.use_ray_tqdm = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    logging.getLogger("ray.data").setLevel(os.environ.get("RAY_DATA_LOG_LEVEL") or LOG_LEVEL)
    # its one-time notice that progress bars are off is a WARNING of this logger; they are off on purpose
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def quiet_ray_train_worker() -> None:
    """Ray Train's per-report INFO line off, in this (worker) process (module docstring)."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray version: nothing to do
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def say(text: str) -> None:
    """Write one line to stdout now, past Ray Train's patched ``print`` (module docstring)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


__all__ = ["ensure_ray", "quiet_ray_data", "quiet_ray_train_worker", "say"]
