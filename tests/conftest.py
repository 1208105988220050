"""Shared fixtures: one Prefect test server per session, Prefect state in a temporary home."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Before anything imports prefect: its state goes to a throwaway home, never ~/.prefect.
_PREFECT_HOME = tempfile.mkdtemp(prefix="fvc-prefect-home-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.pop("PREFECT_API_URL", None)
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def prefect_server():
    """A real Prefect server (SQLite) for the whole session; started once (~10 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def lake_dir(tmp_path: Path) -> Path:
    return tmp_path / "fvc-data"


@pytest.fixture
def torch_one_thread():
    """Tiny torch models run fastest on one thread (the machine has two); restored afterwards.
    The deep test modules use it for every test (``pytestmark``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
