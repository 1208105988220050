"""Soak: stage 2 over many short videos on 2 Dask workers; worker memory must stay flat.

    .venv/bin/python benchmarks/soak.py [--videos 500] [--checkpoint 100] [--workers 2]

Writes ``--videos`` distinct tiny H.264 clips (64x48, 10 frames) under /tmp/fvc-soak/corpus
(reused when present), indexes them into a fresh work dir, runs the feature stage on a Dask
LocalCluster (``fvcflow.engine.dask_cluster``, as the flow does) while a background thread
samples every worker's RSS (psutil, every 20 ms), and prints each worker's peak RSS when
``--checkpoint`` videos are done and when all are, and their ratio. Flat memory: ratio near 1
(a leak of k bytes per video would show as (peak + 400 k) / peak).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import threading
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import psutil  # noqa: E402
from distributed import Client, as_completed  # noqa: E402

from fvcflow.config import Settings  # noqa: E402
from fvcflow.engine import dask_cluster  # noqa: E402
from fvcflow.ingest.index import ingest  # noqa: E402
from fvcflow.stages import runner  # noqa: E402
from fvcflow.store import Lake  # noqa: E402
from fvcflow.video import VideoWriter  # noqa: E402

ROOT = Path("/tmp/fvc-soak")


def make_corpus(root: Path, n: int) -> Path:
    """``n`` distinct 64x48, 10-frame clips and their labels CSV (kept for the next run)."""
    labels = root / "labels.csv"
    if labels.exists() and sum(1 for _ in open(labels)) == n + 1:
        return root
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        name = f"v{i:04d}.mp4"
        base = rng.integers(0, 255, (48, 64 + 10, 3), dtype=np.uint8)
        with VideoWriter(root / name, 64, 48, 10) as w:
            for k in range(10):
                w.write(np.ascontiguousarray(base[:, k:k + 64]))
        rows.append((name, "fake" if i % 2 else "real", f"g{i % 50}"))
    with open(labels, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "group"])
        writer.writerows(rows)
    return root


class RssSampler(threading.Thread):
    """Peak RSS per worker pid, and a snapshot of the peaks when asked."""

    def __init__(self, pids: list[int], every: float = 0.02):
        super().__init__(daemon=True)
        self.procs = {pid: psutil.Process(pid) for pid in pids}
        self.peak = {pid: 0 for pid in pids}
        self.every = every
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            time.sleep(self.every)

    def sample(self) -> None:
        for pid, proc in self.procs.items():
            try:
                self.peak[pid] = max(self.peak[pid], proc.memory_info().rss)
            except psutil.NoSuchProcess:
                pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=500)
    ap.add_argument("--checkpoint", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    t0 = time.perf_counter()
    corpus = make_corpus(ROOT / "corpus", args.videos)
    home = ROOT / "home"
    shutil.rmtree(home, ignore_errors=True)
    lake = Lake.at(home)
    summary = ingest("folder", corpus, lake, labels=corpus / "labels.csv", workers=args.workers)
    assert summary.indexed == args.videos, summary.format()
    print(f"corpus: {args.videos} videos 64x48x10 indexed ({time.perf_counter() - t0:.1f} s)")

    settings = Settings(home=home, workers=args.workers).resolved()
    plan = runner.plan("features", settings)
    # small batches: progress is counted per finished batch, and the checkpoint falls mid-run
    batches = runner.batches(plan.todo, args.workers, max_size=10)
    with dask_cluster(settings) as address, Client(address) as client:
        pids = sorted(client.run(os.getpid).values())
        sampler = RssSampler(pids)
        sampler.sample()
        start = dict(sampler.peak)
        sampler.start()
        t1 = time.perf_counter()
        futures = [client.submit(runner.run_batch, "features", b, settings, pure=False) for b in batches]
        done, at_checkpoint, outcomes = 0, None, []
        for fut in as_completed(futures):
            outcome = fut.result()
            outcomes.append(outcome)
            done += len(outcome.done) + len(outcome.failures)
            if at_checkpoint is None and done >= args.checkpoint:
                sampler.sample()
                at_checkpoint = (done, dict(sampler.peak))
        sampler.stop.set()
        sampler.join()
        sampler.sample()
        wall = time.perf_counter() - t1
    report = runner.finish(plan, outcomes, settings)
    assert report.done == args.videos and report.failed == 0, report
    n_check, peaks_check = at_checkpoint
    print(f"stage 2: {report.done} videos on {args.workers} workers in {wall:.1f} s "
          f"({report.done / wall:.1f} videos/s)")
    for i, pid in enumerate(pids):
        a, b = peaks_check[pid], sampler.peak[pid]
        print(f"worker {i} (pid {pid}): RSS at start {start[pid] / 2**20:.1f} MiB, "
              f"peak at {n_check} videos {a / 2**20:.1f} MiB, peak at {report.done} videos {b / 2**20:.1f} "
              f"MiB, ratio {b / a:.3f}")


if __name__ == "__main__":
    main()
