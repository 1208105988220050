"""Watch the Prefect server a run reports to, and act once it has stopped answering.

Prefect's client retries each API call ``PREFECT_CLIENT_MAX_RETRIES`` times with exponential
backoff (2+4+8+16+32 s), and a run makes several calls in a row, so a run whose server went away
would take minutes to fail, printing ``--- Error logging to API ---`` meanwhile. ``fvc run``
against a server of the user's (``PREFECT_API_URL``) starts a :class:`ServerWatch` instead: it asks
``<url>/health`` every :data:`PROBE_EVERY_S` seconds, and once the server has given no answer for
:data:`GRACE_S` seconds it calls ``on_lost(seconds)`` once (``fvc run`` then stops the run as a
SIGTERM would, and says so in one line). One slow answer on a loaded machine is not a lost server:
only a silence as long as the grace is.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from typing import Callable

#: seconds without any answer from the server before the run is stopped
GRACE_S = 20.0
#: seconds between two probes of ``<url>/health``
PROBE_EVERY_S = 2.0
#: seconds one probe waits for its answer (at most half the grace: one slow answer is no silence)
PROBE_TIMEOUT_S = 5.0


def answers(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Does the Prefect API at ``url`` answer ``/health`` (any HTTP answer, even an error, counts)?"""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True                          # it answered, with an error: it is there
    except (OSError, ValueError):
        return False


class ServerWatch:
    """A daemon thread that calls ``on_lost(seconds)`` once the API at ``url`` has not answered
    for ``grace`` seconds (probing every ``every`` seconds); ``lost_after`` is then those seconds.

    >>> with ServerWatch("http://127.0.0.1:9/api", print, grace=60) as watch:
    ...     watch.lost_after is None
    True
    """

    def __init__(self, url: str, on_lost: Callable[[float], object], *, grace: float = GRACE_S,
                 every: float = PROBE_EVERY_S, timeout: float = PROBE_TIMEOUT_S):
        self.url, self.on_lost = url, on_lost
        self.grace, self.every, self.timeout = grace, every, min(timeout, grace / 2)
        self.lost_after: float | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="fvc-server-watch", daemon=True)

    def _watch(self) -> None:
        answered = time.monotonic()
        while not self._done.wait(self.every):
            if answers(self.url, self.timeout):
                answered = time.monotonic()
                continue
            silent = time.monotonic() - answered
            if silent >= self.grace and not self._done.is_set():
                self.lost_after = silent
                self.on_lost(silent)
                return

    def __enter__(self) -> ServerWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()                     # the thread ends after its current probe
