"""The feature tables the models train on: stage 2, or stage 2 joined with stage 4 on ``video_id``.

Feature sets: ``s2`` (stage 2), ``s24`` (+ stage 4), ``s2l`` (stage 2 + its local columns),
``s2lf`` (+ face columns), ``s24l`` (stage 2 and 4, each with local columns).

Feature columns are the contract of docs/FEATURES.md (:data:`fvcflow.schema.FEATURE_SETS`),
cast to float64; stage 4 adds its ``s4_`` columns and the ``is_upscaled``/``is_downscaled`` flags.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from fvcflow.errors import FvcError
from fvcflow.schema import (
    FEATURE_SETS,
    ORIGINAL,
    S4_FLAGS,
    STAGE4_PREFIX,
    TILE_COLUMNS,
    face_columns,
    local_columns,
)
from fvcflow.store import Lake, read_parquet

log = logging.getLogger("fvcflow.training")

#: every feature set: its columns (fvcflow.schema, also the model registry's FEATURE_SETS)
FEATURE_SET_COLUMNS = FEATURE_SETS
#: what a stage 2 table lacks when a local / face feature set cannot be trained, and why
_NEEDS = {"l": (local_columns()[0], "features.local is off, or stage 2 ran before it existed"),
          "f": (face_columns()[0], "features.faces is off (set it and rerun the features stage)")}


def feature_set_columns(feature_set: str) -> list[str]:
    """The model input columns of a feature set (``s2``: 51, ``s24``: 104, ``s2l``: 117,
    ``s2lf``: 148, ``s24l``: 236, ``s2lt``: 122).

    >>> [len(feature_set_columns(f)) for f in ("s2", "s24", "s2l", "s2lf", "s24l", "s2lt")]
    [51, 104, 117, 148, 236, 122]
    """
    try:
        return list(FEATURE_SET_COLUMNS[feature_set])
    except KeyError:
        known = ", ".join(FEATURE_SET_COLUMNS)
        raise FvcError(f"unknown feature set {feature_set!r}; known: {known}") from None


def missing_for(lake: Lake, feature_set: str) -> str | None:
    """Why ``feature_set`` cannot be trained from this lake's tables, or None when it can."""
    if "4" in feature_set and not lake.stage4.exists():
        return f"needs stage 4 features ({lake.stage4} does not exist)"
    if set(TILE_COLUMNS) & set(feature_set_columns(feature_set)) and not _has_masks(lake):
        return ("needs blend masks to label tiles: turn on the pseudo-fakes (augment.self_blend >= 1) and "
                "rerun the augment and features stages, or give the index a mask_path column")
    return _missing_stage2_columns(lake, feature_set)


def _has_masks(lake: Lake) -> bool:
    """Whether any video of the lake has a blend mask (a pseudo-fake's, or the index's ``mask_path``)."""
    for path in (lake.stage1, lake.index):
        if path.exists() and "mask_path" in pl.read_parquet_schema(path):
            if pl.read_parquet(path, columns=["mask_path"])["mask_path"].drop_nulls().len():
                return True
    return False


def _missing_stage2_columns(lake: Lake, feature_set: str) -> str | None:
    if not lake.stage2.exists():
        return None                           # load_features says what to run
    names = set(pl.read_parquet_schema(lake.stage2))
    for flag, (column, why) in _NEEDS.items():
        if flag in feature_set[2:] and column not in names:
            return f"needs the {column.split('_')[0]}_ columns in {lake.stage2}: {why}"
    return None


def _read(path: Path, what: str, hint: str, columns: list[str]) -> pl.DataFrame:
    df = read_parquet(path)
    if df is None:
        raise FvcError(f"no {what} at {path}: {hint}")
    missing = [c for c in ["video_id", *columns] if c not in df.columns]
    if missing:
        raise FvcError(f"{path}: missing columns {', '.join(missing[:6])}"
                       f"{' ...' if len(missing) > 6 else ''} (written by an older fvcflow? rerun that "
                       "stage)")
    return df.select("video_id", *[pl.col(c).cast(pl.Float64) for c in columns])


