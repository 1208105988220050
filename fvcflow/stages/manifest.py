"""A stage's finished results: a few checked Parquet files, not one file per video.

Layout under ``cache/<stage>/`` (:meth:`fvcflow.store.Lake.cache_dir`):

``manifest/<h>.parquet``
    the compacted rows, one shard per first hex digit of the cache key (16 files at most), each
    a checked Parquet file (:func:`fvcflow.store.write_checked_parquet`).
``parts/<host>.<pid>.<random>.open.parquet``
    the rows of one batch in flight: rewritten atomically after each finished video, so that a
    killed run loses only the videos that were in flight; renamed to ``....parquet`` (sealed)
    when the batch returns.

Planning reads the shards and the parts once (:meth:`Manifest.read`) and anti-joins the jobs
with them; :meth:`Manifest.compact` folds the sealed parts (and the open parts of writers that
died) into the shards when a stage finishes. Reads and compactions hold the stage's lock
(:func:`fvcflow.store.lake_lock`), so that two runs sharing a work dir never lose each other's
rows; a batch writes its own part without a lock (nobody else writes it).

Every row holds ``cache_key`` and the stage's result columns, plus private bookkeeping columns
(``_fvc_*``, never published): when the row was written and, for stages that write a video, the
video's size and modification time at that moment (:data:`DST_SIZE`, :data:`DST_MTIME`) for the
stat check of :func:`fvcflow.stages.runner.plan`.

The per-video cache files of older fvcflow versions (``cache/<stage>/<xx>/<key>.parquet``) are
read once and migrated into parts (:meth:`Manifest.migrate_legacy`), then removed.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from fvcflow.store import (
    CorruptEntry,
    Lake,
    _alive,
    _host,
    lake_lock,
    read_checked_parquet,
    write_checked_parquet,
)

log = logging.getLogger("fvcflow.stages")

KEY = "cache_key"
WRITTEN = "_fvc_written_ns"       # when the row was written (ns since the epoch)
DST_SIZE = "_fvc_dst_size"        # the written video's size in bytes, at write time
DST_MTIME = "_fvc_dst_mtime_ns"   # and its modification time (ns)
PRIVATE = "_fvc_"                 # prefix of the columns that stay in the manifest
OPEN = ".open.parquet"
LEGACY_BATCH = 4096               # per-video files migrated per part
QUIET_S = 2 * 3600.0              # an open part of another host, not rewritten for this long: its last


@dataclass
class Loaded:
    """What :meth:`Manifest.read` found: the rows (one per cache key) and the damaged files."""

    rows: pl.DataFrame
    damaged: list[str] = field(default_factory=list)    # "<path>: <why>", each removed

    def keys(self) -> set[str]:
        return set(self.rows[KEY].to_list()) if self.rows.height else set()


def _dedup(frames: list[pl.DataFrame]) -> pl.DataFrame:
    frames = [f for f in frames if f.height]
    if not frames:
        return pl.DataFrame(schema={KEY: pl.Utf8, WRITTEN: pl.Int64})
    rows = pl.concat(frames, how="diagonal_relaxed")
    if WRITTEN not in rows.columns:
        rows = rows.with_columns(pl.lit(0, dtype=pl.Int64).alias(WRITTEN))
    # the latest row of a key wins (a video recomputed after its output was damaged)
    return rows.sort(WRITTEN, nulls_last=False).unique(subset=[KEY], keep="last", maintain_order=True)


class Manifest:
    """The finished rows of one stage in one work dir."""

    def __init__(self, lake: Lake, stage: str):
        self.lake, self.stage = lake, stage
        self.root = lake.cache_dir(stage)
        self.shards = self.root / "manifest"
        self.parts = self.root / "parts"

    # ---- reading ---------------------------------------------------------------------------
    def files(self) -> list[Path]:
        """Every shard and part file (published ones: no temporary file)."""
        out = []
        for folder in (self.shards, self.parts):
            if folder.is_dir():
                out += sorted(p for p in folder.iterdir()
                              if p.suffix == ".parquet" and not p.name.startswith("."))
        return out

    def read(self, columns: list[str] | None = None) -> Loaded:
        """All rows, one per cache key, read under the stage's lock. A damaged file (checksum) is
        reported in ``damaged``, logged and removed: its rows are computed again. ``columns``:
        parse only those (every file is still checked whole); a plan needs the keys and the stat
        columns, not the results."""
        if columns is not None:
            columns = list(dict.fromkeys([KEY, WRITTEN, *columns]))
        with lake_lock(self.lake, f"manifest-{self.stage}"):
            return self._read_unlocked(self.files(), columns)

    def _read_unlocked(self, files: list[Path], columns: list[str] | None = None) -> Loaded:
        frames, damaged = [], []
        for path in files:
            t = self._read_file(path, damaged, columns)
            if t is not None:
                frames.append(t)
        if all(p.parent == self.shards for p in files):
            # shards only: each holds one row per key (compaction deduplicated it) and a key lives
            # in one shard (its first hex digit), so their rows are unique as they are
            frames = [f for f in frames if f.height]
            if frames:
                return Loaded(pl.concat(frames, how="diagonal_relaxed"), damaged)
        return Loaded(_dedup(frames), damaged)

    def _read_file(self, path: Path, damaged: list[str],
                   columns: list[str] | None = None) -> pl.DataFrame | None:
        try:
            return read_checked_parquet(path, columns)
        except CorruptEntry as exc:
            damaged.append(str(exc))
            log.warning("%s: damaged cache entry, recomputing its rows: %s", self.stage, exc)
            path.unlink(missing_ok=True)
            return None

    def count(self) -> int:
        """How many results are cached (0 when nothing is, or nothing can be read)."""
        if not self.root.is_dir():
            return 0
        return self.read().rows.height

    # ---- writing ---------------------------------------------------------------------------
    def writer(self) -> "PartWriter":
        return PartWriter(self.parts)

    def append(self, rows: list[dict]) -> Path | None:
        """Write ``rows`` at once as one sealed part (updates found by a plan, migrations)."""
        if not rows:
            return None
        w = self.writer()
        w.add_all(rows)
        return w.seal()

    def compact(self, quiet_s: float = QUIET_S) -> int:
        """Fold the sealed parts, and the open parts of writers that died, into the shards; the
        parts folded are removed. Returns how many rows were folded. Damaged files are reported
        and removed (their rows are computed again by the next run). An open part written on
        another host (a worker of a cluster) cannot be asked whether its writer lives: it is
        folded once it has not been rewritten for ``quiet_s`` seconds (a live writer rewrites it
        after every video, and no video may take longer than the watchdog allows)."""
        with lake_lock(self.lake, f"manifest-{self.stage}"):
            parts = [p for p in self.files() if p.parent == self.parts and _finished(p, quiet_s)]
            if not parts:
                return 0
            damaged: list[str] = []
            frames = [t for p in parts if (t := self._read_file(p, damaged)) is not None]
            new = _dedup(frames)
            if new.height:
                new = new.with_columns(pl.col(KEY).str.slice(0, 1).str.to_lowercase().alias("_shard"))
                for (shard,), rows in new.group_by("_shard"):
                    path = self.shards / f"{shard}.parquet"
                    old = self._read_file(path, damaged) if path.exists() else None
                    merged = _dedup([f for f in (old, rows.drop("_shard")) if f is not None])
                    write_checked_parquet(merged, path)
            for p in parts:          # after the shards hold their rows: a kill here leaves duplicates only
                p.unlink(missing_ok=True)
            return new.height

    def drop(self, keys: list[str]) -> int:
        """Remove the rows of ``keys`` (results no job of the stage names any more), under the
        stage's lock: the parts are folded first, then every shard holding one of them is
        rewritten without it. Returns how many rows were removed."""
        if not keys:
            return 0
        self.compact()
        gone = pl.Series(KEY, list(keys), dtype=pl.Utf8).implode()
        removed = 0
        with lake_lock(self.lake, f"manifest-{self.stage}"):
            for shard in sorted({k[:1].lower() for k in keys}):
                path = self.shards / f"{shard}.parquet"
                damaged: list[str] = []
                rows = self._read_file(path, damaged) if path.exists() else None
                if rows is None or not rows.height:
                    continue
                kept = rows.filter(~pl.col(KEY).is_in(gone))
                if kept.height < rows.height:
                    removed += rows.height - kept.height
                    write_checked_parquet(kept, path)
        return removed

    def migrate_legacy(self) -> int:
        """Move the per-video cache files of older fvcflow (``<xx>/<key>.parquet``) into parts, once.

        Each file is checked as before: a damaged one is reported and left out (recomputed), one
        without a checksum (written before checksums existed) is left out and counted. The files
        are removed once their rows are in a part. Returns how many rows were migrated."""
        if not self.root.is_dir():
            return 0
        folders = [p for p in self.root.iterdir() if p.is_dir() and len(p.name) == 2
                   and all(c in "0123456789abcdef" for c in p.name)]
        if not folders:
            return 0
        moved, legacy, damaged, batch, done = 0, 0, [], [], []

        def flush() -> None:
            nonlocal moved
            if batch:
                self.append(batch)
                moved += len(batch)
            for p in done:
                p.unlink(missing_ok=True)
            batch.clear()
            done.clear()

        for folder in sorted(folders):
            for path in sorted(folder.glob("*.parquet")):
                try:
                    t = read_checked_parquet(path)
                except CorruptEntry as exc:
                    if exc.legacy:
                        legacy += 1
                    else:
                        damaged.append(str(exc))
                        log.warning("%s: damaged cache entry, recomputing it: %s", self.stage, exc)
                    done.append(path)
                    continue
                if t is not None and t.height:
                    row = t.row(0, named=True)
                    row.setdefault(KEY, path.stem)
                    row[WRITTEN] = path.stat().st_mtime_ns
                    batch.append(row)
                done.append(path)
                if len(batch) >= LEGACY_BATCH:
                    flush()
        flush()
        for folder in folders:
            try:
                folder.rmdir()
            except OSError:
                pass            # something else lives there: left alone
        if not (moved or legacy or damaged):
            return 0
        extra = "".join([f"; {legacy} without a checksum (older format) will be computed again"
                         if legacy else "",
                         f"; {len(damaged)} damaged, computed again" if damaged else ""])
        log.warning("%s: migrated %d per-video cache files into the stage manifest (once)%s",
                    self.stage, moved, extra)
        return moved


def _finished(part: Path, quiet_s: float = QUIET_S) -> bool:
    """A sealed part, an open one whose writer (on this host) is gone, or an open one of another
    host not rewritten for ``quiet_s`` seconds."""
    if not part.name.endswith(OPEN):
        return True
    bits = part.name[:-len(OPEN)].rsplit(".", 2)
    if len(bits) == 3 and bits[0] == _host() and bits[1].isdigit():
        return not _alive(int(bits[1]))
    try:
        return time.time() - part.stat().st_mtime > quiet_s
    except FileNotFoundError:
        return False                                     # sealed or folded meanwhile


class PartWriter:
    """One batch's part: :meth:`add` a finished row (the part is rewritten atomically with every
    row so far), :meth:`seal` when the batch returns."""

    def __init__(self, folder: Path):
        self.path = folder / f"{_host()}.{os.getpid()}.{secrets.token_hex(6)}{OPEN}"
        self.rows: list[dict] = []

    def add(self, row: dict) -> None:
        self.add_all([row])

    def add_all(self, rows: list[dict]) -> None:
        now = time.time_ns()
        self.rows += [{WRITTEN: now, **r} for r in rows]
        write_checked_parquet(pl.DataFrame(self.rows, infer_schema_length=None), self.path)

    def seal(self) -> Path | None:
        """Rename the part to its sealed name (compaction may fold it); None when it holds nothing."""
        if not self.rows or not self.path.exists():
            return None
        sealed = self.path.with_name(self.path.name[:-len(OPEN)] + ".parquet")
        os.replace(self.path, sealed)
        return sealed


def stat_of(path: str | os.PathLike) -> tuple[int, int] | None:
    """(size, mtime in ns) of ``path``; None when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns
