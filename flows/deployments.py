"""The deployments of flow ``fvc``: ``fvc/full``, one per stage, ``fvc/train-deep``, ``fvc/demo`` and
``fvc/scan`` (the scan flow, :mod:`fvcflow.flows.scan`, also named fvc).

Deployments are configuration: a name, the stages it runs and default parameters taken from the
settings sources (TOML file, ``FVC_*`` environment) when the deployments are served.
``DEPLOYMENTS`` is the one list: ``fvc serve`` builds from it, and ``deployments/prefect.yaml``
(for a process work pool) is its rendering (``python -m fvcflow.flows.deployments`` rewrites it;
``tests/test_deployments.py`` fails when the file and this list disagree).
"""

from __future__ import annotations

import gc
import json
import logging
import signal
import sys
import threading
import warnings
from pathlib import Path

import httpx
from prefect import serve
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.settings import PREFECT_API_URL

from fvcflow.config import STAGES, Settings, merge, serving
from fvcflow.errors import FvcError
from fvcflow.flows.local import flush_prefect_workers
from fvcflow.flows.pipeline import fvc
from fvcflow.flows.scan import scan as scan_flow

START_A_SERVER = ("`make demo` starts one on 127.0.0.1:4200 (then export "
                  "PREFECT_API_URL=http://127.0.0.1:4200/api), or run "
                  "`prefect server start --host 127.0.0.1` in another shell")

#: deployment name -> stages it runs (None: all)
DEPLOYMENTS: dict[str, list[str] | None] = {
    "full": None,
    "demo": None,
    **{stage.replace("_", "-"): [stage] for stage in STAGES},
    "train-deep": ["train"],
}
#: the entry point `prefect deploy` (work pools) reads from deployments/prefect.yaml: a file path, as its
#: CLI requires; `fvc serve` deploys by module path instead (see build), because Prefect puts a script
#: entry point's folder and the working directory first on sys.path, where our top-level kernels/ would
#: hide Hugging Face's `kernels` (README, "The repository root never comes first on sys.path")
ENTRYPOINT = "flows/pipeline.py:fvc"
WORK_POOL = "fvc-process"
#: ``fvc/scan``: ``fvc scan`` from the UI (its own flow, named fvc; parameters paths, model, name)
SCAN = "scan"
SCAN_ENTRYPOINT = "flows/scan.py:scan"


def overrides(name: str) -> dict:
    """The settings deployment ``name`` changes on top of the served defaults: its stages, and
    for ``demo`` the corpus."""
    if name == SCAN:                 # the served settings as they are; the run's own are paths and model
        return {}
    out: dict = {"stages": DEPLOYMENTS[name] or list(STAGES)}
    if name == "demo":
        out["corpus"] = {"kind": "demo", "root": None, "labels": None}
    if name == "train-deep":     # the deep models only, on the lake's existing splits
        out["train"] = {"kinds": ["torch_video"], "reuse_splits": True}
    return out


def extra_parameters(name: str) -> dict:
    """Parameters of deployment ``name`` besides ``config``: ``fvc/train-deep`` takes ``models``
    (comma-separated patterns; null: the config's ``train.models``)."""
    return {"models": None} if name == "train-deep" else {}


def description(name: str) -> str:
    if name == SCAN:
        return ("fvcflow: score every video under paths (files, folders, lists) with model "
                "(default the registered detector), on Dask; scores.parquet and scan.html")
    stages = DEPLOYMENTS[name]
    what = "every stage" if stages is None else ", ".join(stages)
    if name == "train-deep":
        what = "train the deep video models (train.models among them) on the existing splits"
    return f"fvcflow: {what}" + (" on the built-in demo corpus" if name == "demo" else "")


