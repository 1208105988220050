"""Ingest speed: ZipCrypto extraction vs ``unzip -P`` and Python's ``zipfile``, and probing videos/s.

    .venv/bin/python benchmarks/ingest.py [--mb 200] [--videos 40] [--reps 2]

Writes ``--videos`` real H.264 clips (half lossless noise, which ``zip`` stores, half lossy
moving scenes, which it deflates) totalling about ``--mb`` MB under ``$FVC_BENCH_DIR/ingest``
(default /tmp/fvc-bench/ingest, reused when present), packs them with ``zip -P`` (ZipCrypto),
then measures side by side in one run, best of ``--reps``:
  1. ``unzip -P pw -o -q`` into a fresh folder;
  2. :func:`fvcflow.ingest.archive.extract_zip` with 1 thread and with the default threads;
  3. ``zipfile.ZipFile.extract`` with the password on a slice of the archive (it is slow);
  4. probing (content hash + ``fvcflow.video.probe``) of the extracted videos with 1 process and
     with ``os.cpu_count()`` processes (the fork server, started once per process, is warmed first).
Target: (2) >= 0.8x the throughput of (1). Every output is compared with the source bytes.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import av
import numpy as np

from fvcflow.ingest.archive import extract_zip
from fvcflow.ingest.probing import probe_many

BENCH = Path(os.environ.get("FVC_BENCH_DIR", "/tmp/fvc-bench")) / "ingest"
PASSWORD = "bench-pw"


def _encode(path: Path, target_bytes: int, seed: int, lossless: bool) -> None:
    """An H.264 clip of about ``target_bytes``: lossless noise (incompressible) or a lossy moving scene."""
    rng = np.random.default_rng(seed)
    h, w = (240, 320) if lossless else (480, 640)
    yy, xx = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "0" if lossless else "8"}
        i = written = 0
        while written < target_bytes and i < 5000:
            if lossless:
                frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            else:
                wave = np.sin((xx + 3 * i) / 9.0) * np.cos((yy - 2 * i) / 13.0)
                base = 128 + 100 * wave[..., None]
                frame = np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                written += packet.size
                out.mux(packet)
            i += 1
        for packet in stream.encode():
            out.mux(packet)


def build(mb: int, n_videos: int) -> tuple[Path, Path]:
    src, archive = BENCH / f"src-{mb}-{n_videos}", BENCH / f"bench-{mb}-{n_videos}.zip"
    if archive.exists():
        return src, archive
    shutil.rmtree(src, ignore_errors=True)
    per = mb * 1_000_000 // n_videos
    t = time.perf_counter()
    for i in range(n_videos):
        folder = src / "FVC2" / f"vid{i:04d}"
        folder.mkdir(parents=True)
        _encode(folder / "video.mp4", per, seed=i, lossless=i % 2 == 0)
    print(f"wrote {n_videos} clips in {time.perf_counter() - t:.1f} s")
    subprocess.run(["zip", "-q", "-r", "-P", PASSWORD, str(archive.with_suffix(".tmp.zip")), "FVC2"], cwd=src,
                   check=True)
    archive.with_suffix(".tmp.zip").rename(archive)
    return src, archive


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


def _best(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        times.append(fn())
    return min(times)


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _same(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("video.mp4"))
    return bool(files) and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--videos", type=int, default=40)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--slice-mb", type=int, default=10, help="bytes zipfile extracts")
    args = ap.parse_args()
    src, archive = build(args.mb, args.videos)
    with zipfile.ZipFile(archive) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
    total = sum(i.file_size for i in infos)
    methods = [i.compress_type for i in infos]
    print(f"archive: {archive} ({archive.stat().st_size / 1e6:.1f} MB, ZipCrypto), {len(infos)} members, "
          f"{total / 1e6:.1f} MB uncompressed ({methods.count(0)} stored, {methods.count(8)} deflated), "
          f"{os.cpu_count()} cores")
    archive.read_bytes()  # warm the page cache for every contender alike
    out = BENCH / "out"
    pw = PASSWORD.encode()

    extract_zip(archive, _fresh(out / "warm"), password=pw)  # JIT compile (cached) outside the clock
    t_unzip = _best(lambda: _time(lambda: subprocess.run(
        ["unzip", "-P", PASSWORD, "-o", "-q", str(archive), "-d", str(_fresh(out / "unzip"))], check=True)),
        args.reps)
    t_one = _best(lambda: _time(lambda: extract_zip(archive, _fresh(out / "one"), password=pw, workers=1)),
                  args.reps)
    t_pool = _best(lambda: _time(lambda: extract_zip(archive, _fresh(out / "pool"), password=pw)), args.reps)
    assert _same(src, out / "unzip") and _same(src, out / "one") and _same(src, out / "pool")

    sliced, size = [], 0
    for info in infos:
        if size >= args.slice_mb * 1_000_000:
            break
        sliced.append(info)
        size += info.file_size

    def zipfile_run() -> None:
        with zipfile.ZipFile(archive) as zf:
            for info in sliced:
                zf.extract(info, _fresh(out / "zipfile") if info is sliced[0] else out / "zipfile", pwd=pw)

    t_zipfile = _time(zipfile_run)
    mbps = {name: total / t / 1e6 for name, t in (("unzip", t_unzip), ("one", t_one), ("pool", t_pool))}
    zf_mbps = size / t_zipfile / 1e6
    print(f"unzip -P -o -q          : {mbps['unzip']:7.1f} MB/s ({t_unzip:.2f} s)")
    print(f"extract_zip, 1 thread   : {mbps['one']:7.1f} MB/s ({t_one:.2f} s)  "
          f"ratio vs unzip {mbps['one'] / mbps['unzip']:.2f}x (target >= 0.8x)")
    print(f"extract_zip, default    : {mbps['pool']:7.1f} MB/s ({t_pool:.2f} s)  "
          f"ratio vs unzip {mbps['pool'] / mbps['unzip']:.2f}x (target >= 0.8x)")
    print(f"zipfile (pwd), {size / 1e6:.0f} MB slice: {zf_mbps:7.1f} MB/s ({t_zipfile:.2f} s)  "
          f"ratio vs unzip {zf_mbps / mbps['unzip']:.3f}x")

    videos = sorted((out / "pool").rglob("video.mp4"))
    probe_many(videos[:2], workers=os.cpu_count())  # start the fork server (once per process) off the clock
    for workers in (1, os.cpu_count() or 1):
        t = time.perf_counter()
        res = probe_many(videos, workers=workers)
        dt = time.perf_counter() - t
        assert all("error" not in r for r in res)
        print(f"probe + hash, {workers} process{'es' if workers > 1 else ''}: {len(videos) / dt:7.1f} "
              f"videos/s ({total / dt / 1e6:.0f} MB/s, {len(videos)} videos in {dt:.2f} s)")
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
