"""Run flow ``fvc`` in this process (``fvc run``), against a server that Dask workers can reach.

With ``PREFECT_API_URL`` set, runs are recorded there. Without it, Prefect would give this process
an in-process ephemeral API that worker processes cannot see (each would start its own), so a
local server is started on 127.0.0.1 for the length of the run, its database under the work dir.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    temporary_settings,
)
from prefect.states import State

from fvcflow.config import Settings
from fvcflow.flows.pipeline import fvc


@contextlib.contextmanager
def reachable_api() -> Iterator[str]:
    """Yield an API URL that this process and its worker processes share."""
    if PREFECT_API_URL.value():
        yield PREFECT_API_URL.value()
        return
    server = SubprocessASGIServer()
    server.start(timeout=PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    os.environ["PREFECT_API_URL"] = server.api_url  # inherited by worker processes started later
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()


def run_in_process(settings: Settings) -> State:
    """The final state of one ``fvc`` flow run over ``settings``."""
    with reachable_api():
        return fvc(config=settings, return_state=True)
