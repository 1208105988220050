"""A video that kills its Dask worker (a decoder's segfault, ``os._exit``, the OOM killer) is one
failure row, on the first try, and the rest of its batch goes on.

A dead worker runs no ``except`` or ``finally``: what survives it is a file. Each batch task is
given a token by the flow; before it computes anything it writes a marker
(``<work dir>/.in-flight/<token>.json``) and removes it when it returns or raises. Dask runs the
task of a dead worker again on another one (``distributed.scheduler.allowed-failures``); that
second attempt finds its own marker, so it knows that the first one died, and instead of running
the videos again:

- a batch of several videos raises :class:`~fvcflow.errors.WorkerDied`: the flow splits it into
  one task per video (a worker killed from outside, by a user or a lost machine, costs a rerun);
- a task of one video returns that video's failure row, ``killed its worker``, without reading
  it a second time.

When the scheduler gives up first (``KilledWorker``: ``allowed-failures`` is 0 on some
clusters) the flow does the same from the exception (:func:`killed_outcome`). The work dir is
shared by the workers already (they write the stage cache there).

>>> killed_outcome("features", Job("k", "v1", "/c/a.mp4", {})).failures[0]["error_type"]
'WorkerKilled'
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path

from fvcflow.config import Settings
from fvcflow.errors import WorkerDied
from fvcflow.stages.runner import BatchOutcome, Job, run_batch
from fvcflow.store import Lake, failure_row

KILLED = ("killed its worker: the Dask worker process died while reading this video (a crash in a "
          "decoder, os._exit or the out-of-memory killer); it is not read again")


def new_token() -> str:
    """A token for one batch task (the same for every attempt Dask makes of that task)."""
    return uuid.uuid4().hex


def marker(home, token: str) -> Path:
    return Lake.at(home).root / ".in-flight" / f"{token}.json"


def killed_outcome(stage: str, job: Job) -> BatchOutcome:
    """The outcome of a one-video task whose worker died: the video's failure row."""
    return BatchOutcome([], [failure_row(stage, job.path, KILLED, video_id=job.video_id,
                                         error_type="WorkerKilled")], 0.0)


def guarded_batch(stage: str, jobs: list[Job], settings: Settings, token: str) -> BatchOutcome:
    """:func:`fvcflow.stages.runner.run_batch`, knowing when an earlier attempt of this task
    (``token``) died with its worker (see the module's text)."""
    path = marker(settings.home, token)
    if path.with_suffix(".done").exists():   # the flow has moved on (a late recomputation): read nothing
        return BatchOutcome([], [], 0.0)
    if path.exists():                   # kept until the flow forgets it: every later attempt sees it too
        if len(jobs) == 1:
            return killed_outcome(stage, jobs[0])
        raise WorkerDied(stage, [j.video_id for j in jobs])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"stage": stage, "host": socket.gethostname(), "pid": os.getpid(),
                                "started": time.time(), "videos": [j.video_id for j in jobs]}))
    try:
        return run_batch(stage, jobs, settings)
    finally:
        path.unlink(missing_ok=True)


def started(home, token: str) -> bool:
    """Whether an attempt of the task ``token`` began and did not return (its marker is there)."""
    return marker(home, token).exists()


def forget(home, tokens) -> None:
    """The flow is done with ``tokens``: each marker becomes a tombstone (``<token>.done``), so
    that an attempt Dask starts later (a recomputation of a result lost with a dead worker) reads
    nothing; tombstones older than a day are swept."""
    for token in tokens:
        path = marker(home, token)
        if path.parent.is_dir():
            path.with_suffix(".done").touch()
        path.unlink(missing_ok=True)
    folder = Lake.at(home).root / ".in-flight"
    if folder.is_dir():
        for old in folder.glob("*.done"):
            try:
                if time.time() - old.stat().st_mtime > 86400:
                    old.unlink(missing_ok=True)
            except FileNotFoundError:
                pass


__all__ = ["KILLED", "forget", "guarded_batch", "killed_outcome", "marker", "new_token", "started"]
