"""What each video stage computes: its jobs (from the tables before it) and its per-video work.

A spec is data plus two functions; :mod:`fvcflow.stages.runner` does the caching, batching and
publishing for all of them alike.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import polars as pl

from fvcflow.config import Settings
from fvcflow.errors import FvcError
from fvcflow.kernels.config import NUMERICS
from fvcflow.schema import (
    FACE_VERSION,
    FEATURE_SCHEMA_VERSION,
    KEYS,
    LOCAL_VERSION,
    STAGE4_PREFIX,
    STAGE_TABLES,
    augmented_id,
    augmented_variant,
    blend_variant,
    blended_id,
)
from fvcflow.stages.augment import (
    augment_video,
    blend_video,
    draw_blend_params,
    draw_params,
    face_track_region,
)
from fvcflow.stages.facetrack import (
    TRACK_VERSION,
    FrameTracker,
    fallback_note,
    make_detector,
    track_as,
    track_video,
)
from fvcflow.stages.features import video_features
from fvcflow.stages.scale import LETTERBOX_VERSION, scale_video
from fvcflow.store import Lake, cache_key, cache_keys, file_hash, read_parquet, write_parquet_atomic
from fvcflow.video import probe
from fvcflow.video.write import STAGE_PRESET

log = logging.getLogger("fvcflow.stages")


@dataclass(frozen=True)
class StageSpec:
    name: str                                            # failures' "stage" column, cache folder
    table: Callable[[Lake], Path]                        # the Parquet this stage publishes
    jobs: Callable[[Lake, Settings], pl.DataFrame]       # the job table (:func:`job_table`)
    run: Callable[[Any, Settings], dict]                 # one job -> its result columns
    # the keys an older fvcflow gave the same jobs (their results are adopted, not made again)
    legacy_keys: Callable[[pl.DataFrame, Settings], list[str]] | None = None


CARRY, PARAM = "carry.", "params."      # prefixes of the job table's carry and params columns
UNSAFE = r"[^A-Za-z0-9._-]"


def _safe(video_id: str) -> str:
    return re.sub(UNSAFE, "_", video_id)


def _safe_expr(col: str = "video_id") -> pl.Expr:
    """:func:`_safe` of a column, vectorised (the same names: one ``_`` per unsafe character)."""
    return pl.col(col).str.replace_all(UNSAFE, "_")


def job_table(frame: pl.DataFrame, *, key: str | pl.Series, carry: dict[str, pl.Expr] | list[str],
              params: dict[str, pl.Expr] | None = None, video_id: pl.Expr | None = None) -> pl.DataFrame:
    """The jobs of a stage as one table (a million jobs are a million rows, not a million objects):
    ``key``, ``video_id``, ``path``, then ``carry.<name>`` (key columns passed through to the row)
    and ``params.<name>`` columns; :func:`fvcflow.stages.runner.jobs_of` makes ``Job``s of rows."""
    if isinstance(carry, list):
        carry = {c: pl.col(c) for c in carry}
    exprs = [(pl.lit(key) if isinstance(key, str) else pl.Series("key", key, dtype=pl.Utf8)).alias("key"),
             (video_id if video_id is not None else pl.col("video_id")).alias("video_id"),
             pl.col("path").alias("path")]
    exprs += [e.alias(CARRY + c) for c, e in carry.items()]
    exprs += [e.alias(PARAM + c) for c, e in (params or {}).items()]
    return frame.select(exprs)


def _index(lake: Lake) -> pl.DataFrame:
    index = read_parquet(lake.index)
    if index is None:
        raise FvcError(f"no video index at {lake.index}: run the ingest stage first (fvc ingest ...)")
    return index


def feature_inputs(lake: Lake) -> list[dict]:
    """Rows of every video whose features are computed: the originals and their augmented copies."""
    rows = _index(lake).to_dicts()
    augmented = read_parquet(lake.stage1)
    if augmented is not None and augmented.height:
        rows += augmented.to_dicts()
    return rows


def feature_frame(lake: Lake) -> pl.DataFrame:
    """:func:`feature_inputs` as one table (video_id, path, content_hash and the key columns)."""
    cols = ["video_id", "path", "content_hash", *KEYS]
    frames = [_index(lake)]
    augmented = read_parquet(lake.stage1)
    if augmented is not None and augmented.height:
        frames.append(augmented)
    frames = [f.select([pl.col(c) if c in f.columns else pl.lit(None).alias(c) for c in cols])
              for f in frames]
    return pl.concat(frames, how="vertical_relaxed") if len(frames) > 1 else frames[0]


# stage 1 -------------------------------------------------------------------------------------
DST_ROOT = "stage1/videos"      # a copy's file as its key names it: relative to the work dir
def _augment_jobs(lake: Lake, s: Settings) -> pl.DataFrame:
    """``augment.copies`` copies of every labelled training video (none of the test hold-out) and
    ``augment.self_blend`` pseudo-fakes of each real. The key names the copy's file (relative to
    the work dir): two videos of the same content are two sources whose copies differ (each copy's
    parameters are drawn from its source's id), so they must not share a cached row."""
    cfg = s.augment
    index = _index(lake)
    trains = pl.col("label").is_not_null()
    if "split" in index.columns:      # the test hold-out (decided at ingest): no copies, they train nothing
        trains &= pl.col("split").fill_null("") != "test"
    rows = index.filter(trains).with_row_index("_row").with_columns(_safe_expr().alias("_safe"))
    hashes = rows["content_hash"].to_list()
    folder = lake.stage1_videos
    base = {"seed": cfg.seed, "crf": cfg.crf, "preset": STAGE_PRESET}
    frames = []
    for k in range(1, cfg.copies + 1):
        rel = (pl.col("_safe") + f"/aug{k}.mp4")
        dsts = rows.select(rel)[:, 0].to_list()
        keys = cache_keys(hashes, "augment", {**base, "copy": k},
                          varying={"dst": [f"{DST_ROOT}/{d}" for d in dsts]})
        frames.append(job_table(
            rows, key=keys, video_id=pl.col("video_id") + augmented_id("", k),
            carry={**{c: pl.col(c) for c in KEYS}, "variant": pl.lit(augmented_variant(k)),
                   "source_video_id": pl.col("video_id")},
            params={"dst": pl.lit(str(folder) + "/") + rel, "copy": pl.lit(k),
                    "src_hash": pl.col("content_hash")},
        ).with_columns(rows["_row"].alias("_row"), pl.lit(k).alias("_k")))
    reals = rows.filter(pl.col("label") == 0)       # self-blended pseudo-fakes of the reals (issue 22)
    rh = reals["content_hash"].to_list()
    region = _blend_region(s)
    for k in range(1, cfg.self_blend + 1):
        rel = pl.col("_safe") + f"/blend{k}.mp4"
        dsts = reals.select(rel)[:, 0].to_list()
        keys = cache_keys(rh, "augment", {**base, "blend": k, **region},
                          varying={"dst": [f"{DST_ROOT}/{d}" for d in dsts]})
        frames.append(job_table(
            reals, key=keys, video_id=pl.col("video_id") + blended_id("", k),
            carry={"group_id": pl.col("group_id"), "label": pl.lit(1, dtype=index["label"].dtype),
                   "label_raw": pl.lit("pseudo-fake", dtype=pl.Utf8), "source": pl.col("source"),
                   "variant": pl.lit(blend_variant(k)), "source_video_id": pl.col("video_id")},
            params={"dst": pl.lit(str(folder) + "/") + rel,
                    "mask_dst": pl.lit(str(folder) + "/") + pl.col("_safe") + f"/blend{k}-mask.mkv",
                    "copy": pl.lit(k), "blend": pl.lit(True), "src_hash": pl.col("content_hash")},
        ).with_columns(reals["_row"].alias("_row"), pl.lit(cfg.copies + k).alias("_k")))
    if not frames:
        return job_table(rows, key=pl.Series("key", [], dtype=pl.Utf8), carry=list(KEYS))
    # one source's copies, then its pseudo-fakes, source by source (the order of the index)
    return pl.concat(frames, how="diagonal_relaxed").sort("_row", "_k").drop("_row", "_k")


def _augment_legacy_keys(jobs: pl.DataFrame, s: Settings) -> list[str]:
    """The keys stage 1 gave these jobs before a key named the copy's file (source content hash,
    copy or pseudo-fake number and settings only)."""
    cfg = s.augment
    base = {"seed": cfg.seed, "crf": cfg.crf, "preset": STAGE_PRESET}
    blend = jobs[PARAM + "blend"].to_list() if PARAM + "blend" in jobs.columns else [None] * jobs.height
    region = _blend_region(s)
    return [cache_key(h, "augment", {**base, **({"blend": k, **region} if b else {"copy": k})})
            for h, k, b in zip(jobs[PARAM + "src_hash"].to_list(), jobs[PARAM + "copy"].to_list(), blend)]


def _blend_region(s: Settings) -> dict:
    """What decides a pseudo-fake's blend region, for its key: with ``blend_region = "face"`` the
    face tracker's settings (the region is the source's main face track), else nothing."""
    if s.augment.blend_region != "face":
        return {}
    return {"region": "face", "faces": s.faces.model_dump(), "face_model": str(s.features.face_model),
            "track_version": TRACK_VERSION}


def _source_tracks(job, s: Settings) -> pl.DataFrame:
    """The face tracks of a pseudo-fake's source (its blend region), as the faces stage tracks
    them: tracked once per source and tracker settings and kept under ``faces/blend/`` (named by
    the source's content hash and the tracker's cache key), so that its other pseudo-fakes
    (``augment.self_blend`` > 1) and later runs read them instead of tracking it again. An
    unreadable file is tracked again."""
    name = cache_key(job.params["src_hash"], "blend-tracks", _faces_config(s, face_detector(s)))
    path = Lake.at(s.home).faces_tracks.parent / "blend" / f"{name}.parquet"
    if path.is_file():
        try:
            return pl.read_parquet(path)
        except Exception:  # noqa: BLE001 - a damaged side file: tracked again, never trusted
            pass
    table = track_as(job.path, s.faces.model_dump(), s.features.face_model)[0]
    write_parquet_atomic(table, path)
    return table


def _augment_run(job, s: Settings) -> dict:
    if job.params.get("blend"):
        params = draw_blend_params(job.carry["source_video_id"], job.params["copy"], seed=s.augment.seed)
        region = None
        if s.augment.blend_region == "face":     # the source's main face track, as the faces stage tracks it
            region = face_track_region(_source_tracks(job, s))
        out = blend_video(job.path, job.params["dst"], job.params["mask_dst"], params, chunk=s.augment.chunk,
                          crf=s.augment.crf, threads=s.threads_per_worker, region=region)
        out["ops"] = "self-blend,face-track" if region is not None else "self-blend,drawn"
        return {**out, "path": job.params["dst"], "content_hash": file_hash(job.params["dst"])}
    params = draw_params(job.carry["source_video_id"], job.params["copy"], seed=s.augment.seed)
    out = augment_video(job.path, job.params["dst"], params, chunk=s.augment.chunk, crf=s.augment.crf,
                        threads=s.threads_per_worker)
    return {**out, "path": job.params["dst"], "content_hash": file_hash(job.params["dst"])}


# the face tracks -----------------------------------------------------------------------------
def face_detector(s: Settings):
    """The face-track stage's detector as the settings name it (``faces.detector``)."""
    return make_detector(s.faces.detector, s.features.face_model, max_side=s.faces.max_side)


def _faces_config(s: Settings, detector) -> dict:
    model = s.features.face_model if detector.kind == "yunet" else None
    return {"v": TRACK_VERSION, "detector": detector.name,
            "model": None if model is None else file_hash(model), "every": s.faces.every,
            "full_every": s.faces.full_every,
            "max_tracks": s.faces.max_tracks, "max_side": s.faces.max_side}


def shares_decode(s: Settings) -> bool:
    """Whether the faces stage also computes each video's stage 2 row from the same decode (the
    features stage then takes it, :func:`_shared_row`): when this run has the features stage.
    With ``features.faces`` on, the row's face columns follow the tracks this same decode gives
    (``video_features(track_faces=True)``: the frames are measured once the tracks are done)."""
    return "features" in s.stages


def _shared_dst(lake: Lake, video_id: str) -> Path:
    return lake.faces_tracks.parent / "rows" / f"{_safe(video_id)}.parquet"


def _faces_jobs(lake: Lake, s: Settings) -> pl.DataFrame:
    detector = face_detector(s)
    note = fallback_note(detector)
    if note:
        log.warning("%s", note)     # said once per run of the stage, where it is planned
    rows = feature_frame(lake)
    names = rows.select(_safe_expr() + ".parquet")[:, 0].to_list()
    hashes = rows["content_hash"].to_list()
    keys = cache_keys(hashes, "faces", _faces_config(s, detector), varying={"dst": names})
    params = {"dst": pl.lit(str(lake.faces_tracks) + "/") + _safe_expr() + ".parquet"}
    if shares_decode(s):        # this run's stage 2 key: the row computed from the tracker's decode
        params |= {"features_key": pl.Series(cache_keys(hashes, "features", _feature_config(s, faces=True)),
                                             dtype=pl.Utf8),
                   "features_dst": pl.lit(f"{_shared_dst(lake, '').parent}/") + _safe_expr() + ".parquet"}
    return job_table(rows, key=keys, carry=list(KEYS), params=params)


def _faces_run(job, s: Settings) -> dict:
    feature_key = job.params.get("features_key")
    if feature_key:             # one decode: the stage 2 row, its detection frames fed to the tracker
        info = probe(job.path)
        tracker = FrameTracker(face_detector(s), info, every=s.faces.every, max_tracks=s.faces.max_tracks,
                               full_every=s.faces.full_every,
                               threads=s.threads_per_worker)
        row = video_features(job.path, info=info, tracker=tracker, track_faces=s.features.faces,
                             **_feature_kwargs(s))
        table, summary = tracker.result()
        write_parquet_atomic(pl.DataFrame([{**row, "features_key": feature_key}]), job.params["features_dst"])
    else:
        table, summary = track_video(job.path, face_detector(s), every=s.faces.every,
                                     full_every=s.faces.full_every, max_tracks=s.faces.max_tracks,
                                     strategy=s.features.strategy, threads=s.threads_per_worker)
    dst = job.params["dst"]
    write_parquet_atomic(table, dst)
    return {**summary, "tracks_path": dst, "content_hash": file_hash(dst)}


def _shared_row(job, s: Settings) -> dict | None:
    """The stage 2 row the faces stage computed from its decode of this video with this job's
    cache key (:func:`shares_decode`), or None (none, another key, unreadable, or the features
    stage forced): the features stage then decodes the video itself."""
    if "features" in s.force:
        return None
    path = _shared_dst(Lake.at(s.home), job.video_id)
    try:
        table = pl.read_parquet(path) if path.is_file() else None
    except Exception:  # noqa: BLE001 - a damaged side file: computed again, never trusted
        return None
    if table is None or table.height != 1 or table["features_key"][0] != job.key:
        return None
    return {k: v for k, v in table.row(0, named=True).items() if k != "features_key"}


# stages 2 and 4 ------------------------------------------------------------------------------
def _feature_config(s: Settings, *, faces: bool) -> dict:
    """What the feature row depends on beyond the video: the feature schema version (a digest of
    the kernel tables: a new feature recomputes the rows), the kernels' numerics version (rows
    computed before the kernels gave the same bits on every CPU are computed again), the
    local/face versions and settings."""
    cfg: dict = {"schema": FEATURE_SCHEMA_VERSION, "numerics": NUMERICS}
    if s.features.local:
        cfg["local"] = LOCAL_VERSION
    if faces and s.features.faces:      # the face columns come from the face tracker's main track
        cfg["faces"] = {"v": FACE_VERSION, "tracker": _faces_config(s, face_detector(s))}
    return cfg


def _feature_kwargs(s: Settings) -> dict:
    return dict(strategy=s.features.strategy, threads=s.threads_per_worker, local=s.features.local)


def _feature_jobs(lake: Lake, s: Settings) -> pl.DataFrame:
    cfg = _feature_config(s, faces=True)
    rows = feature_frame(lake)
    keys = cache_keys(rows["content_hash"].to_list(), "features", cfg)
    params = None
    if s.features.faces:
        tracks = current_tracks(lake, s)
        params = {"tracks": pl.col("video_id").replace_strict(tracks, default=None, return_dtype=pl.Utf8)}
    return job_table(rows, key=keys, carry=list(KEYS), params=params)


def current_tracks(lake: Lake, s: Settings) -> dict[str, str]:
    """video_id -> its tracks file, for the videos whose faces-stage row was made with the current
    ``faces.*`` settings (its cache key is the one the stage would compute now)."""
    faces = read_parquet(lake.faces)
    if faces is None or not faces.height or "cache_key" not in faces.columns:
        return {}
    cfg = _faces_config(s, face_detector(s))
    rows = feature_frame(lake)
    want = dict(zip(rows["video_id"].to_list(),
                    cache_keys(rows["content_hash"].to_list(), "faces", cfg,
                               varying={"dst": rows.select(_safe_expr() + ".parquet")[:, 0].to_list()})))
    return {r["video_id"]: r["tracks_path"]
            for r in faces.select("video_id", "cache_key", "tracks_path").to_dicts()
            if want.get(r["video_id"]) == r["cache_key"] and Path(r["tracks_path"]).is_file()}


def face_tracks_of(path, s: Settings, tracks: str | None = None) -> pl.DataFrame:
    """The tracks table of the video at ``path``: the faces stage's file when given, else tracked
    now with the same settings (the same table: the tracker is deterministic)."""
    if tracks is not None:
        return pl.read_parquet(tracks)
    return track_video(path, face_detector(s), every=s.faces.every, max_tracks=s.faces.max_tracks,
                       full_every=s.faces.full_every,
                       strategy=s.features.strategy, threads=s.threads_per_worker)[0]


def _feature_run(job, s: Settings) -> dict:
    shared = _shared_row(job, s)
    if shared is not None:
        return shared
    kw = _feature_kwargs(s)
    if s.features.faces:
        kw["face_tracks"] = face_tracks_of(job.path, s, job.params.get("tracks"))
    return video_features(job.path, **kw)


def _scaled_feature_jobs(lake: Lake, s: Settings) -> pl.DataFrame:
    scaled = read_parquet(lake.stage3)
    if scaled is None:
        raise FvcError(f"no scaled videos at {lake.stage3}: run the scale stage first")
    cfg = _feature_config(s, faces=False)
    keys = cache_keys(scaled["content_hash"].to_list(), "scaled_features", cfg)
    scaled = scaled.with_columns([pl.lit(None).alias(c) for c in KEYS if c not in scaled.columns])
    return job_table(scaled, key=keys, carry=[*KEYS, "is_upscaled", "is_downscaled"])


def _scaled_feature_run(job, s: Settings) -> dict:
    return video_features(job.path, prefix=STAGE4_PREFIX, **_feature_kwargs(s))


# stage 3 -------------------------------------------------------------------------------------
def _scale_jobs(lake: Lake, s: Settings) -> pl.DataFrame:
    rows = feature_frame(lake)
    # the output file is part of the result, so the key names it: equal inputs, distinct files
    cfg = {"size": s.scale.size, "crf": s.scale.crf, "preset": STAGE_PRESET, "letterbox": LETTERBOX_VERSION}
    vae = {}
    if s.scale.method == "autoencoder":      # its weights resolved here, at plan time: not cached -> one line
        from fvcflow.models.weights import resolve_autoencoder

        weights = resolve_autoencoder(s.scale.weights)
        vae = {"vae": pl.lit(str(weights.folder)), "vae_identity": pl.lit(weights.identity)}
        cfg |= {"method": "autoencoder", "weights": weights.identity, "tile": s.scale.tile}
    keys = cache_keys(rows["content_hash"].to_list(), "scale", cfg,
                      varying={"dst": rows.select(_safe_expr() + ".mp4")[:, 0].to_list()})
    return job_table(rows, key=keys, carry=list(KEYS),
                     params={"dst": pl.lit(str(lake.stage3_videos) + "/") + _safe_expr() + ".mp4", **vae})


def _scale_run(job, s: Settings) -> dict:
    dst = job.params["dst"]
    if "vae" in job.params:                 # scale.method = "autoencoder" (torch and diffusers load here)
        from fvcflow.stages.autoencoder import scale_with_vae

        out = scale_with_vae(job.path, dst, job.params["vae"], job.params["vae_identity"], s.scale,
                             threads=s.threads_per_worker)
        return {**out, "src_path": job.path, "path": dst, "content_hash": file_hash(dst)}
    out = scale_video(job.path, dst, size=s.scale.size, crf=s.scale.crf, threads=s.threads_per_worker)
    return {**out, "src_path": job.path, "path": dst, "content_hash": file_hash(dst)}


def scale_as(src: str | Path, dst: str | Path, scale=None, *, threads: bool | int | None = None) -> dict:
    """Stage 3 of one video as the ``scale`` settings (:class:`fvcflow.config.ScaleConfig`; None:
    the defaults) say: the letterbox (:func:`scale_video`) or, with ``method = "autoencoder"``,
    through the VAE (:mod:`fvcflow.stages.autoencoder`; its weights resolved from the cache only,
    a one-line FvcError when they are not there). Stage 3 and every way of scoring a new video
    (``fvc predict``, scan, the model server, the app) scale through here, so a detector sees a
    new video as it saw its training videos."""
    if scale is None or scale.method == "letterbox":
        size, crf = (256, 18) if scale is None else (scale.size, scale.crf)
        return scale_video(src, dst, size=size, crf=crf, threads=threads)
    from fvcflow.models.weights import resolve_autoencoder
    from fvcflow.stages.autoencoder import scale_with_vae

    weights = resolve_autoencoder(scale.weights)
    return scale_with_vae(src, dst, str(weights.folder), weights.identity, scale, threads=threads)


def _table(stage: str) -> Callable[[Lake], Path]:
    """Where ``stage`` publishes its table (``fvcflow.schema.STAGE_TABLES``)."""
    return lambda lake: lake.path(STAGE_TABLES[stage])


SPECS: dict[str, StageSpec] = {
    "augment": StageSpec("augment", _table("augment"), _augment_jobs, _augment_run, _augment_legacy_keys),
    "faces": StageSpec("faces", _table("faces"), _faces_jobs, _faces_run),
    "features": StageSpec("features", _table("features"), _feature_jobs, _feature_run),
    "scale": StageSpec("scale", _table("scale"), _scale_jobs, _scale_run),
    "scaled_features": StageSpec("scaled_features", _table("scaled_features"), _scaled_feature_jobs,
                                 _scaled_feature_run),
}
