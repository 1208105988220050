"""Determinism: two runs with the same inputs and seed, in separate work dirs, give identical
stage 1 to 4 Parquet (timing columns aside, work-dir prefixes normalised) and identical CV metrics."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from fvcflow.config import Settings
from fvcflow.stages import runner
from fvcflow.stages.ingest import ingest_corpus
from fvcflow.training import run_training
from tests.reliability_media import make_corpus
from tests.training_runs import small_config

pytestmark = pytest.mark.slow
STAGES = ("augment", "features", "scale", "scaled_features")
TIMING = ("seconds", "fit_seconds", "log_seconds", "recorded_at")


def one_run(corpus: Path, home: Path):
    """Ingest, stages 1-4 (2 copies per video) and a small training, all in this process."""
    settings = Settings(home=home, corpus={"kind": "folder", "root": corpus, "labels": corpus / "labels.csv"},
                        augment={"copies": 2, "seed": 7}, scale={"size": 64}).resolved()
    ingest_corpus(settings)
    for stage in STAGES:
        report = runner.run_local(stage, settings)
        assert report.failed == 0, report.failure_reasons
    cwd = os.getcwd()
    os.chdir(home)  # MLflow writes nothing outside the work dir
    try:
        summary = run_training(settings.lake(), small_config(models="logreg_s2,logreg_s24", test_size=0.0,
                                                             seed=3, report=False))
    finally:
        os.chdir(cwd)
    return settings.lake(), summary


def normalised(path: Path, home: Path) -> pl.DataFrame:
    """A table with timings dropped and the work dir's prefix replaced by ``<home>``."""
    df = pl.read_parquet(path).drop(*TIMING, strict=False)
    text = [c for c, t in df.schema.items() if t == pl.Utf8]
    return df.with_columns(pl.col(text).str.replace_all(str(home), "<home>", literal=True)).sort("video_id")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("determinism")
    corpus = tmp / "corpus"
    make_corpus(corpus, bases=3, copies=4, frames=24, size=(96, 64))
    return [(tmp / name, *one_run(corpus, tmp / name)) for name in ("run-a", "run-b")]


@pytest.mark.parametrize("table", ["index", "stage1", "stage2", "stage3", "stage4", "splits"])
def test_stage_tables_are_identical(two_runs, table):
    (home_a, lake_a, _), (home_b, lake_b, _) = two_runs
    a = normalised(getattr(lake_a, table), home_a)
    b = normalised(getattr(lake_b, table), home_b)
    assert a.height > 0
    assert_frame_equal(a, b)


def test_cv_metrics_and_predictions_are_identical(two_runs):
    (home_a, lake_a, sa), (home_b, lake_b, sb) = two_runs
    assert [r.name for r in sa.results] == [r.name for r in sb.results] and sa.results
    for ra, rb in zip(sa.results, sb.results):
        assert ra.fold_metrics == rb.fold_metrics, ra.name
        assert ra.oof_metrics == rb.oof_metrics and ra.test_metrics == rb.test_metrics, ra.name
        assert ra.best_params == rb.best_params, ra.name
    assert_frame_equal(normalised(lake_a.predictions, home_a), normalised(lake_b.predictions, home_b))
