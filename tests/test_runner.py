"""The stage runner without Prefect: plan, batches, the content-addressed cache, publishing."""

from __future__ import annotations

import os
import shutil

import polars as pl
import pytest

from fvcflow.config import Settings
from fvcflow.errors import FvcError
from fvcflow.ingest import ingest
from fvcflow.stages import runner
from fvcflow.store import file_hash, write_parquet_atomic
from tests.media import write_video


@pytest.fixture
def lake_settings(tmp_path):
    corpus = tmp_path / "c"
    for i, label in enumerate(["real", "fake", "real"]):
        write_video(corpus / f"v{i}.mp4", n=12, width=48, height=32, seed=i)
    (corpus / "labels.csv").write_text("path,label,group\nv0.mp4,real,a\nv1.mp4,fake,a\nv2.mp4,real,b\n")
    settings = Settings(home=tmp_path / "home", workers=1, augment={"copies": 1}).resolved()
    ingest("folder", corpus, settings.lake(), labels=corpus / "labels.csv", workers=1)
    return settings


def test_videos_of_equal_content_share_the_cache_but_keep_their_rows(lake_settings, tmp_path):
    lake = lake_settings.lake()
    index = pl.read_parquet(lake.index).sort("video_id")
    twin = tmp_path / "twin.mp4"
    shutil.copy(index["path"][0], twin)
    extra = index.head(1).with_columns(video_id=pl.lit("twin"), path=pl.lit(str(twin)), group_id=pl.lit("z"))
    assert file_hash(twin) == extra["content_hash"][0]
    write_parquet_atomic(pl.concat([index, extra]), lake.index)

    report = runner.run_local("features", lake_settings)
    table = pl.read_parquet(lake.stage2)
    assert report.videos_in == table.height == 4
    pair = table.filter(pl.col("video_id").is_in([index["video_id"][0], "twin"])).sort("group_id")
    assert pair["group_id"].to_list() == [index["group_id"][0], "z"]
    assert pair["noise_energy_mean"][0] == pair["noise_energy_mean"][1]


def test_plan_skips_cached_and_force_replans_everything(lake_settings):
    first = runner.run_local("features", lake_settings)
    assert (first.done, first.cached) == (3, 0)
    assert runner.plan("features", lake_settings).todo == []
    forced = lake_settings.model_copy(update={"force": ["features"]})
    assert len(runner.plan("features", forced).todo) == 3


def test_a_derived_video_deleted_on_disk_is_made_again(lake_settings):
    runner.run_local("augment", lake_settings)
    copies = pl.read_parquet(lake_settings.lake().stage1)
    victim = copies["path"][0]
    os.remove(victim)
    todo = runner.plan("augment", lake_settings).todo
    assert [j.params["dst"] for j in todo] == [victim]


@pytest.mark.parametrize("n, workers", [(1, 2), (7, 1), (100, 2), (1000, 2)])
def test_batches_cover_every_job_once(n, workers):
    jobs = [runner.Job(key=str(i), video_id=str(i), path="p", carry={}) for i in range(n)]
    parts = runner.batches(jobs, workers)
    flat = [j.key for b in parts for j in b]
    assert sorted(flat) == sorted(j.key for j in jobs)
    assert all(0 < len(b) <= 32 for b in parts)
    assert len(parts) >= min(n, 4 * workers)


def test_missing_index_is_a_clear_error(tmp_path):
    with pytest.raises(FvcError, match="run the ingest stage first"):
        runner.plan("features", Settings(home=tmp_path).resolved())
