"""A polite stop: the first Ctrl-C (SIGINT) or SIGTERM stops the run cleanly, a second one forces.

Inside :func:`polite_stop` the first signal raises :class:`Stopped` (a ``KeyboardInterrupt``) in
the main thread: the flow stops where it is, the Dask cluster is closed (its workers stop), every
``with`` block unwinds (a table or video being written is removed, never published half-done)
and finished work stays cached. A second signal while that runs exits at once (``os._exit``):
the workers and the temporary Prefect server die with the process, and what they were writing
is left as temporary files that the next run sweeps.

Another thread can stop the run the same way (:meth:`StopState.stop`, e.g. ``fvc run``'s watch of
a Prefect server that went away): it records why and sends SIGTERM to the main thread, whose
handler then says that reason instead of the signal's name.

>>> with polite_stop() as stop:
...     stop.signal is None
True
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from dataclasses import dataclass, field
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """The run was asked to stop by ``signal`` (its name: SIGINT or SIGTERM)."""

    def __init__(self, signame: str):
        self.signame = signame
        super().__init__(signame)


@dataclass
class StopState:
    signal: str | None = None        # the first signal received, by name
    count: int = 0
    reason: str | None = None        # why the run stopped itself (``stop``), if it did
    armed: bool = False              # the handler is installed (in the main thread)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def exit_code(self) -> int:
        """The shell convention: 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM)."""
        return 128 + int(getattr(signal, self.signal or "SIGINT"))

    def stop(self, reason: str) -> bool:
        """From any thread: stop the run as a first SIGTERM would, for ``reason`` (said instead of
        "SIGTERM"); False when the handler is not installed or a stop is already under way."""
        with self.lock:              # not while the block ends (SIGTERM's default would kill)
            if not self.armed or self.count or self.reason:
                return False
            self.reason = reason
            signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
            return True


def _say(text: str) -> None:
    """One line straight to the terminal's stderr (past any live display holding ``sys.stderr``)."""
    with contextlib.suppress(OSError):
        os.write(2, f"\n{text}\n".encode())


@contextlib.contextmanager
def polite_stop(*, forced_message: str = "forced stop: rerun the same command to resume"
                ) -> Iterator[StopState]:
    """Handle SIGINT/SIGTERM as a polite stop for the block (main thread only; elsewhere a no-op)."""
    state = StopState()

    def handler(signum, frame):  # noqa: ARG001 - the signal module's signature
        state.count += 1
        name = signal.Signals(signum).name
        if state.count == 1:
            state.signal = name
            _say(f"{state.reason or name}: stopping (the workers stop, nothing half-done is published); "
                 "press Ctrl-C again to force")
            raise Stopped(name)
        _say(f"{name} again: {forced_message}")
        os._exit(state.exit_code)

    try:
        previous = {s: signal.signal(s, handler) for s in SIGNALS}
    except ValueError:                   # not the main thread: leave signals alone
        yield state
        return
    state.armed = True
    try:
        yield state
    finally:
        with state.lock:
            state.armed = False
        for s, h in previous.items():
            signal.signal(s, h)
