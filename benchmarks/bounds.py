"""Bounded cost per video (issue 26, part 2), side by side in one run.

1. Peak memory of stage 3 (``scale_video``) on 1080p, 4K and 8K clips of the same length, each
   in a fresh subprocess (VmHWM growth over a warmed process); target: within 1.5x of 1080p.
2. The per-video watchdog's cost on stage 2 (``video_features``): the same clip read with and
   without the watchdog, interleaved, best of N; target: under 2 %.

Run: ``PYTHONSAFEPATH=1 .venv/bin/python benchmarks/bounds.py [--frames 10] [--repeat 5]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fvcflow.stages.features import video_features
from fvcflow.video import limits
from tests.media import write_video
from tests.test_reliability_bounds import PEAK

SIZES = {"1080p": (1080, 1920), "4K": (2160, 3840), "8K": (4320, 7680)}


def clip(path: Path, n: int, height: int, width: int) -> Path:
    row = (np.arange(width + 8 * n) * 7 % 251).astype(np.uint8)
    frames = np.empty((n, height, width, 3), np.uint8)
    for k in range(n):
        frames[k] = row[None, 8 * k:8 * k + width, None]
        frames[k, ::9] = 40 * k % 256
    return write_video(path, frames=frames)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        warm = write_video(tmp / "warm.mp4", n=3, width=96, height=64)
        peaks = {}
        for name, (h, w) in SIZES.items():
            video = clip(tmp / f"{name}.mp4", args.frames, h, w)
            res = subprocess.run([sys.executable, "-c", PEAK, str(warm), str(video), str(tmp)],
                                 capture_output=True, text=True, check=True)
            peaks[name] = int(res.stdout.split()[-1])
        base = peaks["1080p"]
        for name, peak in peaks.items():
            print(f"stage 3 peak RSS growth {name:>5} ({args.frames} frames): {peak / 2**20:7.0f} MiB  "
                  f"ratio to 1080p {peak / base:.2f}x (target <= 1.5x; a 250-frame chunk of "
                  f"{name} would be {250 * SIZES[name][0] * SIZES[name][1] * 3 / 2**30:.1f} GiB)")
        video = write_video(tmp / "s2.mp4", n=250, width=1280, height=720)
        video_features(video)                                         # warm: JIT, codec tables
        times = {"off": [], "on": []}
        for _ in range(args.repeat):
            for mode in ("off", "on"):
                with limits.bounded(watchdog=mode == "on"):
                    t0 = time.perf_counter()
                    video_features(video)
                    times[mode].append(time.perf_counter() - t0)
        off, on = min(times["off"]), min(times["on"])
        print(f"stage 2 720p 250 frames: watchdog off {off:.3f} s, on {on:.3f} s, "
              f"cost {100 * (on / off - 1):+.2f} % (target < 2 %; best of {args.repeat})")


if __name__ == "__main__":
    main()
