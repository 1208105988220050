"""``fvc scan``: score every video of a folder (or a list) with the detector, in parallel on Dask.

The driver resolves the model once (registry name, alias or URI, pinned to its version) from
the registry and its ``MLmodel`` file, without loading it
(:func:`fvcflow.detector.predict.describe_detector`), hashes each file (BLAKE2b of the content,
:func:`fvcflow.store.file_hash`), and looks each hash up in the scan cache,
``<home>/scans/_cache/<model key>/``: checked Parquet parts of rows keyed by content, one part
per batch, written by the worker the moment the batch is scored (so a kill loses at most the
batches in flight), per (model, version, scoring settings). A rerun, or a resume after the scan
was killed, scores only the contents not cached yet; two files with the same content are scored
once. What is left goes to the Dask workers in batches (the local cluster, or
``dask_address``); each worker loads the detector once and scores
with :meth:`fvcflow.detector.predict.Detector.score`, the code path of ``fvc predict``, within
the video bounds in force (:mod:`fvcflow.video.limits`). A file that cannot be scored is a row
with its reason, never a stop.

Then the deviant-tile overlays (:mod:`fvcflow.stages.overlay`: the map of the local features over
the frame where they deviate most, and the top tiles' coordinates and robust z) are drawn on the
same workers for the videos ``overlays`` asks for (``fake``: those at or above the threshold, the
default; ``all``; ``none``); they depend on the content alone, so they are cached per content
under ``<home>/scans/_overlays/`` (parts, as the scores) whatever the model.

The scan writes ``<home>/scans/<name>/scores.parquet`` (one row per file named; the overlay's
JPEG under ``overlays/<content hash>.jpg``) and ``scan.html``, the triage page
(:mod:`fvcflow.scan.page`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import logging
import math
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import polars as pl
from distributed.diagnostics.plugin import WorkerPlugin

from fvcflow.config import Settings
from fvcflow.errors import DiskFullError, FvcError, VideoError, is_disk_full
from fvcflow.progress import emit
from fvcflow.scan.inputs import Inputs, collect
from fvcflow.store import (
    Lake,
    atomic_path,
    file_hash,
    printable_path,
    read_checked_parquet,
    write_checked_parquet,
    write_parquet_atomic,
)

log = logging.getLogger(__name__)

STAGE = "scan"
#: the verdict's threshold on P(fake) of a model logged without one (fvc train logs one per model)
THRESHOLD = 0.5
#: columns of scores.parquet, in order
COLUMNS = ("path", "content_hash", "prob_fake", "verdict", "calibrated", "calibration", "model",
           "registered_name", "version", "model_uri", "evidence_method", "evidence_approximate",
           "top_features", "overlay", "overlay_frame", "max_z", "top_tiles", "error", "error_type",
           "scanned_at")
#: thumbnails are the first frame, this wide (pixels); the overlays too
THUMB_WIDTH = 192
#: which videos get the deviant-tile overlay: those with verdict fake, every scored one, none
OVERLAYS = ("fake", "all", "none")
#: tiles listed per overlay (top_tiles)
TOP_TILES = 5
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class ModelRef:
    """The model a scan uses, pinned: what workers load and what the cache is keyed by."""

    target: str                  # models:/NAME/VERSION or the URI given
    name: str
    version: str | None
    model_name: str | None
    calibration: str | None
    tracking_uri: str | None
    threshold: float = THRESHOLD           # the model's verdict threshold (chosen at training)
    threshold_rule: str | None = None

    def key(self, settings: Settings) -> str:
        """Cache folder of this model's scores: the model, its version and the scoring settings."""
        payload = json.dumps({"target": self.target, "version": self.version,
                              "scale": settings.scale.model_dump(mode="json"),
                              "face_model": str(settings.features.face_model),
                              "faces": settings.faces.model_dump(mode="json"),
                              "limits": settings.limits.model_dump(mode="json")}, sort_keys=True)
        return hashlib.blake2b(payload.encode(), digest_size=12).hexdigest()


