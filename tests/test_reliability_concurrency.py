"""Two processes on one work dir at once: the failures table, the index and the stage 2 cache and
table stay whole and lose nothing (read-modify-write updates hold ``store.lake_lock``)."""

from __future__ import annotations

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
from fvcflow.store import Lake, lake_lock
from tests.media import write_video
from tests.reliability_media import (
    assert_lake_sound,
    cached_results,
    feature_table,
    make_corpus,
    write_labels,
)

ROUNDS = 25

FAILURES = """
import sys
from fvcflow.store import Lake, failure_row, record_failures
lake, who = Lake.at(sys.argv[1]), sys.argv[2]
for i in range(int(sys.argv[3])):
    record_failures(lake, [failure_row("probe", f"/{who}/{i}.mp4", "test row")])
"""

INGESTS = """
import sys
from fvcflow.ingest.index import ingest
from fvcflow.store import Lake
lake, root, who = Lake.at(sys.argv[1]), sys.argv[2], sys.argv[3]
for i in range(int(sys.argv[4])):
    ingest("folder", root, lake, labels=f"{root}/labels.csv", source=f"{who}{i}", workers=1)
"""


def run_together(*argvs: list[str]) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", *a], stderr=subprocess.PIPE, text=True) for a in argvs]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err


def test_concurrent_failure_updates_lose_no_row(tmp_path):
    home = tmp_path / "fvc-data"
    run_together([FAILURES, str(home), "a", str(ROUNDS)], [FAILURES, str(home), "b", str(ROUNDS)])
    failures = pl.read_parquet(Lake.at(home).failures)
    assert failures.height == 2 * ROUNDS
    assert failures["path"].n_unique() == 2 * ROUNDS


def test_concurrent_ingests_lose_no_index_row(tmp_path):
    """Two processes each ingest a one-video corpus under a new source, over and over; every
    source's row must survive (without the lock, one merge overwrites the other's)."""
    roots = []
    for k in range(2):
        root = tmp_path / f"corpus{k}"
        write_video(root / "v.mp4", n=3, seed=k)
        (root / "bad.mp4").write_bytes(b"")  # one failure per ingest too
        write_labels(root, [("v.mp4", "real", "g"), ("bad.mp4", "fake", "g")])
        roots.append(root)
    home = tmp_path / "fvc-data"
    n = ROUNDS // 2
    run_together([INGESTS, str(home), str(roots[0]), "a", str(n)],
                 [INGESTS, str(home), str(roots[1]), "b", str(n)])
    lake = Lake.at(home)
    index = pl.read_parquet(lake.index)
    assert sorted(index["source"]) == sorted([f"{w}{i}" for w in "ab" for i in range(n)])
    failures = pl.read_parquet(lake.failures)
    assert sorted(Path(p).parent.name for p in failures["path"]) == ["corpus0", "corpus1"]
    assert_lake_sound(home)


def test_the_lock_excludes_another_process(tmp_path):
    lake = Lake.at(tmp_path / "fvc-data")
    # The child says when it starts to wait (after its imports, which take seconds on a busy
    # machine), so the wait it measures is the time the lock was held after that, not start-up.
    probe = ("import sys, time\nfrom fvcflow.store import Lake, lake_lock\n"
             "print('waiting', flush=True)\n"
             "t = time.monotonic()\nwith lake_lock(Lake.at(sys.argv[1]), 'index'):\n"
             "    print(time.monotonic() - t, flush=True)\n")
    with lake_lock(lake, "index"):
        proc = subprocess.Popen([sys.executable, "-c", probe, str(lake.root)], stdout=subprocess.PIPE,
                                text=True)
        assert proc.stdout.readline().strip() == "waiting"
        time.sleep(2)
        assert proc.poll() is None  # still waiting for the lock
    out, _ = proc.communicate(timeout=60)
    assert float(out) >= 1.5


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("concurrent") / "corpus"
    make_corpus(root, bases=2, copies=6, frames=120, size=(160, 120))
    return root


FEATURES = """
import sys
from fvcflow.config import Settings
from fvcflow.stages.runner import run_local
report = run_local("features", Settings(home=sys.argv[1]).resolved())
print(report.done, report.cached, report.failed)
"""


@pytest.mark.slow
def test_two_stage2_runs_at_once_give_a_whole_table(small_corpus, tmp_path):
    def settings(home):
        return Settings(home=home, corpus={"kind": "folder", "root": small_corpus,
                                           "labels": small_corpus / "labels.csv"}).resolved()

    ref = settings(tmp_path / "reference")
    ingest_corpus(ref)
    runner.run_local("features", ref)
    shared = settings(tmp_path / "fvc-data")
    ingest_corpus(shared)
    first = subprocess.Popen([sys.executable, "-c", FEATURES, str(shared.home)], stdout=subprocess.PIPE,
                             text=True)
    deadline = time.monotonic() + 120
    while not cached_results(shared.home) and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.01)
    second = subprocess.Popen([sys.executable, "-c", FEATURES, str(shared.home)], stdout=subprocess.PIPE,
                              text=True)
    outs = [p.communicate(timeout=300)[0] for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0
    n = pl.read_parquet(shared.lake().index).height
    for out in outs:
        done, cached, failed = map(int, out.split())
        assert done + cached == n and failed == 0
    assert len(cached_results(shared.home)) == n
    assert_lake_sound(shared.home)
    assert_frame_equal(feature_table(shared.lake().stage2), feature_table(ref.lake().stage2))


WRITER = """
import sys, polars as pl
from fvcflow.store import write_parquet_atomic
small, big = pl.DataFrame({"a": range(1000)}), pl.DataFrame({"a": range(200_000), "b": 1.5})
for i in range(int(sys.argv[2])):
    write_parquet_atomic(big if i % 2 else small, sys.argv[1])
"""


def test_a_reader_never_sees_a_table_being_replaced(tmp_path):
    """A process rewrites a table over and over while this one reads it: every read is one whole
    version (``read_parquet`` reads through one open handle; reading by path could mix versions)."""
    from fvcflow.store import read_parquet, write_parquet_atomic

    path = tmp_path / "t.parquet"
    write_parquet_atomic(pl.DataFrame({"a": range(1000)}), path)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "300"])
    heights = set()
    while proc.poll() is None:
        t = read_parquet(path)
        assert t["a"].to_list() == list(range(t.height))
        heights.add(t.height)
    assert proc.returncode == 0
    assert heights == {1000, 200_000}
