"""Ingest on the Dask engine: probing and hashing on the workers gives the index a local ingest gives,
with the same failures, and announces its progress as the workers finish."""

from __future__ import annotations

import polars as pl
from distributed import LocalCluster
from polars.testing import assert_frame_equal

from fvcflow import progress
from fvcflow.ingest import ingest
from fvcflow.store import Lake
from tests.reliability_media import make_corpus


def test_ingest_on_dask_workers_writes_the_index_of_a_local_ingest(tmp_path):
    corpus = tmp_path / "corpus"
    names = make_corpus(corpus, bases=2, copies=6, frames=10, size=(64, 48))
    (corpus / "broken.mp4").write_bytes(b"not a video at all")
    (corpus / "labels.csv").write_text((corpus / "labels.csv").read_text() + "broken.mp4,real,g9\n")
    local = Lake.at(tmp_path / "local")
    ingest("folder", corpus, local, labels=corpus / "labels.csv", workers=1)
    seen = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=50) as cluster:
        lake = Lake.at(tmp_path / "dask")
        with progress.listening(lambda event, fields: seen.append((event, fields))):
            summary = ingest("folder", corpus, lake, labels=corpus / "labels.csv",
                             dask_address=cluster.scheduler_address)
    assert summary.indexed == len(names) and summary.n_failed == 1
    ours, theirs = pl.read_parquet(lake.index), pl.read_parquet(local.index)
    assert_frame_equal(ours, theirs)
    failures = [pl.read_parquet(x.failures).drop("recorded_at") for x in (lake, local)]
    assert_frame_equal(failures[0], failures[1])
    steps = [f["done"] for e, f in seen if e == "ingest_step"]
    assert steps == sorted(steps) and steps[-1] == len(names) + 1 and len(steps) >= 2
