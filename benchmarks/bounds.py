"""Bounded cost per video (issue 26, part 2), side by side in one run.

1. Peak memory of stage 3 (``scale_video``) on 1080p, 4K and 8K clips of the same length, each
   in a fresh subprocess (VmHWM growth over a warmed process); target: within 1.5x of 1080p.
   Beside it, the whole peak of a stage 3 process (VmHWM, as ``fvc predict``'s is measured below), with
   the decoder threads the runner passes and with frame threads; the 8K clip decoded alone with
   the decoder's own options (1 or 2 frame threads, 2 slice threads, ``skip_frame=NONREF``);
   decoding the same clip alone (the decoder's reference frames, which any full
   decode holds), decoding the 8K clip with 3 and 17 frame threads, capped or not, and the
   per-frame time of the letterbox inside the decoder vs RGB then OpenCV.
   Then the peak memory of ``fvc predict`` (a model reading stage 4 columns, so the video is
   measured, letterboxed and measured again) on the same clips, each a fresh ``fvc predict``
   process: its peak RSS, and its growth over the same command on a small 96x64 clip.
2. The per-video watchdog's cost on stage 2 (``video_features``): the same clip read with and
   without the watchdog, interleaved, best of N; target: under 2 %.

Run: ``PYTHONSAFEPATH=1 .venv/bin/python benchmarks/bounds.py [--frames 10] [--repeat 5] [--watchdog-only]``
"""

from __future__ import annotations

import argparse
import os
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

#: peak RSS growth of decoding a video alone with ``n`` frame threads, FFmpeg's frame threads
#: capped by ``limits.chunk_mb`` (``capped``) or not (``limits.chunk_mb = None``)
THREADS_PEAK = """
import sys
from fvcflow.video import limits
from fvcflow.video.probe import open_video
from fvcflow.video.read import _decode, _set_threads

def status(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(key))

def decode(src, n):
    with open_video(src) as (container, stream):
        _set_threads(stream, n)
        for frame in _decode(container, stream):
            del frame

warm, video, n, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with limits.bounded(limits.Limits(chunk_mb=None) if mode == "uncapped" else None):
    decode(warm, n)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    before = status("VmRSS:")
    decode(video, n)
print(status("VmHWM:") - before)
"""

#: the whole peak of a stage 3 process (VmHWM, as ``fvc predict``'s is measured): a fresh process that
#: imports the stage code as a worker does and scales one video, with the decoder threads the
#: runner passes (``Settings.threads_per_worker``) or frame threads (``auto``, as outside a run)
STAGE_PROCESS = """
import sys
from fvcflow.config import Settings
from fvcflow.stages import specs  # noqa: F401  (what a worker holds)
from fvcflow.stages.scale import scale_video

video, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
scale_video(video, out, threads=Settings().threads_per_worker if mode == "runner" else None)
with open("/proc/self/status") as fh:
    print(next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:")))
"""

#: peak RSS growth of decoding a video alone with one of the decoder's own options
DECODER_OPTION = """
import sys
from fvcflow.video.probe import open_video
from fvcflow.video.read import _decode

def status(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(key))

def decode(src, mode):
    with open_video(src) as (container, stream):
        ctx = stream.codec_context
        threads, kind = mode.split(":")[:2]
        ctx.thread_count = int(threads)
        if int(threads) > 1:
            ctx.thread_type = kind
        if mode.endswith(":nonref"):
            ctx.skip_frame = "NONREF"
        for frame in _decode(container, stream):
            del frame

warm, video, mode = sys.argv[1], sys.argv[2], sys.argv[3]
decode(warm, mode)
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
before = status("VmRSS:")
decode(video, mode)
print(status("VmHWM:") - before)
"""

PEAK_OF_CHILD = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, capture_output=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""

SIZES = {"1080p": (1080, 1920), "4K": (2160, 3840), "8K": (4320, 7680)}


