"""``fvc/train-deep`` through a process work pool: a real ``prefect worker start --pool`` takes the
run (as one worker per GPU node does) and the flow run's state says how it went."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import polars as pl
import pytest

from fvcflow.store import read_parquet
from tests.deep_lake import tiny_deep_config, write_deep_lake


@pytest.mark.slow
def test_a_worker_of_a_process_pool_runs_the_train_deep_deployment(prefect_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL

    from fvcflow.config import Settings
    from fvcflow.flows.deployments import build

    lake = write_deep_lake(tmp_path / "fvc-data", n_groups=6)
    train = tiny_deep_config("naive_3dcnn", epochs=1).model_copy(
        update={"report": False, "register_best": False, "shortcut_check": False,
                "params": {"naive_3dcnn": {"widths": [4, 4, 4]}}})
    pool = f"fvc-test-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    settings = Settings(home=lake.root, stages=["train"], train=train)
    (deep,) = [d for d in build(settings) if d.name == "train-deep"]
    deep.apply(work_pool_name=pool)
    run = run_deployment(f"fvc/{deep.name}", parameters={"models": "naive_3dcnn"}, timeout=0)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    worker = subprocess.run([sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type",
                             "process", "--run-once"], env=env, capture_output=True, text=True, timeout=300)
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run.id).state
        client.delete_work_pool(pool)
    assert state.is_completed(), (state.message, worker.stdout[-2000:], worker.stderr[-2000:])
    pred = read_parquet(lake.predictions)
    assert set(pred["model"]) == {"naive_3dcnn"}                     # the run's models parameter
    assert pred.filter(pl.col("split") == "oof").height == read_parquet(lake.splits).filter(
        ~pl.col("is_test")).height
