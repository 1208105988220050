"""Run a stage over many videos: plan (what is cached), run batches (anywhere), finish (publish).

The three steps are plain functions so that a Prefect flow, a script or a notebook can drive them:
``plan`` runs where the flow runs, ``run_batch`` runs on a Dask worker (it needs only the jobs and
the settings, returns small rows, never frames), ``finish`` assembles the stage table and records
failures. Every finished video's row is written to the stage's manifest at once (its batch's part,
:mod:`fvcflow.stages.manifest`), so an interrupted run loses only the videos that were in flight.
Planning is one read of the manifest and an anti-join with the jobs; a video a stage wrote is
checked by its size and modification time, its content hashed only when those differ.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import polars as pl

from fvcflow.config import Settings
from fvcflow.digest import frame_digest
from fvcflow.errors import DiskFullError, FvcError, is_disk_full
from fvcflow.progress import emit
from fvcflow.stages import claim
from fvcflow.stages.manifest import DST_MTIME, DST_SIZE, KEY, PRIVATE, QUIET_S, WRITTEN, Manifest, stat_of
from fvcflow.stages.specs import CARRY, PARAM, SPECS, StageSpec
from fvcflow.store import (
    Lake,
    failure_row,
    file_hash,
    read_parquet,
    record_failures,
    sweep_temporary,
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
    """A stage's plan: every job as one table (``frame``, :func:`fvcflow.stages.specs.job_table`),
    and the jobs to compute as ``Job`` objects (the only ones sent to workers)."""

    stage: str
    frame: pl.DataFrame      # every video of the stage, cached or not
    todo: list[Job]          # the ones to compute
    started: float = field(default_factory=time.time)
    damaged: list[str] = field(default_factory=list)   # cache entries found damaged: recomputed
    failed_before: list[dict] = field(default_factory=list)   # failure rows of an earlier run, standing

    @property
    def total(self) -> int:
        return self.frame.height

    @property
    def cached(self) -> int:
        return self.total - len(self.todo) - len({f["video_id"] for f in self.failed_before})

    @property
    def jobs(self) -> list[Job]:
        """Every job as a ``Job`` (made on demand: a plan of a million jobs never needs them)."""
        return jobs_of(self.frame)


def jobs_of(frame: pl.DataFrame) -> list[Job]:
    """The ``Job`` of each row of a job table; a params column's null is no such parameter."""
    carry = [(i, c[len(CARRY):]) for i, c in enumerate(frame.columns) if c.startswith(CARRY)]
    params = [(i, c[len(PARAM):]) for i, c in enumerate(frame.columns) if c.startswith(PARAM)]
    ik, iv, ip = (frame.columns.index(c) for c in ("key", "video_id", "path"))
    with _gc_paused():
        return [Job(r[ik], r[iv], r[ip], {name: r[i] for i, name in carry},
                    {name: r[i] for i, name in params if r[i] is not None})
                for r in frame.iter_rows()]


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