def clip(path: Path, n: int, height: int, width: int) -> Path:
    row = (np.arange(width + 8 * n) * 7 % 251).astype(np.uint8)
    frames = np.empty((n, height, width, 3), np.uint8)
    for k in range(n):
        frames[k] = row[None, 8 * k:8 * k + width, None]
        frames[k, ::9] = 40 * k % 256
    return write_video(path, frames=frames)


def trained_model(root: Path) -> tuple[Path, str]:
    """A logistic regression over stage 2 and 4 columns, trained on a small synthetic lake: the
    work dir and the model's URI."""
    from fvcflow.training import run_training
    from tests.feature_tables import write_lake
    from tests.training_runs import small_config

    lake = write_lake(root, n_groups=12, n_aug=1, signal=2.0, seed=11)
    cwd = os.getcwd()
    os.chdir(root)                       # no stray ./mlruns
    try:
        summary = run_training(lake, small_config(models="logreg_s24"))
    finally:
        os.chdir(cwd)
    return lake.root, summary.results[0].model_uri


def predict_peak(home: Path, uri: str, video: Path) -> int:
    """Peak RSS (bytes) of one ``fvc predict`` process scoring ``video`` with ``uri``."""
    cmd = [sys.executable, "-m", "fvcflow", "--home", str(home), "predict", str(video), "--model", uri]
    res = subprocess.run([sys.executable, "-c", PEAK_OF_CHILD, *cmd], capture_output=True, text=True,
                         check=True)
    return int(res.stdout.split()[-1])


def letterbox_speed(tmp: Path, repeat: int = 3) -> None:
    """Per-frame time of stage 3's letterbox inside the decoder vs the former RGB-then-OpenCV one,
    on the same decoded frames, interleaved; the median."""
    from fvcflow.stages.scale import letterbox_decoded, letterbox_frame
    from fvcflow.video.probe import open_video
    from fvcflow.video.read import _decode

    for name in SIZES:
        with open_video(tmp / f"{name}.mp4") as (container, stream):
            frames = list(_decode(container, stream))[:6]
        t: dict[str, list[float]] = {"decoder": [], "rgb": []}
        for _ in range(repeat):
            for f in frames:
                t0 = time.perf_counter()
                letterbox_decoded(f, 256)
                t1 = time.perf_counter()
                letterbox_frame(f.to_ndarray(format="rgb24"), 256)
                t["decoder"].append(t1 - t0)
                t["rgb"].append(time.perf_counter() - t1)
        new, old = float(np.median(t["decoder"])), float(np.median(t["rgb"]))
        print(f"letterbox to 256, {name:>5}, per frame (median): in the decoder {1e3 * new:6.1f} ms, "
              f"RGB then OpenCV {1e3 * old:6.1f} ms ({old / new:.2f}x)")


