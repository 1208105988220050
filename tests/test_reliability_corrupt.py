"""A damaged cache entry, injected for real (a truncated or bit-flipped file of the feature stage's
manifest, a truncated augmented video, a bit-flipped scaled video, a damaged checked blob): detected
by the checksum or content hash recorded at write time, reported, recomputed, and never read into a
table."""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from fvcflow.config import Settings
from fvcflow.stages import runner
from fvcflow.stages.ingest import ingest_corpus
from fvcflow.store import (
    CorruptEntry,
    file_hash,
    read_checked_bytes,
    read_checked_parquet,
    read_parquet,
    write_checked_bytes,
)
from tests.reliability_media import assert_lake_sound, feature_table, make_corpus, manifest_files

STAGES = ("augment", "features", "scale", "scaled_features")


def flip(path: Path, at: float = 0.5) -> None:
    """Flip one bit of ``path`` at a fraction ``at`` of its length (in place, same size)."""
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x08
    path.write_bytes(bytes(data))


def truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A small lake with stages 1-4 done, and its tables."""
    root = tmp_path_factory.mktemp("corrupt")
    corpus = root / "corpus"
    make_corpus(corpus, bases=2, copies=2, frames=40, size=(160, 120))
    settings = Settings(home=root / "fvc-data", workers=1, augment={"copies": 1}, scale={"size": 64},
                        corpus={"kind": "folder", "root": corpus, "labels": corpus / "labels.csv"}).resolved()
    ingest_corpus(settings)
    for stage in STAGES:
        runner.run_local(stage, settings)
    lake = settings.lake()
    tables = {s: feature_table(runner.spec_of(s).table(lake)) for s in STAGES}
    return settings, tables


def test_damaged_cached_results_and_videos_are_reported_recomputed_and_the_tables_match(built, caplog):
    settings, reference = built
    lake = settings.lake()
    features = manifest_files(settings.home, "features")
    assert len(features) >= 2
    lost = sum(read_checked_parquet(p).height for p in features[:2])   # the rows these files hold
    truncate(features[0])
    flip(features[1])
    augmented = read_parquet(lake.stage1).sort("video_id")
    aug_video = Path(augmented["path"][0])
    truncate(aug_video)
    scaled = read_parquet(lake.stage3).sort("video_id")
    scaled_video = Path(scaled["path"][1])
    flip(scaled_video, 0.4)

    with caplog.at_level(logging.WARNING, logger="fvcflow.stages"):
        reports = {s: runner.run_local(s, settings) for s in STAGES}
    assert (reports["augment"].damaged, reports["augment"].done) == (1, 1)
    assert (reports["features"].damaged, reports["features"].done) == (2, lost)
    assert (reports["scale"].damaged, reports["scale"].done) == (1, 1)
    assert reports["scaled_features"].damaged == 0
    assert all(r.failed == 0 for r in reports.values())
    warned = "\n".join(r.getMessage() for r in caplog.records)
    for path in (features[0], features[1], aug_video, scaled_video):
        assert str(path) in warned, f"{path} not reported"
    assert "damaged cache entry" in warned
    # the recomputed entries give the tables of the undamaged run (the videos the same bytes again)
    for stage in STAGES:
        assert_frame_equal(feature_table(runner.spec_of(stage).table(lake)), reference[stage])
    assert file_hash(aug_video) == augmented["content_hash"][0]
    assert file_hash(scaled_video) == scaled["content_hash"][1]
    assert_lake_sound(settings.home)


def test_an_entry_damaged_after_the_plan_is_never_read_into_the_table(built):
    settings, reference = built
    lake = settings.lake()
    plan = runner.plan("features", settings)
    assert not plan.todo
    victim = manifest_files(settings.home, "features")[2]
    keys = set(read_checked_parquet(victim)["cache_key"])
    flip(victim, 0.3)
    report = runner.finish(plan, [], settings)
    table = pl.read_parquet(lake.stage2)
    missing = [j.video_id for j in plan.jobs if j.key in keys]
    assert missing and not set(missing) & set(table["video_id"])     # left out, not read
    assert report.failed == len(missing)
    failures = read_parquet(lake.failures).filter(pl.col("stage") == "features")
    assert set(failures["video_id"]) == set(missing)
    assert "damaged" in failures["reason"][0] and "rerun" in failures["reason"][0]
    again = runner.run_local("features", settings)                   # the rerun recomputes it
    assert again.done == len(missing) and again.failed == 0
    assert_frame_equal(feature_table(lake.stage2), reference["features"])
    assert read_parquet(lake.failures).filter(pl.col("stage") == "features").height == 0


def test_a_checked_blob_refuses_truncation_and_flipped_bits(tmp_path):
    """The store's checked blobs (fold results, epoch checkpoints, clip arrays) verify on read."""
    payload = bytes(range(256)) * 64
    path = write_checked_bytes(payload, tmp_path / "fold0.bin")
    assert read_checked_bytes(path) == payload
    assert read_checked_bytes(tmp_path / "missing.bin") is None
    flip(path, 0.7)
    with pytest.raises(CorruptEntry, match="differs from the checksum"):
        read_checked_bytes(path)
    write_checked_bytes(payload, path)
    truncate(path, 0.5)
    with pytest.raises(CorruptEntry, match="truncated"):
        read_checked_bytes(path)


