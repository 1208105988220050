"""Splits that cannot leak: stratified group k-fold on ``group_id`` plus a grouped hold-out test.

Only originals decide the assignment; an augmented copy then takes its source's group, fold and
test flag, so copies never sit on both sides. Rows of the corpus's official test split form the
test set when present (``split == "test"``); training rows that share a group with them are dropped
(and logged). The ingest decides that split by group for every video without one of its corpus
(:mod:`fvcflow.ingest.holdout`), so that stage 1 makes no copies of test videos; a ``test_size``
other than the one it was decided with is an error (the hold-out changes only by ``--resplit``).
Otherwise (an index without it) a stratified grouped hold-out of ``test_size`` is drawn.
Deterministic for a seed.
"""

from __future__ import annotations

import logging
import math
from typing import Callable

import numpy as np
import polars as pl
from sklearn.model_selection import StratifiedGroupKFold

from fvcflow.config import TrainConfig, setting_hint
from fvcflow.errors import FvcError
from fvcflow.ingest.holdout import holdout_of
from fvcflow.schema import BLEND_PREFIX, ORIGINAL
from fvcflow.store import Lake, read_parquet, write_parquet_atomic

log = logging.getLogger("fvcflow.training")

SPLIT_SCHEMA = {"video_id": pl.Utf8, "group_id": pl.Utf8, "label": pl.Int8, "variant": pl.Utf8,
                "fold": pl.Int32, "is_test": pl.Boolean}
CLASS_NAMES = {0: "real", 1: "fake"}


def _check_groups(orig: pl.DataFrame, k: int, what: str, fix: Callable[[int], str]) -> None:
    """Each class must occur in at least ``k`` groups; ``fix(n)`` says what to change when not."""
    n_groups = orig["group_id"].n_unique()
    if n_groups < k:
        raise FvcError(f"{what}: only {n_groups} groups for {k} splits; {fix(n_groups)}")
    for label, name in CLASS_NAMES.items():
        n = orig.filter(pl.col("label") == label)["group_id"].n_unique()
        if n == 0:
            raise FvcError(f"{what}: there are no {name!r} videos")
        if n < k:
            raise FvcError(f"{what}: class {name!r} occurs in {n} groups, fewer than the {k} splits; "
                           f"{fix(n)}")


def _group_folds(orig: pl.DataFrame, k: int, seed: int) -> dict[str, int]:
    """group_id -> fold index, from a stratified group k-fold over the originals."""
    orig = orig.sort("video_id")
    groups = orig["group_id"].to_numpy()
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    out: dict[str, int] = {}
    for fold, (_, test_idx) in enumerate(cv.split(np.zeros(len(groups)), orig["label"].to_numpy(), groups)):
        out.update({g: fold for g in groups[test_idx]})
    return out


def _test_ids(orig: pl.DataFrame, cfg: TrainConfig) -> tuple[list[str], pl.DataFrame]:
    """Video ids of the test set and the originals left for the folds."""
    if cfg.use_official_split and "split" in orig.columns and (orig["split"] == "test").any():
        test = orig.filter(pl.col("split") == "test")
        test_groups = test["group_id"].unique().to_list()
        rest = orig.filter(pl.col("split").fill_null("") != "test")
        conflict = rest.filter(pl.col("group_id").is_in(test_groups))
        if conflict.height:
            log.warning("dropped %d training videos that share a group with the official test split "
                        "(e.g. %s)", conflict.height, conflict["video_id"][0])
        return test["video_id"].to_list(), rest.filter(~pl.col("group_id").is_in(test_groups))
    if cfg.test_size == 0:
        return [], orig
    n_splits = max(2, round(1 / cfg.test_size))
    _check_groups(orig, n_splits, f"hold-out test of {cfg.test_size:.0%}",
                  lambda n: f"raise test_size ({setting_hint('test_size')}) to at least {1 / n:.2f}, "
                            "or set it to 0 for no hold-out" if n >= 2 else
                  f"add data or set test_size to 0 ({setting_hint('test_size')})")
    fold_of = _group_folds(orig, n_splits, cfg.seed)
    test_groups = [g for g, f in fold_of.items() if f == 0]
    in_test = pl.col("group_id").is_in(test_groups)
    return orig.filter(in_test)["video_id"].to_list(), orig.filter(~in_test)


