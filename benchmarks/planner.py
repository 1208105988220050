"""The stage planner at DFDC scale: ``runner.plan`` of a simulated ``features`` stage, no videos.

    .venv/bin/python -m benchmarks.planner [--sizes 10000,100000,1000000] [--old 10000]

For each size N the benchmark writes an index of N videos (made-up paths and content hashes) and
the stage's manifest with a result row for all but 1 % of them (compacted into its shards, as a
finished stage leaves it), then times ``runner.plan("features", ...)`` (reading the index, making
the N jobs and their cache keys, one read of the manifest, the anti-join) and checks that the
plan's to-do list is exactly the 1 % left out. Printed: plan seconds per size and the growth per
tenfold. Target: under 10 s at 10^6.

``--old N``: the same check the per-video cache did before the manifest (open and verify one
checked Parquet file per job, ``read_checked_parquet``) over N such files, for comparison.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import polars as pl

from fvcflow.config import Settings
from fvcflow.stages import claim, runner
from fvcflow.stages.manifest import KEY, WRITTEN, Manifest
from fvcflow.stages.specs import SPECS
from fvcflow.store import read_checked_parquet, write_checked_parquet, write_parquet_atomic

FEATURES = [f"f{i}" for i in range(40)]      # about the width of a real stage-2 row


def simulate(home: Path, n: int) -> Settings:
    settings = Settings(home=home, workers=2).resolved()
    lake = settings.lake()
    hashes = [f"{i:032x}" for i in range(n)]
    index = pl.DataFrame({"video_id": [f"v{i:07d}" for i in range(n)],
                          "path": [f"/corpus/dfdc/part{i % 50}/{i:07d}.mp4" for i in range(n)],
                          "content_hash": hashes, "label": [i % 2 for i in range(n)],
                          "group_id": [f"g{i // 6}" for i in range(n)], "source": "dfdc",
                          "variant": "original", "label_raw": None})
    write_parquet_atomic(index, lake.index)
    keys = SPECS["features"].jobs(lake, settings)["key"].to_list()
    keep = [k for i, k in enumerate(keys) if i % 100]
    rows = pl.DataFrame({KEY: keep, **{f: pl.Series([0.5] * len(keep)) for f in FEATURES},
                         WRITTEN: [1] * len(keep)})
    manifest = Manifest(lake, "features")
    manifest.parts.mkdir(parents=True, exist_ok=True)
    write_checked_parquet(rows, manifest.parts / "bench.parquet")
    manifest.compact()
    return settings


def plan_seconds(settings: Settings, n: int) -> float:
    t0 = time.perf_counter()
    plan = runner.plan("features", settings)
    took = time.perf_counter() - t0
    assert plan.total == n and len(plan.todo) == len(range(0, n, 100)), (plan.total, len(plan.todo))
    return took


def old_plan_seconds(root: Path, n: int) -> float:
    """The per-video cache's plan: one checked file opened and verified per job."""
    row = pl.DataFrame({KEY: ["0" * 32], **{f: [0.5] for f in FEATURES}})
    paths = []
    for i in range(n):
        key = f"{i:032x}"
        paths.append(root / key[:2] / f"{key}.parquet")
        write_checked_parquet(row, paths[-1])
    os.sync()
    t0 = time.perf_counter()
    for p in paths:
        read_checked_parquet(p)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--old", type=int, default=10_000, help="per-video files for the old plan (0: skip)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    base = Path(tempfile.mkdtemp(prefix="fvc-bench-planner-"))
    try:
        times = {}
        for n in sizes:
            settings = simulate(base / f"n{n}", n)
            times[n] = min(plan_seconds(settings, n) for _ in range(2))
            frame = SPECS["features"].jobs(settings.lake(), settings)
            t0 = time.perf_counter()
            claim.claim(settings.lake(), "features", frame)     # what the plan spends on its claim
            own = time.perf_counter() - t0
            print(f"planner: {n:>9,} jobs: plan {times[n]:.2f} s ({times[n] / n * 1e6:.1f} us/job; "
                  f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores), of which the "
                  f"stage's claim (its jobs' digest, the lock) {own:.3f} s", flush=True)
            shutil.rmtree(base / f"n{n}")
        for a, b in zip(sizes, sizes[1:]):
            print(f"planner: {a:,} -> {b:,} jobs: x{times[b] / times[a]:.1f} for x{b / a:g}")
        last = sizes[-1]
        print(f"planner: target under 10 s at 10^6: {times[last]:.2f} s at {last:,} "
              f"({'met' if last >= 1_000_000 and times[last] < 10 else 'see sizes'})")
        if args.old:
            old = old_plan_seconds(base / "old", args.old)
            print(f"planner: the per-video cache's check of {args.old:,} files (before the manifest): "
                  f"{old:.2f} s ({old / args.old * 1e3:.2f} ms/job)")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
