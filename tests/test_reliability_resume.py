"""Faults during a run, injected for real: ``kill -9`` of the flow process in stage 2, a Dask worker
killed mid-stage. The run must resume or complete with no video lost, none counted twice, and no
half-written file read."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from distributed import Client, LocalCluster
from polars.testing import assert_frame_equal

from fvcflow.config import Settings
from fvcflow.stages import runner
from fvcflow.stages.ingest import ingest_corpus
from fvcflow.store import read_checked_parquet
from tests.reliability_media import (
    assert_lake_sound,
    cached_results,
    feature_table,
    make_corpus,
    manifest_files,
)

N_VIDEOS = 32


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """32 distinct 320x240, 150-frame videos: stage 2 takes a few seconds on 2 workers (8 batches of
    4 videos, each batch's results kept as it goes), so every fault below lands mid-stage."""
    root = tmp_path_factory.mktemp("resume") / "corpus"
    make_corpus(root, bases=4, copies=N_VIDEOS // 4, frames=150)
    return root


def corpus_settings(corpus: Path, home: Path, **kw) -> Settings:
    return Settings(home=home, workers=2, stages=["ingest", "features"],
                    corpus={"kind": "folder", "root": corpus, "labels": corpus / "labels.csv"},
                    **kw).resolved()


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> dict[str, pl.DataFrame]:
    """The tables of an uninterrupted ingest + stage 2 (library path, one process)."""
    settings = corpus_settings(corpus, tmp_path_factory.mktemp("reference") / "fvc-data")
    ingest_corpus(settings)
    report = runner.run_local("features", settings)
    assert report.done == N_VIDEOS and report.failed == 0
    lake = settings.lake()
    return {"index": pl.read_parquet(lake.index).sort("video_id"), "stage2": feature_table(lake.stage2)}


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, poll: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended (rc {proc.returncode}) before {what}")
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def session_pids(sid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-s", str(sid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.slow
def test_kill9_in_stage2_then_rerun_resumes_and_matches(prefect_server, corpus, reference, tmp_path):
    from prefect.settings import PREFECT_API_URL

    home = tmp_path / "fvc-data"
    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), PREFECT_HOME=str(tmp_path / "prefect"),
               PREFECT_LOGGING_LEVEL="WARNING")
    cmd = [sys.executable, "-m", "fvcflow", "--home", str(home), "run", "--corpus", "folder",
           "--root", str(corpus), "--labels", str(corpus / "labels.csv"), "--stages", "ingest,features",
           "--workers", "2"]
    log = tmp_path / "killed-run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: len(cached_results(home)) >= 2, 240, "stage 2 cache files", proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # the Dask workers die with their parent: nothing keeps writing after the kill
        wait_for(lambda: not session_pids(proc.pid), 30, "the killed run's worker processes to exit",
                 poll=0.2)
    finally:
        for pid in session_pids(proc.pid):
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    before = cached_results(home)
    assert 0 < len(before) < N_VIDEOS, f"the kill should land mid-stage ({len(before)} of {N_VIDEOS} done)"
    for path in manifest_files(home):  # what the killed run published is whole (checked)
        assert read_checked_parquet(path) is not None

    from fvcflow.flows.pipeline import fvc

    state = fvc(config=corpus_settings(corpus, home), return_state=True)
    assert state.is_completed(), state.message
    features = {r["stage"]: r for r in state.result()}["features"]
    assert features["cached"] == len(before)
    assert features["done"] == N_VIDEOS - len(before) and features["failed"] == 0
    after = cached_results(home)
    assert len(after) == N_VIDEOS
    assert {p: after[p] for p in before} == before  # finished videos were not recomputed
    assert_lake_sound(home)
    lake = Settings(home=home).lake()
    assert_frame_equal(pl.read_parquet(lake.index).sort("video_id"), reference["index"])
    assert_frame_equal(feature_table(lake.stage2), reference["stage2"])


def test_a_writer_killed_mid_write_leaves_no_table_and_its_file_is_swept(corpus, tmp_path):
    """``kill -9`` of a process while it writes a table: the old table (none here) stays, the
    partial temporary file is never read, and the next plan removes it (its writer is gone)."""
    settings = Settings(home=tmp_path / "fvc-data", corpus={"kind": "folder", "root": corpus,
                        "labels": corpus / "labels.csv"}).resolved()
    lake = settings.lake()
    ingest_corpus(settings)
    code = ("import sys, numpy as np, polars as pl\n"
            "from fvcflow.store import write_parquet_atomic\n"
            "df = pl.DataFrame({'a': np.random.default_rng(0).random(40_000_000)})\n"
            "write_parquet_atomic(df, sys.argv[1])\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(lake.stage2)])
    try:
        wait_for(lambda: any(lake.stage2.parent.glob(".*.tmp")), 120, "the temporary file", proc, poll=0.005)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    leftovers = list(lake.stage2.parent.glob(".*.tmp"))
    assert len(leftovers) == 1 and not lake.stage2.exists()
    host = leftovers[0].name.split(".")[-4]
    live = lake.cache_dir("features") / "ab" / f".x.parquet.{host}.{os.getpid()}.abc.tmp"
    live.parent.mkdir(parents=True)
    live.write_bytes(b"in flight")  # a live writer's file (this process): kept
    runner.plan("features", settings)
    assert not leftovers[0].exists() and live.exists()
    assert not lake.stage2.exists()


def _kill_a_worker_once_started(client: Client, home: Path, killed: list) -> None:
    wait_for(lambda: len(cached_results(home)) >= 2, 120, "stage 2 to start")
    pid = next(iter(client.run(os.getpid).values()))
    os.kill(pid, signal.SIGKILL)
    killed.append(pid)


@pytest.mark.slow
def test_a_worker_killed_mid_stage_loses_no_video_and_counts_none_twice(corpus, tmp_path):
    settings = corpus_settings(corpus, tmp_path / "fvc-data")
    ingest_corpus(settings)
    plan = runner.plan("features", settings)
    assert len(plan.todo) == N_VIDEOS
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=50) as cluster, Client(cluster) as client:
        killed: list[int] = []
        killer = threading.Thread(target=_kill_a_worker_once_started, args=(client, settings.home, killed))
        killer.start()
        futures = [client.submit(runner.run_batch, "features", b, settings, pure=False)
                   for b in runner.batches(plan.todo, 2)]
        outcomes = client.gather(futures)
        killer.join()
    assert killed, "no worker was killed"
    report = runner.finish(plan, outcomes, settings)
    done = [v for o in outcomes for v in o.done]
    assert sorted(done) == sorted(j.video_id for j in plan.todo)  # each video once, none lost
    assert report.done == N_VIDEOS and report.failed == 0
    table = pl.read_parquet(settings.lake().stage2)
    assert table.height == N_VIDEOS and table["video_id"].n_unique() == N_VIDEOS
    assert_lake_sound(settings.home)


@pytest.mark.slow
def test_a_worker_killed_mid_flow_the_flow_completes(prefect_server, corpus, reference, tmp_path):
    """The same fault through the ``fvc`` flow (its DaskTaskRunner on a cluster given by address)."""
    from fvcflow.flows.pipeline import fvc

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=50) as cluster, Client(cluster) as client:
        settings = corpus_settings(corpus, tmp_path / "fvc-data", dask_address=cluster.scheduler_address)
        killed: list[int] = []
        killer = threading.Thread(target=_kill_a_worker_once_started, args=(client, settings.home, killed))
        killer.start()
        state = fvc(config=settings, return_state=True)
        killer.join()
        # the workers imported the video stages' tasks only (flows/video.py), not the training's
        heavy = client.run(lambda: sorted(m for m in ("torch", "sklearn", "mlflow", "skops", "matplotlib",
                                                     "fvcflow.flows.train") if m in sys.modules))
    assert killed, "no worker was killed"
    assert state.is_completed(), state.message
    assert all(not mods for mods in heavy.values()), heavy
    features = {r["stage"]: r for r in state.result()}["features"]
    assert (features["done"], features["cached"], features["failed"]) == (N_VIDEOS, 0, 0)
    assert_frame_equal(feature_table(settings.lake().stage2), reference["stage2"])
    assert_lake_sound(settings.home)