def assign_splits(videos: pl.DataFrame, augmented: pl.DataFrame | None, cfg: TrainConfig) -> pl.DataFrame:
    """The split table (``SPLIT_SCHEMA``) of labelled originals and their augmented copies.

    Parameters
    ----------
    videos : polars.DataFrame
        The index: ``video_id``, ``group_id``, ``label`` (null = not trained on), optional ``split``.
    augmented : polars.DataFrame or None
        ``video_id``, ``source_video_id`` of each augmented copy (``stage1/augmented.parquet``).
    cfg : TrainConfig
        ``folds``, ``test_size``, ``use_official_split``, ``seed``.

    Examples
    --------
    >>> import polars as pl
    >>> v = pl.DataFrame({"video_id": [f"v{i}" for i in range(20)],
    ...                   "group_id": [f"g{i // 2}" for i in range(20)],
    ...                   "label": [i % 2 for i in range(20)]})
    >>> s = assign_splits(v, None, TrainConfig(folds=2, test_size=0.25))
    >>> s.group_by("group_id").agg(pl.col("fold").n_unique(), pl.col("is_test").n_unique())["fold"].max()
    1
    """
    cols = ["video_id", "group_id", "label"] + (["split"] if "split" in videos.columns else [])
    orig = videos.filter(pl.col("label").is_not_null()).select(cols).unique("video_id", keep="first")
    test_ids, train = _test_ids(orig, cfg)
    _check_groups(train, cfg.folds, f"{cfg.folds}-fold cross-validation",
                  lambda n: f"lower folds ({setting_hint('folds')}) to at most {n}" if n >= 2
                  else "add data: cross-validation needs each class in at least 2 groups")
    fold_of = _group_folds(train, cfg.folds, cfg.seed)
    is_test = pl.col("video_id").is_in(test_ids)
    table = orig.filter(is_test | pl.col("video_id").is_in(train["video_id"].to_list())).select(
        "video_id", "group_id", "label", pl.lit(ORIGINAL).alias("variant"),
        pl.when(is_test).then(None).otherwise(
            pl.col("group_id").replace_strict(fold_of, default=None, return_dtype=pl.Int32)).alias("fold"),
        is_test.alias("is_test"))
    if augmented is not None and augmented.height:
        variant = pl.col("variant") if "variant" in augmented.columns else pl.lit("aug")
        copies = augmented.select("video_id", "source_video_id", variant.alias("variant"))
        sources = table.rename({"video_id": "source_video_id"}).drop("variant")
        copies = copies.join(sources, on="source_video_id", how="inner").drop("source_video_id")
        # a self-blended pseudo-fake of a real is labelled fake (issue 22); it keeps its source's
        # group and fold, and, not an original, is trained on and never evaluated
        copies = copies.with_columns(label=pl.when(pl.col("variant").str.starts_with(BLEND_PREFIX))
                                     .then(1).otherwise(pl.col("label")).cast(sources.schema["label"]))
        table = pl.concat([table, copies.select(table.columns)])
    return table.cast(SPLIT_SCHEMA).sort("video_id")


def make_splits(lake: Lake, cfg: TrainConfig | None = None) -> pl.DataFrame:
    """Assign folds and the test set from the index and the augmented table; write ``stage5/splits.parquet``.

    >>> splits = make_splits(Lake.at("fvc-data"), TrainConfig())     # doctest: +SKIP
    >>> splits.columns                                                # doctest: +SKIP
    ['video_id', 'group_id', 'label', 'variant', 'fold', 'is_test']
    """
    cfg = cfg or TrainConfig()
    videos = read_parquet(lake.index)
    if videos is None:
        raise FvcError(f"no video index at {lake.index}: run the ingest stage first (fvc ingest ...)")
    decided = holdout_of(lake.index)
    if (decided and cfg.use_official_split and not math.isclose(decided["test_size"], cfg.test_size)
            and "split_by" in videos.columns):
        if cfg.test_size == 0:     # no hold-out asked: the one decided at ingest joins the folds
            held = videos.filter((pl.col("split_by") == "holdout") & (pl.col("split") == "test")).height
            log.warning("test_size is 0: the %d test videos decided at ingest join the cross-validation "
                        "(stage 1 made no augmented copies of them)", held)
            videos = videos.with_columns(split=pl.when(pl.col("split_by") == "holdout").then(None)
                                         .otherwise(pl.col("split")))
        else:
            raise FvcError(f"the test hold-out was decided when the corpus was indexed, with test_size "
                           f"{decided['test_size']:g}, and stage 1 made its copies for it; test_size is now "
                           f"{cfg.test_size:g} ({setting_hint('test_size')}): to change the hold-out, ingest "
                           f"again with --resplit (fvc ingest KIND ROOT --resplit), set test_size back, or "
                           f"to 0 for no hold-out")
    table = assign_splits(videos, read_parquet(lake.stage1), cfg)
    write_parquet_atomic(table, lake.splits)
    n_test = table.filter(pl.col("is_test") & (pl.col("variant") == ORIGINAL)).height
    log.info("splits: %d rows (%d test originals), %d folds -> %s", table.height, n_test, cfg.folds,
             lake.splits)
    return table


def load_splits(lake: Lake, cfg: TrainConfig) -> pl.DataFrame:
    """The split table on disk, made first when there is none."""
    return read_parquet(lake.splits) if lake.splits.exists() else make_splits(lake, cfg)


def prepare_splits(lake: Lake, cfg: TrainConfig) -> pl.DataFrame:
    """The splits a training run uses: made afresh, or with ``cfg.reuse_splits`` the lake's own."""
    if not cfg.reuse_splits:
        return make_splits(lake, cfg)
    table = read_parquet(lake.splits)
    if table is None:
        raise FvcError(f"train.reuse_splits is set but {lake.splits} does not exist: run fvc/train "
                       "(or fvc train) first, or unset it")
    return table