def plan(stage: str, settings: Settings, *, announce: bool = True) -> StagePlan:
    """Every job of ``stage`` and those not yet cached (all of them when the stage is forced).

    The jobs are one table (:func:`fvcflow.stages.specs.job_table`), anti-joined with one read of
    the stage's manifest; ``Job`` objects are made only for the jobs to compute. A cached result
    counts only when it passes its checks: the manifest files' checksums, and for stages that
    write a file (augment, scale, faces) the file's size and modification time recorded at write
    time; when those differ, its content hash (the file is kept when the content is the same). A
    damaged entry is reported (logged, counted in the stage report), removed and recomputed.
    Per-video cache files of an older fvcflow are migrated into the manifest first (once, logged).
    A video this stage failed on in an earlier run is not tried again (its failure row stands,
    ``failed_before``) when the failure was the video's own (a VideoError: unreadable, over a bound
    still in force) and the file has not changed since; ``settings.retry_failed`` (``fvc run
    --retry-failed``) or forcing the stage tries every one again. The stage is claimed for this
    process's jobs until :func:`finish` (:mod:`fvcflow.stages.claim`: a concurrent run of it with
    other jobs is refused). ``announce``: emit ``stage_start`` (the display's line).
    """
    spec = spec_of(stage)
    lake = Lake.at(settings.home)
    for folder in (lake.cache_dir(spec.name), spec.table(lake).parent):
        sweep_temporary(folder)  # what writers killed in an earlier run left behind
    manifest = Manifest(lake, spec.name)
    manifest.migrate_legacy()
    damaged: list[str] = []
    frame = spec.jobs(lake, settings)
    claim.claim(lake, spec.name, frame)
    before: list[dict] = []
    if stage in settings.force:
        todo = frame
    else:
        wanted = ["content_hash", DST_SIZE, DST_MTIME]
        loaded = manifest.read(columns=wanted)
        if spec.legacy_keys is not None and _adopt_legacy(manifest, loaded.rows, frame, spec, settings):
            loaded = manifest.read(columns=wanted)
        damaged += loaded.damaged
        todo = _todo(manifest, loaded.rows, frame, damaged)
        if not settings.retry_failed and todo.height:
            todo, before = _failed_before(lake, spec.name, todo, settings)
            if before and announce:
                log.warning("%s: %d video(s) failed in an earlier run and are not tried again (the file is "
                            "unchanged; fvc run --retry-failed tries them)", spec.name,
                            len({f["video_id"] for f in before}))
    p = StagePlan(stage, frame, jobs_of(todo), damaged=damaged, failed_before=before)
    if announce:
        emit("stage_start", stage=stage, total=p.total, todo=len(p.todo), cached=p.cached)
    return p


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Python's cyclic collector paused for a block that only builds objects (a plan of a million
    jobs runs about twice as fast); it runs again, as it was, after."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _todo(manifest: Manifest, rows: pl.DataFrame, frame: pl.DataFrame, damaged: list[str]) -> pl.DataFrame:
    """The jobs without a sound cached row, in the job table's order: the anti-join with the
    manifest, then the stat check of the files the stage wrote (one ``stat`` each; the content
    hashed only where size or modification time differ from those recorded)."""
    frame = frame.with_row_index("_job")
    todo = frame.join(rows.select(KEY).rename({KEY: "key"}), on="key", how="anti")
    dst = PARAM + "dst"
    if dst not in frame.columns or not rows.height:
        return todo.sort("_job").drop("_job")
    cols = [c for c in ("content_hash", DST_SIZE, DST_MTIME) if c in rows.columns]
    written = (frame.filter(pl.col(dst).is_not_null())
               .join(rows.select(KEY, *cols).rename({KEY: "key"}), on="key", how="inner"))
    for c in (DST_SIZE, DST_MTIME, "content_hash"):
        if c not in written.columns:
            written = written.with_columns(pl.lit(None, dtype=pl.Utf8 if c == "content_hash" else pl.Int64)
                                           .alias(c))
    stats = [stat_of(p) for p in written[dst].to_list()]          # the one unavoidable loop: a stat each
    written = written.with_columns(
        pl.Series("_size", [None if st is None else st[0] for st in stats], dtype=pl.Int64),
        pl.Series("_mtime", [None if st is None else st[1] for st in stats], dtype=pl.Int64))
    same = (pl.col("_size") == pl.col(DST_SIZE)) & (pl.col("_mtime") == pl.col(DST_MTIME))
    odd = written.filter(~same.fill_null(False))                    # removed, touched, copied or changed
    redo, refreshed = [], {}
    for r in odd.select("_job", "key", dst, "content_hash", "_size", "_mtime").iter_rows(named=True):
        out = Path(r[dst])
        if r["_size"] is None:                                      # removed: made again
            redo.append(r["_job"])
            continue
        want = r["content_hash"]
        if want is None or file_hash(out) == want:
            refreshed[r["key"]] = (r["_size"], r["_mtime"])         # touched or copied, same content: kept
            continue
        _report_damage(damaged, manifest.stage, f"{out}: the video differs from the content hash recorded "
                                                f"when it was written")
        out.unlink(missing_ok=True)
        redo.append(r["_job"])
    if refreshed:   # record the new stat, so that the next plan need not read these files again
        update = manifest.read().rows.filter(pl.col(KEY).is_in(list(refreshed))).to_dicts()   # whole rows
        for r in update:
            r[DST_SIZE], r[DST_MTIME] = refreshed[r[KEY]]
            r.pop(WRITTEN, None)
        manifest.append(update)
    if redo:
        todo = pl.concat([todo, frame.filter(pl.col("_job").is_in(redo))], how="vertical_relaxed")
    return todo.unique("_job", keep="first").sort("_job").drop("_job")


