"""The stage runner without Prefect: plan, batches, the content-addressed cache, publishing."""

from __future__ import annotations

import os
import re
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


def test_equal_content_videos_each_get_their_own_stage1_copies(lake_settings, tmp_path):
    """Two indexed videos of the same bytes are two sources: each copy's parameters are drawn from
    its source's id, so each has its own file and cached row, and a rerun has nothing to do (the
    key names the copy's file; it once named only the content, and the twins fought over one row)."""
    lake = lake_settings.lake()
    index = pl.read_parquet(lake.index).sort("video_id")
    twin = tmp_path / "twin.mp4"
    shutil.copy(index["path"][0], twin)
    extra = index.head(1).with_columns(video_id=pl.lit("twin"), path=pl.lit(str(twin)), group_id=pl.lit("z"))
    both = pl.concat([index, extra]).with_columns(split=pl.lit("train"))     # every one trains
    write_parquet_atomic(both, lake.index)
    runner.run_local("augment", lake_settings)
    table = pl.read_parquet(lake.stage1).sort("video_id")
    pair = table.filter(pl.col("source_video_id").is_in([index["video_id"][0], "twin"]))
    assert pair.height == 2 and pair["path"].n_unique() == 2
    for r in pair.to_dicts():                          # each row names its own copy, made from its id
        assert r["path"].endswith(f"/{r['source_video_id']}/aug1.mp4")
        assert file_hash(r["path"]) == r["content_hash"]
    assert pair["content_hash"].n_unique() == 2
    again = runner.plan("augment", lake_settings)
    assert again.todo == [] and again.damaged == [] and again.cached == again.total == 4


def test_a_fully_cached_run_answers_from_the_manifest_without_prefect_or_dask(lake_settings):
    """``fvc run --stages features`` with everything cached: the summary as a run prints it, from
    the manifests, in a process that never imports Prefect nor Dask; a stage with work: None."""
    import subprocess
    import sys

    runner.run_local("features", lake_settings)
    before = pl.read_parquet(lake_settings.lake().stage2)
    script = ("import sys; from fvcflow.cli import main; rc = main(sys.argv[1:]); "
              "print('imported:', sorted(m for m in ('prefect', 'distributed') if m in sys.modules)); "
              "sys.exit(rc)")
    res = subprocess.run([sys.executable, "-c", script, "--home", str(lake_settings.home), "run",
                          "--stages", "features"], capture_output=True, text=True, timeout=300,
                         env={k: v for k, v in os.environ.items() if k != "FVC_CONFIG"})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "imported: []" in res.stdout
    row = next(line.split() for line in res.stdout.splitlines() if line.split()[:1] == ["features"])
    assert row[:3] == ["features", "3", "3"]                     # videos, cached
    assert re.search(r"^features: done, 3 videos \(0 computed, 3 cached, 0 failed\)", res.stderr, re.M)
    assert "done; every stage cached" in res.stdout
    assert pl.read_parquet(lake_settings.lake().stage2).equals(before)
    assert runner.from_manifest(["features"], lake_settings) is not None
    forced = lake_settings.model_copy(update={"force": ["features"]})
    assert runner.from_manifest(["features"], forced) is None
    assert runner.from_manifest(["augment", "features"], lake_settings) is None   # stage 1 has work


def test_stage1_rows_under_the_previous_keys_are_adopted_not_made_again(lake_settings):
    """A work dir of the version whose stage-1 key named only the content (copy, seed, crf,
    preset): its rows are recorded under the new keys at the next plan, nothing is made again, and
    the old rows leave the manifest when the stage finishes, their files kept."""
    from fvcflow.stages.manifest import KEY, WRITTEN, Manifest
    from fvcflow.store import cache_key
    from fvcflow.video.write import STAGE_PRESET

    lake, cfg = lake_settings.lake(), lake_settings.augment
    runner.run_local("augment", lake_settings)
    table = pl.read_parquet(lake.stage1)
    hashes = dict(pl.read_parquet(lake.index).select("video_id", "content_hash").iter_rows())
    m = Manifest(lake, "augment")
    rows = m.read().rows
    new_keys = set(rows[KEY])
    old = {r[KEY]: cache_key(hashes[r["source_video_id"]], "augment",
                             {"copy": 1, "seed": cfg.seed, "crf": cfg.crf, "preset": STAGE_PRESET})
           for r in table.select(KEY, "source_video_id").to_dicts()}
    shutil.rmtree(m.root)                               # the manifest as the previous version left it
    m.append(rows.with_columns(pl.col(KEY).replace_strict(old)).drop(WRITTEN).to_dicts())
    m.compact()
    stamps = {p: os.stat(p).st_mtime_ns for p in table["path"]}
    again = runner.plan("augment", lake_settings)
    assert again.todo == [] and again.cached == again.total == table.height > 0
    runner.finish(again, [], lake_settings)
    assert set(m.read().rows[KEY]) == new_keys              # the old keys' rows are gone
    assert {p: os.stat(p).st_mtime_ns for p in table["path"]} == stamps     # no copy made again


