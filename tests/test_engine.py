"""The local Dask cluster: worker processes whose thread budgets fit the cores."""

import os

from distributed import Client

from fvcflow.config import Settings
from fvcflow.engine import THREAD_VARS, dask_cluster


def _budget():
    import numba

    return {var: os.environ.get(var) for var in THREAD_VARS} | {"numba": numba.get_num_threads()}


def test_each_worker_gets_one_numba_blas_and_decoder_thread_per_worker_thread():
    with dask_cluster(Settings(workers=2, threads_per_worker=1)) as address, Client(address) as client:
        budgets = client.run(_budget)
        assert len(budgets) == 2 and address.startswith("tcp://127.0.0.1:")
    for budget in budgets.values():
        assert budget == {**{var: "1" for var in THREAD_VARS}, "numba": 1}


def test_an_existing_scheduler_is_used_as_given():
    with dask_cluster(Settings(dask_address="tcp://10.1.2.3:8786")) as address:
        assert address == "tcp://10.1.2.3:8786"


def test_an_unreachable_scheduler_is_one_line_with_the_timeout(tmp_path, capsys):
    """``fvc run --dask-address`` with no scheduler there: one line naming the address and the
    timeout, exit 2, no traceback, before any work (issue 16, item 10)."""
    import dask

    from fvcflow.cli import main

    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        rc = main(["--home", str(tmp_path / "fvc-data"), "run", "--stages", "features",
                   "--dask-address", "tcp://127.0.0.1:1"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:1" in lines[0] and "within 2 s" in lines[0]
    assert "--dask-address" in lines[0]


def test_check_scheduler_accepts_a_live_one():
    from fvcflow.engine import check_scheduler

    with dask_cluster(Settings(workers=1, threads_per_worker=1)) as address:
        check_scheduler(address)


def _log_through_a_broken_handler() -> bool:
    """In a worker: a record through a handler that cannot deliver (as Prefect's API handler once
    its server is gone), and an error line of Dask's own worker logger."""
    import logging

    class Broken(logging.Handler):
        def emit(self, record):
            try:
                raise ConnectionError("the API is gone")
            except ConnectionError:
                self.handleError(record)

    log = logging.getLogger("fvc-test-broken-handler")
    log.propagate = False
    log.addHandler(Broken())
    log.warning("a record nobody receives")
    logging.getLogger("distributed.worker").error("Compute Failed (a test line)")
    return logging.raiseExceptions


def test_a_workers_undeliverable_logs_and_dask_errors_stay_off_the_terminal(capfd):
    with dask_cluster(Settings(workers=1, threads_per_worker=1)) as address, Client(address) as client:
        raised = client.run(_log_through_a_broken_handler)
        client.run(lambda: None)                          # the worker's stderr is flushed by now
    err = capfd.readouterr().err
    assert list(raised.values()) == [False]
    assert "Logging error" not in err and "ConnectionError" not in err, err
    assert "Compute Failed (a test line)" not in err, err