def _failed_before(lake: Lake, stage: str, todo: pl.DataFrame,
                   settings: Settings) -> tuple[pl.DataFrame, list[dict]]:
    """The jobs of ``todo`` still to try, and the failure rows that stand for the others: videos
    whose earlier failure in ``stage`` was their own (``VideoError``), recorded after the file's
    last change, and, for a bound crossed, under the same value of that bound (not a watchdog's
    timeout: that one is tried again)."""
    old = read_parquet(lake.failures)
    if old is None or not old.height:
        return todo, []
    old = old.filter((pl.col("stage") == stage) & (pl.col("error_type") == "VideoError")
                     & pl.col("video_id").is_in(todo["video_id"].unique().implode()))
    if not old.height:
        return todo, []
    paths = dict(todo.select("video_id", "path").iter_rows())
    bounds = settings.limits.video_limits()
    standing = []
    for row in old.iter_rows(named=True):
        try:
            changed = os.stat(paths[row["video_id"]]).st_mtime
        except OSError:
            continue                                        # gone or unreadable: tried, and said, again
        if changed < (row["recorded_at"] or 0) and _same_bound(row["reason"] or "", bounds):
            standing.append(row)
    if not standing:
        return todo, []
    ids = {r["video_id"] for r in standing}
    return todo.filter(~pl.col("video_id").is_in(list(ids))), standing


def _same_bound(reason: str, bounds) -> bool:
    """False when ``reason`` names a bound (``limits.<name> = <value>``) whose value is now another,
    or the decode time bound (the machine's load is part of it: always tried again)."""
    if "limits.decode_seconds" in reason:
        return False
    for name, value in re.findall(r"limits\.(\w+) = ([0-9.e+-]+)", reason):
        now = getattr(bounds, name, None)
        with contextlib.suppress(ValueError, TypeError):
            if now is None or not math.isclose(float(value), float(now), rel_tol=1e-6):
                return False
    return True


def _adopt_legacy(manifest: Manifest, rows: pl.DataFrame, frame: pl.DataFrame, spec: StageSpec,
                  settings: Settings) -> bool:
    """Rows an older fvcflow wrote under the keys it gave the same jobs (``spec.legacy_keys``),
    whose file is the one the job writes now, recorded again under the job's key (once, logged):
    an upgrade does not make stage 1 again. The file is then checked as any other (stat, content)."""
    stale = rows.join(frame.select(pl.col("key").alias(KEY)), on=KEY, how="anti")
    if not stale.height or PARAM + "dst" not in frame.columns:
        return False
    missing = frame.join(rows.select(pl.col(KEY).alias("key")), on="key", how="anti")
    if not missing.height:
        return False
    missing = missing.with_columns(pl.Series("_legacy", spec.legacy_keys(missing, settings), dtype=pl.Utf8))
    cand = missing.filter(pl.col("_legacy").is_in(stale[KEY].implode()))
    if not cand.height:
        return False
    full = manifest.read().rows
    if "path" not in full.columns:
        return False
    adopt = (full.join(cand.select(pl.col("_legacy").alias(KEY), pl.col("key").alias("_new"),
                                   pl.col(PARAM + "dst").alias("path")), on=[KEY, "path"], how="inner")
             .with_columns(pl.col("_new").alias(KEY)).drop("_new", WRITTEN))
    if not adopt.height:
        return False
    manifest.append(adopt.to_dicts())
    log.warning("%s: %d cached results of an older fvcflow recorded under their new keys (once)",
                manifest.stage, adopt.height)
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
    part = Manifest(lake, spec.name).writer()
    try:
        _run_jobs(spec, jobs, settings, limits, part, done, failures)
    finally:
        part.seal()                                      # what finished is kept, whatever stopped the batch
    return BatchOutcome(done, failures, time.perf_counter() - t0)