def memory(tmp: Path, frames: int) -> None:
    """Stage 3's and fvc predict's peak memory on 1080p, 4K and 8K clips of ``frames`` frames."""
    warm = write_video(tmp / "warm.mp4", n=3, width=96, height=64)
    peaks, decoder = {}, {}
    for name, (h, w) in SIZES.items():
        video = clip(tmp / f"{name}.mp4", frames, h, w)
        for mode, out in (("scale", peaks), ("decode", decoder)):
            res = subprocess.run([sys.executable, "-c", PEAK, str(warm), str(video), str(tmp), mode],
                                 capture_output=True, text=True, check=True)
            out[name] = int(res.stdout.split()[-1])
    base = peaks["1080p"]
    for name, peak in peaks.items():
        print(f"stage 3 peak RSS growth {name:>5} ({frames} frames): {peak / 2**20:7.0f} MiB  "
              f"ratio to 1080p {peak / base:.2f}x (target <= 1.5x; a 250-frame chunk of "
              f"{name} would be {250 * SIZES[name][0] * SIZES[name][1] * 3 / 2**30:.1f} GiB); "
              f"decoding alone {decoder[name] / 2**20:.0f} MiB, stage 3 beyond it "
              f"{(peak - decoder[name]) / 2**20:+.1f} MiB")
    whole = {}
    for name in SIZES:
        for mode in ("runner", "auto"):
            res = subprocess.run([sys.executable, "-c", STAGE_PROCESS, str(tmp / f"{name}.mp4"),
                                  str(tmp / "out.mp4"), mode], capture_output=True, text=True, check=True)
            whole[name, mode] = int(res.stdout.split()[-1])
    for name in SIZES:
        runs, auto = whole[name, "runner"], whole[name, "auto"]
        print(f"stage 3 process peak RSS {name:>5} ({frames} frames): threads as the runner passes "
              f"{runs / 2**20:5.0f} MiB ({runs / whole['1080p', 'runner']:.2f}x of 1080p's; target <= 1.5x), "
              f"frame threads (no setting) {auto / 2**20:5.0f} MiB ({auto / whole['1080p', 'auto']:.2f}x)")
    for mode, what in (("1:AUTO", "1 thread"), ("2:AUTO", "2 frame threads"), ("2:SLICE", "2 slice threads"),
                       ("1:AUTO:nonref", "1 thread, skip_frame=NONREF")):
        res = subprocess.run([sys.executable, "-c", DECODER_OPTION, str(warm), str(tmp / "8K.mp4"), mode],
                             capture_output=True, text=True, check=True)
        print(f"decoding 8K, {what:28s}: peak RSS growth {int(res.stdout.split()[-1]) / 2**20:5.0f} MiB")
    for n in (3, 17):                    # 17: FFmpeg's own choice on 16 cores
        row = {}
        for mode in ("uncapped", "capped"):
            res = subprocess.run([sys.executable, "-c", THREADS_PEAK, str(warm), str(tmp / "8K.mp4"),
                                  str(n), mode], capture_output=True, text=True, check=True)
            row[mode] = int(res.stdout.split()[-1])
        print(f"decoding 8K with {n:2d} frame threads asked: peak RSS growth "
              f"{row['uncapped'] / 2**20:5.0f} MiB uncapped, {row['capped'] / 2**20:5.0f} MiB capped to "
              f"limits.chunk_mb ({limits.current().chunk_mb:.0f} MiB)")
    letterbox_speed(tmp)
    lake, uri = trained_model(tmp / "lake")
    small = write_video(tmp / "small.mp4", n=frames, width=96, height=64)
    small_peak = predict_peak(lake, uri, small)
    rows = {name: predict_peak(lake, uri, tmp / f"{name}.mp4") for name in SIZES}
    base = rows["1080p"] - small_peak
    for name, peak in rows.items():
        print(f"fvc predict peak RSS {name:>5} ({frames} frames): {peak / 2**20:7.0f} MiB "
              f"({peak / rows['1080p']:.2f}x of 1080p's), growth over a 96x64 clip "
              f"{(peak - small_peak) / 2**20:5.0f} MiB ({(peak - small_peak) / base:.2f}x of 1080p's; "
              f"target <= 1.5x)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--watchdog-only", action="store_true", help="the watchdog's cost alone")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.watchdog_only:
            memory(tmp, args.frames)
        video = write_video(tmp / "s2.mp4", n=250, width=1280, height=720)
        video_features(video)                                         # warm: JIT, codec tables
        times = {"off": [], "on": []}
        for k in range(args.repeat):
            for mode in (("off", "on") if k % 2 == 0 else ("on", "off")):   # neither always first
                with limits.bounded(watchdog=mode == "on"):
                    t0 = time.perf_counter()
                    video_features(video)
                    times[mode].append(time.perf_counter() - t0)
        off, on = min(times["off"]), min(times["on"])
        print(f"stage 2 720p 250 frames: watchdog off {off:.3f} s, on {on:.3f} s, "
              f"cost {100 * (on / off - 1):+.2f} % (target < 2 %; best of {args.repeat})")


if __name__ == "__main__":
    main()
