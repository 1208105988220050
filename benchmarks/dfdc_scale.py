"""Bookkeeping at scale: ingest on 2 Dask workers vs serial, a cached rerun of stage 2 over 2,000 tiny
videos and over 20,000 (simulated), and ``fvc verify`` vs reading the same files.

    .venv/bin/python -m benchmarks.dfdc_scale [--videos 2000] [--simulated 20000] [--demo-small]

1. ``--videos`` distinct tiny mp4 files (remuxed from a few encoded bases: distinct bytes) under
   ``$FVC_BENCH_DIR/dfdc_scale`` (default /tmp/fvc-bench), reused when present.
2. Ingest of them serially (1 process, today's default on one core) and on a ``LocalCluster`` of
   2 worker processes (``probe_on_dask``); the cluster's start is reported apart. Same index.
3. Stage 2 (``features``) computed once, then rerun with everything cached: the stage's own time
   (its summary line: plan + publish). Target: under 0.5 s at 2,000 (4.2 s before the manifest).
4. The same cached rerun over ``--simulated`` videos: the index and the manifest rows of step 3
   repeated with distinct ids and hashes (no videos are read by a cached stage 2).
5. Stage 1 (``augment``, 1 copy) of the small demo corpus (``--demo-small``) or of the tiny corpus,
   then ``fvc verify``'s hashing on 2 Dask workers (cluster start apart) vs reading the same files
   (``cat`` into /dev/null, serial) and vs hashing them serially: GB/s each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import polars as pl
from distributed import LocalCluster

from fvcflow.config import Settings
from fvcflow.ingest import ingest
from fvcflow.ingest.probing import probe_many, probe_on_dask
from fvcflow.stages import runner
from fvcflow.stages.ingest import ingest_corpus
from fvcflow.stages.manifest import KEY, Manifest
from fvcflow.stages.verify import hash_batch, verify
from fvcflow.store import write_checked_parquet, write_parquet_atomic
from tests.reliability_media import make_corpus

BENCH = Path(os.environ.get("FVC_BENCH_DIR", "/tmp/fvc-bench")) / "dfdc_scale"


def corpus(n: int) -> Path:
    root = BENCH / f"corpus-{n}"
    if not (root / "labels.csv").exists():
        make_corpus(root, bases=4, copies=n // 4, frames=8, size=(64, 48))
    return root


def cluster(n: int = 2) -> tuple[LocalCluster, float]:
    t0 = time.perf_counter()
    c = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                     dashboard_address=None, silence_logs=50)
    return c, time.perf_counter() - t0


def bench_ingest(root: Path, paths: list[str]) -> None:
    t0 = time.perf_counter()
    serial = probe_many(paths, workers=1)
    t_serial = time.perf_counter() - t0
    c, start = cluster(2)
    with c:
        t0 = time.perf_counter()
        on_dask = probe_on_dask(paths, c.scheduler_address)
        t_dask = time.perf_counter() - t0
    assert on_dask == serial
    mb = sum(os.path.getsize(p) for p in paths) / 1e6
    print(f"ingest: {len(paths)} videos ({mb:.0f} MB) probed+hashed serially {t_serial:.1f} s "
          f"({len(paths) / t_serial:.0f} videos/s) vs 2 Dask workers {t_dask:.1f} s "
          f"({len(paths) / t_dask:.0f} videos/s): {t_serial / t_dask:.2f}x "
          f"(cluster start {start:.1f} s apart)")


def cached_rerun(settings: Settings) -> float:
    best = min(runner.run_local("features", settings).seconds for _ in range(3))
    return best


def simulate(settings: Settings, home: Path, n: int) -> Settings:
    """A lake of ``n`` videos made from ``settings``' one: its index and stage-2 manifest rows repeated."""
    lake = settings.lake()
    index = pl.read_parquet(lake.index)
    rows = Manifest(lake, "features").read().rows
    reps = -(-n // index.height)
    big = pl.concat([index.with_columns(video_id=pl.col("video_id") + f"-{r}",
                                        content_hash=pl.col("content_hash").str.slice(0, 28) + f"{r:04d}")
                     for r in range(reps)]).head(n)
    out = Settings(home=home, workers=1).resolved()
    write_parquet_atomic(big, out.lake().index)
    jobs = runner.SPECS["features"].jobs(out.lake(), out)
    real = rows.drop(KEY)          # stand-in results: the real rows, repeated under the new keys
    keys = jobs["key"].to_list()
    sim = pl.concat([real] * reps).head(len(keys)).with_columns(pl.Series(KEY, keys))
    m = Manifest(out.lake(), "features")
    m.parts.mkdir(parents=True, exist_ok=True)
    write_checked_parquet(sim, m.parts / "bench.parquet")
    m.compact()
    return out


def bench_verify(settings: Settings) -> None:
    rows = pl.read_parquet(settings.lake().stage1)
    paths = rows["path"].to_list()
    size = sum(os.path.getsize(p) for p in paths)
    subprocess.run(["cat", *paths], stdout=subprocess.DEVNULL, check=True)      # warm the page cache
    t0 = time.perf_counter()
    subprocess.run(["cat", *paths], stdout=subprocess.DEVNULL, check=True)
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    hash_batch([("augment", "", p) for p in paths])
    t_hash = time.perf_counter() - t0
    c, start = cluster(2)
    with c:
        s = settings.model_copy(update={"dask_address": c.scheduler_address})
        report = verify(s, ["augment"])
    assert report.ok and report.videos == len(paths)
    gb = size / 1e9
    print(f"verify: stage 1, {len(paths)} videos, {gb * 1e3:.0f} MB: fvc verify on 2 Dask workers "
          f"{report.seconds:.2f} s ({gb / report.seconds:.2f} GB/s, cluster start {start:.1f} s apart) vs "
          f"reading them (cat) {t_read:.2f} s ({gb / t_read:.2f} GB/s) vs hashing serially {t_hash:.2f} s "
          f"({gb / t_hash:.2f} GB/s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=2000)
    ap.add_argument("--simulated", type=int, default=20000)
    ap.add_argument("--demo-small", action="store_true", help="step 5 on the small demo corpus")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    root = corpus(args.videos)
    labels = root / "labels.csv"
    paths = sorted(str(p) for p in root.glob("*.mp4"))
    bench_ingest(root, paths)
    work = Path(tempfile.mkdtemp(prefix="fvc-bench-scale-"))
    try:
        settings = Settings(home=work / "tiny", workers=1, augment={"copies": 1}).resolved()
        ingest("folder", root, settings.lake(), labels=labels, workers=1)
        t0 = time.perf_counter()
        first = runner.run_local("features", settings)
        print(f"stage 2: {first.done} videos computed in {time.perf_counter() - t0:.1f} s")
        took = cached_rerun(settings)
        print(f"stage 2 cached rerun, {args.videos} videos: the stage's own time {took:.2f} s "
              f"(target < 0.5 s; 4.2 s before the manifest)")
        if args.simulated:
            big = simulate(settings, work / "big", args.simulated)
            took = cached_rerun(big)
            print(f"stage 2 cached rerun, {args.simulated} videos (simulated lake): {took:.2f} s")
        vs = settings
        if args.demo_small:
            vs = Settings(home=work / "demo", workers=1, augment={"copies": 1},
                          corpus={"kind": "demo", "demo_small": True}).resolved()
            ingest_corpus(vs)
        runner.run_local("augment", vs)
        bench_verify(vs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