def _run_jobs(spec: StageSpec, jobs: list[Job], settings: Settings, limits, part, done: list[str],
              failures: list[dict]) -> None:
    for job in jobs:
        try:
            with bounded(limits):
                result = spec.run(job, settings)
        except DiskFullError:
            raise                                    # the stage stops: no video is to blame
        except FvcError as exc:
            if is_disk_full(exc):                    # e.g. an encoder's VideoError on ENOSPC
                raise DiskFullError(job.params.get("dst") or part.path) from None
            failures.append(failure_row(spec.name, job.path, getattr(exc, "reason", str(exc)),
                                        video_id=job.video_id, error_type=type(exc).__name__))
            continue
        except OSError as exc:
            if is_disk_full(exc):
                raise DiskFullError(job.params.get("dst") or part.path) from None
            raise
        except Exception as exc:  # noqa: BLE001 - one video's failure, whatever it is, is its row
            log.warning("%s: %s failed with %s: %s", spec.name, job.path, type(exc).__name__, exc)
            failures.append(failure_row(spec.name, job.path, f"{type(exc).__name__}: {exc}"[:500],
                                        video_id=job.video_id, error_type=type(exc).__name__))
            continue
        # the manifest holds what the content determines; identity (video_id, keys) comes from the plan
        row = {**result, KEY: job.key}
        if job.params.get("dst") is not None and (st := stat_of(job.params["dst"])) is not None:
            row[DST_SIZE], row[DST_MTIME] = st           # for the next plan's stat check
        part.add(row)
        done.append(job.video_id)


def collect(stage_plan: StagePlan, outcomes: Iterable[BatchOutcome]) -> list[BatchOutcome]:
    """The outcomes of a stage's batches, in the order they complete, each announced as it arrives
    (``stage_batch``): the flow hands them over as its Dask futures finish."""
    out = []
    for outcome in outcomes:
        out.append(outcome)
        emit("stage_batch", stage=stage_plan.stage, done=len(outcome.done), failed=len(outcome.failures))
    return out


