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
from fvcflow.stages.augment import augment_video, blend_video, draw_blend_params, draw_params
from fvcflow.stages.facetrack import TRACK_VERSION, fallback_note, make_detector, track_video
from fvcflow.stages.features import video_features
from fvcflow.stages.scale import LETTERBOX_VERSION, scale_video
from fvcflow.store import Lake, cache_key, cache_keys, file_hash, read_parquet, write_parquet_atomic
from fvcflow.video.write import STAGE_PRESET

log = logging.getLogger("fvcflow.stages")


@dataclass(frozen=True)
class StageSpec:
    name: str                                            # failures' "stage" column, cache folder
    table: Callable[[Lake], Path]                        # the Parquet this stage publishes
    jobs: Callable[[Lake, Settings], list[dict]]         # kwargs of runner.Job
    run: Callable[[Any, Settings], dict]                 # one job -> its result columns


def _safe(video_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", video_id)


def _index(lake: Lake) -> pl.DataFrame:
    index = read_parquet(lake.index)
    if index is None:
        raise FvcError(f"no video index at {lake.index}: run the ingest stage first (fvc ingest ...)")
    return index


def _carry(row: dict) -> dict:
    return {k: row.get(k) for k in KEYS}


def feature_inputs(lake: Lake) -> list[dict]:
    """Rows of every video whose features are computed: the originals and their augmented copies."""
    rows = _index(lake).to_dicts()
    augmented = read_parquet(lake.stage1)
    if augmented is not None and augmented.height:
        rows += augmented.to_dicts()
    return rows


# stage 1 -------------------------------------------------------------------------------------
def _augment_jobs(lake: Lake, s: Settings) -> list[dict]:
    cfg = s.augment
    jobs = []
    index = _index(lake)
    trains = pl.col("label").is_not_null()
    if "split" in index.columns:      # the test hold-out (decided at ingest): no copies, they train nothing
        trains &= pl.col("split").fill_null("") != "test"
    rows = index.filter(trains).to_dicts()
    hashes = [r["content_hash"] for r in rows]
    keys = {k: cache_keys(hashes, "augment", {"copy": k, "seed": cfg.seed, "crf": cfg.crf,
                                              "preset": STAGE_PRESET}) for k in range(1, cfg.copies + 1)}
    for i, row in enumerate(rows):
        for k in range(1, cfg.copies + 1):
            vid = augmented_id(row["video_id"], k)
            jobs.append(dict(
                key=keys[k][i],
                video_id=vid, path=row["path"],
                carry={**_carry(row), "variant": augmented_variant(k), "source_video_id": row["video_id"]},
                params={"dst": str(lake.stage1_videos / _safe(row["video_id"]) / f"aug{k}.mp4"), "copy": k},
            ))
        if row["label"] == 0:           # self-blended pseudo-fakes of the reals (issue 22)
            jobs += _blend_jobs(lake, row, cfg)
    return jobs


def _blend_jobs(lake: Lake, row: dict, cfg) -> list[dict]:
    """The ``cfg.self_blend`` pseudo-fakes of one real: labelled fake, the source's group, kept
    out of every evaluation by their variant (only originals are evaluated)."""
    folder = lake.stage1_videos / _safe(row["video_id"])
    return [dict(
        key=cache_key(row["content_hash"], "augment", {"blend": k, "seed": cfg.seed, "crf": cfg.crf,
                                                        "preset": STAGE_PRESET}),
        video_id=blended_id(row["video_id"], k), path=row["path"],
        carry={**_carry(row), "label": 1, "label_raw": "pseudo-fake", "variant": blend_variant(k),
               "source_video_id": row["video_id"]},
        params={"dst": str(folder / f"blend{k}.mp4"), "mask_dst": str(folder / f"blend{k}-mask.mkv"),
                "copy": k, "blend": True},
    ) for k in range(1, cfg.self_blend + 1)]


def _augment_run(job, s: Settings) -> dict:
    if job.params.get("blend"):
        params = draw_blend_params(job.carry["source_video_id"], job.params["copy"], seed=s.augment.seed)
        out = blend_video(job.path, job.params["dst"], job.params["mask_dst"], params, chunk=s.augment.chunk,
                          crf=s.augment.crf, threads=s.threads_per_worker)
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
            "max_tracks": s.faces.max_tracks, "max_side": s.faces.max_side}


def _faces_jobs(lake: Lake, s: Settings) -> list[dict]:
    detector = face_detector(s)
    note = fallback_note(detector)
    if note:
        log.warning("%s", note)     # said once per run of the stage, where it is planned
    rows = feature_inputs(lake)
    dsts = [lake.faces_tracks / f"{_safe(r['video_id'])}.parquet" for r in rows]
    keys = cache_keys([r["content_hash"] for r in rows], "faces", _faces_config(s, detector),
                      varying={"dst": [d.name for d in dsts]})
    return [dict(key=k, video_id=r["video_id"], path=r["path"], carry=_carry(r), params={"dst": str(d)})
            for k, r, d in zip(keys, rows, dsts)]


