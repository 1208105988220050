"""Who is running a stage on a work dir, and with which jobs: two runs that would prune each other.

A stage's ``finish`` removes the cached results that no job of its plan names (copies of videos
that left the corpus, or made with other settings). Two runs of one stage on one work dir at the
same time with *different* jobs (other settings, another index) would therefore remove each
other's results while both work. So each stage, from its plan to its finish, holds a claim on the
work dir (``<home>/.locks/claims/<stage>/<host>-<pid>.json``) naming its process, its command and
the digest of its job keys; a run whose jobs differ from those of a live claim of the same stage is
refused with one line naming the other run. Runs with the same jobs (the same settings and index)
go on side by side, as before: they share the cache.

A claim is an ``flock`` held by its process for as long as the stage runs: a process that died
(``kill -9`` included) holds nothing, and its claim is swept by the next one to look. Advisory and
local to one machine, like :func:`fvcflow.store.lake_lock`; claims of this process are its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

import polars as pl

from fvcflow.errors import ConfigError, is_disk_full
from fvcflow.store import Lake, lake_lock

log = logging.getLogger("fvcflow.stages")

#: this process's open claims, by file: the descriptor holding its lock
_HELD: dict[Path, int] = {}


def jobs_digest(frame: pl.DataFrame) -> str:
    """The digest of a plan's job keys, whatever their order: equal for two runs that would compute
    and keep the same results. The keys are hex digests (:func:`fvcflow.store.cache_key`): the sums
    of two 28-bit slices of them, with their count, fingerprint the set without sorting it (a
    million keys in milliseconds; a sorted join took 3 s)."""
    keys = frame["key"]
    sums = [int(keys.str.slice(7 * i, 7).str.to_integer(base=16, strict=False).fill_null(0).sum() or 0)
            for i in range(2)] if frame.height else []
    return hashlib.blake2b(repr((frame.height, sums)).encode(), digest_size=16).hexdigest()


def _folder(lake: Lake, stage: str) -> Path:
    return lake.path("locks", name="x").parent / "claims" / stage


def _live(path: Path) -> dict | None:
    """The claim in ``path`` when its process still holds it; None (and the file removed) when not."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:                         # held: its run is alive
            with contextlib.suppress(ValueError, OSError):
                return json.loads(Path(path).read_text() or "{}")
            return {}
        path.unlink(missing_ok=True)                    # nobody holds it: a run that died
        return None
    finally:
        os.close(fd)


def claim(lake: Lake, stage: str, frame: pl.DataFrame) -> None:
    """Claim ``stage`` of the work dir for this process's plan ``frame`` (its jobs); ConfigError,
    naming the other run, when a live run of the same stage has other jobs. Held until
    :func:`release` (or this process ends). On a full disk the stage goes on unclaimed (logged):
    its own writes then fail with the disk's message."""
    digest = jobs_digest(frame)
    folder = _folder(lake, stage)
    mine = folder / f"{socket.gethostname()}-{os.getpid()}.json"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with lake_lock(lake, "claims"):
            for other in sorted(folder.glob("*.json")):
                if other == mine or other in _HELD:
                    continue
                info = _live(other)
                if info is None or info.get("jobs") == digest:
                    continue
                started = time.strftime("%H:%M:%S", time.localtime(info.get("started", 0)))
                raise ConfigError(
                    f"another run is working on stage {stage} of {lake.root} with other settings or another "
                    f"index (pid {info.get('pid', '?')} on {info.get('host', '?')}, started {started}: "
                    f"{info.get('command', '?')}); the two would remove each other's results: wait for it "
                    f"to finish, or give this run its own work dir (--home)")
            release(lake, stage)
            _HELD[mine] = _write(mine, {"pid": os.getpid(), "host": socket.gethostname(), "stage": stage,
                                        "jobs": digest, "started": time.time(), "command": _command()})
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        log.warning("%s: not claimed (the disk is full): a concurrent run with other settings would not be "
                    "detected", stage)


def _write(path: Path, info: dict) -> int:
    """The descriptor of ``path``, locked, holding ``info``."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
    except BaseException:
        path.unlink(missing_ok=True)
        os.close(fd)
        raise
    return fd


def _command() -> str:
    """This process's command line, as a person would type it (``fvc run ...``), at most 300 characters."""
    first = ["fvc" if a.endswith(("fvc", "__main__.py")) else a for a in sys.argv[:1]]
    return " ".join(first + sys.argv[1:])[:300]


def release(lake: Lake, stage: str) -> None:
    """Give up this process's claim on ``stage`` (nothing when it holds none)."""
    mine = _folder(lake, stage) / f"{socket.gethostname()}-{os.getpid()}.json"
    fd = _HELD.pop(mine, None)
    if fd is not None:
        mine.unlink(missing_ok=True)
        os.close(fd)                                    # the lock goes with the descriptor


__all__ = ["claim", "jobs_digest", "release"]
