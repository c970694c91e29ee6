"""Shared test setup.

Fixture modules live in ``tests/fixtures/*.py`` (one per concern: the S3 server, demo data, ...); they are loaded here
so that each can be added without editing this file.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VMR_SHARED_DATA", ROOT.parent / "shared" / "data"))
SHARED_LAYOUT = ("videos", "annotations", "features")  # the folders a test data folder holds
REQUIRE_DATA = os.environ.get("VMR_REQUIRE_DATA", "") not in ("", "0")


def _missing_data() -> list[str]:
    """The folders of SHARED_LAYOUT that SHARED_DATA lacks (all of them when SHARED_DATA is not a folder)."""
    return [name for name in SHARED_LAYOUT if not (SHARED_DATA / name).is_dir()]


def _what_is_missing() -> str:
    """One line: which folders SHARED_DATA lacks and how to point the tests at the data."""
    missing = ", ".join(f"{name}/" for name in _missing_data())
    return (f"{SHARED_DATA} has no {missing}; set VMR_SHARED_DATA to the test data folder "
            f"(README.md, \"Running the tests\")")


def _absent_reason() -> str:
    return f"needs the third-party test data: {_what_is_missing()}"


def pytest_configure(config: pytest.Config) -> None:
    """Under VMR_REQUIRE_DATA=1 (CI) a missing test data folder stops the session before any test runs: there every
    needs_data test must run, none may pass by being skipped."""
    if REQUIRE_DATA and _missing_data():
        raise pytest.UsageError(f"VMR_REQUIRE_DATA=1 and the third-party test data is missing: {_what_is_missing()}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that uses the shared_data fixture needs the data as much as one marked needs_data: both carry the marker,
    and both are skipped, with one line that says how to run them, when the data folder is absent."""
    absent = bool(_missing_data())
    skip = pytest.mark.skip(reason=_absent_reason()) if absent else None
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()) and item.get_closest_marker("needs_data") is None:
            item.add_marker(pytest.mark.needs_data)
        if absent and item.get_closest_marker("needs_data") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The third-party test data folder (VMR_SHARED_DATA, else ../shared/data): real videos, annotation files and CLIP
    features, read-only and never copied into the repo. Tests that use it are needs_data tests (see
    pytest_collection_modifyitems)."""
    if _missing_data():  # reached only through request.getfixturevalue: tests that use it are skipped earlier
        pytest.skip(_absent_reason())
    return SHARED_DATA


def _load_fixture_modules() -> None:
    """Import every tests/fixtures/*.py and expose its public names (fixtures) here, as ``from x import *`` would."""
    for path in sorted((ROOT / "tests" / "fixtures").glob("*.py")):
        if path.name.startswith("_"):
            continue
        spec = importlib.util.spec_from_file_location(f"vmr_test_fixtures_{path.stem}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        for name, value in vars(mod).items():
            if not name.startswith("_") and name not in globals():
                globals()[name] = value


_load_fixture_modules()