@dataclass
class ScanResult:
    """What a scan did: the table, where it went, and the counts a user reads."""

    name: str
    folder: Path
    scores: pl.DataFrame
    computed: int = 0            # contents scored by this run
    cached: int = 0              # files whose content was already scored (this run or before)
    failed: int = 0              # files without a score (rows with their reason)
    skipped: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def table(self) -> Path:
        return self.folder / "scores.parquet"

    @property
    def page(self) -> Path:
        return self.folder / "scan.html"


def scans_root(lake: Lake) -> Path:
    return lake.root / "scans"


def cache_dir(lake: Lake, model_key: str) -> Path:
    return scans_root(lake) / "_cache" / model_key


def overlay_dir(lake: Lake, settings: Settings) -> Path:
    """The overlays' cache: per content and the video bounds they were read within."""
    key = hashlib.blake2b(json.dumps({"limits": settings.limits.model_dump(mode="json"), "tiles": TOP_TILES,
                                      "width": THUMB_WIDTH}, sort_keys=True).encode(),
                          digest_size=8).hexdigest()
    return scans_root(lake) / "_overlays" / key


def resolve_model(settings: Settings, model: str | None) -> ModelRef:
    """The model of ``model`` (default the setting train.registered_name, latest version) pinned to
    its version; a user error when it cannot be loaded (before any video is read)."""
    from fvcflow.detector.predict import describe_detector

    det = describe_detector(settings.lake(), model or settings.train.registered_name,
                            tracking_uri=settings.train.tracking_uri)
    return ModelRef(det.uri, det.name, det.version, det.model_name, det.calibration,
                    settings.train.tracking_uri, det.threshold, det.threshold_rule)


# --------------------------------------------------------------------------- the worker side

_DETECTORS: dict[tuple[str, str, str | None], Any] = {}
_LOADING = threading.Lock()


def _detector(home: str, ref: ModelRef):
    """The detector of ``ref`` (its URI pins the version), loaded once per worker process: by the
    worker plugin before the batches start, or here by the first batch (a worker that joined
    later); the lock keeps two threads of one worker from loading it twice."""
    from fvcflow.detector.predict import load_detector

    k = (home, ref.target, ref.tracking_uri)
    with _LOADING:
        if k not in _DETECTORS:
            _DETECTORS[k] = load_detector(Lake.at(home), ref.target, tracking_uri=ref.tracking_uri)
    return _DETECTORS[k]


class PreloadDetector(WorkerPlugin):
    """Dask worker plugin: load the scan's detector on each worker as soon as it is registered
    (every worker at once, while the batches are being submitted), not in its first batch.
    Its name is keyed by the model URI + version, so registering it again for the same model on a
    long-lived cluster (``--dask-address``) is a no-op, and a new version loads the new model."""

    def __init__(self, home: str, ref: ModelRef):
        self.home, self.ref = home, ref
        self.name = "fvc-scan-model-" + hashlib.blake2b(
            json.dumps([home, ref.target, ref.version, ref.tracking_uri]).encode(), digest_size=8).hexdigest()

    def setup(self, worker=None) -> None:  # noqa: ARG002 - Dask's plugin signature
        try:
            _detector(self.home, self.ref)
        except Exception as exc:  # noqa: BLE001 - the first batch loads again and its rows say why
            log.warning("scan: preloading %s failed (%s: %s); the batches load it", self.ref.target,
                        type(exc).__name__, exc)


