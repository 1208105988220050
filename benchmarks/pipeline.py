"""Stage 2 on Dask: wall time vs decode-only time, and 2 workers vs 1.

    .venv/bin/python benchmarks/pipeline.py [--videos 24] [--seconds 8] [--size 640x360]

Writes a corpus of H.264 clips (GOP 50, as phone and web video has) under /tmp/fvc-bench-pipeline
(reused when present), indexes it, then measures in one run:
  1. decode only: the sampled frames of every video, decoded as stage 2 decodes them, one process;
  2. stage 2 in one process (decode + kernels + aggregation + cache writes), same videos;
  3. stage 2 on a Dask LocalCluster with 1 and with 2 worker processes (forced recompute).
Targets: (2)/(1) <= 1.3; (3) 2 workers >= 1.7x faster than 1 worker on 2 cores.
For stage 1 peak memory see benchmarks/augment_memory.py.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from distributed import Client  # noqa: E402

from fvcflow.config import Settings  # noqa: E402
from fvcflow.engine import dask_cluster  # noqa: E402
from fvcflow.ingest.index import ingest  # noqa: E402
from fvcflow.stages import runner  # noqa: E402
from fvcflow.store import Lake  # noqa: E402
from fvcflow.video import VideoWriter, iter_luma, probe, sample_indices  # noqa: E402

ROOT = Path("/tmp/fvc-bench-pipeline")


def scene(n: int, height: int, width: int, seed: int) -> np.ndarray:
    """A textured, moving scene (so the encoder has real work), uint8[n, H, W, 3]."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, ((height + n) // 8, (width + n) // 8, 3), dtype=np.uint8)
    texture = cv2.resize(coarse, (width + n, height + n), interpolation=cv2.INTER_CUBIC)
    grain = rng.integers(0, 12, texture.shape, dtype=np.uint8)  # sensor-like noise on smooth content
    texture = cv2.add(texture, grain)
    return np.stack([texture[i:i + height, i:i + width] for i in range(n)])


def make_corpus(n: int, seconds: int, width: int, height: int) -> Path:
    corpus = ROOT / f"corpus-{n}-{seconds}-{width}x{height}"
    labels = corpus / "labels.csv"
    if labels.exists():
        return corpus
    corpus.mkdir(parents=True, exist_ok=True)
    fps = 25
    rows = []
    for i in range(n):
        base = scene(50, height, width, seed=i)  # every video its own content (ingest drops exact copies)
        path = corpus / f"v{i:03d}.mp4"
        with VideoWriter(path, width, height, fps, crf=23, options={"g": "50", "preset": "veryfast"}) as w:
            for k in range(seconds * fps // 50):
                w.write(base[::-1] if k % 2 else base)
        rows.append((path.name, "fake" if i % 2 else "real", f"g{i // 2}"))
    with open(labels, "w", newline="") as fh:
        csv.writer(fh).writerows([("path", "label", "group"), *rows])
    return corpus


def decode_only(paths: list[str], strategy: str) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    decoded = sampled = 0
    for p in paths:
        info = probe(p)
        stats: dict = {}
        for _ in iter_luma(p, sample_indices(info.n_frames), info=info, strategy=strategy, stats=stats):
            sampled += 1
        decoded += stats.get("decoded", 0)
    return time.perf_counter() - t0, decoded, sampled


def stage2_dask(settings: Settings, workers: int) -> float:
    s = settings.model_copy(update={"workers": workers, "force": ["features"]})
    with dask_cluster(s) as address, Client(address) as client:
        client.run(lambda: __import__("fvcflow.stages.specs"))  # warm imports + JIT cache on workers
        warm = runner.plan("features", s)
        client.gather(client.map(runner.run_batch, ["features"] * 2 * workers,
                                 runner.batches(warm.todo[: 2 * workers], 2 * workers), [s] * 2 * workers))
        t0 = time.perf_counter()
        p = runner.plan("features", s)
        futures = client.map(runner.run_batch, ["features"] * 1000, runner.batches(p.todo, workers),
                             [s] * 1000, pure=False)
        runner.finish(p, client.gather(futures), s)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=24)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--size", default="640x360")
    a = ap.parse_args()
    w, h = map(int, a.size.split("x"))
    corpus = make_corpus(a.videos, a.seconds, w, h)
    home = ROOT / "home"
    lake = Lake.at(home)
    ingest("folder", corpus, lake, labels=corpus / "labels.csv", workers=2)
    settings = Settings(home=home, stages=["features"], force=["features"]).resolved()
    paths = [j.path for j in runner.plan("features", settings).jobs]
    runner.run_batch("features", runner.plan("features", settings).todo[:1], settings)  # JIT warm-up

    t_dec, decoded, sampled = decode_only(paths, settings.features.strategy)
    t0 = time.perf_counter()
    runner.run_local("features", settings)
    t_s2 = time.perf_counter() - t0
    t1 = stage2_dask(settings, 1)
    t2 = stage2_dask(settings, 2)

    n_frames = a.seconds * 25
    print(f"corpus: {len(paths)} H.264 videos, {w}x{h}, {n_frames} frames each, GOP 50, {os.cpu_count()} "
          "cores")
    print(f"frames decoded per sampled frame      {decoded / sampled:6.2f}   ({decoded} decoded for "
          f"{sampled} sampled)")
    print(f"decode only (1 process)               {t_dec:6.2f} s")
    print(f"stage 2 (1 process)                   {t_s2:6.2f} s   ratio {t_s2 / t_dec:4.2f}x of decode-only "
          f"(target <= 1.30: {'PASS' if t_s2 / t_dec <= 1.3 else 'MISS'})")
    print(f"stage 2 on Dask, 1 worker             {t1:6.2f} s")
    print(f"stage 2 on Dask, 2 workers            {t2:6.2f} s   speed-up {t1 / t2:4.2f}x "
          f"(target >= 1.70: {'PASS' if t1 / t2 >= 1.7 else 'MISS'})")


if __name__ == "__main__":
    main()
