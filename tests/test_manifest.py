"""The stage manifest: a few checked Parquet files per stage instead of one per video; written videos
checked by size and time, by content on demand (``fvc verify``); old per-video caches migrated once."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from fvcflow.config import Settings
from fvcflow.stages import runner
from fvcflow.stages.ingest import ingest_corpus
from fvcflow.stages.manifest import DST_MTIME, KEY, WRITTEN, Manifest
from fvcflow.stages.verify import verify
from fvcflow.store import file_hash, read_checked_parquet, write_checked_parquet
from tests.reliability_media import assert_lake_sound, feature_table, make_corpus, manifest_files


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("manifest") / "corpus"
    make_corpus(root, bases=2, copies=3, frames=30, size=(96, 64))
    return root


def settings_at(corpus: Path, home: Path, **kw) -> Settings:
    return Settings(home=home, workers=1, augment={"copies": 1}, scale={"size": 48},
                    corpus={"kind": "folder", "root": corpus, "labels": corpus / "labels.csv"},
                    **kw).resolved()


@pytest.fixture
def lake_settings(corpus, tmp_path) -> Settings:
    settings = settings_at(corpus, tmp_path / "fvc-data")
    ingest_corpus(settings)
    return settings


def test_a_stage_keeps_a_few_files_whatever_its_videos_and_plans_from_one_read(lake_settings):
    report = runner.run_local("features", lake_settings)
    assert report.done == 6
    files = manifest_files(lake_settings.home)
    cache = lake_settings.lake().cache_dir("features")
    assert all(p.parent == cache / "manifest" for p in files) and 0 < len(files) <= 16   # parts compacted
    assert not any((cache / "parts").iterdir())
    assert sum(p.stat().st_size and read_checked_parquet(p).height for p in files) == 6
    published = pl.read_parquet(lake_settings.lake().stage2)
    assert not [c for c in published.columns if c.startswith("_fvc_")]          # bookkeeping stays private
    again = runner.plan("features", lake_settings)
    assert (again.cached, len(again.todo)) == (6, 0)


def test_old_per_video_cache_files_are_migrated_once_and_said(lake_settings, caplog):
    """A work dir of an older fvcflow: ``cache/<stage>/<xx>/<key>.parquet``, one per video; one of
    them without a checksum (older still), one damaged. The plan migrates the sound ones (not
    recomputed), recomputes the other two, says so once; the table matches a fresh run."""
    runner.run_local("features", lake_settings)
    lake = lake_settings.lake()
    reference = feature_table(lake.stage2)
    manifest = Manifest(lake, "features")
    rows = manifest.read().rows.drop(WRITTEN).sort(KEY).to_dicts()
    for p in manifest_files(lake_settings.home):
        p.unlink()
    legacy = []
    for row in rows:        # the old layout, written by the old writer
        path = lake.cache_dir("features") / row[KEY][:2] / f"{row[KEY]}.parquet"
        write_checked_parquet(pl.DataFrame([row]), path)
        legacy.append(path)
    pl.DataFrame([rows[0]]).write_parquet(legacy[0])                      # no checksum
    data = bytearray(legacy[1].read_bytes())
    data[len(data) // 2] ^= 0x10
    legacy[1].write_bytes(bytes(data))                                   # damaged

    with caplog.at_level(logging.WARNING, logger="fvcflow.stages"):
        plan = runner.plan("features", lake_settings)
    said = [r.getMessage() for r in caplog.records if "migrated" in r.getMessage()]
    assert said == ["features: migrated 4 per-video cache files into the stage manifest (once); 1 without a "
                    "checksum (older format) will be computed again; 1 damaged, computed again"]
    assert str(legacy[1]) in caplog.text
    assert not any(p.exists() for p in legacy)
    assert not [p for p in lake.cache_dir("features").iterdir() if len(p.name) == 2]
    assert sorted(j.key for j in plan.todo) == sorted([rows[0][KEY], rows[1][KEY]])
    caplog.clear()
    outcome = runner.run_batch("features", plan.todo, lake_settings)
    report = runner.finish(plan, runner.collect(plan, [outcome]), lake_settings)
    assert (report.cached, report.done, report.failed) == (4, 2, 0)
    assert_frame_equal(feature_table(lake.stage2), reference)
    with caplog.at_level(logging.WARNING, logger="fvcflow.stages"):
        runner.plan("features", lake_settings)
    assert "migrated" not in caplog.text                                 # once


def _rewrite_keeping_stat(path: Path, at: float = 0.5) -> None:
    """Flip one bit of ``path`` and give it back its size and modification time (bit rot, or a
    copy tool that keeps times): only reading the content can tell."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x04
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_written_video_is_checked_by_stat_and_by_content_on_demand(lake_settings):
    runner.run_local("augment", lake_settings)
    lake = lake_settings.lake()
    table = pl.read_parquet(lake.stage1).sort("video_id")
    touched, rotten = Path(table["path"][0]), Path(table["path"][1])
    rotten_hash = table["content_hash"][1]

    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 5_000_000_000))
    _rewrite_keeping_stat(rotten)
    plan = runner.plan("augment", lake_settings)
    assert plan.todo == [] and plan.damaged == []        # the touched one hashed and kept; rot unseen
    rows = Manifest(lake, "augment").read().rows
    mtime = rows.filter(pl.col("path") == str(touched))[DST_MTIME][0]
    assert mtime == touched.stat().st_mtime_ns            # its new time recorded: no reading next time

    size = sum(Path(p).stat().st_size for p in table["path"])
    report = verify(lake_settings)
    assert (report.videos, report.bytes, report.rows) == (table.height, size, table.height)
    assert [d.split(":")[0] for d in report.damaged] == [str(rotten)] and not report.missing
    assert not rotten.exists()                            # removed: the next run makes it again
    again = runner.run_local("augment", lake_settings)
    assert (again.done, again.cached, again.failed) == (1, table.height - 1, 0)
    assert file_hash(rotten) == rotten_hash
    assert verify(lake_settings).ok
    assert_lake_sound(lake_settings.home)


