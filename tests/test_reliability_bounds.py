"""Bounded cost per video (issue 26, part 2), faults injected for real: a video over a bound, a
playlist named ``.mp4``, a decode that never ends and a video whose processing raises are each
one failure row naming the cause, on the first try, and the batch's other videos succeed. Plus
stage 3's memory on an 8K video, measured in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from fvcflow.config import Settings
from fvcflow.stages import runner
from fvcflow.stages.runner import Job
from tests.media import write_video


def settings(tmp_path: Path, **limits) -> Settings:
    return Settings(home=tmp_path / "home", workers=1, limits=limits).resolved()


def job(path: Path, name: str) -> Job:
    return Job(key=f"{name:0>8}", video_id=name, path=str(path), carry={"video_id": name})


def run(tmp_path: Path, bad: Path, **limits) -> dict:
    good = write_video(tmp_path / "good.mp4", n=12, width=96, height=64)
    out = runner.run_batch("features", [job(bad, "bad"), job(good, "good")], settings(tmp_path, **limits))
    assert out.done == ["good"], out.failures                     # the batch goes on
    assert [f["video_id"] for f in out.failures] == ["bad"]
    return out.failures[0]


def test_a_frame_over_the_pixel_bound_is_one_failure_row_naming_it(tmp_path):
    """(x264 and FFmpeg's mjpeg refuse to write a 16Kx16K frame, and FFmpeg does not report the
    size of a file whose header was edited to declare one: the bound is lowered instead.)"""
    big = write_video(tmp_path / "big.mp4", n=3, width=256, height=256)
    row = run(tmp_path, big, max_pixels=128 * 128)
    assert "over the pixel bound" in row["reason"] and "limits.max_pixels = 16384" in row["reason"]
    assert row["error_type"] == "VideoError"


def test_a_video_over_the_frame_and_duration_bounds_is_refused(tmp_path):
    long = write_video(tmp_path / "long.mp4", n=40, width=64, height=48)
    assert "limits.max_frames = 20" in run(tmp_path, long, max_frames=20)["reason"]
    assert "limits.max_duration_s" in run(tmp_path / "d", long, max_duration_s=1.0)["reason"]


def test_an_hls_playlist_named_mp4_is_refused_without_reading_its_segments(tmp_path):
    seg = write_video(tmp_path / "seg.ts", n=12, codec="libx264")
    bad = tmp_path / "playlist.mp4"
    bad.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n{seg}\n#EXT-X-ENDLIST\n")
    row = run(tmp_path, bad)
    assert "container format not allowed" in row["reason"] and "HLS" in row["reason"]


def test_protocols_and_formats_off_the_list_are_refused(tmp_path):
    from fvcflow.errors import VideoError
    from fvcflow.video import limits, probe

    clip = write_video(tmp_path / "clip.mkv", n=6)
    with pytest.raises(VideoError, match="file not found"):
        probe(f"concat:{clip}|{clip}")                              # a protocol is never parsed
    with limits.bounded(limits.Limits(formats=("mov",))), pytest.raises(VideoError, match="not allowed"):
        probe(clip)
    assert probe(clip).n_frames == 6


def test_ingest_probes_within_the_settings_limits(tmp_path):
    """A bound lowered in the settings applies at ingest too, in its probing processes (two
    workers: a process pool that would otherwise use the default bounds)."""
    from fvcflow.stages.ingest import ingest_corpus
    from tests.reliability_media import write_labels

    root = tmp_path / "corpus"
    write_video(root / "big.mp4", n=3, width=256, height=256)
    write_video(root / "small.mp4", n=3, width=96, height=64, seed=1)
    write_labels(root, [("big.mp4", "fake", "g0"), ("small.mp4", "real", "g1")])
    s = Settings(home=tmp_path / "home", workers=2, limits={"max_pixels": 128 * 128},
                 corpus={"kind": "folder", "root": root, "labels": root / "labels.csv"}).resolved()
    summary = ingest_corpus(s)
    index = pl.read_parquet(s.lake().index)
    assert [Path(p).name for p in index["path"]] == ["small.mp4"]
    failures = pl.read_parquet(s.lake().failures)
    assert failures.height == 1 and failures["path"][0].endswith("big.mp4")
    assert failures["stage"][0] == "ingest"
    assert "over the pixel bound" in failures["reason"][0]
    assert "limits.max_pixels = 16384" in failures["reason"][0]
    assert "1 failed" in summary.format()


def endless_ts(fifo: Path, data: bytes, stop: threading.Event) -> None:
    """Write an MPEG-TS stream into ``fifo`` again and again, to every reader, until ``stop``."""
    while not stop.is_set():
        try:
            with open(fifo, "wb") as fh:
                while not stop.is_set():
                    fh.write(data)
        except (BrokenPipeError, OSError):
            continue


def test_a_decode_that_never_ends_is_stopped_by_the_watchdog(tmp_path):
    src = write_video(tmp_path / "src.ts", n=25, width=96, height=64)
    fifo = tmp_path / "endless.ts"
    os.mkfifo(fifo)
    stop = threading.Event()
    writer = threading.Thread(target=endless_ts, args=(fifo, src.read_bytes(), stop), daemon=True)
    writer.start()
    try:
        row = run(tmp_path, fifo, decode_seconds=3.0)
    finally:
        stop.set()
        try:                                                      # let the writer see the stop
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        except OSError:
            pass
    assert "over the decode time bound" in row["reason"] and "limits.decode_seconds = 3" in row["reason"]


def test_any_exception_of_one_video_is_its_failure_row_on_the_first_try(tmp_path, monkeypatch):
    from fvcflow.stages import specs

    bad = write_video(tmp_path / "bad.mp4", n=6)
    real = specs.SPECS["features"]
    calls = []

    def run_one(j, s):
        calls.append(j.video_id)
        if j.video_id == "bad":
            raise MemoryError("cannot allocate 25 GB")
        return real.run(j, s)

    monkeypatch.setitem(specs.SPECS, "features", real.__class__(real.name, real.table, real.jobs, run_one))
    row = run(tmp_path, bad)
    assert row["error_type"] == "MemoryError" and "25 GB" in row["reason"]
    assert calls == ["bad", "good"]


PEAK = """
import sys
from fvcflow.stages.scale import scale_video
from fvcflow.video.probe import open_video
from fvcflow.video.read import _decode, _set_threads

