"""The index writer: any corpus -> ``index/videos.parquet`` and ``index/failures.parquet``.

:func:`ingest` asks the corpus's adapter for its videos, hashes and probes them in parallel
processes, refuses ambiguous ids, records every unusable input as a failure, and merges the
corpus's rows into the index (re-ingesting a corpus replaces its rows, other corpora stay).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import polars as pl

from fvcflow.digest import frame_digest
from fvcflow.errors import FvcError
from fvcflow.ingest.celebdf import catalog_celebdf
from fvcflow.ingest.common import Candidate, Catalog, label_value, resolved_path
from fvcflow.ingest.dfdc import catalog_dfdc
from fvcflow.ingest.ffpp import catalog_ffpp
from fvcflow.ingest.folder import catalog_folder
from fvcflow.ingest.fvc import catalog_fvc, prepare_fvc
from fvcflow.ingest.holdout import HOLDOUT_KEY, decide_holdout
from fvcflow.ingest.probing import probe_many, probe_on_dask
from fvcflow.progress import emit
from fvcflow.schema import ORIGINAL
from fvcflow.store import (
    Lake,
    failure_row,
    lake_lock,
    printable_path,
    read_parquet,
    record_failures,
    write_parquet_atomic,
)
from fvcflow.video.limits import Limits

__all__ = ["KINDS", "INDEX_SCHEMA", "IngestSummary", "ingest", "catalog"]

KINDS = ("fvc", "ffpp", "celebdf", "dfdc", "folder")

#: Columns and types of ``index/videos.parquet`` (docs/ARCHITECTURE.md), in order.
INDEX_SCHEMA = {
    "video_id": pl.Utf8, "path": pl.Utf8, "source": pl.Utf8, "variant": pl.Utf8, "group_id": pl.Utf8,
    "label": pl.Int8, "label_raw": pl.Utf8, "split": pl.Utf8, "platform": pl.Utf8, "cascade_id": pl.Utf8,
    "content_hash": pl.Utf8, "container": pl.Utf8, "codec": pl.Utf8, "pix_fmt": pl.Utf8,
    "width": pl.Int32, "height": pl.Int32, "fps": pl.Float64, "duration": pl.Float64, "n_frames": pl.Int64,
    "bit_rate": pl.Int64, "rotation": pl.Int32, "size_bytes": pl.Int64, "gop": pl.Float64,
    "split_by": pl.Utf8,    # who set split: "corpus" (its own split), "holdout" (decided at ingest)
}


@dataclass
class IngestSummary:
    """What one :func:`ingest` did; ``format()`` is what the CLI prints."""

    source: str
    found: int
    indexed: int
    failed: dict[str, int] = field(default_factory=dict)  # reason -> count
    unmatched_videos: list[str] = field(default_factory=list)
    unmatched_rows: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    index_path: str = ""
    unmatched_path: str = ""  # the full lists of unmatched videos and rows, one per line
    failed_paths: dict[str, list[str]] = field(default_factory=dict)  # reason -> the files
    digest: str = ""  # the index table's content digest after this ingest (fvcflow.digest)

    @property
    def n_failed(self) -> int:
        return sum(self.failed.values())

    def as_rows(self) -> list[dict]:
        """One row of counts (for tables and run artifacts)."""
        return [{"source": self.source, "found": self.found, "indexed": self.indexed, "failed": self.n_failed,
                 "unmatched_videos": len(self.unmatched_videos), "unmatched_rows": len(self.unmatched_rows)}]

    def format(self, limit: int = 10, examples: int = 5) -> str:
        """A readable summary; long lists show their first ``limit`` entries (failed files: their
        first ``examples`` per reason) and a count."""
        lines = [f"{self.source}: {self.found} videos found, {self.indexed} indexed, {self.n_failed} failed"
                 f" -> {self.index_path}"]
        for reason, n in sorted(self.failed.items(), key=lambda kv: -kv[1]):
            lines.append(f"  failed ({n}): {reason}")
            paths = self.failed_paths.get(reason, [])
            lines += [f"    {p}" for p in paths[:examples]]
            if len(paths) > examples:
                lines.append(f"    ... and {len(paths) - examples} more")
        if self.failed:
            lines.append("  every failure: fvc sql -q failures, "
                         'or fvc sql "SELECT path, reason FROM failures"')
        for title, items in (("videos with no metadata row", self.unmatched_videos),
                             ("metadata rows with no video", self.unmatched_rows), ("notes", self.notes)):
            if items:
                lines.append(f"  {title}: {len(items)}")
                lines += [f"    {item}" for item in items[:limit]]
                if len(items) > limit:
                    lines.append(f"    ... and {len(items) - limit} more (all in {self.unmatched_path})")
        return "\n".join(lines)


def catalog(kind: str, root: str | os.PathLike, lake: Lake, *, labels=None, password: bytes | None = None,
            source: str | None = None, log: Callable[[str], None] = lambda s: None,
            ) -> tuple[Catalog, list[Path]]:
    """The adapter's catalog for ``kind``, and the folders its files live in (FVC archives are extracted).

    Examples
    --------
    >>> cat, roots = catalog("ffpp", "/data/FaceForensics++", Lake.at())  # doctest: +SKIP
    >>> len(cat.candidates), len(cat.unmatched_videos)  # doctest: +SKIP
    (6000, 0)
    """
    if kind not in KINDS:
        raise FvcError(f"unknown corpus kind {kind!r} (one of {', '.join(KINDS)})")
    if kind == "fvc":
        tree = prepare_fvc(root, lake.raw, password=password, log=log)
        return catalog_fvc(tree, metadata_root=root), [Path(root), tree]
    if kind == "folder":
        return catalog_folder(root, labels, source=source or "folder"), [Path(root)]
    adapter = {"ffpp": catalog_ffpp, "celebdf": catalog_celebdf, "dfdc": catalog_dfdc}[kind]
    return adapter(root), [Path(root)]


def _split_unnamable(cands: list[Candidate]) -> tuple[list[Candidate], list[dict]]:
    """Candidates whose file name is not valid UTF-8 cannot be stored in the index: failures."""
    ok, bad = [], []
    for c in cands:
        try:
            str(c.path).encode("utf-8")
            ok.append(c)
        except UnicodeEncodeError:
            bad.append(failure_row("ingest", resolved_path(c.path),
                                   "file name is not valid UTF-8 (rename the file)",
                                   video_id=c.video_id, error_type="VideoError"))
    return ok, bad


def _row(c: Candidate, source: str, probed: dict) -> dict:
    video_id = c.video_id or f"{source}-{probed['content_hash'][:16]}"
    return {"video_id": video_id, "path": str(resolved_path(c.path)), "source": source, "variant": ORIGINAL,
            "group_id": c.group_id or video_id, "label": label_value(c.label_raw), "label_raw": c.label_raw,
            "split": c.split, "platform": c.platform, "cascade_id": c.cascade_id,
            "content_hash": probed["content_hash"], **probed["probe"]}


def _dedupe(rows: list[dict], source: str) -> tuple[list[dict], list[dict]]:
    """Keep one row per content and per id; exact copies become failures, id clashes an error.

    Copies of one content with different labels are a label conflict: every copy becomes a
    ``LabelConflict`` failure naming all of them and their labels, and none is kept (a video
    cannot be both real and fake in training).
    """
    by_hash: dict[str, list[dict]] = {}
    for row in sorted(rows, key=lambda r: (r["video_id"], r["path"])):
        by_hash.setdefault(row["content_hash"], []).append(row)
    kept: dict[str, dict] = {}
    failures = []
    for copies in by_hash.values():
        first = copies[0]
        if len({r["label"] for r in copies}) > 1:
            labelled = ", ".join(f"{r['path']} as {r['label_raw']}" for r in copies)
            reason = (f"label conflict: one video labelled differently ({labelled}); "
                      "none of the copies is used")
            failures += [failure_row("ingest", r["path"], reason, video_id=r["video_id"],
                                     error_type="LabelConflict") for r in copies]
            continue
        failures += [failure_row("ingest", r["path"], f"duplicate of {first['video_id']}",
                                 video_id=r["video_id"], error_type="Duplicate") for r in copies[1:]]
        other = kept.get(first["video_id"])
        if other is not None:
            raise FvcError(f"{source}: video id {first['video_id']} names two different files: "
                           f"{other['path']} and {first['path']}; remove one and rerun")
        kept[first["video_id"]] = first
    return sorted(kept.values(), key=lambda r: (r["video_id"], r["path"])), failures


def _merge_index(lake: Lake, source: str, rows: list[dict]) -> pl.DataFrame:
    new = pl.DataFrame(rows, schema=INDEX_SCHEMA, orient="row") if rows else pl.DataFrame(schema=INDEX_SCHEMA)
    old = read_parquet(lake.index)
    if old is not None and old.height:
        old = old.filter(pl.col("source") != source)
        clash = set(old["video_id"].to_list()) & set(new["video_id"].to_list())
        if clash:
            raise FvcError(f"video ids of {source} already in {lake.index} under another source: "
                           f"{', '.join(sorted(clash)[:5])}")
        old = old.select([(pl.col(c) if c in old.columns else pl.lit(None)).cast(t).alias(c)  # older indexes
                          for c, t in INDEX_SCHEMA.items()])
        new = pl.concat([old, new])
    return new.sort("source", "video_id")


def _holdout(lake: Lake, source: str, rows: list[dict], *, test_size: float, seed: int, resplit: bool,
             log: Callable[[str], None]) -> None:
    """Fill in each new row's ``split``: the corpus's own, the one decided at an earlier ingest
    (unless ``resplit``), else decided now by group."""
    old = read_parquet(lake.index)
    before: dict[str, str] = {}
    if old is not None and old.height and "split_by" in old.columns:
        ours = old.filter((pl.col("source") == source) & (pl.col("split_by") == "holdout"))
        before = dict(zip(ours["video_id"].to_list(), ours["split"].to_list()))
    for r in rows:
        r["split_by"] = "corpus" if r.get("split") else None
        if not resplit and not r.get("split") and r["video_id"] in before:
            r["split"], r["split_by"] = before[r["video_id"]], "holdout"
    decided = decide_holdout(rows, test_size=test_size, seed=seed)
    for r in rows:
        if r.get("split") and r["split_by"] is None:
            r["split_by"] = "holdout"
    if decided:
        changed = sum(1 for r in rows if r["video_id"] in before and r["split"] != before[r["video_id"]])
        log(f"{source}: test hold-out decided for {decided} videos by group "
            f"(test_size {test_size}, seed {seed})"
            + (f"; {changed} of them changed side" if resplit else ""))
    if resplit and lake.splits.exists():
        lake.splits.unlink()        # stage 5's folds were made from the old hold-out


def _failures(lake: Lake, roots: list[Path], rows: list[dict]) -> None:
    """Replace this corpus's earlier ingest failures (by folder) with ``rows``; other corpora's stay."""
    old = read_parquet(lake.failures)
    prefixes = tuple({str(f(p)) + os.sep for p in roots for f in (resolved_path, os.path.abspath)})

    def ours(path: str) -> bool:   # a refused link is recorded by its own path, not its target's
        return str(resolved_path(path)).startswith(prefixes) or os.path.abspath(path).startswith(prefixes)

    keep = [] if old is None else [r for r in old.filter(pl.col("stage") == "ingest").to_dicts()
                                   if not ours(r["path"])]
    record_failures(lake, keep + rows, stage="ingest")


def _write_unmatched(lake: Lake, cat: Catalog) -> Path:
    """Every unmatched video and row of this corpus, in ``index/unmatched-<source>.txt``."""
    path = lake.unmatched(cat.source)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = ("".join(f"video\t{printable_path(v)}\n" for v in cat.unmatched_videos)
            + "".join(f"row\t{r}\n" for r in cat.unmatched_rows))
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def ingest(kind: str, root: str | os.PathLike, lake: Lake, *, labels: str | os.PathLike | None = None,
           password: bytes | None = None, workers: int | None = None, source: str | None = None,
           progress: Callable[[str], None] | None = None, limits: Limits | None = None,
           test_size: float = 0.2, seed: int = 0, resplit: bool = False,
           dask_address: str | None = None) -> IngestSummary:
    """Index a corpus into ``lake``: hash and probe every video, write the index and the failures.

    The test hold-out is decided here, by group (:mod:`fvcflow.ingest.holdout`): the corpus's own
    split where it has one, else ``test_size`` of each class by groups ordered by ``seed``. Videos
    indexed before keep their split unless ``resplit`` (the explicit way to change the hold-out).

    Parameters
    ----------
    kind : {"fvc", "ffpp", "celebdf", "dfdc", "folder"}
    root : path
        The corpus folder (fvc: the folder of FVC1-3.zip and Metadata.zip, or their extracted tree).
    lake : Lake
        The work dir; FVC archives are extracted into ``lake.raw``.
    labels : path, optional
        The labels CSV of a folder corpus (``path,label[,group]``).
    password : bytes, optional
        The FVC archives' password; never logged or stored.
    workers : int, optional
        Probing processes (default ``os.cpu_count()``).
    source : str, optional
        The ``source`` value of a folder corpus (default "folder"; the demo corpus uses "demo").
    progress : callable, optional
        Receives progress lines.
    limits : Limits, optional
        What one video may cost (``Settings.limits``; default: the bounds in force,
        :mod:`fvcflow.video.limits`): a video over a bound is a failure row naming it.
    test_size, seed : float, int
        The hold-out of videos without a split of their corpus (``train.test_size``, ``train.seed``).
    resplit : bool
        Decide the hold-out again for this corpus's videos (their earlier decisions are dropped).
    dask_address : str, optional
        Probe and hash on the workers of this Dask scheduler (``workers`` is then theirs).

    Returns
    -------
    IngestSummary

    Examples
    --------
    >>> s = ingest("folder", "corpus", Lake.at("fvc-data"), labels="corpus/labels.csv")  # doctest: +SKIP
    >>> print(s.format())  # doctest: +SKIP
    folder: 12 videos found, 11 indexed, 1 failed -> fvc-data/index/videos.parquet
    """
    started = time.perf_counter()
    log = progress or (lambda s: None)
    cat, roots = catalog(kind, root, lake, labels=labels, password=password, source=source, log=log)
    candidates, failures = _split_unnamable(cat.candidates)
    log(f"{cat.source}: probing {len(candidates)} videos ...")
    emit("ingest_start", source=cat.source, total=len(candidates))
    paths = [c.path for c in candidates]
    results = (probe_on_dask(paths, dask_address, log=log, limits=limits) if dask_address
               else probe_many(paths, workers=workers, log=log, limits=limits))
    rows = []
    for cand, res in zip(candidates, results):
        if "error" in res:
            failures.append(failure_row("ingest", resolved_path(cand.path), res["error"],
                                        video_id=cand.video_id,
                                        error_type=res["error_type"]))
        else:
            rows.append(_row(cand, cat.source, res))
    rows, dupes = _dedupe(rows, cat.source)
    failures += dupes
    failures += [failure_row("ingest", resolved_path(p), "no metadata row names this video (not indexed)",
                             error_type="Unmatched") for p in cat.unmatched_videos]
    failures += [failure_row("ingest", path, reason, error_type="UnsafePath") for path, reason in cat.refused]
    with lake_lock(lake, "index"):  # another ingest into this work dir waits: no lost rows
        _holdout(lake, cat.source, rows, test_size=test_size, seed=seed, resplit=resplit, log=log)
        index = _merge_index(lake, cat.source, rows)
        write_parquet_atomic(index, lake.index,
                             metadata={HOLDOUT_KEY: json.dumps({"test_size": test_size, "seed": seed})})
        digest = frame_digest(index)
        _failures(lake, roots, failures)
        unmatched = _write_unmatched(lake, cat)
    failed_paths: dict[str, list[str]] = {}
    for f in failures:
        if f["error_type"] != "Unmatched":
            dup = f["error_type"] == "Duplicate"
            key = "duplicate (exact copy of an indexed video)" if dup else f["reason"]
            failed_paths.setdefault(key, []).append(f["path"])
    failed = Counter({reason: len(paths) for reason, paths in failed_paths.items()})
    found = len(cat.candidates) + len(cat.unmatched_videos) + len(cat.refused)
    emit("ingest_end", source=cat.source, found=found, indexed=len(rows), failed=sum(failed.values()),
         seconds=time.perf_counter() - started, digest=digest)
    return IngestSummary(cat.source, found=found, indexed=len(rows), failed=dict(failed),
                         unmatched_videos=[printable_path(v) for v in cat.unmatched_videos],
                         unmatched_rows=cat.unmatched_rows, notes=cat.notes, index_path=str(lake.index),
                         unmatched_path=str(unmatched),
                         failed_paths={k: sorted(v) for k, v in failed_paths.items()}, digest=digest)