def load_features(lake: Lake, feature_set: str) -> pl.DataFrame:
    """``video_id`` and the float64 feature columns of ``feature_set``, one row per video.

    For the sets with stage 4 columns (``s24``, ``s24l``) the stage 4 row of each video is joined
    on ``video_id``; a video without one keeps NaN there (imputed inside the folds), and the count
    is logged. The learned tile evidence (``te_`` columns of ``s2lt``) is no stage's output: it is
    NaN here and built inside each fold (:mod:`fvcflow.training.fitting.tiles`).
    """
    cols = feature_set_columns(feature_set)
    if set(TILE_COLUMNS) & set(cols):           # s2lt = s2l + te_
        return (load_features(lake, "s2l").with_columns(pl.lit(float("nan")).alias(c) for c in TILE_COLUMNS)
                .select("video_id", *cols))
    s4cols = [c for c in cols if c.startswith(STAGE4_PREFIX) or c in S4_FLAGS]
    s2cols = [c for c in cols if c not in set(s4cols)]
    why = _missing_stage2_columns(lake, feature_set)
    if why:
        raise FvcError(f"feature set {feature_set!r} {why}")
    s2 = _read(lake.stage2, "stage 2 features", "run the features stage first (fvc run --stages features)",
               s2cols)
    if not s4cols:
        return s2
    s4 = _read(lake.stage4, "stage 4 features",
               "run the scale and scaled_features stages first, or train only s2 models", s4cols)
    out = s2.join(s4.unique("video_id", keep="last"), on="video_id", how="left")
    n_missing = out.filter(pl.col(s4cols[0]).is_null() & pl.col(s4cols[-1]).is_null()).height
    if n_missing:
        log.warning("%d of %d videos have no stage 4 features; their s4_ columns are imputed", n_missing,
                    out.height)
    return out.select("video_id", *cols)


@dataclass
class TrainTable:
    """Rows of one feature set joined with the splits, as the trainer consumes them."""

    video_id: np.ndarray
    group_id: np.ndarray
    y: np.ndarray            # int 0/1
    fold: np.ndarray         # int, -1 for test rows
    is_test: np.ndarray      # bool
    is_original: np.ndarray  # bool; only originals are ever evaluated
    X: pd.DataFrame          # float64 features, columns = feature set columns
    feature_set: str

    @property
    def folds(self) -> list[int]:
        return sorted(int(f) for f in np.unique(self.fold[~self.is_test]))

    def subset(self, mask: np.ndarray) -> "TrainTable":
        return TrainTable(self.video_id[mask], self.group_id[mask], self.y[mask], self.fold[mask],
                          self.is_test[mask], self.is_original[mask],
                          self.X.loc[mask].reset_index(drop=True), self.feature_set)


def train_table(features: pl.DataFrame, splits: pl.DataFrame, feature_set: str, *,
                use_augmented: bool = True, columns: list[str] | None = None) -> TrainTable:
    """Join a feature table with ``splits`` (inner, on ``video_id``), sorted by ``video_id``.

    ``columns``: the model's input columns (default: the feature set's; the embedding kind
    passes its ``emb_*`` columns).

    Split rows without features (the video failed feature extraction) are left out and counted
    in the log; augmented copies are kept for training unless ``use_augmented`` is false.
    """
    df = splits.join(features, on="video_id", how="inner").sort("video_id")
    lost = splits.height - df.height
    if lost:
        log.warning("%d of %d split rows have no %s features (see index/failures.parquet)", lost,
                    splits.height, feature_set)
    if not use_augmented:
        df = df.filter(pl.col("variant") == ORIGINAL)
    if df.height == 0:
        raise FvcError(f"no rows with {feature_set} features among the {splits.height} split rows")
    cols = list(columns) if columns is not None else feature_set_columns(feature_set)
    return TrainTable(
        video_id=df["video_id"].to_numpy(), group_id=df["group_id"].to_numpy(),
        y=df["label"].cast(pl.Int64).to_numpy(), fold=df["fold"].fill_null(-1).cast(pl.Int64).to_numpy(),
        is_test=df["is_test"].to_numpy(), is_original=(df["variant"] == ORIGINAL).to_numpy(),
        X=df.select(cols).to_pandas().astype("float64"), feature_set=feature_set)