def thumbnail(path: str | os.PathLike, width: int = THUMB_WIDTH) -> bytes | None:
    """The first frame of ``path`` as a small JPEG (None when it cannot be decoded)."""
    from PIL import Image

    from fvcflow.video.read import read_rgb

    try:
        frames, _ = read_rgb(path, [0])
    except Exception:  # noqa: BLE001 - the score's own error says what is wrong with the file
        return None
    img = Image.fromarray(frames[0])
    h = max(1, round(img.height * width / max(img.width, 1)))
    buf = io.BytesIO()
    img.resize((width, h), Image.Resampling.BILINEAR).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def score_video(det, path: str, settings: Settings) -> dict[str, Any]:
    """One video's cache row: P(fake) and its evidence, or the reason it has none."""
    from fvcflow.detector.evidence import explain
    from fvcflow.detector.predict import scoring_options

    row: dict[str, Any] = {"prob_fake": None, "evidence_method": None, "evidence_approximate": None,
                           "top_features": None, "error": None, "error_type": None, "thumbnail": None}
    try:
        scored = explain(det, path, **scoring_options(settings))
        row.update(prob_fake=scored.prob_fake, evidence_method=scored.method,
                   evidence_approximate=scored.approximate, top_features=json.dumps(scored.top_features))
        row["thumbnail"] = thumbnail(path)
    except DiskFullError:
        raise
    except FvcError as exc:
        if is_disk_full(exc):
            raise DiskFullError(path) from None
        row.update(error=str(exc), error_type=type(exc).__name__)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(path) from None
        row.update(error=f"{path}: {type(exc).__name__}: {exc}"[:500], error_type=type(exc).__name__)
    except Exception as exc:  # noqa: BLE001 - one video's failure, whatever it is, is its row
        log.warning("scan: %s failed with %s: %s", path, type(exc).__name__, exc)
        row.update(error=f"{path}: {type(exc).__name__}: {exc}"[:500], error_type=type(exc).__name__)
    return row


_CACHE_SCHEMA = {"content_hash": pl.String, "prob_fake": pl.Float64, "evidence_method": pl.String,
                 "evidence_approximate": pl.Boolean, "top_features": pl.String, "error": pl.String,
                 "error_type": pl.String, "thumbnail": pl.Binary, "scored_at": pl.Float64,
                 "scored_path": pl.String}


def score_batch(home: str, ref: ModelRef, model_key: str, jobs: list[tuple[str, str]],
                settings: Settings) -> list[dict[str, Any]]:
    """Score ``jobs`` ((content hash, path) pairs) on a worker; the batch's rows are cached as one
    part the moment it is done, so a scan killed mid-way keeps every batch finished. Returns the rows."""
    det = _detector(home, ref)
    out = [{"content_hash": content, **score_video(det, path, settings), "scored_at": time.time(),
            "scored_path": printable_path(path)} for content, path in jobs]
    if out:
        write_checked_parquet(pl.DataFrame(out, schema=_CACHE_SCHEMA),
                              cache_dir(Lake.at(home), model_key) / _part_name())
    return out


def _part_name() -> str:
    return f"part-{time.time_ns():x}-{uuid.uuid4().hex[:8]}.parquet"


_OVERLAY_SCHEMA = {"content_hash": pl.String, "jpeg": pl.Binary, "overlay_frame": pl.Int64,
                   "max_z": pl.Float64, "top_tiles": pl.String, "overlay_error": pl.String,
                   "scored_at": pl.Float64}


def overlay_batch(folder: str, jobs: list[tuple[str, str]], settings: Settings) -> list[dict[str, Any]]:
    """The deviant-tile overlays of ``jobs`` ((content hash, path) pairs) on a worker, cached as one
    part in ``folder`` when the batch is done. A video whose overlay cannot be drawn gets its reason
    (``overlay_error``); its score stands."""
    from fvcflow.detector.evidence import tile_overlay

    out = []
    for content, path in jobs:
        row: dict[str, Any] = {"content_hash": content, "jpeg": None, "overlay_frame": None, "max_z": None,
                               "top_tiles": None, "overlay_error": None}
        try:
            ov = tile_overlay(path, limits=settings.limits.video_limits(), small=THUMB_WIDTH, tiles=TOP_TILES)
            row.update(jpeg=ov["jpeg"], overlay_frame=ov["frame"], max_z=ov["max_z"],
                       top_tiles=json.dumps(ov["top_tiles"]))
        except DiskFullError:
            raise
        except Exception as exc:  # noqa: BLE001 - the overlay is evidence; its failure is said, not fatal
            if is_disk_full(exc):
                raise DiskFullError(path) from None
            row["overlay_error"] = f"{type(exc).__name__}: {exc}"[:300]
        out.append({**row, "scored_at": time.time()})
    if out:
        write_checked_parquet(pl.DataFrame(out, schema=_OVERLAY_SCHEMA), Path(folder) / _part_name())
    return out


