"""``fvc run``'s watch of the Prefect server (fvcflow/cli/watch.py) against a real tiny HTTP server
that answers ``/api/health``, stalls, or is stopped; and the stop it triggers (fvcflow/interrupt.py)."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fvcflow.cli.watch import ServerWatch
from fvcflow.interrupt import Stopped, polite_stop


class Health(BaseHTTPRequestHandler):
    stall: dict = {}                                   # request number -> seconds to wait first

    def do_GET(self):  # noqa: N802 - http.server's name
        n = self.server.requests = getattr(self.server, "requests", 0) + 1
        time.sleep(self.stall.get(n, 0))
        self.send_response(200 if self.path == "/api/health" else 404)
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *args):                      # quiet
        pass


@contextlib.contextmanager
def health_server(stall: dict | None = None):
    """A server on 127.0.0.1 that answers ``/api/health`` (request ``n`` after ``stall[n]`` s):
    ``(server, its API URL, halt)``; ``halt()`` stops it (its port refuses from then on)."""
    handler = type("StallingHealth", (Health,), {"stall": stall or {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def halt() -> None:
        if thread.is_alive():
            server.shutdown()
            server.server_close()
            thread.join(5)

    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}/api", halt
    finally:
        halt()


class Fired:
    def __init__(self):
        self.calls: list[tuple[float, float]] = []     # (monotonic time, seconds silent)
        self.event = threading.Event()

    def __call__(self, silent: float) -> None:
        self.calls.append((time.monotonic(), silent))
        self.event.set()


def test_a_server_that_answers_keeps_it_quiet_one_that_stops_fires_it_once_after_the_grace():
    grace, every = 1.0, 0.05
    fired = Fired()
    with health_server() as (server, url, halt), ServerWatch(url, fired, grace=grace, every=every):
        time.sleep(2 * grace)                          # answering: never fires
        assert fired.calls == []
        assert server.requests >= 10                   # it did probe
        halt()
        stopped = time.monotonic()
        assert fired.event.wait(10 * grace)
        time.sleep(4 * every)
    assert len(fired.calls) == 1                       # once
    at, silent = fired.calls[0]
    assert silent >= grace
    assert grace - every <= at - stopped < grace + 2.0  # not before the grace, and soon after it


def test_one_slow_answer_is_not_a_lost_server():
    """One request hangs past the grace while the next ones answer: the server is there (a probe
    waits at most grace / 2, so the next probe asks again in time)."""
    grace = 2.0
    fired = Fired()
    with health_server(stall={3: 3.0}) as (server, url, _), ServerWatch(url, fired, grace=grace, every=0.05):
        time.sleep(1.5 * grace)
        assert server.requests >= 5
    assert fired.calls == []


def test_an_error_answer_is_an_answer_and_a_refused_port_is_silence():
    fired = Fired()
    with health_server() as (_, url, _halt):
        with ServerWatch(url.replace("/api", "/elsewhere"), fired, grace=0.5, every=0.05):   # 404s
            time.sleep(1.0)
        assert fired.calls == []
    with ServerWatch(url, fired, grace=0.5, every=0.05):                                  # gone
        assert fired.event.wait(5)


def test_the_watch_stops_the_run_as_a_sigterm_would_and_says_why(capfd):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Stopped) as raised, polite_stop() as state:
        threading.Timer(0.2, state.stop, ["the Prefect server at X has not answered for 20 s"]).start()
        time.sleep(30)                                 # interrupted: the main thread gets Stopped
    assert raised.value.signame == "SIGTERM" and state.signal == "SIGTERM"
    assert state.reason == "the Prefect server at X has not answered for 20 s"
    assert "the Prefect server at X has not answered for 20 s: stopping" in capfd.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before       # restored
    assert not state.stop("again")                     # outside the block: nothing is sent
