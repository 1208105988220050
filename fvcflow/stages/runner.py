"""Run a stage over many videos: plan (what is cached), run batches (anywhere), finish (publish).

The three steps are plain functions so that a Prefect flow, a script or a notebook can drive them:
``plan`` runs where the flow runs, ``run_batch`` runs on a Dask worker (it needs only the jobs and
the settings, returns small rows, never frames), ``finish`` assembles the stage table and records
failures. Every finished video is written to the per-stage cache at once, so an interrupted run
loses only the videos that were in flight.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import polars as pl

from fvcflow.config import Settings
from fvcflow.digest import frame_digest
from fvcflow.errors import DiskFullError, FvcError, is_disk_full
from fvcflow.progress import emit
from fvcflow.stages.specs import SPECS, StageSpec
from fvcflow.store import (
    CorruptEntry,
    Lake,
    failure_row,
    file_hash,
    read_checked_parquet,
    record_failures,
    sweep_temporary,
    write_checked_parquet,
    write_parquet_atomic,
)
from fvcflow.video.limits import bounded

log = logging.getLogger("fvcflow.stages")


@dataclass(frozen=True)
class Job:
    """One video's work in one stage. ``carry`` holds key columns passed through to the row."""

    key: str
    video_id: str
    path: str
    carry: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class StagePlan:
    stage: str
    jobs: list[Job]          # every video of the stage, cached or not
    todo: list[Job]          # the ones to compute
    started: float = field(default_factory=time.time)
    damaged: list[str] = field(default_factory=list)   # cache entries found damaged: recomputed

    @property
    def cached(self) -> int:
        return len(self.jobs) - len(self.todo)


@dataclass
class BatchOutcome:
    done: list[str]
    failures: list[dict]
    seconds: float


@dataclass
class StageReport:
    stage: str
    videos_in: int
    done: int
    cached: int
    failed: int
    seconds: float
    table: str
    failure_reasons: dict[str, int]
    rows: int = 0            # rows of the published table
    damaged: int = 0         # cached results found damaged (checksum) and recomputed
    digest: str = ""         # the published table's content digest (fvcflow.digest)

    def as_rows(self) -> list[dict]:
        return [{"stage": self.stage, "videos in": self.videos_in, "done": self.done,
                 "cached": self.cached, "failed": self.failed, "damaged": self.damaged,
                 "seconds": round(self.seconds, 2), "table": self.table, "digest": self.digest}]


def _cache_file(lake: Lake, stage: str, key: str) -> Path:
    return lake.cache_dir(stage) / key[:2] / f"{key}.parquet"


def plan(stage: str, settings: Settings) -> StagePlan:
    """Every job of ``stage`` and those not yet cached (all of them when the stage is forced).

    A cached result counts only when it passes its checks: the cache file's checksum, and for
    stages that write a video (augment, scale) the video's content hash recorded at write time.
    A damaged entry is reported (logged, counted in the stage report), removed and recomputed.
    """
    spec = spec_of(stage)
    lake = Lake.at(settings.home)
    for folder in (lake.cache_dir(spec.name), spec.table(lake).parent):
        sweep_temporary(folder)  # what writers killed in an earlier run left behind
    jobs = [Job(**j) for j in spec.jobs(lake, settings)]
    force = stage in settings.force
    damaged: list[str] = []
    todo = [j for j in jobs if force or not _is_cached(lake, spec, j, damaged)]
    emit("stage_start", stage=stage, total=len(jobs), todo=len(todo), cached=len(jobs) - len(todo))
    return StagePlan(stage, jobs, todo, damaged=damaged)


def _is_cached(lake: Lake, spec: StageSpec, job: Job, damaged: list[str]) -> bool:
    path = _cache_file(lake, spec.name, job.key)
    try:
        row = read_checked_parquet(path)
    except CorruptEntry as exc:
        if not exc.legacy:
            _report_damage(damaged, spec.name, str(exc))
        path.unlink(missing_ok=True)
        return False
    if row is None:
        return False
    out = job.params.get("dst")
    if out is None:
        return True
    out = Path(out)
    want = row["content_hash"][0] if "content_hash" in row.columns else None
    if not out.exists():
        return False
    if want is not None and file_hash(out) != want:
        _report_damage(damaged, spec.name, f"{out}: the video differs from the content hash recorded when "
                                           f"it was written")
        out.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        return False
    return True


def _report_damage(damaged: list[str], stage: str, what: str) -> None:
    damaged.append(what)
    log.warning("%s: damaged cache entry, recomputing it: %s", stage, what)


def batches(jobs: list[Job], workers: int, *, max_size: int = 32) -> list[list[Job]]:
    """Split jobs into about four batches per worker (load balance), each at most ``max_size``."""
    if not jobs:
        return []
    n = max(min(len(jobs), 4 * workers), math.ceil(len(jobs) / max_size))
    return [jobs[i::n] for i in range(n)]


