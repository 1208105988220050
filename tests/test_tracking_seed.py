"""A new SQLite tracking store is a copy of the empty one MLflow built (tracking/seed.py): MLflow
opens and uses it as its own, an existing store is never touched, and two processes seeding one
path at once end with one store."""

from __future__ import annotations

import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fvcflow.config import user_cache
from fvcflow.training.tracking.seed import seed_sqlite


@pytest.fixture(scope="module", autouse=True)
def own_cache(tmp_path_factory):
    """The empty store is built by MLflow once for this module, in a cache of its own."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if before is None:
        os.environ.pop("XDG_CACHE_HOME")
    else:
        os.environ["XDG_CACHE_HOME"] = before


def _schema(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return sorted(db.execute("SELECT type, name, sql FROM sqlite_master").fetchall(), key=str)


def test_a_seeded_store_is_mlflow_s_own_and_an_existing_one_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "work" / "mlflow.db"
    uri = f"sqlite:///{db}"
    assert seed_sqlite(uri)
    template = next(user_cache().glob("mlflow-*-empty.db"))    # built by MLflow, in the cache
    assert _schema(db) == _schema(template)
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT version_num FROM alembic_version").fetchall() == \
            sqlite3.connect(template).execute("SELECT version_num FROM alembic_version").fetchall()

    client = MlflowClient(uri, uri)                          # MLflow uses it as a store it made
    [default] = client.search_experiments()
    assert (default.experiment_id, default.name) == ("0", "Default")
    assert default.artifact_location == str(tmp_path / "mlruns" / "0")   # where MLflow puts it (cwd)
    run = client.create_run(client.create_experiment("fvc"))
    client.log_metric(run.info.run_id, "roc_auc", 0.8)
    client.create_registered_model("fvc-detector")
    assert client.get_metric_history(run.info.run_id, "roc_auc")[0].value == 0.8

    before = db.read_bytes()
    assert not seed_sqlite(uri)                              # it exists: untouched
    assert db.read_bytes() == before
    assert not seed_sqlite("postgresql://db.example/mlflow") and not seed_sqlite("sqlite:///:memory:")


def test_threads_seeding_one_path_at_once_leave_one_store(tmp_path):
    db = tmp_path / "work" / "mlflow.db"
    start = threading.Barrier(8)

    def seed():
        start.wait()
        return seed_sqlite(f"sqlite:///{db}")

    with ThreadPoolExecutor(8) as pool:
        placed = list(pool.map(lambda _: seed(), range(8)))
    assert placed.count(True) == 1                            # linked in place once, never overwritten
    assert sorted(p.name for p in db.parent.iterdir()) == ["mlflow.db"]   # no temporary file left
    client = MlflowClient(f"sqlite:///{db}", f"sqlite:///{db}")
    assert [e.name for e in client.search_experiments()] == ["Default"]