def finish(stage_plan: StagePlan, outcomes: list[BatchOutcome], settings: Settings, *,
           announce: bool = True) -> StageReport:
    """Assemble the stage table from the cache and record this stage's failures (``announce``:
    emit ``stage_end``)."""
    spec = spec_of(stage_plan.stage)
    lake = Lake.at(settings.home)
    # every batch has returned: a temporary file whose writer is gone (a worker killed while it
    # wrote; Dask ran its batch again elsewhere) is debris of this run, not of the next one
    for folder in (lake.cache_dir(spec.name), spec.table(lake).parent):
        for p in sweep_temporary(folder):
            log.info("%s: removed %s, left by a writer that died", spec.name, p.name)
    failures = [f for o in outcomes for f in o.failures] + list(stage_plan.failed_before)
    failed = list({f["video_id"] for f in failures})
    frame = stage_plan.frame.filter(~pl.col("video_id").is_in(failed)) if failed else stage_plan.frame
    loaded = Manifest(lake, spec.name).read()
    have = loaded.rows.select(pl.col(KEY).alias("key")) if loaded.rows.height else \
        pl.DataFrame(schema={"key": pl.Utf8})
    # a row the plan counted on may be gone: its file damaged after the plan (left out, never read)
    why = ("its cached result was damaged; rerun to recompute it" if loaded.damaged else
           "its cached result is missing (removed during the run); rerun to recompute it")
    for r in frame.join(have, on="key", how="anti").select("video_id", "path").iter_rows():
        failures.append(failure_row(spec.name, r[1], why, video_id=r[0], error_type="CorruptEntry"))
    frame = frame.join(have, on="key", how="semi")
    if frame.height:
        results = loaded.rows.select(pl.exclude(f"^{PRIVATE}.*$"))
        ids = frame.select("video_id", *[pl.col(c).alias(c[len(CARRY):]) for c in frame.columns
                                         if c.startswith(CARRY)], pl.col("key").alias(KEY))
        table = ids.join(results, on=KEY, how="inner").sort("video_id")
    else:
        table = pl.DataFrame(schema={"video_id": pl.Utf8})
    table_path = spec.table(lake)
    write_parquet_atomic(table, table_path)
    record_failures(lake, failures, stage=spec.name)
    manifest = Manifest(lake, spec.name)
    # the batches' parts, folded into the shards; another host's open part once quiet for twice
    # the time one video may take (its writer is gone)
    manifest.compact(quiet_s=2 * (settings.limits.decode_seconds or QUIET_S / 2))
    _prune(manifest, loaded.rows, stage_plan.frame, lake)
    claim.release(lake, spec.name)
    reasons: dict[str, int] = {}
    for f in failures:
        reasons[f["reason"]] = reasons.get(f["reason"], 0) + 1
    report = StageReport(
        stage=spec.name,
        videos_in=stage_plan.total,
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
    if announce:
        announce_end(report)
    return report


def release(stage: str, settings: Settings) -> None:
    """Give up this process's claim on ``stage`` of the work dir when the stage did not finish (a
    failed or stopped run in a process that goes on: a served deployment's)."""
    claim.release(Lake.at(settings.home), spec_of(stage).name)


def announce_end(report: StageReport) -> None:
    emit("stage_end", stage=report.stage, videos=report.rows, done=report.done, cached=report.cached,
         failed=report.failed, seconds=report.seconds, reasons=dict(report.failure_reasons),
         digest=report.digest)


def from_manifest(stages: list[str], settings: Settings) -> list[StageReport] | None:
    """The reports of ``stages`` (video stages, in pipeline order) when every one of them is
    wholly cached, answered from the manifests in this process: each stage planned and, when it
    has nothing to compute (no job to do, nothing damaged, not forced), published as a run would
    publish it, before the next stage is planned from its table. ``None`` as soon as a stage has
    work (what was published so far is what the run publishes again): the caller runs the flow.
    Nothing is announced; the caller announces the reports (:func:`announce`)."""
    reports = []
    for stage in stages:
        if stage in settings.force:
            return None
        p = plan(stage, settings, announce=False)
        if p.todo or p.damaged:
            return None
        reports.append(finish(p, [], settings, announce=False))
    return reports


def announce(report: StageReport) -> None:
    """``stage_start`` and ``stage_end`` of a stage answered from its manifest."""
    emit("stage_start", stage=report.stage, total=report.videos_in, todo=0, cached=report.cached)
    announce_end(report)


FILE_COLUMNS = ("path", "mask_path", "tracks_path")     # a written row's files


def _prune(manifest: Manifest, rows: pl.DataFrame, frame: pl.DataFrame, lake: Lake) -> None:
    """Results which no job of this plan names any more (the copies of videos a ``--resplit``
    moved to the test hold-out, the rows of videos gone from the corpus, results made with other
    settings): their rows leave the manifest and, for a stage that writes files, their files, when
    no job of this plan writes the same file and they lie in the work dir, are removed; logged
    once. What a plan does not name is never read again (its key cannot come back without its
    job), so it is only debris. A stage without files of its own (features, scaled_features) only
    drops rows: the paths its rows name are other stages' files."""
    stale = rows.join(frame.select(pl.col("key").alias(KEY)), on=KEY, how="anti")
    if not stale.height:
        return
    if PARAM + "dst" not in frame.columns:
        n = manifest.drop(stale[KEY].to_list())
        log.warning("%s: removed %d cached results no job names any more: a changed hold-out, corpus or "
                    "settings", manifest.stage, n)
        return
    keep = set(frame[PARAM + "dst"].drop_nulls().to_list())
    if PARAM + "mask_dst" in frame.columns:
        keep |= set(frame[PARAM + "mask_dst"].drop_nulls().to_list())
    root = str(lake.root) + os.sep
    files = 0
    for col in (c for c in FILE_COLUMNS if c in stale.columns):
        for path in stale[col].drop_nulls().to_list():
            if path in keep or not path.startswith(root):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                files += 1
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.dirname(path))       # a copy's folder, once empty
    n = manifest.drop(stale[KEY].to_list())
    log.warning("%s: removed %d cached results no job names any more (%d files): a changed hold-out, "
                "corpus or settings", manifest.stage, n, files)


def spec_of(stage: str) -> StageSpec:
    try:
        return SPECS[stage]
    except KeyError:
        raise FvcError(f"unknown stage {stage!r}; stages are {', '.join(SPECS)}") from None


def run_local(stage: str, settings: Settings) -> StageReport:
    """Run a whole stage in this process, without Prefect or Dask (scripts, notebooks, tests)."""
    p = plan(stage, settings)
    return finish(p, collect(p, [run_batch(stage, p.todo, settings)]), settings)
