"""Table digests (fvcflow.digest) and the environment fingerprint (fvcflow.fingerprint): equal
values give equal digests whatever the work dir, one changed value changes them; the summary,
MLflow and the report carry both."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from mlflow.tracking import MlflowClient

from fvcflow import fingerprint
from fvcflow.config import Settings
from fvcflow.digest import column_digests, compare, frame_digest, lake_digests, main, parquet_digest
from fvcflow.stages import runner
from fvcflow.stages.ingest import ingest_corpus
from fvcflow.store import Lake
from tests.corpus import make_tiny_corpus
from tests.training_runs import small_config

# ---------------------------------------------------------------- the digest itself

TABLE = pl.DataFrame({"video_id": ["a", "b", "c"], "x": [1.5, -0.0, float("nan")], "n": [1, None, 3],
                      "codec": ["h264", "vp9", None], "path": ["/w1/a", "/w1/b", "/w1/c"],
                      "src_path": ["/c/a", "/c/b", "/c/c"], "seconds": [1.0, 2.0, 3.0]})


def test_equal_values_give_equal_digests():
    other = (TABLE.reverse()
             .with_columns(x=pl.Series([float("nan"), 0.0, 1.5]),        # -0.0 as 0.0, NaN as NaN
                           path=pl.lit("/elsewhere/x"), src_path=pl.lit("/other/y"), seconds=pl.lit(9.0)))
    assert frame_digest(other) == frame_digest(TABLE)
    assert len(frame_digest(TABLE)) == 12


@pytest.mark.parametrize("change", [
    pl.col("x").replace(1.5, np.nextafter(1.5, 2.0)),          # one ulp
    pl.col("n").fill_null(0),                                   # a null becomes a value
    pl.col("codec").replace("vp9", "VP9"),
    pl.col("n").cast(pl.Int32),                                  # a type
])
def test_one_changed_value_changes_the_digest(change):
    changed = TABLE.with_columns(change)
    assert frame_digest(changed) != frame_digest(TABLE)
    differ = [c for c, d in column_digests(changed).items() if column_digests(TABLE)[c] != d]
    assert len(differ) == 1


def test_a_renamed_or_missing_column_changes_the_digest():
    assert frame_digest(TABLE.rename({"x": "y"})) != frame_digest(TABLE)
    assert frame_digest(TABLE.drop("n")) != frame_digest(TABLE)


# ---------------------------------------------------------------- two work dirs, one stage

def _run(corpus: Path, home: Path) -> tuple[Lake, runner.StageReport]:
    settings = Settings(home=home, corpus={"kind": "folder", "root": corpus, "labels": corpus / "labels.csv"},
                        features={"local": False}, workers=1).resolved()
    ingest_corpus(settings)
    return settings.lake(), runner.run_local("features", settings)


@pytest.fixture(scope="module")
def two_dirs(tmp_path_factory):
    """The same corpus in two folders, each ingested into its own work dir and through stage 2."""
    tmp = tmp_path_factory.mktemp("digest")
    make_tiny_corpus(tmp / "corpus-a", with_bad=False)
    shutil.copytree(tmp / "corpus-a", tmp / "corpus-b")
    return tmp, _run(tmp / "corpus-a", tmp / "home-a"), _run(tmp / "corpus-b", tmp / "home-b")


def test_two_work_dirs_publish_equal_digests(two_dirs):
    tmp, (lake_a, report_a), (lake_b, report_b) = two_dirs
    assert pl.read_parquet(lake_a.index)["path"][0] != pl.read_parquet(lake_b.index)["path"][0]
    assert report_a.digest and report_a.digest == report_b.digest
    assert report_a.as_rows()[0]["digest"] == report_a.digest
    assert report_a.digest == parquet_digest(lake_a.stage2)
    assert lake_digests(lake_a) == lake_digests(lake_b) and set(lake_digests(lake_a)) == {"index", "stage2"}
    assert compare(tmp / "home-a", tmp / "home-b") == [f"index: {lake_digests(lake_a)['index']} in both",
                                                       f"stage2: {report_a.digest} in both"]


def test_one_changed_feature_value_shows(two_dirs, tmp_path, capsys):
    tmp, (lake_a, _), (lake_b, report_b) = two_dirs
    home_c = tmp_path / "home-c"
    shutil.copytree(tmp / "home-b", home_c)
    lake_c = Lake.at(home_c)
    t = pl.read_parquet(lake_c.stage2)
    x = t["grad_mean_mean"].to_numpy().copy()
    x[3] = np.nextafter(x[3], np.inf)                 # one value, one ulp
    t.with_columns(grad_mean_mean=pl.Series(x)).write_parquet(lake_c.stage2)
    assert parquet_digest(lake_c.stage2) != report_b.digest
    lines = compare(tmp / "home-a", home_c)
    assert lines[0].endswith("in both") and lines[1].endswith("1 columns differ: grad_mean_mean"), lines
    assert main([str(tmp / "home-a"), str(home_c)]) == 0
    assert "grad_mean_mean" in capsys.readouterr().out


# ---------------------------------------------------------------- the fingerprint

def test_fingerprint_names_the_versions_and_the_cpu():
    fp = fingerprint.fingerprint()
    import numba
    import numpy

    assert fp["numpy"] == numpy.__version__ and fp["numba"] == numba.__version__
    assert fp["python"].count(".") == 2 and fp["cpu"] and fp["numba_cpu"] not in ("", fingerprint.ABSENT)
    assert all(isinstance(v, str) and v for v in fp.values())
    assert set(fingerprint.MACHINE_KEYS) <= set(fp)
    if Path("/proc/cpuinfo").exists() and "avx2" in Path("/proc/cpuinfo").read_text():
        assert "avx2" in fp["cpu_vector"].split() and "avx2" in fp["numba_vector"].split()
    assert fingerprint.tags()["fvc.env.numpy"] == fp["numpy"]


def test_fingerprint_and_digests_reach_mlflow_the_report_and_the_card(tmp_path):
    from fvcflow.training import run_training
    from tests.feature_tables import write_lake

    lake = write_lake(tmp_path / "lake", n_groups=12, n_aug=1, signal=2.0, seed=5)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        summary = run_training(lake, small_config(models="logreg_s2", test_size=0.0))
    finally:
        os.chdir(cwd)
    fp = fingerprint.fingerprint()
    assert set(summary.digests) >= {"index", "stage2", "splits", "predictions"}
    assert summary.digests["predictions"] == parquet_digest(lake.predictions)
    run = MlflowClient(lake.mlflow_uri).get_run(summary.results[0].run_id)
    tags = run.data.tags
    assert tags["fvc.env.cpu"] == fp["cpu"] and tags["fvc.env.numba"] == fp["numba"]
    assert tags["fvc.env.cpu_vector"] == fp["cpu_vector"] and tags["fvc.env.numba_cpu"] == fp["numba_cpu"]
    assert tags["fvc.digest.stage2"] == parquet_digest(lake.stage2)
    assert tags["fvc.digest.splits"] == summary.digests["splits"]
    page = summary.report_path.read_text()
    assert "id='environment'" in page or 'id="environment"' in page
    assert fp["numba_cpu"] in page and summary.digests["predictions"] in page
    card = (lake.stage5 / "model_card.md").read_text()
    assert "## Reproducibility" in card and summary.digests["stage2"] in card and fp["cpu"] in card
