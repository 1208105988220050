"""Filling the clip cache: 2 Dask workers (``fvcflow.deep.loop.fill_clip_cache``, what the train flow
runs before the GPU phase) vs the serial fill the trainer did before issue #24 (``prepare_sources``),
side by side in one run, on the same real encoded videos (each fill into an empty cache).

    python -m benchmarks.clipfill [--videos N]
"""

from __future__ import annotations

import argparse
import importlib
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from fvcflow.config import Settings
from fvcflow.deep.clips import ClipCache
from fvcflow.deep.loop import fill_clip_cache, prepare_sources
from fvcflow.engine import dask_cluster
from fvcflow.models.torch_common import ClipSpec
from fvcflow.store import Lake
from fvcflow.video import VideoWriter

SPEC = ClipSpec(frames=16, clips=4, size=112)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=24)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fvc-bench-clipfill-") as tmp:
        rng = np.random.default_rng(0)
        rows = []
        for i in range(args.videos):                      # 4 s of 256 x 256 at 25 fps each
            path = Path(tmp) / f"v{i}.mp4"
            with VideoWriter(path, 256, 256, 25.0) as w:
                w.write(rng.integers(0, 255, (100, 256, 256, 3), dtype=np.uint8))
            rows.append({"video_id": f"v{i}", "path": str(path), "content_hash": f"h{i}", "n_frames": 100,
                         "src_width": 256, "src_height": 256})
        rows = pl.DataFrame(rows)
        serial_lake, dask_lake = Lake.at(Path(tmp) / "serial"), Lake.at(Path(tmp) / "dask")
        start = time.perf_counter()
        prepare_sources(serial_lake, rows, SPEC, ClipCache(serial_lake.cache_dir("clips")))
        serial = time.perf_counter() - start
        with dask_cluster(Settings(home=dask_lake.root, workers=2)) as address:
            from distributed import Client

            start = time.perf_counter()                   # each worker imports the task's module once
            with Client(address, set_as_default=False) as client:
                client.run(importlib.import_module, "fvcflow.deep.loop")
            warm = time.perf_counter() - start
            start = time.perf_counter()
            counts = fill_clip_cache(dask_lake, rows, SPEC, address)
            parallel = time.perf_counter() - start
        assert counts["decoded"] == args.videos, counts
        same = sorted(p.name for p in serial_lake.cache_dir("clips").rglob("*.clip")) == \
            sorted(p.name for p in dask_lake.cache_dir("clips").rglob("*.clip"))
        print(f"clip cache fill, {args.videos} videos of 100 frames 256x256 -> 4 windows of 16x112x112: "
              f"serial {serial:.2f} s ({args.videos / serial:.1f} videos/s), 2 Dask workers {parallel:.2f} s "
              f"({args.videos / parallel:.1f} videos/s, cluster start-up excluded): "
              f"{serial / parallel:.2f}x; the workers' first import of the task's module {warm:.2f} s more; "
              f"same cache files: {same}")


if __name__ == "__main__":
    main()
