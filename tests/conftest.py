"""Shared fixtures: one Prefect test server per session, Prefect state in a temporary home."""

from __future__ import annotations

import os
import site
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def root_ahead_of_site_packages(path: list[str]) -> bool:
    """Whether the repository root (or the cwd, '') comes before site-packages on ``path``: then our
    top-level ``kernels/`` and ``flows/`` hide packages of those names (transformers imports Hugging
    Face's ``kernels``)."""
    site_dirs = {str(Path(p).resolve()) for p in site.getsitepackages()}
    for entry in path:
        resolved = str(Path(entry or os.getcwd()).resolve())
        if resolved in site_dirs:
            return False
        if resolved == str(ROOT):
            return True
    return False


if root_ahead_of_site_packages(sys.path):
    pytest.exit(f"the repository root {ROOT} is ahead of site-packages on sys.path, so its kernels/ folder "
                "would hide Hugging Face's `kernels` package: run `make test`, `.venv/bin/pytest`, or "
                "`python -P -m pytest` (not `python -m pytest` from the root)", returncode=4)

# Before anything imports prefect: its state goes to a throwaway home, never ~/.prefect.
_PREFECT_HOME = tempfile.mkdtemp(prefix="fvc-prefect-home-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.pop("PREFECT_API_URL", None)
os.environ.setdefault("MPLBACKEND", "Agg")


#: the test files that take longest, longest first (a full ``make test`` with ``--durations``: each
#: file's setup and calls summed). They are collected first and, with ``--dist loadfile
#: --no-loadscope-reorder`` (pyproject.toml), handed out first: the many short files then fill in
#: around them, and no worker is left running a long file alone at the end while the other idles
#: (xdist's default order, by number of tests, started them last).
LONGEST_FIRST = (
    "test_reliability_resume.py", "test_pipeline.py", "test_many_columns.py", "test_scan.py",
    "test_ensembles_flow.py", "test_local_server.py", "test_leakage_canary.py", "test_user_view.py",
    "test_serve.py", "test_deep_ddp.py", "test_face_clips.py", "test_reliability_inputs.py",
    "test_kernels_machine.py", "test_deep_training.py", "test_deep_device.py", "test_weights.py",
    "test_gpu_check.py", "test_predict.py", "test_serve_deep.py",
)


def pytest_collection_modifyitems(config, items):
    """Put the files of :data:`LONGEST_FIRST` first, in that order; every file's own order kept."""
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
    items[:] = sorted(items, key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def dask_address():
    """One real Dask ``LocalCluster`` for the session, started as ``engine.dask_cluster`` starts a
    run's own (two worker processes, loopback, the thread variables, the preload). The in-process
    flow runs that are not about the cluster itself pass its address as ``dask_address`` (what a
    user's ``--dask-address`` does): each run then neither starts and stops a cluster nor loads
    every kernel again in fresh workers (about 10-15 s a run). The tests of the cluster's own
    behaviour (tests/test_engine.py, the reliability tests, the user's view) start their own."""
    from fvcflow.config import Settings
    from fvcflow.engine import dask_cluster

    with dask_cluster(Settings(workers=2, threads_per_worker=1)) as address:
        yield address


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