def test_fvc_verify_names_the_damaged_video_and_exits_1(lake_settings):
    runner.run_local("augment", lake_settings)
    runner.run_local("scale", lake_settings)
    scaled = pl.read_parquet(lake_settings.lake().stage3).sort("video_id")
    victim = Path(scaled["path"][2])
    cmd = [sys.executable, "-m", "fvcflow", "--home", str(lake_settings.home), "verify", "--workers", "1"]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    copies = pl.read_parquet(lake_settings.lake().stage1).height
    assert f"; {copies + scaled.height} videos (" in ok.stdout and "): 0 damaged, 0 missing" in ok.stdout
    _rewrite_keeping_stat(victim, 0.7)
    bad = subprocess.run(cmd + ["--stages", "scale"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1, bad.stderr[-2000:]
    assert f"verify: {scaled.height} cached results of scale; {scaled.height} videos" in bad.stdout
    assert f"damaged (removed; the next run makes it again): {victim}: the video differs" in bad.stdout
    assert "Traceback" not in bad.stderr
    wrong = subprocess.run(cmd + ["--stages", "nope"], capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and wrong.stderr.strip().startswith("error: --stages: unknown stage(s) nope")


def test_compaction_keeps_a_live_writers_part_and_reads_it(lake_settings):
    """Another run's batch still in flight (its part open, its writer alive): a finishing stage reads
    its rows but leaves its file; once the writer is gone, the next compaction folds it in."""
    runner.run_local("features", lake_settings)
    lake = lake_settings.lake()
    manifest = Manifest(lake, "features")
    row = manifest.read().rows.drop(WRITTEN).to_dicts()[0]
    code = ("import sys, time\n"
            "from fvcflow.stages.manifest import Manifest\n"
            "from fvcflow.store import Lake\n"
            "import json\n"
            "w = Manifest(Lake.at(sys.argv[1]), 'features').writer()\n"
            "row = json.loads(sys.argv[2]); row['cache_key'] = 'f' * 32\n"
            "w.add(row)\n"
            "print(w.path, flush=True)\n"
            "sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(lake_settings.home),
                             json.dumps(row, default=str)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        part = Path(proc.stdout.readline().strip())
        assert part.exists() and part.name.endswith(".open.parquet")
        assert manifest.compact() == 0 and part.exists()             # alive: left alone
        assert "f" * 32 in manifest.read().keys()                    # but read
    finally:
        proc.stdin.close()
        proc.wait(30)
    assert manifest.compact() == 1 and not part.exists()            # its writer gone: folded in
    assert "f" * 32 in manifest.read().keys()


def test_finish_names_a_result_that_vanished_after_the_plan(lake_settings):
    runner.run_local("features", lake_settings)
    plan = runner.plan("features", lake_settings)
    for p in manifest_files(lake_settings.home):
        p.unlink()
    report = runner.finish(plan, [], lake_settings)
    assert report.failed == 6 and report.rows == 0
    reasons = set(pl.read_parquet(lake_settings.lake().failures)["reason"])
    assert reasons == {"its cached result is missing (removed during the run); rerun to recompute it"}


def test_planning_a_stage_of_many_jobs_reads_its_manifest_once(tmp_path):
    """The planner's anti-join on 50,000 jobs against 50,000 manifest rows, without videos."""
    lake_root = tmp_path / "fvc-data"
    keys = [f"{i:032x}" for i in range(50_000)]
    rows = pl.DataFrame({KEY: keys, "noise": [float(i) for i in range(50_000)], WRITTEN: [1] * 50_000})
    settings = Settings(home=lake_root).resolved()
    manifest = Manifest(settings.lake(), "features")
    manifest.append(rows.head(49_000).drop(WRITTEN).to_dicts())
    assert manifest.compact() == 49_000
    jobs = pl.DataFrame({"key": keys[::-1], "video_id": [f"v{i}" for i in range(50_000)], "path": "x.mp4"})
    loaded = manifest.read()
    todo = runner._todo(manifest, loaded.rows, jobs, [])
    assert todo["key"].to_list() == keys[49_000:][::-1]        # the jobs' own order


def test_an_open_part_of_another_host_is_folded_once_quiet(tmp_path):
    """A worker on another host died with its batch's part open: no process of this host can ask
    whether it lives, so its part is folded once it has not been rewritten for the quiet time (a
    live writer rewrites it after every video); a recent one is read but left alone."""
    settings = Settings(home=tmp_path / "fvc-data").resolved()
    manifest = Manifest(settings.lake(), "features")
    keys = [f"{i:032x}" for i in range(4)]
    old = manifest.parts / "node-17_cluster.4242.a1b2c3d4e5f6.open.parquet"
    new = manifest.parts / "node-18_cluster.4242.a1b2c3d4e5f7.open.parquet"
    write_checked_parquet(pl.DataFrame({KEY: keys[:2], "noise": [1.0, 2.0], WRITTEN: [1, 1]}), old)
    write_checked_parquet(pl.DataFrame({KEY: keys[2:], "noise": [3.0, 4.0], WRITTEN: [1, 1]}), new)
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    assert set(manifest.read().rows[KEY]) == set(keys)             # both read by a plan
    assert manifest.compact(quiet_s=600) == 2                      # the quiet one folded
    assert not old.exists() and new.exists()
    assert sorted(manifest.read().rows[KEY]) == keys
    assert manifest.compact(quiet_s=7200) == 0 and new.exists()    # within the quiet time: kept
