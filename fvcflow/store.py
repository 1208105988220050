"""The data lake: where each table lives, atomic Parquet writes, content hashes and cache keys.

Every stage writes through :func:`write_parquet_atomic` (temporary file in the same folder, then
``os.replace``), so a reader never sees a half-written table and an interrupted run loses nothing
that was already published.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import polars as pl

#: Bump when the meaning of any feature column changes; it is part of every cache key.
FEATURE_SCHEMA_VERSION = 1

FAILURE_SCHEMA = {
    "stage": pl.Utf8,
    "path": pl.Utf8,
    "video_id": pl.Utf8,
    "reason": pl.Utf8,
    "error_type": pl.Utf8,
    "recorded_at": pl.Float64,
}


@dataclass(frozen=True)
class Lake:
    """Paths of one work directory (``FVC_HOME``, default ``./fvc-data``)."""

    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike | None = None) -> "Lake":
        root = Path(root or os.environ.get("FVC_HOME", "fvc-data")).expanduser().resolve()
        return cls(root)

    # index
    @property
    def index(self) -> Path:
        return self.root / "index" / "videos.parquet"

    @property
    def failures(self) -> Path:
        return self.root / "index" / "failures.parquet"

    @property
    def raw(self) -> Path:
        """Where archives are extracted to."""
        return self.root / "raw"

    # stages
    @property
    def stage1_videos(self) -> Path:
        return self.root / "stage1" / "videos"

    @property
    def stage1(self) -> Path:
        return self.root / "stage1" / "augmented.parquet"

    @property
    def stage2(self) -> Path:
        return self.root / "stage2" / "features.parquet"

    @property
    def stage3_videos(self) -> Path:
        return self.root / "stage3" / "videos"

    @property
    def stage3(self) -> Path:
        return self.root / "stage3" / "scaled.parquet"

    @property
    def stage4(self) -> Path:
        return self.root / "stage4" / "features.parquet"

    @property
    def stage5(self) -> Path:
        return self.root / "stage5"

    @property
    def splits(self) -> Path:
        return self.stage5 / "splits.parquet"

    @property
    def predictions(self) -> Path:
        return self.stage5 / "predictions.parquet"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db}"

    @property
    def mlartifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    def cache_dir(self, stage: str) -> Path:
        """Per-video cached results of a stage (one small Parquet file per key)."""
        return self.root / "cache" / stage


def write_parquet_atomic(df: pl.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` to ``path`` so that readers see either the old file or the complete new one.

    The temporary file (``.<name>.<host>.<pid>.<random>.tmp``, beside ``path``) names its writer,
    so that :func:`sweep_temporary` can remove what a killed writer left; the published file gets
    the usual permissions (``0666`` less the umask), not ``mkstemp``'s owner-only ones.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_host()}.{os.getpid()}.", suffix=".tmp",
                               dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    try:
        df.write_parquet(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _host() -> str:
    return socket.gethostname().replace(".", "_")


def _umask() -> int:
    """This process's umask, read without changing it (``os.umask`` is not thread-safe)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def sweep_temporary(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that dead writers on this host left under ``folder``.

    A writer killed between creating its temporary file and renaming it (``kill -9``, a lost
    Dask worker) leaves ``.<name>.<host>.<pid>.<random>.tmp``; readers never open those, and
    this removes the ones whose process is gone. Files of live writers, or of other hosts
    sharing the folder, are left alone. Returns the removed paths.

    >>> sweep_temporary("/tmp/fvc-doc/cache")
    []
    """
    removed = []
    host = _host()
    for p in Path(folder).rglob(".*.tmp"):
        parts = p.name[:-len(".tmp")].rsplit(".", 3)
        if len(parts) != 4 or parts[1] != host or not parts[2].isdigit() or _alive(int(parts[2])):
            continue
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_parquet(path: str | os.PathLike) -> pl.DataFrame | None:
    """The table at ``path``, or ``None`` when it does not exist yet.

    The file is opened once and read through that handle: a writer that replaces ``path``
    meanwhile (:func:`write_parquet_atomic`) cannot mix its new file into this read (reading by
    path may open it more than once: footer from one version, pages from another).
    """
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return None
    with fh:
        return pl.read_parquet(fh)


def file_hash(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    """BLAKE2b-128 of a file's content, streamed (constant memory)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def cache_key(content_hash: str, stage: str, config: Mapping[str, Any]) -> str:
    """Key of one video's result in one stage: content hash + stage config + schema version."""
    payload = json.dumps(
        {"h": content_hash, "stage": stage, "cfg": dict(config), "schema": FEATURE_SCHEMA_VERSION},
        sort_keys=True,
        default=str,
    )
    return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()


def printable_path(path: str | bytes | os.PathLike) -> str:
    """``path`` as valid UTF-8 text: bytes that are not UTF-8 (Linux file names may hold any)
    are shown as ``\\xff`` escapes, so that Parquet, logs and artifacts can store the name.

    >>> printable_path(b"/v/caf\\xe9.mp4")
    '/v/caf\\\\xe9.mp4'
    """
    text = os.fsdecode(path)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def failure_row(stage: str, path: str | os.PathLike, reason: str, *, video_id: str | None = None,
                error_type: str = "VideoError") -> dict:
    """One row of ``index/failures.parquet`` (path and id made printable, see :func:`printable_path`).

    >>> failure_row("ingest", "/v/a.mp4", "empty file (0 bytes)")["reason"]
    'empty file (0 bytes)'
    """
    return {
        "stage": stage,
        "path": printable_path(path),
        "video_id": None if video_id is None else printable_path(video_id),
        "reason": reason,
        "error_type": error_type,
        "recorded_at": time.time(),
    }


@contextlib.contextmanager
def lake_lock(lake: Lake, name: str) -> Iterator[Path]:
    """Hold an exclusive advisory lock named ``name`` on the work dir (``<root>/.locks/<name>.lock``).

    Read-modify-write updates of shared tables (the index, the failures) run under it, so that two
    processes sharing a work dir never lose each other's rows. The lock is ``flock``-based: it is
    released when the holder exits or dies (no stale lock after ``kill -9``); it is advisory and
    local to the machine (NFS and object stores are not covered).

    >>> with lake_lock(Lake.at("/tmp/fvc-doc"), "index") as path:
    ...     path.name
    'index.lock'
    """
    path = lake.root / ".locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def record_failures(lake: Lake, rows: Iterable[Mapping[str, Any]], *,
                    stage: str | None = None) -> pl.DataFrame:
    """Merge failure rows into ``index/failures.parquet`` (under :func:`lake_lock` ``"failures"``).

    A (stage, path) pair appears once: a newer failure replaces the older one. When ``stage`` is
    given, earlier failures of that stage whose path is not in ``rows`` are removed (the input
    was fixed, or is no longer part of the corpus).

    >>> record_failures(Lake.at("/tmp/fvc-doc"), [failure_row("features", "/v/a.mp4", "no frames")],
    ...                 stage="features").height
    1
    """
    new = pl.DataFrame(list(rows), schema=FAILURE_SCHEMA)
    with lake_lock(lake, "failures"):
        old = read_parquet(lake.failures)
        if old is None:
            old = pl.DataFrame(schema=FAILURE_SCHEMA)
        if stage is not None:
            old = old.filter(pl.col("stage") != stage)
        merged = pl.concat([old, new]).unique(subset=["stage", "path"], keep="last", maintain_order=True)
        write_parquet_atomic(merged, lake.failures)
    return merged