def start_run(corpus: Path, home: Path, tmp_path: Path, name: str, *extra: str,
              **env_extra: str) -> tuple[subprocess.Popen, Path]:
    """``fvc run`` of ingest + stage 2 in its own session, against the session's Prefect server."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": env_extra.pop("PREFECT_API_URL", None) or PREFECT_API_URL.value(),
           "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_LOGGING_LEVEL": "WARNING", **env_extra}
    cmd = [sys.executable, "-m", "fvcflow", "--home", str(home), "run", "--corpus", "folder",
           "--root", str(corpus), "--labels", str(corpus / "labels.csv"), "--stages", "ingest,features",
           "--workers", "2", *extra]
    log = tmp_path / f"{name}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, log


def stop_run(proc: subprocess.Popen, signals: list[int], *, gap: float = 0.5, timeout: float = 120) -> float:
    """Send ``signals`` to the run (``gap`` seconds apart); wait for it and its workers to exit;
    the seconds from the last signal to the run's exit."""
    try:
        for k, sig in enumerate(signals):
            if k:
                time.sleep(gap)
            os.kill(proc.pid, sig)
        sent = time.monotonic()
        proc.wait(timeout)
        took = time.monotonic() - sent
        wait_for(lambda: not session_pids(proc.pid), 30, "the stopped run's workers to exit", poll=0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in session_pids(proc.pid):
            os.kill(pid, signal.SIGKILL)
    return took


@pytest.mark.slow
def test_sigterm_stops_cleanly_a_second_ctrl_c_forces_and_the_rerun_matches(prefect_server, corpus, reference,
                                                                            tmp_path):
    home = tmp_path / "fvc-data"
    lake = Settings(home=home).lake()
    # a polite stop: SIGTERM mid stage 2
    proc, log = start_run(corpus, home, tmp_path, "stopped-run")
    wait_for(lambda: len(cached_results(home)) >= 2, 240, "stage 2 cache files", proc)
    stop_run(proc, [signal.SIGTERM])
    text = log.read_text()
    assert proc.returncode == 128 + signal.SIGTERM, text[-3000:]
    assert "SIGTERM: stopping" in text and "stopped by SIGTERM during features" in text, text
    assert "nothing half-done was published" in text and f"to resume, rerun: fvc --home {home} run" in text
    assert "Traceback" not in text
    assert not lake.stage2.exists()                      # the stage's table is published only when whole
    assert_lake_sound(home)                              # no temporary file left
    stopped = cached_results(home)
    assert 0 < len(stopped) < N_VIDEOS

    # the same command again, then Ctrl-C twice: the second forces
    proc, log = start_run(corpus, home, tmp_path, "forced-run")
    wait_for(lambda: len(cached_results(home)) >= len(stopped) + 1, 240, "more stage 2 cache files", proc)
    took = stop_run(proc, [signal.SIGINT, signal.SIGINT], gap=0.3)
    text = log.read_text()
    assert proc.returncode == 128 + signal.SIGINT, text[-3000:]
    assert "SIGINT: stopping" in text and "SIGINT again: forced stop" in text, text
    assert took < 20, f"a forced stop took {took:.1f} s"
    assert {p: cached_results(home)[p] for p in stopped} == stopped     # the resumed run kept them

    from fvcflow.flows.pipeline import fvc

    before = cached_results(home)
    assert len(before) < N_VIDEOS
    state = fvc(config=corpus_settings(corpus, home), return_state=True)   # its plan sweeps the leftovers
    assert state.is_completed(), state.message
    features = {r["stage"]: r for r in state.result()}["features"]
    assert (features["cached"], features["done"]) == (len(before), N_VIDEOS - len(before))
    assert {p: cached_results(home)[p] for p in before} == before
    assert_frame_equal(feature_table(lake.stage2), reference["stage2"])
    assert_lake_sound(home)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_the_dask_scheduler_killed_mid_stage_is_named_and_a_new_one_computes_only_the_rest(
        prefect_server, corpus, reference, tmp_path):
    home = tmp_path / "fvc-data"
    address = f"tcp://127.0.0.1:{_free_port()}"
    quick = dict(DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="5s")   # the client gives up reconnecting soon
    port = address.rsplit(":", 1)[1]
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler",
                                  "--host", "127.0.0.1", "--port", port, "--no-dashboard"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    workers = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address,
                                "--nworkers", "2", "--nthreads", "1", "--no-dashboard",
                                "--death-timeout", "10"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                               env=dict(os.environ, **quick))
    try:
        proc, log = start_run(corpus, home, tmp_path, "lost-scheduler", "--dask-address", address, **quick)
        wait_for(lambda: len(cached_results(home)) >= 2, 240, "stage 2 cache files", proc)
        scheduler.kill()
        proc.wait(180)
    finally:
        for p in (scheduler, workers):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert proc.returncode == 2, text[-3000:]
    assert f"error: lost the Dask scheduler at {address}" in text, text[-3000:]
    assert text.count("lost the Dask scheduler") == 1, text[-3000:]
    lake = Settings(home=home).lake()
    assert not lake.stage2.exists()
    before = cached_results(home)
    assert 0 < len(before) < N_VIDEOS

    from fvcflow.flows.pipeline import fvc

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=50) as cluster:          # the new scheduler
        state = fvc(config=corpus_settings(corpus, home, dask_address=cluster.scheduler_address),
                    return_state=True)
    assert state.is_completed(), state.message
    features = {r["stage"]: r for r in state.result()}["features"]
    assert (features["cached"], features["done"]) == (len(before), N_VIDEOS - len(before))
    assert {p: cached_results(home)[p] for p in before} == before
    assert_frame_equal(feature_table(lake.stage2), reference["stage2"])
    assert_lake_sound(home)


