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
