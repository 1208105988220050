"""The data lake: where each table lives, atomic Parquet writes, content hashes and cache keys.

Every stage writes through :func:`write_parquet_atomic` (temporary file in the same folder, then
``os.replace``), so a reader never sees a half-written table and an interrupted run loses nothing
that was already published.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

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
    """Write ``df`` to ``path`` so that readers see either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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


def read_parquet(path: str | os.PathLike) -> pl.DataFrame | None:
    """The table at ``path``, or ``None`` when it does not exist yet."""
    path = Path(path)
    if not path.exists():
        return None
    return pl.read_parquet(path)


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


def failure_row(stage: str, path: str | os.PathLike, reason: str, *, video_id: str | None = None,
                error_type: str = "VideoError") -> dict:
    return {
        "stage": stage,
        "path": str(path),
        "video_id": video_id,
        "reason": reason,
        "error_type": error_type,
        "recorded_at": time.time(),
    }


def record_failures(lake: Lake, rows: Iterable[Mapping[str, Any]], *, stage: str | None = None) -> pl.DataFrame:
    """Merge failure rows into ``index/failures.parquet``.

    A (stage, path) pair appears once: a newer failure replaces the older one. When ``stage`` is
    given, earlier failures of that stage whose path is not in ``rows`` are removed (the input
    was fixed, or is no longer part of the corpus).
    """
    new = pl.DataFrame(list(rows), schema=FAILURE_SCHEMA)
    old = read_parquet(lake.failures)
    if old is None:
        old = pl.DataFrame(schema=FAILURE_SCHEMA)
    if stage is not None:
        old = old.filter(pl.col("stage") != stage)
    merged = pl.concat([old, new]).unique(subset=["stage", "path"], keep="last", maintain_order=True)
    write_parquet_atomic(merged, lake.failures)
    return merged