@pytest.mark.slow
def test_the_prefect_server_lost_mid_run_is_reported_once_and_the_rerun_resumes(corpus, tmp_path):
    """``make demo``'s server stopped while ``fvc run`` runs: within the watch's grace and a bounded
    margin the run stops (or has finished its current work), says so in one line, exit 2, without
    Prefect's "--- Error logging to API ---" (its client would retry for minutes); the rerun resumes."""
    from fvcflow.cli.watch import GRACE_S
    from fvcflow.flows.local import TemporaryServer

    server = TemporaryServer(tmp_path / "servers", die_with_parent=False)      # the `make demo` server
    server.start(timeout=180)
    home = tmp_path / "fvc-data"
    proc = None
    try:
        proc, log = start_run(corpus, home, tmp_path, "lost-server", PREFECT_API_URL=server.api_url)
        wait_for(lambda: len(cached_results(home)) >= 1, 240, "a stage 2 cache file", proc)
        server.process.kill()                                                 # the server goes away
        t0 = time.monotonic()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(GRACE_S + 70)
        took = time.monotonic() - t0
        assert proc.poll() is not None, f"the run still runs {took:.0f} s after its server went away"
        wait_for(lambda: not session_pids(proc.pid), 30, "the run's workers to exit", poll=0.2)
    finally:
        if server.process.poll() is None:
            server.process.kill()
        server.stop()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in session_pids(proc.pid) if proc is not None else []:
            os.kill(pid, signal.SIGKILL)
    text = log.read_text()
    assert proc.returncode == 2, text[-4000:]
    lost = f"error: lost the Prefect server at {server.api_url} (no answer for "
    assert text.count(f"lost the Prefect server at {server.api_url}") == 1, text[-4000:]   # once
    assert lost in text, text[-4000:]                                          # the watch's line
    line = text[text.index(lost):].splitlines()[0]
    assert "nothing half-done was published" in line and "cached results kept: features " in line
    assert "rerun the same command to resume" in line
    assert "Error logging to API" not in text, text[-4000:]                   # quiet
    assert_lake_sound(home)                              # no temporary file left
    before = cached_results(home)
    # the run may finish its current work before the watch declares the server lost (all of it,
    # on a quiet machine): what it finished is whole and cached, and the rerun computes only the rest
    assert 0 < len(before) <= N_VIDEOS
    assert f"cached results kept: features {len(before)};" in line
    for path in manifest_files(home):                    # whole, checked entries
        assert read_checked_parquet(path) is not None
    # the rerun's plan resumes from the cache: only the missing videos are to compute (a full
    # rerun after a stop is what the SIGTERM and scheduler tests run)
    plan = runner.plan("features", corpus_settings(corpus, home))
    assert (plan.cached, len(plan.todo)) == (len(before), N_VIDEOS - len(before))
