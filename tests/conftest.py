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


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data: real third-party videos, annotations and features (read-only; never copied into the repo)."""
    if not SHARED_DATA.is_dir():
        raise RuntimeError(f"shared data not found at {SHARED_DATA}; set VMR_SHARED_DATA")
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
