"""A video that kills its Dask worker (issue 26, part 2), injected for real: the workers of a real
``LocalCluster`` carry a WorkerPlugin that ``os._exit()``s the worker process when it is asked to
process one file (by name). Through the real ``fvc`` flow (cluster passed as ``dask_address``),
that video is one failure row, ``killed its worker``, read once in its batch and once alone (the
batch is split, not retried blindly); the other videos' rows are written, and the nanny restarts
the dead worker."""

from __future__ import annotations

import os
from pathlib import Path

import dask
import polars as pl
import pytest
from distributed import Client, LocalCluster, WorkerPlugin

from fvcflow.config import Settings
from tests.media import write_video
from tests.reliability_media import write_labels

POISON = "poison.mp4"
N_GOOD = 7


class ExitOn(WorkerPlugin):
    """In each worker (the restarted ones too: the scheduler hands plugins to every new worker),
    stage 2 exits the process at once when it is given ``name``; each such read is logged first."""

    name = "exit-on-video"

    def __init__(self, name: str, log: str):
        self.video, self.log = name, log

    def setup(self, worker):
        from fvcflow.stages import specs

        real = specs.SPECS["features"]
        video, log = self.video, self.log

        def run(job, settings):
            if Path(job.path).name == video:
                with open(log, "a") as fh:
                    fh.write(f"{os.getpid()}\n")
                os._exit(70)                         # no except, no finally: the process is gone
            return real.run(job, settings)

        specs.SPECS["features"] = real.__class__(real.name, real.table, real.jobs, run)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("killer") / "corpus"
    names = [POISON] + [f"v{i}.mp4" for i in range(N_GOOD)]
    for seed, name in enumerate(names):
        write_video(root / name, n=12, width=64, height=48, seed=seed)
    write_labels(root, [(n, "fake" if i % 2 else "real", f"g{i}") for i, n in enumerate(names)])
    return root


def run_poisoned(corpus: Path, tmp_path: Path, allowed_failures: int):
    from fvcflow.flows.pipeline import fvc

    log = tmp_path / "poison-reads.txt"
    with dask.config.set({"distributed.scheduler.allowed-failures": allowed_failures}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                         dashboard_address=None, silence_logs=50) as cluster, Client(cluster) as client:
        client.register_plugin(ExitOn(POISON, str(log)))
        before = set(client.run(os.getpid).values())
        # workers=1: batches of two videos (four per worker), so the poisoned video has a neighbour
        settings = Settings(home=tmp_path / "fvc-data", workers=1, stages=["ingest", "features"],
                            dask_address=cluster.scheduler_address,
                            corpus={"kind": "folder", "root": corpus,
                                    "labels": corpus / "labels.csv"}).resolved()
        state = fvc(config=settings, return_state=True)
        client.wait_for_workers(2, timeout=60)
        after = set(client.run(os.getpid).values())
    reads = [int(p) for p in log.read_text().split()] if log.exists() else []
    return state, settings, reads, before, after


def check_rows(state, settings) -> None:
    assert state.is_completed(), state.message
    features = {r["stage"]: r for r in state.result()}["features"]
    assert (features["done"], features["failed"]) == (N_GOOD, 1), features
    lake = settings.lake()
    failures = pl.read_parquet(lake.failures).filter(pl.col("stage") == "features")
    assert failures.height == 1, failures                              # one row, not one per try
    row = failures.row(0, named=True)
    assert row["path"].endswith(POISON) and row["error_type"] == "WorkerKilled"
    assert "killed its worker" in row["reason"]
    index = pl.read_parquet(lake.index)
    good = sorted(index.filter(~pl.col("path").str.ends_with(POISON))["video_id"])
    table = pl.read_parquet(lake.stage2)
    assert sorted(table["video_id"]) == good and len(good) == N_GOOD   # the rest of its batch went on
    assert not list((settings.home / ".in-flight").glob("*.json"))    # no marker left behind


@pytest.mark.slow
def test_a_video_that_kills_its_worker_is_one_failure_row_and_the_batch_goes_on(prefect_server, corpus,
                                                                              tmp_path):
    state, settings, reads, before, after = run_poisoned(corpus, tmp_path, allowed_failures=3)
    check_rows(state, settings)
    # read once in its batch of two (the batch's next attempt splits it) and once alone (that
    # task's next attempt is its failure row): never retried blindly
    assert len(reads) == 2, reads
    assert reads[0] in before and not set(reads) & after               # those workers died ...
    assert len(after) == 2                                             # ... and the nanny restarted them


@pytest.mark.slow
def test_a_scheduler_that_gives_up_at_once_the_flow_splits_on_killed_worker(prefect_server, corpus, tmp_path):
    """``allowed-failures = 0``: the first death is the scheduler's ``KilledWorker``, handled by the
    flow the same way."""
    state, settings, reads, before, after = run_poisoned(corpus, tmp_path, allowed_failures=0)
    check_rows(state, settings)
    assert len(reads) == 2, reads
    assert reads[0] in before and not set(reads) & after and len(after) == 2