def test_rows_of_a_video_gone_from_the_corpus_leave_a_stage_without_files(lake_settings, caplog):
    """Stage 2 writes no files of its own: when a video leaves the index its manifest row goes at
    the next finish (said once), the table has its other rows, and no file is touched (the paths its
    rows name are the sources')."""
    from fvcflow.stages.manifest import KEY, Manifest

    lake = lake_settings.lake()
    runner.run_local("features", lake_settings)
    manifest = Manifest(lake, "features")
    keys = set(manifest.read().rows[KEY])
    index = pl.read_parquet(lake.index)
    gone = index["video_id"][2]
    write_parquet_atomic(index.filter(pl.col("video_id") != gone), lake.index)
    with caplog.at_level("WARNING", logger="fvcflow.stages"):
        report = runner.run_local("features", lake_settings)
    assert (report.done, report.cached, report.rows) == (0, 2, 2)
    left = set(manifest.read().rows[KEY])
    assert len(left) == 2 and left < keys
    assert gone not in pl.read_parquet(lake.stage2)["video_id"].to_list()
    assert "features: removed 1 cached results no job names any more" in caplog.text
    assert all(os.path.exists(p) for p in index["path"])          # the sources, all still there


def test_a_videos_own_failure_stands_on_a_rerun_without_the_flow(lake_settings, tmp_path, capsys):
    """A video a stage failed on (over a bound) is not tried again while its file and that bound are
    unchanged: the rerun is answered from the manifests (``from_manifest``, what ``fvc run`` uses to
    skip Prefect and Dask), its failure row stands and is counted; ``--retry-failed``, a changed
    file or another value of the bound make it work again."""
    import time

    from fvcflow.cli import main as fvc

    lake = lake_settings.lake()
    (tmp_path / "fvc.toml").write_text("[limits]\nmax_frames = 5\n")
    bounded = lake_settings.model_copy(update={"limits": lake_settings.limits.model_copy(
        update={"max_frames": 5})})
    assert runner.run_local("features", bounded).failed == 3
    first = pl.read_parquet(lake.failures).sort("video_id")
    assert first["reason"].str.contains("limits.max_frames = 5").all()

    reports = runner.from_manifest(["features"], bounded)
    assert reports is not None and (reports[0].failed, reports[0].cached, reports[0].done) == (3, 0, 0)
    assert pl.read_parquet(lake.failures).sort("video_id").equals(first)       # the rows stand, as they were
    lake.explore.mkdir(parents=True, exist_ok=True)
    (lake.explore / "explore.html").write_text("<html></html>")   # the corpus page, not under test (10 s)
    rc = fvc(["--home", str(lake_settings.home), "--config", str(tmp_path / "fvc.toml"), "run",
              "--stages", "features"])
    out = capsys.readouterr().out
    assert rc == 0 and "done; every stage cached" in out, out
    assert "3 failure(s) of an earlier run stand, not tried again" in out and "--retry-failed" in out
    assert next(line.split() for line in out.splitlines() if line.split()[:1] == ["features"])[:4] == \
        ["features", "0", "0", "3"], out                                        # rows, cached, failed

    assert runner.from_manifest(["features"], bounded.model_copy(update={"retry_failed": True})) is None
    assert len(runner.plan("features", bounded.model_copy(update={"retry_failed": True})).todo) == 3
    video = pl.read_parquet(lake.index)["path"][0]
    os.utime(video, (time.time() + 5, time.time() + 5))                        # the file changed since
    again = runner.plan("features", bounded)
    assert [j.path for j in again.todo] == [video] and len(again.failed_before) == 2
    runner.finish(again, [], bounded, announce=False)
    report = runner.run_local("features", lake_settings)                       # the bound raised again
    assert (report.done, report.failed) == (3, 0) and not pl.read_parquet(lake.failures).height


CLAIMING = """
import sys
from fvcflow.config import Settings
from fvcflow.stages import runner
settings = Settings(home=sys.argv[1], features={"local": sys.argv[2] == "local"}).resolved()
runner.plan("features", settings, announce=False)
print("planned", flush=True)
sys.stdin.read()                       # the stage runs until the test closes stdin
"""


def test_a_concurrent_run_of_a_stage_with_other_settings_is_refused_naming_it(lake_settings):
    """Two processes on one work dir: while one has planned stage 2 (and would prune what its plan
    does not name), a run of stage 2 with other settings is refused in one line naming the other
    run's pid; one with the same jobs goes on; once the other has died, the stage is free again."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "FVC_CONFIG"}
    proc = subprocess.Popen([sys.executable, "-c", CLAIMING, str(lake_settings.home), "local"], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "planned"
        other = lake_settings.model_copy(update={"features": lake_settings.features.model_copy(
            update={"local": False})})
        with pytest.raises(FvcError, match=rf"another run is working on stage features of .* \(pid "
                                           rf"{proc.pid} on .*\); the two would remove each other's"):
            runner.plan("features", other)
        assert len(runner.plan("features", lake_settings).todo) == 3            # the same jobs: side by side
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert len(runner.plan("features", other).todo) == 3                        # its claim died with it
