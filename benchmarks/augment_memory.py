"""Stage 1 memory and speed: peak RSS of augmenting a 60 s 1080p video vs a 5 s one, and frames/s.

Each case runs in its own child process, which reports its own peak RSS (``ru_maxrss``) when
done; the parent prints both peaks side by side and their ratio (target <= 1.5x). The copy
applies every spatial op plus the reversal (two passes through lossless temporary segments),
the most memory-hungry temporal op. Frames/s is reported for the whole copy (decode,
transform, encode) and for the transforms alone, at 256x256 and 1080p.

The inputs (cheap moving content, H.264 ultrafast, 25 fps) are written once to
``$FVC_BENCH_DIR`` (default /tmp/fvc-bench) and reused. Run from the repository root::

    .venv/bin/python benchmarks/augment_memory.py [--max-chunk-mb none]

``--max-chunk-mb none`` runs with 250-frame chunks whatever the frame size (1.5 GiB each at
1080p, so the 5 s clip of 125 frames fits in half a chunk), to show what the byte cap buys.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np

from fvcflow.stages.augment import (
    AugmentParams,
    augment_video,
    chunk_frames,
    copy_seed,
    make_plan,
    transform_frames,
)

BENCH_DIR = Path(os.environ.get("FVC_BENCH_DIR", "/tmp/fvc-bench"))
FPS = 25
PARAMS = AugmentParams(
    "bench", 1, copy_seed("bench", 1), rotation=6.0, hflip=True, color=(10.0, 1.1, 1.2),
    noise_sigma=4.0, blur_sigma=1.0, affine=(0.02, 0.01, 1.05, 4.0), elastic=0.01,
    cutout=(0.3, 0.3, 0.2, 0.2), temporal="reverse")


def make_input(seconds: int, width: int, height: int) -> Path:
    """A cheap synthetic clip (moving gradient and bar), written once and reused."""
    path = BENCH_DIR / f"augment_{width}x{height}_{seconds}s.mp4"
    if path.exists():
        return path
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.mp4")
    xx = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    yy = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(seconds * FPS):
            frame = np.empty((height, width, 3), np.uint8)
            frame[..., 0] = (xx + 3 * i) % 256
            frame[..., 1] = (yy + 2 * i) % 256
            frame[..., 2] = ((xx + yy) / 2 + i) % 256
            x0 = (i * 7) % max(1, width - width // 8)
            frame[:, x0:x0 + width // 8] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    tmp.rename(path)
    return path


def child(src: str, max_chunk_mb: str) -> None:
    """Augment one video in this process and print its row plus this process's peak RSS."""
    dst = BENCH_DIR / ("out_" + Path(src).name)
    cap = None if max_chunk_mb == "none" else float(max_chunk_mb)
    row = augment_video(src, dst, PARAMS, max_chunk_mb=cap)
    dst.unlink()
    row["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(row))


def run_case(src: Path, max_chunk_mb: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", str(src), max_chunk_mb],
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"child failed on {src}:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def transform_fps(width: int, height: int, n: int) -> float:
    """Frames/s of the spatial transforms alone (every op), on frames already in memory."""
    frames = np.random.default_rng(0).integers(0, 256, (n, height, width, 3), dtype=np.uint8)
    plan = make_plan(PARAMS, height, width)
    transform_frames(frames[:2].copy(), 0, plan)
    t0 = time.perf_counter()
    transform_frames(frames, 0, plan)
    return n / (time.perf_counter() - t0)


def compare(label: str, short: Path, long: Path, cap: str) -> None:
    a, b = run_case(short, cap), run_case(long, cap)
    for name, r in (("5 s", a), ("60 s", b)):
        print(f"{label} 1080p {name:>4}: frames in {r['n_frames_in']:5d}, peak RSS {r['peak_rss_mib']:7.0f} "
              f"MiB, {r['n_frames_in'] / r['seconds']:6.1f} frames/s end to end ({r['seconds']:.1f} s)")
    print(f"{label} peak RSS ratio 60 s / 5 s: {b['peak_rss_mib'] / a['peak_rss_mib']:.2f}x (target <= 1.5x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", nargs=2, metavar=("SRC", "MAX_CHUNK_MB"), help=argparse.SUPPRESS)
    ap.add_argument("--max-chunk-mb", default="256", help="cap on one chunk's RGB bytes, or 'none'")
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    short, long = make_input(5, 1920, 1080), make_input(60, 1920, 1080)
    small = make_input(10, 256, 256)
    cap = args.max_chunk_mb
    if cap == "none":
        print(f"ops: {','.join(PARAMS.ops)}; chunk 250 frames, no cap (= 250 frames at 1080p)")
    else:
        print(f"ops: {','.join(PARAMS.ops)}; chunk 250 frames capped at {cap} MiB of RGB "
              f"(= {chunk_frames(250, 1080, 1920, float(cap))} frames at 1080p)")
    compare("uncapped" if cap == "none" else "capped  ", short, long, cap)
    r = run_case(small, cap)
    print(f"256x256 10 s: {r['n_frames_in'] / r['seconds']:.1f} frames/s end to end, peak RSS "
          f"{r['peak_rss_mib']:.0f} MiB")
    print(f"transforms only: 256x256 {transform_fps(256, 256, 250):.0f} frames/s, "
          f"1080p {transform_fps(1920, 1080, 20):.1f} frames/s")


if __name__ == "__main__":
    main()
