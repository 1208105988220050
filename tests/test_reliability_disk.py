"""A full disk while a stage writes, injected for real: the work dir lives on a tmpfs of a few MiB
that a filler file fills. The stage fails with "no space left on <path>", nothing published is
damaged or half-replaced, no temporary file is left, and the rerun after freeing space completes."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from fvcflow.config import Settings
from fvcflow.errors import DiskFullError
from fvcflow.stages import runner
from fvcflow.stages.ingest import ingest_corpus
from fvcflow.store import file_hash, read_parquet
from fvcflow.video import probe
from tests.faults import fill, free, small_disk, temporaries
from tests.reliability_media import assert_lake_sound, cached_results, make_corpus

N = 4


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("disk") / "corpus"
    make_corpus(root, bases=2, copies=N // 2, frames=40, size=(160, 120))
    return root


def tiny_settings(corpus: Path, home: Path, **kw) -> Settings:
    return Settings(home=home, workers=1,
                    corpus={"kind": "folder", "root": corpus, "labels": corpus / "labels.csv"},
                    augment={"copies": 1}, scale={"size": 64}, **kw).resolved()


def stage_failures(lake, stage: str) -> int:
    failures = read_parquet(lake.failures)
    return 0 if failures is None else failures.filter(pl.col("stage") == stage).height


def test_a_full_disk_in_stage2_names_the_path_damages_nothing_and_the_rerun_completes(tiny_corpus, tmp_path):
    with small_disk(tmp_path / "disk", "8m") as disk:
        settings = tiny_settings(tiny_corpus, disk / "fvc-data")
        lake = settings.lake()
        ingest_corpus(settings)
        index = lake.index.read_bytes()

        fill(disk)                                           # a cache file cannot be written
        with pytest.raises(DiskFullError, match=r"^no space left on .*/cache/features/") as err:
            runner.run_local("features", settings)
        assert "free space" in str(err.value) and "rerun" in str(err.value)
        assert not temporaries(disk) and not cached_results(settings.home)
        assert lake.index.read_bytes() == index and not lake.stage2.exists()
        assert stage_failures(lake, "features") == 0         # no video is blamed for the disk

        free(disk)
        report = runner.run_local("features", settings)
        assert (report.done, report.failed) == (N, 0)
        published = lake.stage2.read_bytes()

        fill(disk)                                           # every video cached: the table write fails
        with pytest.raises(DiskFullError, match=r"^no space left on .*/stage2/features\.parquet"):
            runner.run_local("features", settings)
        assert lake.stage2.read_bytes() == published          # the old table, whole
        assert not temporaries(disk)

        free(disk)
        report = runner.run_local("features", settings)
        assert (report.cached, report.done) == (N, 0)
        assert_lake_sound(settings.home)


@pytest.mark.parametrize("stage,folder", [("augment", "stage1/videos"), ("scale", "stage3/videos")])
def test_a_full_disk_while_writing_a_video_leaves_no_partial_file(tiny_corpus, tmp_path, stage, folder):
    with small_disk(tmp_path / "disk", "8m") as disk:
        settings = tiny_settings(tiny_corpus, disk / "fvc-data")
        lake = settings.lake()
        ingest_corpus(settings)
        if stage == "scale":
            runner.run_local("augment", settings)
        fill(disk, leave=48 * 1024)                            # room for the start of a video, not all of it
        with pytest.raises(DiskFullError, match=rf"^no space left on .*/{folder}/"):
            runner.run_local(stage, settings)
        assert not temporaries(disk)
        assert stage_failures(lake, stage) == 0
        free(disk)
        report = runner.run_local(stage, settings)
        assert report.failed == 0 and report.done + report.cached == report.videos_in > 0
        table = read_parquet(runner.spec_of(stage).table(lake))
        for row in table.iter_rows(named=True):              # every published video is whole
            assert file_hash(row["path"]) == row["content_hash"]
            assert probe(row["path"]).n_frames > 0
        assert_lake_sound(settings.home)


def test_a_full_disk_while_mlflow_logs_an_artifact_keeps_the_registry_whole(tmp_path):
    from mlflow.tracking import MlflowClient

    from fvcflow.detector.predict import load_detector
    from fvcflow.training import finish, make_splits, train_model
    from tests.feature_tables import write_lake
    from tests.training_runs import small_config

    with small_disk(tmp_path / "disk", "12m") as disk:
        lake = write_lake(disk / "fvc-data", n_groups=16, n_aug=1, signal=2.0, seed=3, stage4=False)
        store = f"sqlite:///{tmp_path / 'mlflow.db'}"      # the store elsewhere: artifacts hit the full disk
        cfg = small_config(models="logreg_s2", tracking_uri=store, report=False)
        make_splits(lake, cfg)
        first = finish(lake, [train_model(lake, "logreg_s2", cfg)], cfg)
        assert first.registered_version == "1"
        client = MlflowClient(store, store)
        exp = client.get_experiment_by_name("fvc").experiment_id
        runs_before = {r.info.run_id for r in client.search_runs([exp])}
        artifacts_before = sorted(p for p in lake.mlartifacts.rglob("*"))

        fill(disk)
        with pytest.raises(DiskFullError, match=r"^no space left on .*/mlartifacts") as err:
            train_model(lake, "logreg_s2", cfg)
        assert "logreg_s2" in str(err.value)
        assert {r.info.run_id for r in client.search_runs([exp])} == runs_before   # half-logged runs: gone
        assert sorted(p for p in lake.mlartifacts.rglob("*")) == artifacts_before   # and their files
        assert not temporaries(disk)

        free(disk)
        det = load_detector(lake, tracking_uri=store)                      # the registered model, whole
        assert det.version == "1" and det.model_name == "logreg_s2"
        again = finish(lake, [train_model(lake, "logreg_s2", cfg)], cfg)
        assert again.registered_version == "2"
        assert load_detector(lake, tracking_uri=store).version == "2"