def run_batch(stage: str, jobs: list[Job], settings: Settings) -> BatchOutcome:
    """Compute each job, cache its row at once; a bad video becomes a failure row, not an error.

    Each video is read within ``settings.limits`` (its own watchdog: ``limits.decode_seconds``);
    a bound crossed is a VideoError naming it. Any other exception of one video (MemoryError, a
    decoder's RuntimeError ...) is that video's failure row too, on the first try: the batch goes
    on and is not retried. Only a full disk (no video is to blame) and other OSErrors (the lake's
    I/O, which may pass) stop the batch.
    """
    spec = spec_of(stage)
    lake = Lake.at(settings.home)
    limits = settings.limits.video_limits()
    t0 = time.perf_counter()
    done, failures = [], []
    for job in jobs:
        try:
            with bounded(limits):
                result = spec.run(job, settings)
        except DiskFullError:
            raise                                    # the stage stops: no video is to blame
        except FvcError as exc:
            if is_disk_full(exc):                    # e.g. an encoder's VideoError on ENOSPC
                raise DiskFullError(job.params.get("dst") or _cache_file(lake, spec.name, job.key)) from None
            failures.append(failure_row(spec.name, job.path, getattr(exc, "reason", str(exc)),
                                        video_id=job.video_id, error_type=type(exc).__name__))
            continue
        except OSError as exc:
            if is_disk_full(exc):
                raise DiskFullError(job.params.get("dst") or _cache_file(lake, spec.name, job.key)) from None
            raise
        except Exception as exc:  # noqa: BLE001 - one video's failure, whatever it is, is its row
            log.warning("%s: %s failed with %s: %s", spec.name, job.path, type(exc).__name__, exc)
            failures.append(failure_row(spec.name, job.path, f"{type(exc).__name__}: {exc}"[:500],
                                        video_id=job.video_id, error_type=type(exc).__name__))
            continue
        # the cache holds what the content determines; identity (video_id, keys) comes from the plan
        row = {**result, "cache_key": job.key}
        write_checked_parquet(pl.DataFrame([row], infer_schema_length=None),
                              _cache_file(lake, spec.name, job.key))
        done.append(job.video_id)
    return BatchOutcome(done, failures, time.perf_counter() - t0)


def collect(stage_plan: StagePlan, outcomes: Iterable[BatchOutcome]) -> list[BatchOutcome]:
    """The outcomes of a stage's batches, in the order they complete, each announced as it arrives
    (``stage_batch``): the flow hands them over as its Dask futures finish."""
    out = []
    for outcome in outcomes:
        out.append(outcome)
        emit("stage_batch", stage=stage_plan.stage, done=len(outcome.done), failed=len(outcome.failures))
    return out


def finish(stage_plan: StagePlan, outcomes: list[BatchOutcome], settings: Settings) -> StageReport:
    """Assemble the stage table from the cache and record this stage's failures."""
    spec = spec_of(stage_plan.stage)
    lake = Lake.at(settings.home)
    # every batch has returned: a temporary file whose writer is gone (a worker killed while it
    # wrote; Dask ran its batch again elsewhere) is debris of this run, not of the next one
    for folder in (lake.cache_dir(spec.name), spec.table(lake).parent):
        for p in sweep_temporary(folder):
            log.info("%s: removed %s, left by a writer that died", spec.name, p.name)
    failures = [f for o in outcomes for f in o.failures]
    failed = {f["video_id"] for f in failures}
    jobs = [j for j in stage_plan.jobs if j.video_id not in failed]
    keys = dict.fromkeys(j.key for j in jobs)  # videos of equal content share one cached result
    present, damaged = [], []
    for k in keys:
        try:
            t = read_checked_parquet(_cache_file(lake, spec.name, k))
        except CorruptEntry as exc:              # damaged after the plan checked it: left out
            damaged.append(k)
            _cache_file(lake, spec.name, k).unlink(missing_ok=True)
            log.warning("%s: damaged cache entry left out of the table: %s", spec.name, exc)
            continue
        if t is not None:
            present.append(t)
    for j in jobs:
        if j.key in damaged:
            failures.append(failure_row(spec.name, j.path,
                                        "its cached result was damaged; rerun to recompute it",
                                        video_id=j.video_id, error_type="CorruptEntry"))
    jobs = [j for j in jobs if j.key not in damaged]
    if present:
        results = pl.concat(present, how="diagonal_relaxed")
        ids = pl.DataFrame([{"video_id": j.video_id, **j.carry, "cache_key": j.key} for j in jobs],
                           infer_schema_length=None)
        table = ids.join(results, on="cache_key", how="inner").sort("video_id")
    else:
        table = pl.DataFrame(schema={"video_id": pl.Utf8})
    table_path = spec.table(lake)
    write_parquet_atomic(table, table_path)
    record_failures(lake, failures, stage=spec.name)
    reasons: dict[str, int] = {}
    for f in failures:
        reasons[f["reason"]] = reasons.get(f["reason"], 0) + 1
    report = StageReport(
        stage=spec.name,
        videos_in=len(stage_plan.jobs),
        done=sum(len(o.done) for o in outcomes),
        cached=stage_plan.cached,
        failed=len(failures),
        seconds=time.time() - stage_plan.started,
        table=str(table_path),
        failure_reasons=reasons,
        rows=table.height,
        damaged=len(stage_plan.damaged),
        digest=frame_digest(table),
    )
    emit("stage_end", stage=spec.name, videos=table.height, done=report.done, cached=report.cached,
         failed=report.failed, seconds=report.seconds, reasons=dict(reasons), digest=report.digest)
    return report


def spec_of(stage: str) -> StageSpec:
    try:
        return SPECS[stage]
    except KeyError:
        raise FvcError(f"unknown stage {stage!r}; stages are {', '.join(SPECS)}") from None


def run_local(stage: str, settings: Settings) -> StageReport:
    """Run a whole stage in this process, without Prefect or Dask (scripts, notebooks, tests)."""
    p = plan(stage, settings)
    return finish(p, collect(p, [run_batch(stage, p.todo, settings)]), settings)