# --------------------------------------------------------------------------- the driver side

def _hash(path: Path) -> tuple[str | None, str | None]:
    """(content hash, None) or (None, the reason the file cannot be read)."""
    try:
        if not path.is_file():
            return None, f"{printable_path(path)}: not a regular file" if path.exists() else \
                f"{printable_path(path)}: no such file"
        return file_hash(path), None
    except OSError as exc:
        return None, f"{printable_path(path)}: cannot read ({exc.strerror or exc})"


#: a model's cache is compacted into one part when a scan leaves more parts than this
COMPACT_AT = 64


def _cache_parts(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


def read_cache(lake: Lake, model_key: str, contents=None) -> dict[str, dict[str, Any]]:
    """Every cached row of ``model_key`` by content hash (only ``contents`` when given); a damaged
    part is left out with a warning (its videos are scored again). The newest row of a content wins."""
    return read_parts(cache_dir(lake, model_key), contents)


def read_parts(folder: Path, contents=None) -> dict[str, dict[str, Any]]:
    """The rows of the checked Parquet parts in ``folder`` by ``content_hash`` (newest wins)."""
    wanted = None if contents is None else set(contents)
    rows: dict[str, dict[str, Any]] = {}
    for part in _cache_parts(folder):
        try:
            df = read_checked_parquet(part)
        except FvcError as exc:
            log.warning("scan: damaged cache part, rescoring its videos: %s", exc)
            continue
        if df is None or not df.height:
            continue
        if wanted is not None:
            df = df.filter(pl.col("content_hash").is_in(list(wanted)))
        for r in df.iter_rows(named=True):
            old = rows.get(r["content_hash"])
            if old is None or (r["scored_at"] or 0) >= (old["scored_at"] or 0):
                rows[r["content_hash"]] = r
    return rows


def compact_cache(folder: Path, schema: dict, *, at: int = COMPACT_AT) -> int:
    """Fold the cache parts in ``folder`` into one when there are more than ``at``: the new part is
    written (atomically) before the parts it holds are deleted, so a kill at any moment loses
    nothing. Returns the number of parts folded (0: left as they are)."""
    parts = _cache_parts(folder)
    if len(parts) <= at:
        return 0
    frames = []
    for part in parts:
        try:
            df = read_checked_parquet(part)
        except FvcError:
            continue                # damaged: left in place, skipped by read_cache
        if df is not None:
            frames.append((part, df.select(list(schema)).cast(schema)))
    if not frames:
        return 0
    whole = pl.concat([df for _, df in frames]).sort("scored_at").unique("content_hash", keep="last")
    write_checked_parquet(whole, folder / _part_name())
    for part, _ in frames:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
    return len(frames)


def _batches(jobs: list[tuple[str, str]], workers: int, max_size: int = 8) -> list[list[tuple[str, str]]]:
    """About four batches per worker (balance), at most ``max_size`` videos each (progress, resume)."""
    if not jobs:
        return []
    n = max(min(len(jobs), 4 * workers), math.ceil(len(jobs) / max_size))
    return [jobs[i::n] for i in range(n)]


class _Engine:
    """The Dask client of a scan, started on first use (a wholly cached scan starts none)."""

    def __init__(self, settings: Settings):
        self.settings, self._stack, self.client = settings, contextlib.ExitStack(), None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._stack.close()

    def run(self, fn, batches: list, *args, plugin=None) -> Iterator[list[dict[str, Any]]]:
        """``fn(*args[:-1], batch, args[-1])`` for each batch, results as they come."""
        from distributed import Client, as_completed

        from fvcflow.engine import dask_cluster, scheduler_lost

        try:
            if self.client is None:
                address = self._stack.enter_context(dask_cluster(self.settings))
                self.client = self._stack.enter_context(Client(address, set_as_default=False))
            if plugin is not None:
                self.client.register_plugin(plugin)
            *head, last = args
            futures = [self.client.submit(fn, *head, b, last, pure=False) for b in batches]
            for fut in as_completed(futures, loop=self.client.loop):
                yield fut.result()
        except Exception as exc:
            raise (scheduler_lost(self.settings.dask_address, exc) or exc) from None


def default_name() -> str:
    return dt.datetime.now().strftime("scan-%Y%m%d-%H%M%S")


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name) or name.startswith("_"):
        raise FvcError(f"scan name {name!r}: use letters, digits, '.', '_' and '-' (at most 100, "
                       "not starting with '_' or '.')")
    return name