def build(settings: Settings | None = None) -> list[RunnerDeployment]:
    """One :class:`RunnerDeployment` per entry of :data:`DEPLOYMENTS`."""
    settings = (settings or Settings.load()).resolved()
    out = []
    for name in DEPLOYMENTS:
        cfg = Settings.validate_dict(merge(settings.model_dump(mode="json"), overrides(name)))
        out.append(fvc.to_deployment(
            name=name,
            parameters={"config": cfg.model_dump(mode="json"), **extra_parameters(name)},
            description=description(name),
            tags=["fvcflow", name],
            entrypoint_type=EntrypointType.MODULE_PATH,   # fvcflow.flows.pipeline.fvc: nothing on sys.path
        ))
    out.append(scan_flow.to_deployment(
        name=SCAN, parameters={"config": settings.model_dump(mode="json")}, description=description(SCAN),
        tags=["fvcflow", SCAN], entrypoint_type=EntrypointType.MODULE_PATH))
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
    settings = settings or Settings.load()
    deployments = build(settings)
    main = threading.current_thread() is threading.main_thread()
    # Until Prefect's runner installs its own SIGTERM handler, SIGTERM stops like Ctrl-C.
    previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
    hook = sys.unraisablehook
    # A signal that lands while asyncio.run builds the runner's event loop leaves a half-built loop
    # whose __del__ fails later ("Exception ignored ... Traceback", and "coroutine 'Runner.start' was
    # never awaited"): nothing was lost, so that goes to the log file, not the user's terminal.
    sys.unraisablehook = _log_unraisable
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="coroutine 'Runner.start' was never awaited",
                                category=RuntimeWarning)
        try:
            with serving(settings):     # the runs started here may use the served home (and allowed ones)
                serve(*deployments)     # returns on Ctrl-C / SIGTERM, after pausing the served schedules
        except KeyboardInterrupt:
            pass                    # stopped before the runner had started: nothing to pause
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous)
            flush_prefect_workers()
            gc.collect()            # a half-built loop is collected while the hook is ours
            sys.unraisablehook = hook


def _log_unraisable(unraisable) -> None:
    logging.getLogger("fvcflow.flows").debug("ignored while stopping: %s in %r", unraisable.exc_value,
                                             unraisable.object)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _flow(value) -> str:
    """A YAML flow-style rendering of plain dicts, lists, strings and None."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return "null" if value is None else str(value)


def prefect_yaml() -> str:
    """``deployments/prefect.yaml``: every deployment of :data:`DEPLOYMENTS` for a process work pool."""
    lines = [
        "# Generated from flows/deployments.py (DEPLOYMENTS): python -m fvcflow.flows.deployments",
        "# For users who run a process work pool and a worker instead of `fvc serve`:",
        f"#   prefect work-pool create {WORK_POOL} --type process",
        "#   prefect deploy --all            (from the repository root, with this file copied or "
        "--prefect-file deployments/prefect.yaml)",
        f"#   prefect worker start --pool {WORK_POOL}",
        "# Each deployment's `config` parameter is fvcflow.config.Settings; see the README for its fields.",
        "name: fvcflow",
        "prefect-version: 3.1.0",
        "",
        "pull:",
        "  - prefect.deployments.steps.set_working_directory:",
        '      directory: "{{ $FVC_REPO }}"',
        "",
        "definitions:",
        "  work_pool: &pool",
        f"    name: {WORK_POOL}",
        "    work_queue_name: default",
        "",
        "deployments:",
    ]
    for name in DEPLOYMENTS:
        lines += [f"  - name: {name}", f"    entrypoint: {ENTRYPOINT}",
                  f"    description: {json.dumps(description(name))}"]
        lines.append(f"    parameters: {_flow({'config': overrides(name), **extra_parameters(name)})}")
        lines += [f"    tags: [fvcflow, {name}]", "    work_pool: *pool"]
    lines += [f"  - name: {SCAN}", f"    entrypoint: {SCAN_ENTRYPOINT}",
              f"    description: {json.dumps(description(SCAN))}", f"    tags: [fvcflow, {SCAN}]",
              "    work_pool: *pool"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover - rewrites the file the test checks
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("deployments/prefect.yaml")
    target.write_text(prefect_yaml())
    print(f"wrote {target}")
