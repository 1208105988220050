"""Video reads: luma by plane vs ``to_ndarray(format="gray")``, threads, and seek vs sequential.

On a 1080p and a 640x360 H.264 clip of 10 s (25 fps, key frame every 50 frames, B-frames,
written here with ``VideoWriter`` into ``$FVC_BENCH_DIR``, default /tmp/fvc-bench, and reused):

1. frames/s decoding every frame: decode only, ``iter_luma`` (the Y plane, no conversion), and
   ``frame.to_ndarray(format="gray")`` (swscale), each with FFmpeg's frame+slice threads
   ("AUTO") and with PyAV's default (slice threads, which x264's one-slice frames cannot use),
   and the ratios side by side; frames per CPU-second in parentheses (on a loaded machine the
   wall figures of threaded decoding say little; the CPU figures stay comparable);
2. for 5..50 evenly sampled frames: decoded-frame counts and seconds of the "seek",
   "sequential" and "auto" strategies, and the cost of one seek in frame-equivalents (what
   ``fvcflow.video.read.SEEK_COST_FRAMES`` stands for).

Times (wall and process CPU) are the best of ``--reps`` runs. Run from the repository root::

    .venv/bin/python benchmarks/video.py [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import av
import numpy as np

from fvcflow.video import VideoWriter, iter_luma, probe
from fvcflow.video.read import SEEK_COST_FRAMES

BENCH_DIR = Path(os.environ.get("FVC_BENCH_DIR", "/tmp/fvc-bench"))
FPS, SECONDS, GOP = 25, 10, 50
CLIPS = {"1080p": (1080, 1920), "360p": (360, 640)}


def make_clip(name: str, height: int, width: int) -> Path:
    """10 s of cheap moving content (a shifted texture, a moving square, cycling noise)."""
    path = BENCH_DIR / f"video_{name}_{SECONDS}s.mp4"
    if path.exists():
        return path
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([128 + 60 * np.sin(xx / 7), 128 + 60 * np.cos(yy / 5),
                     (xx + yy) * 255.0 / (height + width)], axis=-1).astype(np.int16)
    noise = np.random.default_rng(0).integers(-6, 7, (4, height, width, 1), dtype=np.int16)
    side = height // 5
    with VideoWriter(path, width, height, FPS, options={"g": str(GOP), "keyint_min": str(GOP)}) as writer:
        for i in range(FPS * SECONDS):
            frame = np.roll(base, (i * 2, i * 3), axis=(0, 1)) + noise[i % 4]
            y0, x0 = (i * 7) % (height - side), (i * 11) % (width - side)
            frame[y0:y0 + side, x0:x0 + side] = (220, 40, 90)
            writer.write(np.clip(frame, 0, 255).astype(np.uint8))
    return path


def best(fn, reps: int) -> tuple[float, float, object]:
    """Best wall and best CPU (process) seconds of ``reps`` runs, and the last run's result."""
    walls, cpus, result = [], [], None
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus), result


def decode_all(path: Path, threads: bool, convert) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if threads:
            stream.codec_context.thread_type = "AUTO"
        n = 0
        for frame in container.decode(stream):
            convert(frame)
            n += 1
    return n


def consume(reader):
    """Read every frame of a LumaReader (each luma view dropped at once); return the reader."""
    for _ in reader:
        pass
    return reader


def luma_all(path: Path, info, threads: bool):
    return consume(iter_luma(path, np.arange(info.n_frames), info=info, strategy="sequential",
                             threads=threads))


def full_decode(name: str, path: Path, info, reps: int) -> None:
    n = info.n_frames
    for threads in (True, False):
        tag = "threads=AUTO   " if threads else "threads=default"
        cells = []
        for label, fn in (
            ("decode-only", lambda: decode_all(path, threads, lambda f: None)),
            ("iter_luma", lambda: luma_all(path, info, threads)),
            ("to_ndarray(gray)", lambda: decode_all(path, threads, lambda f: f.to_ndarray(format="gray"))),
        ):
            cells.append((label, *best(fn, reps)[:2]))
        text = " | ".join(f"{label} {n / wall:6.1f} fps ({n / cpu:6.1f}/cpu-s)" for label, wall, cpu in cells)
        print(f"{name} all {n} frames, {tag}: {text} | luma/gray {cells[2][1] / cells[1][1]:.2f}x wall, "
              f"{cells[2][2] / cells[1][2]:.2f}x cpu")


def seek_cost(path: Path, info, reps: int) -> float:
    """One seek in decoded-frame equivalents of CPU time, single-threaded decoding:
    (open + seek + decode key frame K) minus (open + decode key frame 0), over the time of one
    frame in a sequential decode; the median over the key frames K > 0."""
    def cpu(indices, strategy):
        return best(lambda: consume(iter_luma(path, indices, info=info, strategy=strategy, threads=False)),
                    reps)[1]
    t_frame = cpu(np.arange(info.n_frames), "sequential") / info.n_frames
    t_open = cpu([0], "sequential")
    return float(np.median([(cpu([k], "seek") - t_open) / t_frame for k in info.keyframes[1:]]))


def sampled(name: str, path: Path, info, reps: int) -> None:
    n = info.n_frames
    for k in (5, 10, 25, 50):
        wanted = np.unique(np.rint(np.linspace(0, n - 1, k)).astype(np.int64))
        cells = []
        for strategy in ("seek", "sequential", "auto"):
            wall, cpu, reader = best(lambda: consume(iter_luma(path, wanted, info=info, strategy=strategy)),
                                     reps)
            cells.append(f"{strategy} {reader.decoded:3d} dec {reader.seeks:2d} seeks "
                         f"{wall:5.3f} s ({cpu:5.3f} cpu-s)")
        print(f"{name} k={k:2d}: " + " | ".join(cells))
    print(f"{name} one seek costs about {seek_cost(path, info, reps):.1f} decoded frames "
          f"(SEEK_COST_FRAMES = {SEEK_COST_FRAMES})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, PyAV {av.__version__}, FFmpeg {av.ffmpeg_version_info}")
    for name, (h, w) in CLIPS.items():
        path = make_clip(name, h, w)
        info = probe(path)
        print(f"{name}: {info.width}x{info.height} {info.codec} {info.n_frames} frames, "
              f"key frames every {info.gop:.0f}, {info.size_bytes / 1e6:.1f} MB")
        full_decode(name, path, info, args.reps)
        sampled(name, path, info, args.reps)


if __name__ == "__main__":
    main()
