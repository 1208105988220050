"""Cost of the face tracks and of face clips, side by side with what they are compared with, in one run.

    .venv/bin/python -m benchmarks.faces [--frames 150] [--repeat 3]

Footage: scikit-image's astronaut() panning across a textured frame (tests/test_facetrack.py's
``astronaut_pan``), ``--frames`` frames encoded as H.264 at 1920x1080 and 640x360. On each:
  1. The tracker (``track_video``: the detector on every 3rd sampled frame, the whole frame
     downscaled to faces.max_side on every faces.full_every-th of those, a small window about each
     face between) vs stage 2 on the same video (``video_features`` with the local columns, the
     default stage 2), both on one thread. Target: the tracker <= 0.5x stage 2. Also the tracker's
     detection frames per CPU second (per core). Then the shared decode, as the pipeline runs it
     (the faces stage computes stage 2's row from its decode, ``FrameTracker``): stage 2 with the
     tracker fed from its frames, and the tracker's cost there (that minus stage 2 alone).
  2. Face clip extraction (``decode_face_clips``: the full-resolution frames aligned to the
     template) vs frame clip extraction (``decode_clips`` of the 256 px letterboxed stage 3 copy),
     the same windows (16 frames x 4 clips, 112 px), no cache.
Times are the best of ``--repeat`` runs of each, measured in alternation; the machine may be shared,
so the CPU time of the process (all threads) is what the ratios use.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2

from benchmarks.kernels import best_pair, row
from fvcflow.deep.clips import ClipSource, FaceRef, decode_clips, decode_face_clips
from fvcflow.models.torch_common import ClipSpec
from fvcflow.stages.facetrack import FULL_EVERY, FrameTracker, detection_positions, make_detector, track_video
from fvcflow.stages.features import video_features
from fvcflow.stages.scale import scale_video
from fvcflow.store import write_parquet_atomic
from fvcflow.video import VideoWriter, iter_luma, probe, sample_indices
from tests.test_facetrack import _hits, astronaut_pan

SPEC = ClipSpec(frames=16, clips=4, size=112, source="face")


def make_pan(folder: Path, n: int, width: int, height: int) -> Path:
    frames, _ = astronaut_pan(n=n, width=width, height=height, side=height * 2 // 3, travel=width // 4)
    path = folder / f"pan_{height}p.mp4"
    with VideoWriter(path, width, height, 25, crf=23) as out:
        out.write(frames)
    return path


def bench(path: Path, repeat: int, folder: Path) -> None:
    info = probe(path)
    det = make_detector("auto")
    cv2.setNumThreads(1)
    table, summary = track_video(path, det, every=3, threads=1)

    def tracker():
        track_video(path, det, every=3, threads=1)

    def stage2():
        video_features(path, info=info, local=True, threads=1)

    wanted = [sample_indices(info.n_frames)[p] for p in detection_positions(summary["n_sampled"], 3)]

    def decode():                        # the tracker's reads alone: the frames it detects on
        for _, y in iter_luma(path, wanted, info=info, threads=1):
            y[0, 0]

    def shared(full_every=FULL_EVERY, det=det):   # one decode: stage 2's row and the tracks (the faces stage)
        t = FrameTracker(det, info, every=3, full_every=full_every, threads=1)
        video_features(path, info=info, local=True, threads=1, tracker=t)
        t.result()
        return t

    t_tr, t_s2 = best_pair(tracker, stage2, repeat)
    c_tr, c_s2 = best_pair(tracker, stage2, repeat, clock=time.process_time)
    c_dec, _ = best_pair(decode, stage2, 1, clock=time.process_time)
    c_sh, c_s2b = best_pair(shared, stage2, repeat, clock=time.process_time)
    c_all, c_s2c = best_pair(lambda: shared(1), stage2, repeat, clock=time.process_time)
    small = make_detector("auto", max_side=480)
    c_small, c_s2d = best_pair(lambda: shared(det=small), stage2, repeat, clock=time.process_time)
    done = shared()
    n_full = done.n_full
    _, truth = astronaut_pan(n=info.n_frames, width=info.width, height=info.height, side=info.height * 2 // 3,
                             travel=info.width // 4)
    hits = {name: _hits(t.result()[0], truth[:, 0]) for name, t in
            (("default", done), ("whole", shared(1)), ("480", shared(det=small)))}
    tag = f"{info.width}x{info.height}"
    row(f"{tag}: tracker, {summary['n_detect']} of {summary['n_sampled']} sampled",
        f"{c_tr * 1e3:8.1f} ms CPU/video", "", True)
    row(f"{tag}: stage 2 (51 + local columns)", f"{c_s2 * 1e3:8.1f} ms CPU/video", "", True)
    row(f"{tag}: tracker vs stage 2 (CPU)", f"{c_tr / c_s2:8.2f} x", "<= 0.5x", c_tr / c_s2 <= 0.5)
    row(f"{tag}: tracker detection frames per core", f"{summary['n_detect'] / c_tr:8.1f} frames/s", "", True)
    row(f"{tag}: of which decoding those frames", f"{c_dec * 1e3:8.1f} ms CPU/video", "", True)
    extra = max(c_sh - c_s2b, 0.0)
    row(f"{tag}: stage 2 + tracker, one decode", f"{c_sh * 1e3:8.1f} ms CPU/video", "", True)
    ratio = extra / c_s2b
    row(f"{tag}: shared-decode tracker vs stage 2", f"{ratio:8.2f} x", "<= 0.5x", ratio <= 0.5)
    old = max(c_all - c_s2c, 0.0) / c_s2c
    row(f"{tag}: same, every detection on the whole frame", f"{old:8.2f} x", "(was)", True)
    small_ratio = max(c_small - c_s2d, 0.0) / c_s2d
    row(f"{tag}: same, faces.max_side 480", f"{small_ratio:8.2f} x", "(knob)", True)
    print(f"  ({n_full} of {summary['n_detect']} detection frames searched whole (faces.full_every = "
          f"{FULL_EVERY}), windows about the face on the others; track 0 within IoU 0.5 of the true face on "
          f"{hits['default']:.0%} of sampled frames (every detection whole: {hits['whole']:.0%}, "
          f"max_side 480: {hits['480']:.0%}))")
    print(f"  (wall, best of {repeat}: tracker {t_tr * 1e3:.0f} ms, stage 2 {t_s2 * 1e3:.0f} ms; "
          f"{summary['n_tracks']} track(s), detector {summary['detector']})")

    tracks = write_parquet_atomic(table, folder / f"tracks_{info.height}.parquet")
    scaled = folder / f"scaled_{info.height}.mp4"
    flags = scale_video(path, scaled, size=256)
    frame_src = ClipSource("v", str(scaled), "", info.n_frames, flags["src_width"], flags["src_height"])
    face_src = ClipSource("v", str(scaled), "", info.n_frames,
                          face=FaceRef(str(path), "", str(tracks), "", 0))
    t_face, t_frame = best_pair(lambda: decode_face_clips(face_src, SPEC),
                                lambda: decode_clips(frame_src, SPEC), repeat, clock=time.process_time)
    row(f"{tag}: face clips (full-res, aligned)", f"{t_face * 1e3:8.1f} ms CPU/video", "", True)
    row(f"{tag}: frame clips (256 px letterbox)", f"{t_frame * 1e3:8.1f} ms CPU/video", "", True)
    row(f"{tag}: face vs frame clip extraction", f"{t_face / t_frame:8.2f} x", "", True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=150, help="frames per video")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs; the best is reported")
    args = ap.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (the machine may be shared); "
          f"clips {SPEC.frames} frames x {SPEC.clips} at {SPEC.size} px")
    with tempfile.TemporaryDirectory(prefix="fvc-bench-faces-") as tmp:
        for w, h in ((1920, 1080), (640, 360)):
            bench(make_pan(Path(tmp), args.frames, w, h), args.repeat, Path(tmp))


if __name__ == "__main__":
    main()
