"""The feature tables the models train on: stage 2, or stage 2 joined with stage 4 on ``video_id``.

Feature columns are the contract of docs/FEATURES.md (:func:`fvcflow.stages.features.feature_columns`),
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
from fvcflow.stages.features import feature_columns
from fvcflow.store import Lake, read_parquet

log = logging.getLogger("fvcflow.training")

S4_FLAGS = ("is_upscaled", "is_downscaled")


def feature_set_columns(feature_set: str) -> list[str]:
    """The model input columns of a feature set (``s2``: 51, ``s24``: 104).

    >>> len(feature_set_columns("s2")), len(feature_set_columns("s24"))
    (51, 104)
    """
    if feature_set == "s2":
        return feature_columns()
    if feature_set == "s24":
        return feature_columns() + feature_columns("s4_") + list(S4_FLAGS)
    raise FvcError(f"unknown feature set {feature_set!r}; known: s2, s24")


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

    For ``s24`` the stage 4 row of each video is joined on ``video_id``; a video without one keeps
    NaN there (imputed inside the folds), and the count is logged.
    """
    s2 = _read(lake.stage2, "stage 2 features", "run the features stage first (fvc run --stages features)",
               feature_columns())
    if feature_set == "s2":
        return s2
    s4cols = feature_columns("s4_") + list(S4_FLAGS)
    s4 = _read(lake.stage4, "stage 4 features",
               "run the scale and scaled_features stages first, or train only s2 models", s4cols)
    out = s2.join(s4.unique("video_id", keep="last"), on="video_id", how="left")
    n_missing = out.filter(pl.col(s4cols[0]).is_null() & pl.col(s4cols[-1]).is_null()).height
    if n_missing:
        log.warning("%d of %d videos have no stage 4 features; their s4_ columns are imputed", n_missing,
                    out.height)
    return out.select("video_id", *feature_set_columns(feature_set))


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
        df = df.filter(pl.col("variant") == "original")
    if df.height == 0:
        raise FvcError(f"no rows with {feature_set} features among the {splits.height} split rows")
    cols = list(columns) if columns is not None else feature_set_columns(feature_set)
    return TrainTable(
        video_id=df["video_id"].to_numpy(), group_id=df["group_id"].to_numpy(),
        y=df["label"].cast(pl.Int64).to_numpy(), fold=df["fold"].fill_null(-1).cast(pl.Int64).to_numpy(),
        is_test=df["is_test"].to_numpy(), is_original=(df["variant"] == "original").to_numpy(),
        X=df.select(cols).to_pandas().astype("float64"), feature_set=feature_set)