def status(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(key))

def decode(src, dst, threads):                                   # the decoder's own frames alone
    with open_video(src) as (container, stream):
        _set_threads(stream, threads)
        for frame in _decode(container, stream):
            del frame

run = decode if sys.argv[4:5] == ["decode"] else scale_video
run(sys.argv[1], sys.argv[3] + "/warm.mp4", threads=1)           # warm: imports, codec tables
with open("/proc/self/clear_refs", "w") as fh:                   # reset the peak (VmHWM)
    fh.write("5")
before = status("VmRSS:")
run(sys.argv[2], sys.argv[3] + "/out.mp4", threads=1)
print(status("VmHWM:") - before)
"""


def scale_peak(warm: Path, video: Path, out: Path, mode: str = "scale") -> int:
    """Peak RSS growth (bytes) of stage 3 on ``video`` in a fresh warmed process; ``mode="decode"``:
    of decoding it alone (the decoder's reference frames, which any full decode holds)."""
    res = subprocess.run([sys.executable, "-c", PEAK, str(warm), str(video), str(out), mode],
                         capture_output=True, text=True, check=True)
    return int(res.stdout.split()[-1])


@pytest.mark.slow
def test_8k_stage3_memory_is_the_decoders_own_and_nothing_more(tmp_path):
    """Stage 3 on 7680x4320 makes no full-size RGB frame (95 MiB each): its peak growth is that
    of decoding the video alone (the decoder's reference frames) plus less than a tenth of one
    8K RGB frame; a 250-frame chunk would be about 25 GB, one RGB frame per decode 95 MiB more."""
    from tests.test_reliability_inputs import eight_k

    warm = write_video(tmp_path / "warm.mp4", n=3, width=96, height=64)
    clip = eight_k(tmp_path / "8k.mp4", 6)
    growth = scale_peak(warm, clip, tmp_path)
    decoder = scale_peak(warm, clip, tmp_path, "decode")
    rgb = 7680 * 4320 * 3
    print(f"8K (6 frames) peak RSS growth: stage 3 {growth / 2**20:.0f} MiB, "
          f"decoding alone {decoder / 2**20:.0f} MiB")
    assert growth - decoder < rgb / 10


def smooth_frames(n: int, height: int, width: int) -> np.ndarray:
    """Pictures without noise (gradients and a sliding texture), as camera footage mostly is."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = np.empty((n, height, width, 3), np.uint8)
    for k in range(n):
        frames[k, ..., 0] = 128 + 100 * np.sin((xx + 6 * k) / 23)
        frames[k, ..., 1] = 255 * yy / height
        frames[k, ..., 2] = 128 + 90 * np.cos((xx + yy) / 31)
    return frames


def test_the_letterbox_from_the_decoder_keeps_to_the_rgb_letterbox(tmp_path):
    """Stage 3 scales a large frame inside the decoder's YUV (no full-size RGB copy): the picture
    lies at the same place, the bars stay black, and against the former path (RGB first, then
    OpenCV's area filter) it differs by rounding only (mean < 1.5 levels, no pixel over 6; a
    colour swap, a range or matrix error, or a one-pixel shift is tens of levels). A frame that is
    upscaled keeps the former bits exactly. The output video is what stage 3 writes."""
    from fvcflow.stages.scale import letterbox_decoded, letterbox_frame, letterbox_geometry, scale_video
    from fvcflow.video import iter_rgb
    from fvcflow.video.probe import open_video
    from fvcflow.video.read import _decode

    for (w, h), size in (((480, 272), 128), ((272, 480), 128), ((96, 64), 128)):
        path = write_video(tmp_path / f"{w}x{h}.mp4", frames=smooth_frames(3, h, w))
        new_w, new_h, x0, y0 = letterbox_geometry(w, h, size)
        with open_video(path) as (container, stream):
            for frame in _decode(container, stream):
                new = letterbox_decoded(frame, size).astype(int)
                old = letterbox_frame(frame.to_ndarray(format="rgb24"), size).astype(int)
                if max(w, h) <= size:
                    assert np.array_equal(new, old)
                    continue
                bars = np.ones((size, size), bool)
                bars[y0:y0 + new_h, x0:x0 + new_w] = False
                assert not new[bars].any()
                diff = np.abs(new - old)[~bars]
                assert diff.mean() < 1.5 and diff.max() <= 6, (w, h, diff.mean(), diff.max())
    scale_video(tmp_path / "480x272.mp4", tmp_path / "out.mp4", size=128, crf=0)
    written = np.concatenate(list(iter_rgb(tmp_path / "out.mp4"))).astype(int)
    assert written.shape == (3, 128, 128, 3)
    source = np.stack([letterbox_frame(f, 128) for f in smooth_frames(3, 272, 480)]).astype(int)
    assert np.abs(written - source).mean() < 3.0       # through two lossy encodes, frame by frame


def png_video(path: Path, width: int, height: int, n: int = 2) -> Path:
    """A QuickTime file of ``n`` black ``width`` x ``height`` PNG frames, written cheaply: one
    gray PNG compressed row by row (a 16384x16384 frame is 0.26 MB of PNG, never 256 MiB of
    pixels here), muxed as ready-made packets (no encoder is opened, as none takes 16K frames)."""
    import fractions
    import struct
    import zlib

    import av

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    z = zlib.compressobj(9)
    row = bytes(width + 1)                                 # filter byte 0, black gray pixels
    idat = b"".join([z.compress(row) for _ in range(height)] + [z.flush()])
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    with av.open(str(path), "w", format="mov") as container:
        stream = container.add_mux_stream("png", rate=25, width=width, height=height)
        stream.time_base = fractions.Fraction(1, 25)
        for i in range(n):
            packet = av.Packet(png)
            packet.stream, packet.pts, packet.dts = stream, i, i
            packet.time_base, packet.is_keyframe = stream.time_base, True
            container.mux(packet)
    return path


OVERSIZE = """
import json, sys
from fvcflow.config import Settings
from fvcflow.stages import runner
from fvcflow.stages.runner import Job

def status(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(key))

home, paths = sys.argv[1], sys.argv[2:]
settings = Settings(home=home, workers=1).resolved()
jobs = [Job(key=f"{i:0>8}", video_id=f"v{i}", path=p, carry={"video_id": f"v{i}"},
            params={"dst": f"{home}/out{i}.mp4"}) for i, p in enumerate(paths)]
runner.run_batch("scale", jobs[:1], settings)                   # warm: imports, codec tables
with open("/proc/self/clear_refs", "w") as fh:                  # reset the peak (VmHWM)
    fh.write("5")
before = status("VmRSS:")
out = runner.run_batch("scale", jobs[1:], settings)
print(json.dumps({"done": out.done, "failures": out.failures, "growth": status("VmHWM:") - before}))
"""


@pytest.mark.slow
def test_frames_over_the_pixel_bound_stage3_refuses_them_with_bounded_memory(tmp_path):
    """An 8192x8192 frame (over the default bound, 35389440 pixels) and a 16384x16384 one (over
    what FFmpeg decodes at all) each become one failure row naming it, in a stage 3 batch run in a
    fresh process, whose memory grows by far less than one such frame (8K x 8K RGB: 192 MiB; 16K:
    768 MiB); the batch's ordinary video is scaled."""
    import json

    warm = write_video(tmp_path / "warm.mp4", n=3, width=96, height=64)
    good = write_video(tmp_path / "good.mp4", n=6, width=96, height=64, seed=4)
    x8 = png_video(tmp_path / "8kx8k.mov", 8192, 8192)
    x16 = png_video(tmp_path / "16kx16k.mov", 16384, 16384)
    assert x16.stat().st_size < 2**20                          # written cheaply
    res = subprocess.run([sys.executable, "-c", OVERSIZE, str(tmp_path / "home"), str(warm), str(x8),
                          str(x16), str(good)], capture_output=True, text=True, check=True)
    out = json.loads(res.stdout.splitlines()[-1])
    assert out["done"] == ["v3"]
    rows = {Path(f["path"]).name: f for f in out["failures"]}
    assert sorted(rows) == ["16kx16k.mov", "8kx8k.mov"]
    assert all(f["error_type"] == "VideoError" and f["stage"] == "scale" for f in rows.values())
    assert ("over the pixel bound: 8192x8192 frames (67108864 pixels) exceed limits.max_pixels = 35389440"
            in rows["8kx8k.mov"]["reason"])
    assert "over the pixel bound" in rows["16kx16k.mov"]["reason"], rows["16kx16k.mov"]
    print(f"stage 3 peak RSS growth on 8Kx8K + 16Kx16K frames: {out['growth'] / 2**20:.0f} MiB")
    assert out["growth"] < 128 * 2**20


def test_decoder_frame_threads_are_capped_by_the_chunk_bound(tmp_path):
    """Each frame thread holds a decoded frame (17 threads at 8K: 882 MiB measured in
    benchmarks/bounds.py): the threads asked for, or FFmpeg's own count, are cut to what fits in
    ``limits.chunk_mb`` beside the decoder's reference frames (``REFERENCE_FRAMES`` 8-bit 4:2:0
    frames: two frames at 3 bytes/pixel); the frames decoded are the same as with one thread."""
    import av

    from fvcflow.video import limits
    from fvcflow.video.probe import open_video
    from fvcflow.video.read import _decode, _set_threads

    clip = write_video(tmp_path / "c.mp4", n=8, width=320, height=180)
    frame_mb = 320 * 180 * 3 / 2**20                      # 4:2:0 at up to 16 bits
    seen = {}
    cap3 = (2 + 3.5) * frame_mb                            # the reference frames and 3.5 frame threads
    for cap, asked in ((cap3, 16), (cap3, True), (None, 6), (2.9 * frame_mb, 4)):
        with limits.bounded(limits.Limits(chunk_mb=cap)), open_video(clip) as (container, stream):
            _set_threads(stream, asked)
            ctx = stream.codec_context
            seen[(cap, asked)] = (ctx.thread_count, ctx.thread_type)
            frames = [f.to_ndarray(format="rgb24") for f in _decode(container, stream)]
        with open_video(clip) as (container, stream):
            _set_threads(stream, 1)
            assert np.array_equal(frames, [f.to_ndarray(format="rgb24") for f in _decode(container, stream)])
    assert seen[(cap3, 16)] == (3, av.codec.context.ThreadType.AUTO)   # frame threads
    assert seen[(cap3, True)][0] == min((os.cpu_count() or 1) + 1, 16, 3)
    assert seen[(None, 6)][0] == 6
    assert seen[(2.9 * frame_mb, 4)][0] == 1                             # no room for a second thread
