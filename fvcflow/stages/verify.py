"""Check everything the video stages wrote, by content: ``fvc verify`` and ``fvc run --verify``.

A plan checks a written video by its size and modification time only (cheap: one ``stat``); this
reads every byte of every video a stage wrote, in parallel on the Dask engine (a local cluster or
``dask_address``), and compares it with the content hash recorded when it was written. The
manifests' own files are checked by their checksums as they are read. A damaged video is removed
(the next run makes it again, and only it); a sound one whose size or time changed (copied,
touched) gets its new stat recorded, so that plans need not read it again.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from distributed import Client, as_completed

from fvcflow.config import Settings
from fvcflow.engine import dask_cluster
from fvcflow.progress import emit
from fvcflow.stages.manifest import DST_MTIME, DST_SIZE, KEY, WRITTEN, Manifest, stat_of
from fvcflow.stages.specs import SPECS
from fvcflow.store import file_hash


@dataclass
class VerifyReport:
    stages: list[str]
    rows: int = 0                  # cached results whose manifest files passed their checksums
    videos: int = 0                # videos read and hashed
    bytes: int = 0
    seconds: float = 0.0
    damaged: list[str] = field(default_factory=list)     # "<path>: <why>", removed
    missing: list[str] = field(default_factory=list)     # written videos no longer there
    refreshed: int = 0             # sound videos whose new size/time was recorded

    @property
    def ok(self) -> bool:
        return not self.damaged

    def format(self) -> str:
        rate = self.bytes / self.seconds / 1e9 if self.seconds > 0 else 0.0
        head = (f"verify: {self.rows} cached results of {', '.join(self.stages) or 'no stage'}; "
                f"{self.videos} videos ({self.bytes / 1e6:.1f} MB) read in {self.seconds:.1f} s "
                f"({rate:.2f} GB/s): {len(self.damaged)} damaged, {len(self.missing)} missing")
        lines = [head]
        lines += [f"  damaged (removed; the next run makes it again): {d}" for d in self.damaged[:20]]
        lines += [f"  missing (the next run makes it again): {m}" for m in self.missing[:20]]
        if len(self.damaged) + len(self.missing) > 40:
            lines.append("  ... (all of them in the log)")
        return "\n".join(lines)


def hash_batch(items: list[tuple[str, str, str]]) -> list[tuple[str, str, int, str | None, tuple | None]]:
    """On a worker: ``(stage, key, path)`` -> ``(stage, key, bytes, content hash or None when
    missing, (size, mtime_ns))``."""
    out = []
    for stage, key, path in items:
        st = stat_of(path)
        if st is None:
            out.append((stage, key, 0, None, None))
            continue
        try:
            digest = file_hash(path)
        except FileNotFoundError:
            out.append((stage, key, 0, None, None))
            continue
        out.append((stage, key, st[0], digest, st))
    return out


def _written(rows: pl.DataFrame) -> pl.DataFrame:
    """The rows of a stage that name a video it wrote (``path`` and ``content_hash``)."""
    if not rows.height or not {"path", "content_hash"} <= set(rows.columns):
        return rows.clear()
    return rows.filter(pl.col("path").is_not_null() & pl.col("content_hash").is_not_null())


def verify(settings: Settings, stages: list[str] | None = None, *, chunk: int | None = None) -> VerifyReport:
    """Hash every video the ``stages`` (default: every video stage) wrote, on the Dask engine.

    ``chunk``: videos per task; by default about four tasks per worker (a task per handful of
    small files costs more in scheduling than in hashing), at most 512 videos each."""
    lake = settings.lake()
    stages = [s for s in (stages or list(SPECS)) if Manifest(lake, s).root.is_dir()]
    report = VerifyReport(stages)
    t0 = time.perf_counter()
    manifests, recorded, items = {}, {}, []
    for stage in stages:
        m = Manifest(lake, stage)
        loaded = m.read()
        report.damaged += loaded.damaged
        report.rows += loaded.rows.height
        manifests[stage] = (m, loaded.rows)
        for r in _written(loaded.rows).select(KEY, "path", "content_hash").iter_rows(named=True):
            recorded[(stage, r[KEY])] = r
            items.append((stage, r[KEY], r["path"]))
    emit("verify_start", total=len(items))
    results = []
    if items:
        if chunk is None:
            chunk = min(512, max(8, math.ceil(len(items) / (4 * settings.n_workers()))))
        batches = [items[i:i + chunk] for i in range(0, len(items), chunk)]
        with dask_cluster(settings) as address, Client(address) as client:
            futures = client.map(hash_batch, batches, pure=False)
            done = 0
            for fut in as_completed(futures):
                part = fut.result()
                results += part
                done += len(part)
                emit("verify_step", done=done, total=len(items))
    refresh: dict[str, dict[str, tuple]] = {}
    for stage, key, size, digest, st in results:
        rec = recorded[(stage, key)]
        if digest is None:
            report.missing.append(f"{rec['path']} ({stage})")
            continue
        report.videos += 1
        report.bytes += size
        if digest != rec["content_hash"]:
            report.damaged.append(f"{rec['path']}: the video differs from the content hash recorded when "
                                  f"it was written ({stage})")
            Path(rec["path"]).unlink(missing_ok=True)    # the row stays; the plan makes the video again
        else:
            refresh.setdefault(stage, {})[key] = st
    for stage, stats in refresh.items():
        m, rows = manifests[stage]
        cols = set(rows.columns)
        stale = [r for r in rows.filter(pl.col(KEY).is_in(list(stats))).iter_rows(named=True)
                 if not {DST_SIZE, DST_MTIME} <= cols or (r[DST_SIZE], r[DST_MTIME]) != stats[r[KEY]]]
        for r in stale:
            r[DST_SIZE], r[DST_MTIME] = stats[r[KEY]]
            r.pop(WRITTEN, None)
        m.append(stale)
        report.refreshed += len(stale)
    report.seconds = time.perf_counter() - t0
    emit("verify_end", videos=report.videos, damaged=len(report.damaged), missing=len(report.missing),
         seconds=report.seconds)
    return report