def _faces_run(job, s: Settings) -> dict:
    table, summary = track_video(job.path, face_detector(s), every=s.faces.every,
                                 max_tracks=s.faces.max_tracks, strategy=s.features.strategy,
                                 threads=s.threads_per_worker)
    dst = job.params["dst"]
    write_parquet_atomic(table, dst)
    return {**summary, "tracks_path": dst, "content_hash": file_hash(dst)}


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


def _feature_jobs(lake: Lake, s: Settings) -> list[dict]:
    cfg = _feature_config(s, faces=True)
    tracks = current_tracks(lake, s) if s.features.faces else {}
    rows = feature_inputs(lake)
    keys = cache_keys([r["content_hash"] for r in rows], "features", cfg)
    return [dict(key=k, video_id=r["video_id"], path=r["path"], carry=_carry(r),
                 params={"tracks": tracks.get(r["video_id"])}) for k, r in zip(keys, rows)]


def current_tracks(lake: Lake, s: Settings) -> dict[str, str]:
    """video_id -> its tracks file, for the videos whose faces-stage row was made with the current
    ``faces.*`` settings (its cache key is the one the stage would compute now)."""
    faces = read_parquet(lake.faces)
    if faces is None or not faces.height or "cache_key" not in faces.columns:
        return {}
    cfg = _faces_config(s, face_detector(s))
    want = {r["video_id"]: cache_key(r["content_hash"], "faces",
                                     {**cfg, "dst": f"{_safe(r['video_id'])}.parquet"})
            for r in feature_inputs(lake)}
    return {r["video_id"]: r["tracks_path"]
            for r in faces.select("video_id", "cache_key", "tracks_path").to_dicts()
            if want.get(r["video_id"]) == r["cache_key"] and Path(r["tracks_path"]).is_file()}


def face_tracks_of(path, s: Settings, tracks: str | None = None) -> pl.DataFrame:
    """The tracks table of the video at ``path``: the faces stage's file when given, else tracked
    now with the same settings (the same table: the tracker is deterministic)."""
    if tracks is not None:
        return pl.read_parquet(tracks)
    return track_video(path, face_detector(s), every=s.faces.every, max_tracks=s.faces.max_tracks,
                       strategy=s.features.strategy, threads=s.threads_per_worker)[0]


def _feature_run(job, s: Settings) -> dict:
    kw = _feature_kwargs(s)
    if s.features.faces:
        kw["face_tracks"] = face_tracks_of(job.path, s, job.params.get("tracks"))
    return video_features(job.path, **kw)


def _scaled_feature_jobs(lake: Lake, s: Settings) -> list[dict]:
    scaled = read_parquet(lake.stage3)
    if scaled is None:
        raise FvcError(f"no scaled videos at {lake.stage3}: run the scale stage first")
    cfg = _feature_config(s, faces=False)
    rows = scaled.to_dicts()
    keys = cache_keys([r["content_hash"] for r in rows], "scaled_features", cfg)
    return [dict(key=k, video_id=r["video_id"], path=r["path"],
                 carry={**_carry(r), "is_upscaled": r["is_upscaled"], "is_downscaled": r["is_downscaled"]})
            for k, r in zip(keys, rows)]


def _scaled_feature_run(job, s: Settings) -> dict:
    return video_features(job.path, prefix=STAGE4_PREFIX, **_feature_kwargs(s))


# stage 3 -------------------------------------------------------------------------------------
def _scale_jobs(lake: Lake, s: Settings) -> list[dict]:
    rows = feature_inputs(lake)
    dsts = [lake.stage3_videos / f"{_safe(r['video_id'])}.mp4" for r in rows]
    # the output file is part of the result, so the key names it: equal inputs, distinct files
    cfg = {"size": s.scale.size, "crf": s.scale.crf, "preset": STAGE_PRESET, "letterbox": LETTERBOX_VERSION}
    keys = cache_keys([r["content_hash"] for r in rows], "scale", cfg,
                      varying={"dst": [d.name for d in dsts]})
    return [dict(key=k, video_id=r["video_id"], path=r["path"], carry=_carry(r), params={"dst": str(dst)})
            for k, r, dst in zip(keys, rows, dsts)]


def _scale_run(job, s: Settings) -> dict:
    dst = job.params["dst"]
    out = scale_video(job.path, dst, size=s.scale.size, crf=s.scale.crf, threads=s.threads_per_worker)
    return {**out, "src_path": job.path, "path": dst, "content_hash": file_hash(dst)}


def _table(stage: str) -> Callable[[Lake], Path]:
    """Where ``stage`` publishes its table (``fvcflow.schema.STAGE_TABLES``)."""
    return lambda lake: lake.path(STAGE_TABLES[stage])


SPECS: dict[str, StageSpec] = {
    "augment": StageSpec("augment", _table("augment"), _augment_jobs, _augment_run),
    "faces": StageSpec("faces", _table("faces"), _faces_jobs, _faces_run),
    "features": StageSpec("features", _table("features"), _feature_jobs, _feature_run),
    "scale": StageSpec("scale", _table("scale"), _scale_jobs, _scale_run),
    "scaled_features": StageSpec("scaled_features", _table("scaled_features"), _scaled_feature_jobs,
                                 _scaled_feature_run),
}
