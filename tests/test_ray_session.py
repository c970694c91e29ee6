"""vmr.pipeline.ray_session: a local Ray started by a workflow must serve its own state API to its workers, also on a
machine where another Ray instance runs (Ray Train's placement-group cleaner asks it whether a training controller
is alive; without an answer it warns every second or two and, in sweeps, never gives a stopped trial's CPUs back)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

WORKFLOW_DRIVER = """
import ray
from vmr.pipeline.ray_session import ensure_ray

print(ensure_ray(num_cpus=1), flush=True)

@ray.remote(num_cpus=0)
class Controller:
    def ping(self):
        return 1

@ray.remote(num_cpus=0)
def state_of(actor_id):
    from ray.util.state import get_actor  # what the placement-group cleaner calls, from inside the cluster
    return get_actor(actor_id, timeout=30).state

c = Controller.remote()
ray.get(c.ping.remote())
print("controller state:", ray.get(state_of.remote(c._actor_id.hex())), flush=True)
"""

OTHER_RAY = "import ray, time; ray.init(num_cpus=1, include_dashboard=False); print('up', flush=True); time.sleep(900)"


def test_workers_of_a_local_ray_reach_its_state_api_beside_another_ray_instance(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    other = subprocess.Popen([sys.executable, "-c", OTHER_RAY], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, env=env, start_new_session=True)
    try:
        assert other.stdout.readline().strip() == "up"
        r = subprocess.run([sys.executable, "-c", WORKFLOW_DRIVER], capture_output=True, text=True, env=env,
                           timeout=300, cwd=tmp_path)
    finally:
        os.killpg(other.pid, signal.SIGTERM)
        try:
            other.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(other.pid, signal.SIGKILL)
        time.sleep(1)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert lines[0].startswith("Ray: a local cluster (1 CPUs) for this run; its dashboard: http://127.0.0.1:")
    assert "controller state: ALIVE" in lines
