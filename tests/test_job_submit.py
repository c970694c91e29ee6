"""``ray job submit`` of the pretrain workflow to a real Ray cluster started with ``ray start --head`` on loopback,
with token authentication on; the run must succeed and be found in MLflow.

The cluster runs in its own process group with its own ports and temp dir, and is stopped by signalling that group:
``ray stop`` would stop every Ray instance on the machine, including ones this test did not start.
"""
from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (all held open while choosing, so none is handed out twice)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _free_range(width: int = 200) -> int:
    """The first port of ``width`` consecutive free loopback ports (Ray's worker ports)."""
    import random

    rng = random.Random(time.time_ns())
    for _ in range(200):
        base = rng.randrange(30000, 50000 - width)
        if all(_port_is_free(base + i) for i in range(0, width, 20)):
            return base
    raise RuntimeError("no free port range for Ray workers")


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class RayHead:
    """``ray start --head --block`` on loopback with token auth (``env`` holds the token for clients)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.token = secrets.token_hex(32)
        self.env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
        (gcs, self.dashboard_port, client, node_manager, object_manager, agent_listen, agent_grpc, runtime_env_agent,
         metrics) = _free_ports(9)
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        worker_base = _free_range()
        temp = Path("/tmp") / f"vmr-ray-{uuid.uuid4().hex[:8]}"  # short: Ray's unix socket paths have a length limit
        self.temp = temp
        cmd = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
               f"--port={gcs}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
               f"--dashboard-port={self.dashboard_port}", f"--ray-client-server-port={client}",
               f"--node-manager-port={node_manager}", f"--object-manager-port={object_manager}",
               f"--dashboard-agent-listen-port={agent_listen}", f"--dashboard-agent-grpc-port={agent_grpc}",
               f"--runtime-env-agent-port={runtime_env_agent}", f"--metrics-export-port={metrics}",
               f"--min-worker-port={worker_base}", f"--max-worker-port={worker_base + 199}",
               "--num-cpus=2", f"--temp-dir={temp}", "--disable-usage-stats"]
        self.log = folder / "ray-head.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def ray(self, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "ray"), *args], env=env or self.env, capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT)

    def _wait_ready(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            r = self.ray("job", "list", "--address", self.address, timeout=60)
            if r.returncode == 0:
                return
            time.sleep(2)
        raise RuntimeError(f"ray head did not come up at {self.address}:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
            except ProcessLookupError:
                pass
        try:  # stragglers of this cluster's session (workers) that left the group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        subprocess.run(["rm", "-rf", str(self.temp)], check=False)


@pytest.fixture
def ray_head(tmp_path):
    head = RayHead(tmp_path)
    try:
        yield head
    finally:
        head.stop()


def test_ray_job_submit_runs_pretraining_and_lands_in_mlflow(ray_head, tmp_path):
    # token auth is on: a client with another token is refused
    wrong = {**ray_head.env, "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    refused = ray_head.ray("job", "list", "--address", ray_head.address, env=wrong, timeout=60)
    assert refused.returncode != 0

    workdir = tmp_path / "wd"
    job_id = f"vmr-pretrain-{uuid.uuid4().hex[:6]}"
    args = ["job", "submit", "--address", ray_head.address, "--submission-id", job_id, "--working-dir", str(ROOT),
            "--", "python", "workflows/pretrain.py", "--run-name", "job", "--workdir", str(workdir),
            "data.demo.n_videos=3", "data.demo.duration_range=[30,36]", "data.demo.size=[160,120]",
            "data.demo.length_range=[4,8]", "data.features.model=ViT-S-32", "data.stream.max_target=24",
            "data.stream.max_query=8", "data.clips.clip_min=4", "data.clips.clip_max=8", "data.clip_draws=1",
            "model.matr.d_model=32", "model.matr.ff_dim=64", "model.matr.enc_layers=1", "model.matr.dec_layers=1",
            "model.matr.heads=2", "model.matr.queries=4", "train.epochs=1", "train.batch_size=8"]
    submitted = ray_head.ray(*args, timeout=1500)
    status = ray_head.ray("job", "status", "--address", ray_head.address, job_id, timeout=60)
    said = re.sub(r"\x1b\[[0-9;]*m", "", status.stdout + status.stderr)
    assert re.search(rf"job '{job_id}' succeeded", said, re.I), (submitted.stdout[-4000:], submitted.stderr[-4000:])
    assert submitted.returncode == 0
    assert "registered models:/vmr-matr-pretrained/1" in submitted.stdout

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    exp = client.get_experiment_by_name("vmr-pretrain")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`vmr.run_name` = 'job'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["train.epochs"] == "1" and "train/loss" in runs[0].data.metrics
    assert (workdir / "runs" / "job" / "vmr_summary.json").is_file()
