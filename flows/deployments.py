"""The deployments of flow ``fvc``: ``fvc/full``, one per stage, and ``fvc/demo``.

Deployments are configuration: a name, the stages it runs and default parameters taken from the
settings sources (TOML file, ``FVC_*`` environment) when the deployments are served.
"""

from __future__ import annotations

import signal
import threading

import httpx
from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.settings import PREFECT_API_URL

from fvcflow.config import STAGES, Settings
from fvcflow.errors import FvcError
from fvcflow.flows.local import flush_prefect_workers
from fvcflow.flows.pipeline import fvc

START_A_SERVER = ("`make demo` starts one on 127.0.0.1:4200 (then export "
                  "PREFECT_API_URL=http://127.0.0.1:4200/api), or run "
                  "`prefect server start --host 127.0.0.1` in another shell")

#: deployment name -> stages it runs (None: all)
DEPLOYMENTS: dict[str, list[str] | None] = {
    "full": None,
    "demo": None,
    **{stage.replace("_", "-"): [stage] for stage in STAGES},
}


def build(settings: Settings | None = None) -> list[RunnerDeployment]:
    """One :class:`RunnerDeployment` per entry of :data:`DEPLOYMENTS`."""
    settings = (settings or Settings.load()).resolved()
    out = []
    for name, stages in DEPLOYMENTS.items():
        cfg = settings.model_copy(update={"stages": stages or list(STAGES)})
        if name == "demo":
            cfg = cfg.model_copy(update={"corpus": cfg.corpus.model_copy(update={"kind": "demo", "root": None,
                                                                                  "labels": None})})
        out.append(fvc.to_deployment(
            name=name,
            parameters={"config": cfg.model_dump(mode="json")},
            description=f"fvcflow: {'every stage' if stages is None else ', '.join(stages)}",
            tags=["fvcflow", name],
        ))
    return out


def require_server() -> str:
    """The API URL of a running Prefect server that other shells can reach, or a user error.

    Without ``PREFECT_API_URL`` Prefect would serve from a throwaway server on a random port that
    no ``prefect deployment run`` in another shell can find.
    """
    url = PREFECT_API_URL.value()
    if not url:
        raise FvcError("serving deployments needs PREFECT_API_URL, the API of a Prefect server that "
                       f"other shells reach: {START_A_SERVER}")
    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=10).raise_for_status()
    except httpx.HTTPError as exc:
        raise FvcError(f"no Prefect server answers at PREFECT_API_URL={url} ({type(exc).__name__}); "
                       f"{START_A_SERVER}") from None
    return url


def serve_all(settings: Settings | None = None) -> None:
    """Serve every deployment from this process until Ctrl-C or SIGTERM (``fvc serve``)."""
    require_server()
    deployments = build(settings)
    main = threading.current_thread() is threading.main_thread()
    # Until Prefect's runner installs its own SIGTERM handler, SIGTERM stops like Ctrl-C.
    previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
    try:
        serve(*deployments)     # returns on Ctrl-C / SIGTERM, after pausing the served schedules
    except KeyboardInterrupt:
        pass                    # stopped before the runner had started: nothing to pause
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        flush_prefect_workers()


def _interrupt(signum, frame):
    raise KeyboardInterrupt
