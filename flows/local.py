"""Run flow ``fvc`` in this process (``fvc run``), against a server that Dask workers can reach.

With ``PREFECT_API_URL`` set, runs are recorded there. Without it, Prefect would give this process
an in-process ephemeral API that worker processes cannot see (each would start its own), so a
temporary server is started on 127.0.0.1 for the length of the run, its database under the work
dir (``PREFECT_HOME``, ``<home>/prefect``).

The temporary server never outlives its run:

- on Linux it gets a parent-death signal (``PR_SET_PDEATHSIG``): ``kill -9`` of ``fvc run`` stops
  it too;
- each server is recorded in ``<home>/prefect/temporary-servers/<owner pid>.json`` (its pid, its
  start time, its owner's pid and start time); the next run on the work dir stops any server whose
  owner is gone (an orphan, on an OS without that signal) and leaves the servers of live runs alone;
- before it stops, Prefect's log and event workers are flushed and API logging is switched off, so
  nothing keeps retrying a server that is gone (a finished run exits at once).

A server of the user's can go away mid-run: ``fvc run`` watches it (``fvcflow.cli.watch``) and,
once it is declared lost, calls :func:`abandon_api` before it stops the run, so that the way out
(the engine reports the runs Crashed, releases concurrency slots, flushes logs) does not retry the
dead API for minutes.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import prefect
import prefect.context
import psutil
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_LOGGING_TO_API_ENABLED,
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    get_current_settings,
    temporary_settings,
)
from prefect.states import State

from fvcflow.config import Settings
from fvcflow.errors import FvcError
from fvcflow.flows.pipeline import fvc

SERVER_APP = "prefect.server.api.server:create_app"
PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:  # pragma: no cover - runs in the child, before exec
    """Linux: SIGTERM this process when its parent dies (and now, if it already has)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _started_at(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def _same_process(pid: int, started: float | None) -> bool:
    """Is ``pid`` alive and the process that was recorded (not a later one given the same pid)?"""
    now = _started_at(pid)
    return now is not None and started is not None and abs(now - started) < 0.05


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _terminate(pid: int, timeout: float = 10.0) -> None:
    try:
        proc = psutil.Process(pid)
        proc.terminate()
        proc.wait(timeout)
    except psutil.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)
    except psutil.NoSuchProcess:
        pass


def stop_orphans(folder: Path) -> list[int]:
    """Stop every recorded temporary server of this work dir whose owner is gone; their pids.

    A record whose server is gone too is removed; a live owner's server is left running.
    """
    stopped = []
    for record in sorted(Path(folder).glob("*.json")):
        try:
            info = json.loads(record.read_text())
            owner, server = int(info["owner_pid"]), int(info["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            record.unlink(missing_ok=True)          # unreadable: written by a run killed mid-write
            continue
        if _same_process(owner, info.get("owner_started")):
            continue
        if _same_process(server, info.get("started")):
            with contextlib.suppress(psutil.Error):
                cmd = " ".join(psutil.Process(server).cmdline())
                if SERVER_APP in cmd:
                    _terminate(server)
                    stopped.append(server)
        record.unlink(missing_ok=True)
    return stopped


class TemporaryServer:
    """A Prefect API server on 127.0.0.1 for one run, recorded under ``folder``."""

    def __init__(self, folder: Path, *, die_with_parent: bool = True):
        self.folder = Path(folder)
        self.die_with_parent = die_with_parent and sys.platform.startswith("linux")
        self.port = _free_port()
        self.process: subprocess.Popen | None = None
        self.record = self.folder / f"{os.getpid()}.json"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self, timeout: float) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        stop_orphans(self.folder)
        env = {**os.environ, **get_current_settings().to_environment_variables(exclude_unset=True),
               "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        env.pop("PREFECT_API_URL", None)
        parent = os.getpid()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent),
             "--factory", SERVER_APP, "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "error", "--lifespan", "on"],
            env=env, stdin=subprocess.DEVNULL,
            preexec_fn=(lambda: _die_with_parent(parent)) if self.die_with_parent else None)
        tmp = self.record.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": self.process.pid, "started": _started_at(self.process.pid),
                                   "owner_pid": parent, "owner_started": _started_at(parent),
                                   "port": self.port}))
        os.replace(tmp, self.record)
        try:
            self._wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=5) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise FvcError(f"the temporary Prefect server exited with code {self.process.returncode} "
                                   f"while starting (PREFECT_HOME={get_current_settings().home})")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.api_url}/health").status_code == 200:
                        return
                time.sleep(0.2)
        raise FvcError(f"the temporary Prefect server did not answer within {timeout:.0f} s "
                       "(raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or set PREFECT_API_URL)")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        self.record.unlink(missing_ok=True)


def flush_prefect_workers(timeout: float = 15.0) -> None:
    """Send the logs and events Prefect still holds, then stop its workers (before the API goes)."""
    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=timeout, at_exit=False)


@contextlib.contextmanager
def reachable_api(folder: Path | None = None) -> Iterator[str]:
    """Yield an API URL that this process and its worker processes share.

    ``folder`` holds the records of temporary servers (default ``$PREFECT_HOME/temporary-servers``).
    """
    if PREFECT_API_URL.value():
        yield PREFECT_API_URL.value()
        return
    folder = Path(folder) if folder else Path(get_current_settings().home) / "temporary-servers"
    server = TemporaryServer(folder)
    server.start(timeout=PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    os.environ["PREFECT_API_URL"] = server.api_url  # inherited by worker processes started later
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            try:
                yield server.api_url
            finally:
                flush_prefect_workers()
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        with temporary_settings(updates={PREFECT_LOGGING_TO_API_ENABLED: False}):
            server.stop()


def run_in_process(settings: Settings) -> State:
    """The final state of one ``fvc`` flow run over ``settings``."""
    with reachable_api(settings.lake().prefect_home / "temporary-servers"):
        return fvc(config=settings, return_state=True)


def given_api_url() -> str | None:
    """The Prefect server the user named (``PREFECT_API_URL``), or ``None`` (a temporary one is used)."""
    return PREFECT_API_URL.value() or None


def abandon_api() -> None:
    """Stop talking to a Prefect API that is gone (``fvc run`` found it silent), for this process.

    Every API call from now on fails at its first attempt (Prefect reads the client's
    ``max_retries`` at each attempt, from the settings object, so it is set in place: a changed
    environment variable would not be seen), no log record is queued for the API any more, and the
    batches already queued fail without ``--- Error logging to API ---`` (Prefect's APILogWorker
    prints it only while ``logging.raiseExceptions``, the standard library's switch for errors in
    log handlers, is on).
    """
    current = [prefect.context.GLOBAL_SETTINGS_CONTEXT.settings, get_current_settings()]
    for settings in {id(s): s for s in current}.values():
        settings.client.max_retries = 0
        settings.logging.to_api.enabled = False
    logging.raiseExceptions = False
