"""The Dask cluster the feature stages run on.

By default a ``LocalCluster`` of worker processes bound to 127.0.0.1, with ``NUMBA_NUM_THREADS``
(and the BLAS/OpenMP thread counts) set per worker so that processes x threads fits the cores.
With ``dask_address`` the stages use an existing scheduler (SLURM, Kubernetes, a shared one).

>>> from fvcflow.config import Settings
>>> with dask_cluster(Settings(workers=1)) as address:   # doctest: +SKIP
...     print(address.startswith("tcp://127.0.0.1"))
True
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import dask
from dask.utils import parse_timedelta
from distributed import Client, LocalCluster

from fvcflow.config import Settings
from fvcflow.errors import FvcError

#: the thread budgets of the libraries a worker runs (Numba, OpenMP, OpenBLAS, MKL); every cluster
#: spec sets them all (deployments/dask-kubernetes.yaml, dask_slurm.py: tests/test_deployments.py).
#: FFmpeg's decoder threads are not among them: the stages pass ``Settings.threads_per_worker``.
THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def worker_env(threads_per_worker: int) -> dict[str, str]:
    """Environment of each worker process: one Numba/BLAS thread per Dask worker thread, so that
    processes x threads fits the cores."""
    return {var: str(threads_per_worker) for var in THREAD_VARS}


def check_scheduler(address: str, *, timeout: float | None = None) -> None:
    """Connect to the scheduler at ``address`` once; a user error (one line) when nobody answers
    within ``timeout`` s (default Dask's connect timeout, ``distributed.comm.timeouts.connect``)."""
    if timeout is None:
        timeout = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), default="s")
    try:
        with Client(address, timeout=timeout, set_as_default=False):
            pass
    except (OSError, TimeoutError, ValueError) as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FvcError(f"cannot reach the Dask scheduler at {address} within {timeout:g} s "
                       f"(dask_address: --dask-address, FVC_DASK_ADDRESS or the --config file; "
                       f"start the scheduler or fix the address): {why[:160]}") from None


def scheduler_lost(address: str | None, exc: BaseException) -> FvcError | None:
    """When a stage failed with ``exc`` because the scheduler at ``address`` went away, the error
    to show instead (naming the address, saying how to resume); ``None`` when it is still there
    (the failure is something else) or the cluster was this run's own."""
    if not address or isinstance(exc, FvcError):
        return None
    try:
        check_scheduler(address, timeout=3.0)
    except FvcError:
        why = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        return FvcError(f"lost the Dask scheduler at {address} during the stage ({why}); the videos "
                        "finished so far are cached: start a scheduler and its workers (or drop "
                        "--dask-address for a local cluster) and rerun, only what is missing is computed")
    return None


def dask_setup(worker) -> None:  # noqa: ARG001 - Dask's preload hook signature
    """Run in every worker process of :func:`dask_cluster` (a Dask preload of this module).

    A log handler that cannot deliver (Prefect's API log handler in a task, once the run's Prefect
    server is gone) must not print a traceback for every record: Python's production setting
    (``logging.raiseExceptions = False``). The run reports the lost server once (``fvc run``)."""
    logging.raiseExceptions = False


@contextlib.contextmanager
def dask_cluster(settings: Settings, *, dashboard: bool = False) -> Iterator[str]:
    """Yield a scheduler address: ``settings.dask_address``, or a fresh local cluster's."""
    if settings.dask_address:
        yield settings.dask_address
        return
    cluster = LocalCluster(
        n_workers=settings.n_workers(),
        threads_per_worker=settings.threads_per_worker,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:8787" if dashboard else None,
        env=worker_env(settings.threads_per_worker),
        # a worker's own log lines stay off the terminal: what fails comes back to the run as the
        # batch's exception (recorded per video), and the nanny (this process) reports lost workers
        silence_logs=logging.CRITICAL,
        preload=[__name__],
    )
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()
