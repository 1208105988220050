"""The test hold-out decided at ingest, by group: stage 1 makes no copies of test videos, stage 5 tests
on the same videos, and changing it is explicit (``--resplit``)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import polars as pl
import pytest

from fvcflow.config import Settings, TrainConfig
from fvcflow.errors import FvcError
from fvcflow.ingest import ingest
from fvcflow.ingest.folder import read_labels
from fvcflow.ingest.holdout import decide_holdout, holdout_of
from fvcflow.stages import runner
from fvcflow.stages.manifest import Manifest
from fvcflow.stages.verify import verify
from fvcflow.training.fitting.splits import make_splits
from tests.reliability_media import make_corpus


def test_decide_holdout_keeps_groups_whole_and_each_class_under_test_size():
    rng = random.Random(3)
    rows = [{"video_id": f"v{i}", "group_id": f"g{i // 4}", "label": rng.randint(0, 1), "split": None}
            for i in range(400)]
    rows += [{"video_id": "u", "group_id": "gu", "label": None, "split": None}]    # never trained on
    assert decide_holdout(rows, test_size=0.2, seed=7) == 400
    sides = {}
    for r in rows[:-1]:
        assert sides.setdefault(r["group_id"], r["split"]) == r["split"]           # a group on one side
    for c in (0, 1):
        members = [r for r in rows[:-1] if r["label"] == c]
        share = sum(r["split"] == "test" for r in members) / len(members)
        assert 0.15 <= share <= 0.2, share
    assert rows[-1]["split"] is None
    again = [{**r, "split": None} for r in rows]
    decide_holdout(again, test_size=0.2, seed=7)
    assert [r["split"] for r in again] == [r["split"] for r in rows]                # deterministic
    other = [{**r, "split": None} for r in rows]
    decide_holdout(other, test_size=0.2, seed=8)
    assert [r["split"] for r in other] != [r["split"] for r in rows]                 # the seed matters


def test_official_splits_are_kept_and_their_groups_follow_them():
    rows = [{"group_id": "a", "label": 1, "split": "test"}, {"group_id": "a", "label": 0, "split": None},
            {"group_id": "b", "label": 0, "split": "train"}, {"group_id": "b", "label": 1, "split": None}]
    decide_holdout(rows, test_size=0.5, seed=0)
    assert [r["split"] for r in rows] == ["test", "test", "train", "train"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("holdout") / "corpus"
    names = make_corpus(root, bases=2, copies=10, frames=12, size=(64, 48))
    with open(root / "labels.csv", "w", newline="") as fh:       # 10 groups of 2, one real one fake
        w = csv.writer(fh)
        w.writerow(["path", "label", "group"])
        w.writerows([(n, "fake" if i % 2 else "real", f"g{i // 2}") for i, n in enumerate(names)])
    return root


def _settings(home: Path, **train) -> Settings:
    return Settings(home=home, workers=1, augment={"copies": 2}, train={"folds": 2, **train}).resolved()


def test_stage1_copies_only_training_videos_and_stage5_tests_on_the_index_hold_out(corpus, tmp_path):
    settings = _settings(tmp_path / "fvc-data")
    lake = settings.lake()
    ingest("folder", corpus, lake, labels=corpus / "labels.csv", workers=1, test_size=0.2, seed=0)
    index = pl.read_parquet(lake.index)
    assert holdout_of(lake.index) == {"test_size": 0.2, "seed": 0}
    assert set(index["split"]) == {"test", "train"}
    assert index.group_by("group_id").agg(pl.col("split").n_unique())["split"].max() == 1
    test_ids = set(index.filter(pl.col("split") == "test")["video_id"])
    assert len(test_ids) == 4                                     # 2 of 10 groups
    plan = runner.plan("augment", settings)
    sources = {j.carry["source_video_id"] for j in plan.jobs}
    assert sources == set(index["video_id"]) - test_ids and len(plan.jobs) == 2 * 16
    splits = make_splits(lake, TrainConfig(folds=2, test_size=0.2))
    assert set(splits.filter(pl.col("is_test"))["video_id"]) == test_ids
    assert set(index.filter(pl.col("split_by") == "holdout")["video_id"]) == set(index["video_id"])
    everyone = make_splits(lake, TrainConfig(folds=2, test_size=0.0))      # no hold-out asked: none
    assert not everyone["is_test"].any() and set(everyone["video_id"]) == set(index["video_id"])


def test_changing_the_hold_out_is_explicit_and_invalidates_what_it_must(corpus, tmp_path):
    settings = _settings(tmp_path / "fvc-data")
    lake = settings.lake()
    ingest("folder", corpus, lake, labels=corpus / "labels.csv", workers=1, test_size=0.2, seed=0)
    make_splits(lake, TrainConfig(folds=2, test_size=0.2))
    first = pl.read_parquet(lake.index).select("video_id", "split").sort("video_id")
    with pytest.raises(FvcError, match=r"decided when the corpus was indexed, with test_size 0\.2.*"
                                       r"test_size is now 0\.4.*--resplit"):
        make_splits(lake, TrainConfig(folds=2, test_size=0.4))
    # ingesting again without --resplit keeps every decision, whatever the settings say now
    ingest("folder", corpus, lake, labels=corpus / "labels.csv", workers=1, test_size=0.4, seed=0)
    assert pl.read_parquet(lake.index).select("video_id", "split").sort("video_id").equals(first)
    assert lake.splits.exists()
    ingest("folder", corpus, lake, labels=corpus / "labels.csv", workers=1, test_size=0.4, seed=0,
           resplit=True)
    second = pl.read_parquet(lake.index)
    assert second.filter(pl.col("split") == "test").height == 8 and not lake.splits.exists()
    assert holdout_of(lake.index)["test_size"] == 0.4
    test_ids = set(second.filter(pl.col("split") == "test")["video_id"])
    plan = runner.plan("augment", _settings(lake.root, test_size=0.4))
    assert not {j.carry["source_video_id"] for j in plan.jobs} & test_ids
    splits = make_splits(lake, TrainConfig(folds=2, test_size=0.4))
    assert set(splits.filter(pl.col("is_test"))["video_id"]) == test_ids


def test_the_folder_labels_csv_takes_the_corpus_own_split(corpus, tmp_path):
    rows = list(csv.reader(open(corpus / "labels.csv")))[1:]
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "group", "split"])
        w.writerows([r + ["test" if r[2] in ("g3", "g7") else ("" if r[2] == "g5" else "train")]
                     for r in rows])
    lake = _settings(tmp_path / "fvc-data").lake()
    ingest("folder", corpus, lake, labels=labels, workers=1, test_size=0.2, seed=0)
    index = pl.read_parquet(lake.index)
    tested = sorted(set(index.filter(pl.col("split") == "test")["group_id"]))
    assert tested == ["g3", "g7"]                                 # no room left: g5 decided into train
    by = dict(zip(index["group_id"], index["split_by"]))
    assert (by["g3"], by["g5"], by["g0"]) == ("corpus", "holdout", "corpus")
    assert make_splits(lake, TrainConfig(folds=2, test_size=0.0))["is_test"].sum() == 4   # the corpus's own
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label,group,split\nv0_00.mp4,real,g0,holdout\n")
    with pytest.raises(FvcError, match=r"bad\.csv:2: split 'holdout' is not one of train, val, test"):
        read_labels(bad)


def test_a_resplit_leaves_no_orphan_copy_and_verify_is_clean(corpus, tmp_path):
    """Videos a ``--resplit`` moves to the test hold-out lose their stage-1 copies at the next
    run: the files and their manifest rows go (nothing is left that no table names), the videos
    that moved the other way get theirs, and ``fvc verify`` finds nothing wrong."""
    settings = Settings(home=tmp_path / "fvc-data", workers=1, augment={"copies": 1}).resolved()
    lake = settings.lake()
    ingest("folder", corpus, lake, labels=corpus / "labels.csv", workers=1, test_size=0.2, seed=0)
    runner.run_local("augment", settings)
    first = set(pl.read_parquet(lake.stage1)["source_video_id"])
    ingest("folder", corpus, lake, labels=corpus / "labels.csv", workers=1, test_size=0.4, seed=0,
           resplit=True)
    index = pl.read_parquet(lake.index)
    test_ids = set(index.filter(pl.col("split") == "test")["video_id"])
    assert first & test_ids                                     # some copied videos are test videos now
    report = runner.run_local("augment", settings)
    table = pl.read_parquet(lake.stage1)
    assert set(table["source_video_id"]) == set(index["video_id"]) - test_ids
    assert report.done == len(set(table["source_video_id"]) - first)    # only the newly trained ones
    on_disk = {str(p) for p in lake.stage1_videos.rglob("*") if p.is_file()}
    assert on_disk == set(table["path"])                        # no orphan copy left on disk
    rows = Manifest(lake, "augment").read().rows
    assert set(rows["path"]) == set(table["path"])              # nor in the manifest
    checked = verify(settings, ["augment"])
    assert checked.ok and not checked.missing and checked.videos == table.height, checked.format()
