"""``fvc scan`` over many demo-sized videos, side by side with what bounds it, in one run.

    .venv/bin/python -m benchmarks.scan [--n 200] [--workers 2]

A synthetic trained lake (tests/feature_tables.py, the tests' small training) registers the
stage 2 detector ``logreg_s2`` as ``fvc-bench`` (its input: the stage 2 features of the sampled
frames). ``--n`` videos of 320x240, 75 frames (3 s at 25 fps, H.264) are written, and measured:

  1. decoding the frames the features need (``iter_yuv`` over ``sample_indices``), the videos
     split over ``--workers`` processes: the floor of any scorer;
  2. ``run_scan`` on a fresh Dask LocalCluster of ``--workers`` processes (cluster start, model
     loading per worker, hashing, scoring, thumbnails, evidence, the table and the page included;
     overlays as ``fvc scan`` draws them by default, for the videos with verdict fake).
     Target: at most 1.3x the decoding;
  3. the fixed cost apart: a scan of one other video on its own fresh cluster, and decoding one
     video in its own process pool; the marginal ratio is (scan of n - scan of 1) / (decoding of
     n - decoding of 1): what each further video costs against decoding it;
  4. the overlays of every video (``overlays="all"``; their own cache, the scores cached);
  5. today's ``fvc predict``: the same files scored one after another in one process;
  6. the rerun: every content cached, nothing scored.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from benchmarks.kernels import row
from fvcflow.config import Settings
from fvcflow.scan import run_scan
from fvcflow.video import iter_yuv, probe, sample_indices

WIDTH, HEIGHT, FRAMES = 320, 240, 75


def _decode(paths: list[str]) -> int:
    n = 0
    for p in paths:
        info = probe(p)
        for _, planes in iter_yuv(p, sample_indices(info.n_frames), info=info):
            n += int(planes[0][0, 0] >= 0)
    return n


def decode_all(paths: list[Path], workers: int) -> float:
    parts = [[str(p) for p in paths[i::workers]] for i in range(workers)]
    t = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        sum(pool.map(_decode, parts))
    return time.perf_counter() - t


def make_videos(folder: Path, n: int) -> list[Path]:
    from tests.media import write_video

    return [write_video(folder / f"v{k:04d}.mp4", n=FRAMES, width=WIDTH, height=HEIGHT, seed=k)
            for k in range(n)]


def make_lake(root: Path):
    from fvcflow.training import run_training
    from fvcflow.training.tracking import runs as tracking
    from tests.feature_tables import write_lake
    from tests.training_runs import small_config

    lake = write_lake(root, n_groups=30, n_aug=0, signal=2.0, seed=11)
    cfg = small_config(models="logreg_s2", register_best=False, report=False, shortcut_check=False)
    summary = run_training(lake, cfg)
    tracking.register(lake, cfg.model_copy(update={"registered_name": "fvc-bench"}), summary.results[0])
    return lake


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--overlays", choices=("fake", "all", "none"), default="fake",
                    help="the overlays of the measured scan (fvc scan's default: fake)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fvc-bench-scan-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        lake = make_lake(tmp / "lake")
        videos = make_videos(tmp / "videos", args.n)
        print(f"set-up: trained lake and {args.n} videos {WIDTH}x{HEIGHT}x{FRAMES} in "
              f"{time.perf_counter() - t:.1f} s; {os.cpu_count()} CPUs on this machine (maybe shared)")
        settings = Settings(home=lake.root, workers=args.workers).resolved()

        from tests.media import write_video

        (tmp / "one").mkdir()
        one = [write_video(tmp / "one" / "other.mp4", n=FRAMES, width=WIDTH, height=HEIGHT, seed=10_000)]
        t_dec = decode_all(videos, args.workers)
        t_dec1 = decode_all(one, 1)
        t = time.perf_counter()
        res = run_scan(settings, [tmp / "videos"], model="fvc-bench", name="bench", overlays=args.overlays)
        t_scan = time.perf_counter() - t
        assert res.failed == 0 and res.computed == args.n, (res.failed, res.computed)
        n_fake = int((res.scores["verdict"] == "fake").sum())
        t = time.perf_counter()
        run_scan(settings, one, model="fvc-bench", name="one", overlays=args.overlays)
        t_scan1 = time.perf_counter() - t
        t = time.perf_counter()
        allov = run_scan(settings, [tmp / "videos"], model="fvc-bench", name="overlays", overlays="all")
        t_ov = time.perf_counter() - t
        assert allov.computed == 0 and allov.scores["top_tiles"].is_not_null().all()

        from fvcflow.detector.predict import load_detector

        t = time.perf_counter()
        det = load_detector(lake, "fvc-bench")
        seq = [det.score(p, limits=settings.limits.video_limits()) for p in videos]
        t_seq = time.perf_counter() - t
        got = dict(zip(res.scores["path"], res.scores["prob_fake"]))
        worst = max(abs(got[str(p.resolve())] - s) for p, s in zip(videos, seq))

        t = time.perf_counter()
        again = run_scan(settings, [tmp / "videos"], model="fvc-bench", name="bench")
        t_again = time.perf_counter() - t
        assert again.computed == 0

    w = args.workers
    row(f"decode the sampled frames, {w} processes", f"{t_dec:8.1f} s", "", True)
    row(f"fvc scan, {w} Dask workers (all included; overlays {args.overlays})", f"{t_scan:8.1f} s", "", True)
    row("fvc scan vs decoding", f"{t_scan / t_dec:8.2f} x", "<= 1.3x", t_scan / t_dec <= 1.3)
    row("fvc scan of 1 video (the fixed cost)", f"{t_scan1:8.1f} s", "", True)
    row("decoding 1 video (its own pool)", f"{t_dec1:8.1f} s", "", True)
    marginal = (t_scan - t_scan1) / max(t_dec - t_dec1, 1e-9)
    row("per further video: scan vs decoding", f"{marginal:8.2f} x", "<= 1.3x", marginal <= 1.3)
    row(f"rescan, overlays of all ({n_fake} fake in the first)", f"{t_ov:8.1f} s", "", True)
    row("fvc predict, one after another", f"{t_seq:8.1f} s", "", True)
    row("fvc predict vs fvc scan", f"{t_seq / t_scan:8.2f} x", "", True)
    row("fvc scan rerun (all cached)", f"{t_again:8.1f} s", "", True)
    print(f"  ({args.n} videos; scan and predict agree to {worst:.1e} on every score; "
          f"load average {os.getloadavg()[0]:.1f} at the end)")


if __name__ == "__main__":
    main()
