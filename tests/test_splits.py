"""Splits that cannot leak: groups, augmented copies, stratification, official test splits."""

import logging

import polars as pl
import pytest

from fvcflow.errors import FvcError
from fvcflow.store import read_parquet
from fvcflow.training import TrainConfig, make_splits
from fvcflow.training.fitting.splits import SPLIT_SCHEMA, assign_splits
from tests.feature_tables import synthetic_corpus, write_lake


@pytest.fixture(scope="module")
def corpus():
    # near-duplicate groups of 1-4 originals, two mixed real/fake groups, 3 augmented copies each
    return synthetic_corpus(60, per_group=(1, 4), n_aug=3, seed=7, mixed_groups=2)


def _placement(table: pl.DataFrame) -> pl.DataFrame:
    """Per group: how many distinct places (fold or test) its rows occupy."""
    place = pl.when(pl.col("is_test")).then(pl.lit(-1)).otherwise(pl.col("fold"))
    return table.group_by("group_id").agg(place.n_unique().alias("places"), pl.len().alias("rows"))


def test_no_group_crosses_folds_or_test(corpus):
    s = assign_splits(corpus["videos"], corpus["augmented"], TrainConfig(folds=5, test_size=0.2))
    placement = _placement(s)
    assert placement["places"].max() == 1
    assert placement["rows"].max() > 4           # groups with several originals and their copies were tested
    # every augmented copy sits exactly where its source sits
    aug = corpus["augmented"].join(s.select("video_id", "fold", "is_test"), on="video_id")
    src = s.select(pl.col("video_id").alias("source_video_id"), pl.col("fold").alias("src_fold"),
                   pl.col("is_test").alias("src_test"))
    both = aug.join(src, on="source_video_id")
    assert both.height == corpus["augmented"].height
    assert (both["is_test"] == both["src_test"]).all()
    assert (both["fold"].fill_null(-1) == both["src_fold"].fill_null(-1)).all()


def test_schema_and_labels(corpus):
    s = assign_splits(corpus["videos"], corpus["augmented"], TrainConfig())
    assert dict(s.schema) == SPLIT_SCHEMA
    labelled = corpus["videos"].filter(pl.col("label").is_not_null())
    assert s.filter(pl.col("variant") == "original").height == labelled.height   # unlabelled left out
    assert s.height == labelled.height + corpus["augmented"].height
    assert s.filter(pl.col("is_test"))["fold"].null_count() == s.filter(pl.col("is_test")).height
    assert s.filter(~pl.col("is_test"))["fold"].null_count() == 0
    assert sorted(s["fold"].drop_nulls().unique().to_list()) == [0, 1, 2, 3, 4]


def test_stratified_within_tolerance(corpus):
    s = assign_splits(corpus["videos"], corpus["augmented"], TrainConfig(folds=4, test_size=0.2))
    orig = s.filter(pl.col("variant") == "original")
    overall = orig["label"].mean()
    for part in orig.partition_by("fold", "is_test"):
        assert abs(part["label"].mean() - overall) < 0.15, part
    n_test = orig["is_test"].sum()
    assert 0.12 < n_test / orig.height < 0.3


def test_deterministic_by_seed(corpus):
    a = assign_splits(corpus["videos"], corpus["augmented"], TrainConfig(seed=1))
    b = assign_splits(corpus["videos"], corpus["augmented"], TrainConfig(seed=1))
    c = assign_splits(corpus["videos"], corpus["augmented"], TrainConfig(seed=2))
    assert a.equals(b)
    assert not a.equals(c)


def test_official_test_split_honoured_and_conflicts_dropped(caplog):
    t = synthetic_corpus(40, per_group=(2, 3), n_aug=2, seed=3, official_test=True)
    videos = t["videos"]
    official = videos.filter(pl.col("split") == "test")
    test_groups = set(official["group_id"])
    conflicts = videos.filter((pl.col("split") != "test") & pl.col("group_id").is_in(list(test_groups))
                              & pl.col("label").is_not_null())
    assert conflicts.height >= 1                       # the helper plants one
    with caplog.at_level(logging.WARNING, logger="fvcflow.training"):
        s = assign_splits(videos, t["augmented"], TrainConfig(folds=3))
    orig = s.filter(pl.col("variant") == "original")
    labelled = official.filter(pl.col("label").is_not_null())
    assert set(orig.filter(pl.col("is_test"))["video_id"]) == set(labelled["video_id"])
    assert not set(conflicts["video_id"]) & set(s["video_id"])           # dropped, with their copies
    assert not any(v.startswith(tuple(conflicts["video_id"])) for v in s["video_id"])
    assert f"dropped {conflicts.height} training videos" in caplog.text
    assert _placement(s)["places"].max() == 1


def test_official_split_can_be_ignored():
    t = synthetic_corpus(40, per_group=(2, 3), n_aug=0, seed=3, official_test=True)
    s = assign_splits(t["videos"], None, TrainConfig(folds=3, use_official_split=False, test_size=0.25))
    official = set(t["videos"].filter(pl.col("split") == "test")["video_id"])
    assert set(s.filter(pl.col("is_test"))["video_id"]) != official


def test_no_holdout_when_test_size_zero(corpus):
    s = assign_splits(corpus["videos"], corpus["augmented"], TrainConfig(test_size=0.0))
    assert not s["is_test"].any()


def test_too_few_groups_for_folds_says_what_to_lower():
    t = synthetic_corpus(6, per_group=(1, 1), n_aug=0, seed=0, mixed_groups=0)
    with pytest.raises(FvcError, match=r"only 6 groups for 10 splits; lower folds .* to at most 6"):
        assign_splits(t["videos"], None, TrainConfig(folds=10, test_size=0.0))
    with pytest.raises(FvcError, match=r"hold-out test of 20%: .* raise test_size .* to at least 0.33"):
        assign_splits(t["videos"], None, TrainConfig(folds=2, test_size=0.2))


def test_rare_class_for_folds_says_what_to_lower():
    v = pl.DataFrame({"video_id": [f"v{i}" for i in range(20)], "group_id": [f"g{i}" for i in range(20)],
                      "label": [1, 1] + [0] * 18}, schema_overrides={"label": pl.Int8})
    with pytest.raises(FvcError, match=r"class 'fake' occurs in 2 groups.*at most 2"):
        assign_splits(v, None, TrainConfig(folds=3, test_size=0.0))
    with pytest.raises(FvcError, match="no 'fake' videos"):
        assign_splits(v.with_columns(label=pl.lit(0, pl.Int8)), None, TrainConfig(folds=3, test_size=0.0))


def test_make_splits_writes_the_table(tmp_path):
    lake = write_lake(tmp_path, n_groups=20, n_aug=2)
    s = make_splits(lake, TrainConfig(folds=3))
    on_disk = read_parquet(lake.splits)
    assert on_disk.equals(s)
    assert {"video_id", "group_id", "label", "fold", "is_test"} <= set(on_disk.columns)


def test_make_splits_without_index_is_a_clear_error(tmp_path):
    from fvcflow.store import Lake
    with pytest.raises(FvcError, match="no video index"):
        make_splits(Lake.at(tmp_path), TrainConfig())