def run_scan(settings: Settings, paths: list[str | os.PathLike], *, model: str | None = None,
             name: str | None = None, threshold: float | None = None, overlays: str = "fake") -> ScanResult:
    """Scan ``paths`` (files, folders, lists) with ``model``; write scores.parquet and scan.html.
    ``overlays``: which scored videos get the deviant-tile overlay (:data:`OVERLAYS`).

    >>> res = run_scan(Settings.load().resolved(), ["videos/"])     # doctest: +SKIP
    >>> res.scores.select("path", "prob_fake", "verdict").head(3)     # doctest: +SKIP
    """
    t0 = time.perf_counter()
    name = check_name(name or default_name())
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise FvcError(f"threshold {threshold}: a probability strictly between 0 and 1")
    if overlays not in OVERLAYS:
        raise FvcError(f"overlays {overlays!r}: one of {', '.join(OVERLAYS)}")
    inputs: Inputs = collect(paths)
    lake = settings.lake()
    ref = resolve_model(settings, model)
    if threshold is None:                   # the model's own, chosen at training
        threshold = ref.threshold
    model_key = ref.key(settings)
    hashes: dict[Path, tuple[str | None, str | None]] = {p: _hash(p) for p in inputs.files}
    rows = read_cache(lake, model_key, {c for c, _ in hashes.values() if c is not None})
    todo: dict[str, str] = {}                   # content -> the first path with it
    for p, (content, _) in hashes.items():
        if content is not None and content not in rows and content not in todo:
            todo[content] = str(p)
    n_files = len(inputs.files)
    emit("stage_start", stage=STAGE, total=n_files, todo=len(todo), cached=n_files - len(todo))
    failed_now = 0
    clean = settings.without_secrets()
    home = str(settings.home)
    with _Engine(settings) as engine:
        if todo:
            batches = _batches(list(todo.items()), settings.n_workers())
            for batch in engine.run(score_batch, batches, home, ref, model_key, clean,
                                    plugin=PreloadDetector(home, ref)):   # the model, on every worker at once
                for r in batch:
                    rows[r["content_hash"]] = r
                bad = sum(r["error"] is not None for r in batch)
                failed_now += bad
                emit("stage_batch", stage=STAGE, done=len(batch) - bad, failed=bad)
            compact_cache(cache_dir(lake, model_key), _CACHE_SCHEMA)
        drawn = _overlays(engine, settings, hashes, rows, threshold, overlays)
    result = _assemble(settings, inputs, hashes, rows, ref, name, threshold, drawn)
    result.computed, result.cached = len(todo), n_files - len(todo)
    result.seconds = time.perf_counter() - t0
    reasons: dict[str, int] = {}
    for r in result.scores.filter(pl.col("error").is_not_null()).iter_rows(named=True):
        reasons[r["error_type"] or "error"] = reasons.get(r["error_type"] or "error", 0) + 1
    emit("stage_end", stage=STAGE, videos=n_files, done=len(todo) - failed_now,
         cached=n_files - len(todo), failed=failed_now, seconds=result.seconds, reasons=reasons)
    return result