def test_a_killed_video_writers_partial_file_is_swept_by_the_next_plan(tmp_path):
    """``kill -9`` of a process while it encodes a video: its partial file names the writer, and
    the sweep removes it once the writer is gone (a live writer's is kept)."""
    import os
    import signal
    import subprocess
    import sys

    from fvcflow.store import sweep_temporary
    from tests.test_reliability_resume import wait_for

    code = ("import sys, numpy as np\n"
            "from fvcflow.video import VideoWriter\n"
            "frames = np.random.default_rng(0).integers(0, 255, (10, 240, 320, 3), dtype=np.uint8)\n"
            "with VideoWriter(sys.argv[1], 320, 240, 25) as w:\n"
            "    while True:\n"
            "        w.write(frames)\n")
    out = tmp_path / "videos" / "aug1.mp4"
    out.parent.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)])
    try:
        wait_for(lambda: any(out.parent.glob(".aug1.partial-*")), 120, "the partial file", proc, poll=0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    partial = next(out.parent.glob(".aug1.partial-*"))
    live = out.parent / f".x.partial-{partial.name.split('.partial-')[1].split('.')[0]}.{os.getpid()}.ab.mp4"
    live.write_bytes(b"in flight")
    assert sweep_temporary(tmp_path) == [partial]
    assert not partial.exists() and live.exists() and not out.exists()


def test_a_temporary_file_of_a_writer_that_died_this_run_is_gone_when_the_stage_finishes(built):
    """A Dask worker killed while it writes a cache file leaves its temporary file; Dask runs the
    batch again elsewhere, so the stage's finish (not only the next run's plan) removes it. A live
    writer's temporary file is kept."""
    import os
    import subprocess
    import sys

    settings, reference = built
    lake = settings.lake()
    plan = runner.plan("features", settings)
    folder = lake.cache_dir("features") / "00"
    code = ("import os, sys\n"
            "from fvcflow.store import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n"
            "    tmp.write_bytes(b'half a parquet file')\n"
            "    os._exit(9)\n")  # no cleanup runs: what SIGKILL leaves
    proc = subprocess.run([sys.executable, "-c", code, str(folder / "feedface.parquet")])
    assert proc.returncode == 9
    dead = list(folder.glob(".feedface.parquet.*.tmp"))
    assert len(dead) == 1
    live = folder / dead[0].name.replace(f".{dead[0].name.split('.')[-3]}.", f".{os.getpid()}.")
    live.write_bytes(b"in flight")
    try:
        report = runner.finish(plan, [], settings)
        assert not dead[0].exists() and live.exists()
    finally:
        live.unlink()
    assert report.failed == 0
    assert_frame_equal(feature_table(lake.stage2), reference["features"])
    assert_lake_sound(settings.home)
