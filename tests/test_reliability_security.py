"""Secrets and network exposure: the FVC archive password appears in no log, Prefect parameter,
artifact or Parquet file of a flow run; the servers the project starts bind 127.0.0.1."""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import polars as pl
import psutil
import pytest
from distributed import Client

from fvcflow.config import Settings
from fvcflow.engine import dask_cluster
from tests.fvc_archive import PASSWORD, build_mini_fvc

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fvc_run(prefect_server, tmp_path_factory):
    """The FVC ingest and stage 2 through the ``fvc`` flow, the password only in the environment."""
    from fvcflow.flows.pipeline import fvc

    tmp = tmp_path_factory.mktemp("secrets")
    mini = build_mini_fvc(tmp / "archives")
    settings = Settings(home=tmp / "fvc-data", workers=1, stages=["ingest", "features"],
                        corpus={"kind": "fvc", "root": mini.archives})
    # INFO logs go to the server too (the suite runs at WARNING), from this process and the workers
    saved = {n: logging.getLogger(n).level for n in ("prefect", "prefect.flow_runs", "prefect.task_runs")}
    env = {"FVC_ZIP_PASSWORD": mini.password, "PREFECT_LOGGING_LEVEL": "INFO"}
    old_env = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    for name in saved:
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        state = fvc(config=settings, return_state=True)
    finally:
        for k, v in old_env.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
    return settings.resolved(), state


@pytest.mark.slow
def test_the_password_is_in_no_log_parameter_artifact_or_file(fvc_run, capfd):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterParentFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    settings, state = fvc_run
    assert state.is_completed(), state.message
    summary = {r["stage"]: r for r in state.result()}
    assert summary["ingest"]["indexed"] > 0 and summary["features"]["done"] > 0  # the archives were opened
    secret = PASSWORD.encode()
    with get_client(sync_client=True) as client:
        root_id = state.state_details.flow_run_id
        runs = [client.read_flow_run(root_id)]
        runs += client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[root_id])))
        ids = [r.id for r in runs]
        assert len(ids) >= 2  # the flow and its stage subflow
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)))
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids)))
    assert tasks and len(artifacts) >= 3
    messages = "\n".join(log.message for log in logs)
    assert "fvc:" in messages and "features:" in messages  # the ingest summary and stage logs were read
    texts = {
        "logs": "\n".join(log.message for log in logs),
        "parameters": json.dumps([r.parameters for r in runs], default=str),
        "task inputs": json.dumps([t.model_dump(mode="json") for t in tasks]),
        "artifacts": json.dumps([a.model_dump(mode="json") for a in artifacts]),
        "console": "".join(capfd.readouterr()),
    }
    for where, text in texts.items():
        assert PASSWORD not in text, f"the password is in the {where}"
    home = settings.home
    files = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files) and any("raw" in p.parts for p in files)
    for p in files:  # every table, cache file, extracted video and log under the work dir
        assert secret not in p.read_bytes(), f"the password is in {p}"
    for p in home.rglob("*.parquet"):
        df = pl.read_parquet(p)
        for col, dtype in df.schema.items():
            if dtype == pl.Utf8:
                assert not df[col].str.contains(PASSWORD, literal=True).any(), (p, col)


def listening(pids: set[int]) -> list[tuple[int, str, int]]:
    return [(c.pid, c.laddr.ip, c.laddr.port) for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.pid in pids]


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.parametrize("dashboard", [False, True])
def test_the_local_dask_cluster_binds_loopback_only(dashboard):
    before = {(ip, port) for _, ip, port in listening({os.getpid()})}
    with dask_cluster(Settings(workers=2), dashboard=dashboard) as address, Client(address) as client:
        workers = set(client.run(os.getpid).values())
        assert len(workers) == 2
        sockets = [s for s in listening({os.getpid(), *workers}) if (s[1], s[2]) not in before]
        assert {pid for pid, _, _ in sockets} >= workers  # the workers' own listeners were seen
        assert sockets and all(ip == "127.0.0.1" for _, ip, _ in sockets), sockets
        assert address.startswith("tcp://127.0.0.1:")
        assert all(w.startswith("tcp://127.0.0.1:") for w in client.scheduler_info()["workers"])
        link = client.dashboard_link
        assert link.startswith("http://127.0.0.1:")
        page = http_status(link)
        assert page == (200 if dashboard else 404)  # dashboard=False: no dashboard pages served


