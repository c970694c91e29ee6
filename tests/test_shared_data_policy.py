"""The third-party test data policy of tests/conftest.py, run in child pytest sessions on a small test file: without
the data folder the needs_data tests (marked, or using the shared_data fixture) are skipped with a reason naming
VMR_SHARED_DATA and the run passes; under VMR_REQUIRE_DATA=1 (CI) the session stops before any test runs; with the
data folder present nothing is skipped."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_SAMPLE = '''
import pytest


@pytest.mark.needs_data
def test_marked():
    pass


def test_uses_the_fixture(shared_data):
    assert (shared_data / "videos").is_dir()


def test_plain():
    pass
'''


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("policy")
    (root / "test_sample.py").write_text(_SAMPLE)
    return root


def _pytest(sample: Path, data: Path, require: bool) -> subprocess.CompletedProcess:
    """pytest -rs on the sample file with this repository's conftest.py loaded as a plugin (its hooks and fixtures)
    and its pytest settings (the needs_data marker)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VMR_SHARED_DATA", "VMR_REQUIRE_DATA", "PYTEST_ADDOPTS")}
    env.update(VMR_SHARED_DATA=str(data), PYTHONPATH=str(ROOT / "tests"))
    if require:
        env["VMR_REQUIRE_DATA"] = "1"
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-c", str(ROOT / "pyproject.toml"),
           "--rootdir", str(sample), "-p", "conftest", str(sample / "test_sample.py")]
    return subprocess.run(cmd, cwd=sample, env=env, capture_output=True, text=True, timeout=300)


def test_without_the_data_needs_data_tests_are_skipped_with_a_reason(sample, tmp_path):
    run = _pytest(sample, tmp_path, require=False)  # an empty folder: no videos/, annotations/, features/
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "1 passed, 2 skipped" in out, out
    skips = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert len(skips) == 2 and all("VMR_SHARED_DATA" in s and '"Running the tests"' in s for s in skips), out
    assert all(str(tmp_path) in s and "videos/, annotations/, features/" in s for s in skips), out


def test_ci_stops_at_once_when_the_data_is_missing(sample, tmp_path):
    run = _pytest(sample, tmp_path, require=True)
    assert run.returncode not in (0, 5) and run.stdout.strip() == "", run.stdout  # nothing collected, nothing ran
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("ERROR: VMR_REQUIRE_DATA=1 and the third-party test data is missing: ")
    assert str(tmp_path) in lines[0] and "VMR_SHARED_DATA" in lines[0]


def test_with_the_data_nothing_is_skipped(sample, tmp_path):
    for name in ("videos", "annotations", "features"):
        (tmp_path / name).mkdir()
    for require in (False, True):
        run = _pytest(sample, tmp_path, require=require)
        assert run.returncode == 0 and "3 passed" in run.stdout and "skipped" not in run.stdout, run.stdout + run.stderr


def test_the_suites_own_data_tests_are_skipped_without_the_data(tmp_path):
    """The same on this repository's tests: a metric-parity test (shared_data fixture) next to a plain one."""
    env = {k: v for k, v in os.environ.items() if k not in ("VMR_REQUIRE_DATA", "PYTEST_ADDOPTS")}
    env["VMR_SHARED_DATA"] = str(tmp_path)
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
           "tests/test_metrics.py::test_reproduces_reference_metrics_exactly",
           "tests/test_metrics.py::test_empty_prediction_is_a_miss"]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "1 passed, 1 skipped" in run.stdout, run.stdout + run.stderr
    assert "SKIPPED [1] tests/test_metrics.py" in run.stdout and "VMR_SHARED_DATA" in run.stdout