def _overlays(engine: _Engine, settings: Settings, hashes, rows, threshold: float,
              which: str) -> dict[str, dict[str, Any]]:
    """The overlays of the scored contents ``which`` asks for, from their cache or drawn now."""
    if which == "none":
        return {}
    want = {c for c, r in rows.items() if r["prob_fake"] is not None
            and (which == "all" or r["prob_fake"] >= threshold)}
    if not want:
        return {}
    folder = overlay_dir(settings.lake(), settings)
    drawn = read_parts(folder, want)
    first = {}
    for p, (content, _) in hashes.items():
        if content in want and content not in drawn:
            first.setdefault(content, str(p))
    if first:
        batches = _batches(list(first.items()), settings.n_workers())
        for batch in engine.run(overlay_batch, batches, str(folder), settings.without_secrets()):
            drawn.update((r["content_hash"], r) for r in batch)
        compact_cache(folder, _OVERLAY_SCHEMA)
    return drawn


def _assemble(settings: Settings, inputs: Inputs, hashes, rows, ref: ModelRef, name: str,
              threshold: float, drawn: dict[str, dict[str, Any]]) -> ScanResult:
    from fvcflow.scan.page import write_page

    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    folder = scans_root(settings.lake()) / name
    images = folder / "overlays"
    if drawn:
        images.mkdir(parents=True, exist_ok=True)
    out = []
    for p in inputs.files:
        content, why = hashes[p]
        r = rows.get(content) if content else None
        ov = drawn.get(content) if content else None
        image = None
        if ov is not None and ov.get("jpeg"):
            image = images / f"{content}.jpg"
            if not image.exists():
                with atomic_path(image) as tmp:
                    tmp.write_bytes(ov["jpeg"])
        prob = r["prob_fake"] if r else None
        error = why if content is None else (r["error"] if r else f"{printable_path(p)}: not scored")
        out.append({
            "path": printable_path(p), "content_hash": content, "prob_fake": prob,
            "verdict": None if prob is None else ("fake" if prob >= threshold else "real"),
            "calibrated": ref.calibration is not None, "calibration": ref.calibration,
            "model": ref.model_name, "registered_name": ref.name, "version": ref.version,
            "model_uri": ref.target,
            "evidence_method": r.get("evidence_method") if r else None,
            "evidence_approximate": r.get("evidence_approximate") if r else None,
            "top_features": r.get("top_features") if r else None,
            "overlay": str(image) if image else None,
            "overlay_frame": ov.get("overlay_frame") if ov else None,
            "max_z": ov.get("max_z") if ov else None,
            "top_tiles": ov.get("top_tiles") if ov else None,
            "error": error if prob is None else None,
            "error_type": (r.get("error_type") if r else "OSError") if prob is None else None,
            "scanned_at": now})
    schema = {"path": pl.String, "content_hash": pl.String, "prob_fake": pl.Float64, "verdict": pl.String,
              "calibrated": pl.Boolean, "calibration": pl.String, "model": pl.String,
              "registered_name": pl.String, "version": pl.String, "model_uri": pl.String,
              "evidence_method": pl.String, "evidence_approximate": pl.Boolean, "top_features": pl.String,
              "overlay": pl.String, "overlay_frame": pl.Int64, "max_z": pl.Float64, "top_tiles": pl.String,
              "error": pl.String, "error_type": pl.String, "scanned_at": pl.String}
    scores = pl.DataFrame(out, schema=schema).with_columns(scan=pl.lit(name), threshold=pl.lit(threshold))
    folder.mkdir(parents=True, exist_ok=True)
    res = ScanResult(name, folder, scores, failed=int(scores["prob_fake"].is_null().sum()),
                     skipped=list(inputs.skipped))
    write_parquet_atomic(scores, res.table)
    write_page(res, settings, thumbnails={c: r.get("thumbnail") for c, r in rows.items()},
               overlays={c: r.get("jpeg") for c, r in drawn.items()}, threshold=threshold)
    return res


__all__ = ["COLUMNS", "ModelRef", "ScanResult", "VideoError", "run_scan", "score_batch", "score_video"]
