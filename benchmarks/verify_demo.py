"""``fvc verify`` over the whole demo corpus's written videos (stage 1's copies and stage 3's
letterboxed videos) vs reading the same files and vs hashing them serially, side by side.

    .venv/bin/python -m benchmarks.verify_demo [--workers 2]

The demo corpus (80 videos) is indexed and its stages 1 and 3 made once in a scratch work dir
(default settings: copies of the training videos only); then, with the page cache warm: ``cat``
of every file into /dev/null, BLAKE2b of every file in this process, and ``verify`` on a local
Dask cluster of ``--workers`` processes (the cluster's start reported apart). Printed: files, MB,
seconds and GB/s of each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.dfdc_scale import cluster
from fvcflow.config import Settings
from fvcflow.stages import runner
from fvcflow.stages.ingest import ingest_corpus
from fvcflow.stages.manifest import Manifest
from fvcflow.stages.verify import _written, hash_batch, verify


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fvc-bench-verify-"))
    try:
        s = Settings(home=work / "demo", workers=args.workers, corpus={"kind": "demo"}).resolved()
        t0 = time.perf_counter()
        ingest_corpus(s)
        for stage in ("augment", "scale"):
            runner.run_local(stage, s)
        print(f"verify: demo work dir made in {time.perf_counter() - t0:.0f} s "
              f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)", flush=True)
        paths = [p for st in ("augment", "scale")
                 for p in _written(Manifest(s.lake(), st).read().rows)["path"].to_list()]
        gb = sum(os.path.getsize(p) for p in paths) / 1e9
        subprocess.run(["cat", *paths], stdout=subprocess.DEVNULL, check=True)     # warm the page cache
        t0 = time.perf_counter()
        subprocess.run(["cat", *paths], stdout=subprocess.DEVNULL, check=True)
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        hash_batch([("x", "", p) for p in paths])
        t_hash = time.perf_counter() - t0
        c, start = cluster(args.workers)
        with c:
            on = s.model_copy(update={"dask_address": c.scheduler_address})
            reports = {"8 videos per task (before)": verify(on, ["augment", "scale"], chunk=8),
                       "about 4 tasks per worker": verify(on, ["augment", "scale"])}
        for how, report in reports.items():
            assert report.ok and report.videos == len(paths), report.format()
            print(f"verify: demo stages 1 and 3, {len(paths)} videos, {gb * 1e3:.1f} MB: fvc verify on "
                  f"{args.workers} Dask workers, {how}: {report.seconds:.2f} s "
                  f"({gb / report.seconds:.3f} GB/s; "
                  f"cluster start {start:.1f} s apart)")
        print(f"verify: the same files: cat {t_read:.2f} s ({gb / t_read:.2f} GB/s) vs BLAKE2b in one "
              f"process {t_hash:.2f} s ({gb / t_hash:.2f} GB/s); load average {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
