"""cluster.yaml: valid for Ray's own cluster launcher (its JSON schema and the defaults-merging `ray up` does), and
shaped as the operator's guide promises (CPU head, autoscaling GPU and CPU workers, pinned image, auth token)."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


@pytest.fixture(scope="module")
def ray_schema() -> dict:
    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def test_cluster_yaml_passes_rays_schema(cluster, ray_schema):
    jsonschema.validate(cluster, ray_schema)  # what `ray up` checks first


def test_cluster_yaml_passes_ray_up_preparation(cluster):
    """`ray up` merges the AWS defaults, the setup commands and per-type worker limits, then validates again."""
    prepared = prepare_config(copy.deepcopy(cluster))
    validate_config(prepared)
    assert prepared["provider"]["type"] == "aws"
    assert set(prepared["available_node_types"]) == {"head", "gpu", "cpu"}


def test_schema_check_catches_mistakes(cluster, ray_schema):
    """The schema check above is not vacuous: a misspelt key or a fractional GPU count are refused."""
    typo = copy.deepcopy(cluster)
    typo["idle_timeout_minute"] = typo.pop("idle_timeout_minutes")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(typo, ray_schema)
    frac = copy.deepcopy(cluster)
    frac["available_node_types"]["gpu"]["resources"]["GPU"] = 0.5
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(frac, ray_schema)


def test_node_types_cpu_head_autoscaling_gpu_and_cpu_workers(cluster):
    types = cluster["available_node_types"]
    head = types[cluster["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and not head["resources"].get("GPU")  # no tasks on the head
    gpu, cpu = types["gpu"], types["cpu"]
    assert gpu["resources"]["GPU"] >= 1 and gpu["min_workers"] == 0 and gpu["max_workers"] > 0
    assert cpu["resources"]["CPU"] > 0 and not cpu["resources"].get("GPU")
    assert cpu["min_workers"] == 0 and cpu["max_workers"] > 0
    assert cluster["max_workers"] >= gpu["max_workers"] + cpu["max_workers"]
    assert cluster["idle_timeout_minutes"] > 0
    for name, t in types.items():  # S3 through an instance profile, never keys on the nodes
        assert t["node_config"]["IamInstanceProfile"]["Arn"].startswith("arn:aws:iam::"), name


def test_image_is_pinned_to_this_ray_version(cluster):
    """Client and cluster must run the same Ray: the image tag pins the version of the venv's Ray."""
    image = cluster["docker"]["image"]
    m = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py311-cu12\d", image)
    assert m, f"{image} is not a pinned rayproject/ray:<version>-py311-cu12x image"
    assert m.group(1) == ray.__version__, f"cluster.yaml runs Ray {m.group(1)}, this venv has {ray.__version__}"
    assert "ray-ml" not in image


def test_setup_installs_vmr_and_nodes_run_with_token_auth(cluster):
    mounts = cluster["file_mounts"]
    setup = " ".join(cluster["setup_commands"])
    wheel_dir = next(remote for remote, local in mounts.items() if local.rstrip("/").endswith("dist"))
    assert f"{wheel_dir}/vmr-" in setup and "pip install" in setup
    assert any(remote.endswith(".ray/auth_token") for remote in mounts)  # one token for the whole cluster
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ".join(cluster[key])
        assert "RAY_AUTH_MODE=token" in start and "ray start" in start, key
