"""What each video stage computes: its jobs (from the tables before it) and its per-video work.

A spec is data plus two functions; :mod:`fvcflow.stages.runner` does the caching, batching and
publishing for all of them alike.
"""

from __future__ import annotations

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
from fvcflow.stages.faces import FaceDetector
from fvcflow.stages.features import video_features
from fvcflow.stages.scale import scale_video
from fvcflow.store import Lake, cache_key, file_hash, read_parquet
from fvcflow.video.write import STAGE_PRESET


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
    for row in _index(lake).filter(pl.col("label").is_not_null()).to_dicts():
        for k in range(1, cfg.copies + 1):
            vid = augmented_id(row["video_id"], k)
            jobs.append(dict(
                key=cache_key(row["content_hash"], "augment", {"copy": k, "seed": cfg.seed, "crf": cfg.crf,
                                                                 "preset": STAGE_PRESET}),
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


# stages 2 and 4 ------------------------------------------------------------------------------
def _feature_config(s: Settings, *, faces: bool) -> dict:
    """What the feature row depends on beyond the video: the feature schema version (a digest of
    the kernel tables: a new feature recomputes the rows), the kernels' numerics version (rows
    computed before the kernels gave the same bits on every CPU are computed again), the
    local/face versions and settings."""
    cfg: dict = {"schema": FEATURE_SCHEMA_VERSION, "numerics": NUMERICS}
    if s.features.local:
        cfg["local"] = LOCAL_VERSION
    if faces and s.features.faces:
        model = s.features.face_model
        cfg["faces"] = {"v": FACE_VERSION, "every": s.features.face_every,
                        "model": None if model is None else file_hash(model)}
    return cfg


def _feature_kwargs(s: Settings, *, faces: bool) -> dict:
    detector = FaceDetector(s.features.face_model) if faces and s.features.faces else None
    return dict(strategy=s.features.strategy, threads=s.threads_per_worker, local=s.features.local,
                faces=detector, face_every=s.features.face_every)


def _feature_jobs(lake: Lake, s: Settings) -> list[dict]:
    cfg = _feature_config(s, faces=True)
    return [dict(key=cache_key(r["content_hash"], "features", cfg), video_id=r["video_id"],
                 path=r["path"], carry=_carry(r)) for r in feature_inputs(lake)]


def _feature_run(job, s: Settings) -> dict:
    return video_features(job.path, **_feature_kwargs(s, faces=True))


def _scaled_feature_jobs(lake: Lake, s: Settings) -> list[dict]:
    scaled = read_parquet(lake.stage3)
    if scaled is None:
        raise FvcError(f"no scaled videos at {lake.stage3}: run the scale stage first")
    cfg = _feature_config(s, faces=False)
    return [dict(key=cache_key(r["content_hash"], "scaled_features", cfg), video_id=r["video_id"],
                 path=r["path"], carry={**_carry(r), "is_upscaled": r["is_upscaled"],
                                        "is_downscaled": r["is_downscaled"]})
            for r in scaled.to_dicts()]


def _scaled_feature_run(job, s: Settings) -> dict:
    return video_features(job.path, prefix=STAGE4_PREFIX, **_feature_kwargs(s, faces=False))


# stage 3 -------------------------------------------------------------------------------------
def _scale_jobs(lake: Lake, s: Settings) -> list[dict]:
    jobs = []
    for r in feature_inputs(lake):
        dst = lake.stage3_videos / f"{_safe(r['video_id'])}.mp4"
        # the output file is part of the result, so the key names it: equal inputs, distinct files
        cfg = {"size": s.scale.size, "crf": s.scale.crf, "preset": STAGE_PRESET, "dst": dst.name}
        jobs.append(dict(key=cache_key(r["content_hash"], "scale", cfg), video_id=r["video_id"],
                         path=r["path"],
                         carry=_carry(r), params={"dst": str(dst)}))
    return jobs


def _scale_run(job, s: Settings) -> dict:
    dst = job.params["dst"]
    out = scale_video(job.path, dst, size=s.scale.size, crf=s.scale.crf, threads=s.threads_per_worker)
    return {**out, "src_path": job.path, "path": dst, "content_hash": file_hash(dst)}


def _table(stage: str) -> Callable[[Lake], Path]:
    """Where ``stage`` publishes its table (``fvcflow.schema.STAGE_TABLES``)."""
    return lambda lake: lake.path(STAGE_TABLES[stage])


SPECS: dict[str, StageSpec] = {
    "augment": StageSpec("augment", _table("augment"), _augment_jobs, _augment_run),
    "features": StageSpec("features", _table("features"), _feature_jobs, _feature_run),
    "scale": StageSpec("scale", _table("scale"), _scale_jobs, _scale_run),
    "scaled_features": StageSpec("scaled_features", _table("scaled_features"), _scaled_feature_jobs,
                                 _scaled_feature_run),
}