def test_the_scripts_bind_loopback():
    """The Prefect server of ``make demo``, the MLflow UI command it prints and ``fvc run``'s
    temporary server: every host given is 127.0.0.1, and nothing names 0.0.0.0."""
    demo = (ROOT / "deployments" / "demo.sh").read_text()
    starts = re.findall(r"prefect\" server start([^\n>]*)", demo)
    assert starts and all("--host 127.0.0.1" in s for s in starts)
    assert "PREFECT_SERVER_API_HOST=127.0.0.1" in demo
    mlflow = re.findall(r"mlflow ui([^\n]*)", demo)
    assert mlflow and all("--host 127.0.0.1" in m for m in mlflow)
    entry = (ROOT / "fvcflow" / "__main__.py").read_text()     # fvc run / fvc serve set Prefect's host
    assert 'os.environ.setdefault("PREFECT_SERVER_API_HOST", "127.0.0.1")' in entry
    from fvcflow.flows.local import TemporaryServer

    local = (ROOT / "flows" / "local.py").read_text()           # fvc run's temporary server
    assert '"--host", "127.0.0.1"' in local and "127.0.0.1" in TemporaryServer(ROOT / "unused").api_url
    for path in [*ROOT.joinpath("deployments").iterdir(), *ROOT.joinpath("fvcflow").rglob("*.py"),
                 *ROOT.joinpath("flows").rglob("*.py"), ROOT / "Makefile"]:
        if path.is_file():
            assert "0.0.0.0" not in path.read_text(errors="replace"), path


@pytest.fixture(scope="module")
def dask_payloads(prefect_server, tmp_path_factory):
    """Ingest and stage 2 of the FVC corpus as ``fvc run`` starts them: the password inside the
    settings object (loaded from the environment), the video tasks on a Dask cluster given by
    address, whose scheduler records every task graph it receives, as received (header and frames)."""
    from distributed import LocalCluster

    from fvcflow.flows.pipeline import fvc

    tmp = tmp_path_factory.mktemp("payloads")
    mini = build_mini_fvc(tmp / "archives")
    received: list[bytes] = []
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        scheduler = cluster.scheduler           # in this process: a LocalCluster's scheduler is local
        original = scheduler.stream_handlers["update-graph"]

        async def update_graph(**msg):
            expr = msg["expr_ser"]
            received.append(repr(expr.header).encode() + b"".join(bytes(f) for f in expr.frames))
            return await original(**msg)

        scheduler.stream_handlers["update-graph"] = update_graph
        settings = Settings.load(env={"FVC_ZIP_PASSWORD": mini.password}, overrides={
            "home": str(tmp / "fvc-data"), "stages": ["ingest", "features"],
            "corpus": {"kind": "fvc", "root": str(mini.archives)},
            "dask_address": cluster.scheduler_address})
        assert settings.password() == PASSWORD.encode()
        state = fvc(config=settings, return_state=True)
    return settings.resolved(), state, received


@pytest.mark.slow
def test_the_password_is_in_no_dask_task_payload(dask_payloads):
    """The settings travel to the workers with every video task (``dask_address``: over the
    network), the password never: ingest used it and the flow dropped it."""
    settings, state, received = dask_payloads
    assert state.is_completed(), state.message
    summary = {r["stage"]: r for r in state.result()}
    assert summary["ingest"]["indexed"] > 0 and summary["features"]["done"] > 0   # it was used
    assert received, "the scheduler received no task graph"
    home = str(settings.home).encode()
    assert any(home in payload for payload in received)   # the settings are in the payloads, readable
    for i, payload in enumerate(received):
        assert PASSWORD.encode() not in payload, f"the password is in task graph {i}"
