"""Hash and probe many videos in parallel (the index writer's heavy part): in local processes, or on
the workers of a Dask scheduler (:func:`probe_on_dask`: the run's local cluster, ``--dask-address``)."""

from __future__ import annotations

import functools
import os
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import current_process, get_context
from pathlib import Path
from typing import Callable, Sequence

from fvcflow import progress
from fvcflow.errors import VideoError
from fvcflow.store import file_hash
from fvcflow.video import probe
from fvcflow.video.limits import Limits, bounded, current

__all__ = ["probe_one", "probe_many", "probe_on_dask"]


def probe_one(path: str | os.PathLike, limits: Limits | None = None) -> dict:
    """``{"content_hash", "probe": {...index columns}}``, or ``{"error", "error_type"}``.

    Never raises for a bad file: an empty, unreadable, truncated or non-video file is an error
    entry whose reason a person understands. The file is probed within ``limits`` (default: the
    bounds in force; ingest passes ``Settings.limits``), its watchdog started here: a video over
    a bound is an error entry naming the bound.

    Examples
    --------
    >>> probe_one("clip.mp4")["probe"]["codec"]  # doctest: +SKIP
    'h264'
    """
    try:
        if os.path.getsize(path) == 0:
            return {"error": "empty file (0 bytes)", "error_type": "VideoError"}
        digest = file_hash(path)
        with bounded(limits):
            return {"content_hash": digest, "probe": probe(path).as_row()}
    except VideoError as exc:
        return {"error": exc.reason, "error_type": "VideoError"}
    except OSError as exc:
        return {"error": f"cannot read file ({exc.strerror or exc})", "error_type": "OSError"}


def _forkserver():
    """The fork-server context, with this module preloaded so that workers start in milliseconds."""
    ctx = get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def probe_many(paths: Sequence[str | os.PathLike], *, workers: int | None = None,
               log: Callable[[str], None] = lambda s: None, limits: Limits | None = None) -> list[dict]:
    """:func:`probe_one` over ``paths`` in ``workers`` processes (default ``os.cpu_count()``), in
    order, each within ``limits`` (default: the bounds in force here, passed to the processes).

    Examples
    --------
    >>> [r.get("error") for r in probe_many(["a.mp4", "empty.mp4"], workers=2)]  # doctest: +SKIP
    [None, 'empty file (0 bytes)']
    """
    paths = [str(Path(p)) for p in paths]
    one = functools.partial(probe_one, limits=limits or current())
    workers = max(1, min(workers or os.cpu_count() or 1, len(paths) or 1))
    step = max(1, len(paths) // 20)
    out: list[dict] = []
    pool: Executor | None = None
    if workers == 1:
        results = map(one, paths)
    else:
        # A daemonic process (a Dask worker) may not fork children: threads then (PyAV and
        # hashlib release the GIL). Otherwise processes from a fork server (safe with threads).
        pool = ThreadPoolExecutor(workers) if current_process().daemon else ProcessPoolExecutor(
            workers, mp_context=_forkserver())
        results = pool.map(one, paths, chunksize=max(1, min(16, len(paths) // (workers * 8))))
    try:
        for i, res in enumerate(results, 1):
            out.append(res)
            progress.emit("ingest_step", done=i, total=len(paths))
            if i % step == 0 or i == len(paths):
                log(f"  probed {i}/{len(paths)}")
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return out


def _probe_chunk(paths: list[str], limits: Limits | None = None) -> list[dict]:
    return [probe_one(p, limits) for p in paths]


def probe_on_dask(paths: Sequence[str | os.PathLike], address: str, *, chunk: int = 8,
                  log: Callable[[str], None] = lambda s: None,
                  limits: Limits | None = None) -> list[dict]:
    """:func:`probe_one` over ``paths`` on the workers of the Dask scheduler at ``address``, in order.

    The files are read where the workers run (a shared file system on a cluster); chunks of
    ``chunk`` files keep the scheduler's overhead small and the load balanced. Progress is
    announced as chunks come back (``ingest_step``). Each file is probed within ``limits``
    (default: the bounds in force here, sent to the workers).

    Examples
    --------
    >>> probe_on_dask(["a.mp4"], "tcp://127.0.0.1:8786")[0]["probe"]["codec"]  # doctest: +SKIP
    'h264'
    """
    # Dask loads where it is used: every command imports this module (through the settings), and
    # one answered from the stage manifests (a cached fvc run) never starts an engine
    from distributed import Client, as_completed

    paths = [str(Path(p)) for p in paths]
    chunks = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
    out: list[list[dict] | None] = [None] * len(chunks)
    step = max(1, len(paths) // 20)
    with Client(address) as client:
        futures = client.map(_probe_chunk, chunks, limits=limits or current(), pure=False)
        where = {f.key: i for i, f in enumerate(futures)}
        done = 0
        for fut in as_completed(futures):
            i = where[fut.key]
            out[i] = fut.result()
            before, done = done, done + len(chunks[i])
            progress.emit("ingest_step", done=done, total=len(paths))
            if done // step != before // step or done == len(paths):
                log(f"  probed {done}/{len(paths)}")
    return [r for part in out for r in part or []]
