"""fvcflow.video on real files encoded by tests/media.py, checked against plain PyAV decodes."""

from __future__ import annotations

import dataclasses
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from fvcflow.errors import VideoError
from fvcflow.video import VideoWriter, iter_luma, iter_rgb, plan_reads, probe, read_luma, sample_indices
from fvcflow.video.read import _luma_plane_bits, _set_threads
from tests.media import (
    cut_with_edit_list,
    drop_start,
    synthetic_frames,
    truncate,
    write_audio,
    write_image,
    write_vfr_video,
    write_video,
)

N = 60
GOP = 12
# name -> (suffix, write_video keyword arguments)
KINDS = {
    "h264_mp4": (".mp4", {}),
    "vp9_webm": (".webm", {}),
    "mpeg4_avi": (".avi", {}),
    "h264_mkv": (".mkv", {}),
    "vp9_odd": (".webm", {"width": 95, "height": 63}),
    "mpeg4_odd": (".avi", {"width": 95, "height": 63}),
    # B-frames (x264 default reordering) in mp4: an edit list shifts the timestamps
    "h264_bframes": (".mp4", {"options": {"preset": "veryfast", "bf": "3"}}),
}
CODEC = {".mp4": "h264", ".webm": "vp9", ".avi": "mpeg4", ".mkv": "h264"}


def reference(path) -> tuple[list[np.ndarray], list[int]]:
    """Every frame's Y plane and the key-frame indices, by the most obvious sequential decode."""
    ys, keys = [], []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if frame.width % 2 == 0 and frame.height % 2 == 0:
                ys.append(frame.to_ndarray()[: frame.height])      # yuv420p: Y rows, then U, V
            else:                                                 # swscale copies Y unchanged
                ys.append(frame.to_ndarray(format="yuv444p")[0])
            if frame.key_frame:
                keys.append(i)
    return ys, keys


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, tuple[Path, list[np.ndarray], list[int]]]:
    root = tmp_path_factory.mktemp("videos")
    out = {}
    for name, (suffix, kw) in KINDS.items():
        kw = {"width": 96, "height": 64, **kw}
        path = write_video(root / f"{name}{suffix}", n=N, gop=GOP, seed=len(name), **kw)
        out[name] = (path, *reference(path))
    return out


# ---------------------------------------------------------------------------------- probe

@pytest.mark.parametrize("name", KINDS)
def test_probe_matches_a_sequential_decode(videos, name):
    path, ys, keys = videos[name]
    info = probe(path)
    assert info.n_frames == len(ys) == N
    assert list(info.keyframes) == keys
    assert len(keys) >= 2 and keys[0] == 0
    assert (info.height, info.width) == ys[0].shape
    assert info.codec == CODEC[path.suffix]
    assert info.pix_fmt == "yuv420p"
    assert info.fps == pytest.approx(25.0)
    assert info.duration == pytest.approx(N / 25.0)
    assert info.size_bytes == path.stat().st_size
    assert info.rotation == 0
    assert info.path == str(path)


def test_frame_count_comes_from_packets_where_the_container_has_none(videos):
    for name in ("vp9_webm", "h264_mkv"):
        path = videos[name][0]
        with av.open(str(path)) as c:
            assert c.streams.video[0].frames == 0                 # Matroska stores no count
        assert probe(path).n_frames == N


def test_container_names_and_bit_rate(videos):
    mp4, webm, avi, mkv = (probe(videos[k][0]) for k in ("h264_mp4", "vp9_webm", "mpeg4_avi", "h264_mkv"))
    assert (mp4.container, webm.container, avi.container, mkv.container) == ("mp4", "webm", "avi", "matroska")
    assert mp4.bit_rate > 0                                       # mp4 stores the stream bit rate
    assert webm.bit_rate is None and mkv.bit_rate is None


def test_as_row_has_the_index_columns_and_gop(videos):
    info = probe(videos["h264_mp4"][0])
    row = info.as_row()
    assert set(row) == {"codec", "pix_fmt", "width", "height", "fps", "duration", "n_frames",
                        "bit_rate", "rotation", "size_bytes", "container", "gop"}
    assert row["gop"] == pytest.approx(np.mean(np.diff(info.keyframes)))
    assert row["gop"] == pytest.approx(GOP)


def test_gop_is_the_frame_count_with_one_key_frame(tmp_path):
    path = write_video(tmp_path / "one_key.webm", n=20, gop=100)
    info = probe(path)
    assert info.keyframes == (0,)
    assert info.as_row()["gop"] == 20.0


@pytest.mark.parametrize("suffix,rotate,expected", [
    (".mp4", 90, 90), (".mp4", 270, 270), (".mp4", 180, 180), (".webm", 90, 90), (".mkv", None, 0),
])
def test_rotation_from_the_display_matrix(tmp_path, suffix, rotate, expected):
    path = write_video(tmp_path / f"rot{suffix}", n=5, rotate=rotate)
    assert probe(path).rotation == expected


def test_rotation_from_a_rotate_tag(tmp_path):
    path = write_video(tmp_path / "tag.mkv", n=5, metadata={"rotate": "90"})
    assert probe(path).rotation == 90


def test_variable_frame_rate_rate_and_duration(tmp_path):
    times = np.cumsum([0] + [10, 50, 33, 7, 100] * 8)[:40]      # ms
    for suffix in (".mkv", ".mp4"):
        info = probe(write_vfr_video(tmp_path / f"vfr{suffix}", times))
        assert info.n_frames == 40
        assert info.duration == pytest.approx((times[-1] + 1) / 1000, abs=0.002)
        assert info.fps == pytest.approx(40 / info.duration, rel=0.01)   # not the 1000/s tick


# ------------------------------------------------------------------------- sample_indices

def _sample_reference(n: int) -> list[int]:
    """docs/FEATURES.md written out with exact fractions and round-half-to-even."""
    if n < 5:
        return list(range(n))
    k = min(max(round(Fraction(n, 10)), 5), 50)
    return sorted({round(Fraction((n - 1) * j, k - 1)) for j in range(k)})


@pytest.mark.parametrize("n", [1, 4, 5, 10, 49, 50, 51, 1000, 10000])
def test_sample_indices(n):
    got = sample_indices(n)
    assert got.dtype == np.int64
    assert got.tolist() == _sample_reference(n)
    assert got[0] == 0 and got[-1] == n - 1
    assert len(got) == (n if n < 5 else min(max(round(n / 10), 5), 50))


def test_sample_indices_of_nothing():
    assert sample_indices(0).tolist() == []
    with pytest.raises(ValueError, match="n_frames"):
        sample_indices(-1)


# ------------------------------------------------------------------------------- iter_luma

@pytest.mark.parametrize("name", KINDS)
@pytest.mark.parametrize("strategy", ["seek", "sequential", "auto"])
@pytest.mark.parametrize("threads", [True, False])
def test_iter_luma_equals_the_y_plane(videos, name, strategy, threads):
    path, ys, _ = videos[name]
    wanted = [1, 13, 14, 30, 47, 59]
    reader = iter_luma(path, wanted, strategy=strategy, threads=threads)
    got = list(reader)
    assert [i for i, _ in got] == wanted
    for i, y in got:
        assert y.dtype == np.uint8
        np.testing.assert_array_equal(y, ys[i], err_msg=f"frame {i} ({strategy})")
    assert reader.decoded == reader.planned


def test_seeking_decodes_fewer_frames_for_sparse_late_frames(videos):
    path, ys, keys = videos["h264_bframes"]
    info = probe(path)
    wanted = [keys[2] + 1, keys[-1] + 2]
    seek = iter_luma(path, wanted, info=info, strategy="seek")
    seq = iter_luma(path, wanted, info=info, strategy="sequential")
    auto = iter_luma(path, wanted, info=info, strategy="auto")
    frames = {s: list(r) for s, r in (("seek", seek), ("seq", seq), ("auto", auto))}
    for (i, a), (j, b), (k, c) in zip(frames["seek"], frames["seq"], frames["auto"]):
        assert i == j == k
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert seq.decoded == wanted[-1] + 1 and seq.seeks == 0
    assert seek.decoded == 2 + 3 and seek.seeks == 2              # from each key frame on
    assert auto.decoded <= seq.decoded and auto.strategy == "seek"


def test_stats_dict_follows_the_reader(videos):
    stats = {}
    reader = iter_luma(videos["h264_mp4"][0], [0, 40], strategy="seek", stats=stats)
    next(reader)
    assert stats == {"decoded": 1, "seeks": 0, "strategy": "seek"}
    next(reader)
    assert stats == {"decoded": 1 + 40 - 36 + 1, "seeks": 1, "strategy": "seek"}
    assert stats["decoded"] == reader.decoded


def test_sequential_wins_for_dense_frames(videos):
    path, _, _ = videos["h264_mp4"]
    reader = iter_luma(path, list(range(0, 30)), strategy="auto")
    list(reader)
    assert reader.strategy == "sequential" and reader.decoded == 30


def test_decoding_stops_after_the_last_wanted_frame(videos):
    reader = iter_luma(videos["vp9_webm"][0], [0, 3], strategy="sequential")
    assert [i for i, _ in reader] == [0, 3]
    assert reader.decoded == 4


def test_seeking_is_exact_with_a_variable_frame_rate(tmp_path):
    times = np.cumsum([0] + [10, 50, 33, 7, 100] * 8)[:40]
    for suffix in (".mkv", ".mp4"):
        path = write_vfr_video(tmp_path / f"vfr{suffix}", times)
        ys, _ = reference(path)
        reader = iter_luma(path, [5, 17, 33, 39], strategy="seek")
        for i, y in reader:
            np.testing.assert_array_equal(y, ys[i])
        assert reader.seeks >= 2


@pytest.mark.parametrize("lie", ["shifted", "later"])
def test_an_inexact_seek_falls_back_to_decoding_straight_through(videos, lie):
    path, ys, _ = videos["h264_mp4"]
    info = probe(path)
    pts = list(info.keyframe_pts)
    if lie == "shifted":                                          # lands between timestamps
        pts = [p + 1 for p in pts]
    else:                                                         # key frame 24 said to be at 36
        pts[2] = pts[3]
    wrong = dataclasses.replace(info, keyframe_pts=tuple(pts))
    reader = iter_luma(path, [30, 50], info=wrong, strategy="seek")
    for i, y in reader:
        np.testing.assert_array_equal(y, ys[i])
    assert reader.strategy == "sequential" and reader.seeks == 1


def test_frame_threads_by_default_for_large_frames_only(tmp_path):
    small = write_video(tmp_path / "small.mp4", n=2, width=640, height=360)
    large = write_video(tmp_path / "large.mp4", n=2, width=1280, height=720)
    for path, threads, expected in [(small, None, "SLICE"), (large, None, "AUTO"),
                                    (small, True, "AUTO"), (large, False, "SLICE")]:
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            _set_threads(stream, threads)
            assert stream.codec_context.thread_type.name == expected, (path.name, threads)


def test_plan_reads():
    keys = [0, 10, 20, 30]
    assert plan_reads(keys, [1, 25], 0) == ([None, 20], 2 + 6)
    assert plan_reads(keys, [1, 25], np.inf) == ([None, None], 26)
    assert plan_reads(keys, [1, 25], 4) == ([None, 20], 8)       # skips 18 frames for one seek
    assert plan_reads(keys, [8, 11], 0) == ([None, 10], 9 + 2)    # a key frame lies between
    assert plan_reads(keys, [8, 11], 4) == ([None, None], 12)     # ... but too close to pay


def test_luma_of_an_rgb_video_goes_through_rgb_to_gray(tmp_path):
    frames = synthetic_frames(6, 32, 48, seed=5)
    path = write_video(tmp_path / "rgb.mkv", frames=frames, codec="libx264rgb", pix_fmt="rgb24",
                       options={"qp": "0"})                    # lossless: decoded RGB == input
    info = probe(path)
    assert info.pix_fmt not in ("yuv420p", "yuv444p")
    got = read_luma(path, [0, 5], info=info)
    rgb = frames[[0, 5]].astype(np.float64)
    expected = np.rint(0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2])
    assert got.dtype == np.uint8
    assert np.abs(got.astype(int) - expected).max() <= 1
    assert np.mean(got == expected) > 0.99


def test_luma_of_a_10_bit_video_is_its_y_plane_in_8_bits(tmp_path):
    frames = synthetic_frames(4, 48, 64, seed=7)
    ten = write_video(tmp_path / "ten.mkv", frames=frames, pix_fmt="yuv420p10le")
    eight = write_video(tmp_path / "eight.mkv", frames=frames)
    info = probe(ten)
    assert info.pix_fmt == "yuv420p10le"
    with av.open(str(ten)) as c:                                  # swscale: Y10 << 6 into 16 bits
        expected = np.stack([f.to_ndarray(format="yuv444p16le", channel_last=True)[..., 0] >> 8
                             for f in c.decode(video=0)])
    got = read_luma(ten, np.arange(4), info=info)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)
    y8 = read_luma(eight, np.arange(4)).astype(float)             # same scale as 8-bit video
    assert abs(got.mean() - y8.mean()) < 2


@pytest.mark.parametrize("pix_fmt,bits", [
    ("yuv420p", 8), ("yuvj420p", 8), ("nv12", 8), ("gray", 8), ("yuva420p", 8),
    ("yuv420p10le", 10), ("yuv444p12le", 12), ("gray10le", 10),
    ("p010le", 0), ("yuv420p10be", 0), ("rgb24", 0), ("gbrp", 0), ("yuyv422", 0), ("pal8", 0),
])
def test_which_formats_have_a_luma_plane(pix_fmt, bits):
    assert _luma_plane_bits(av.VideoFormat(pix_fmt)) == bits


def test_read_luma_stacks_the_frames(videos):
    path, ys, _ = videos["mpeg4_odd"]
    wanted = sample_indices(N)
    out = read_luma(path, wanted)
    assert out.shape == (len(wanted), 63, 95) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.stack([ys[i] for i in wanted]))
    assert read_luma(path, []).shape == (0, 63, 95)


@pytest.mark.parametrize("indices", [[3, 1], [2, 2], [-1], [N], [[1, 2]], [0.5]])
def test_bad_indices(videos, indices):
    with pytest.raises(ValueError, match="indices"):
        iter_luma(videos["h264_mp4"][0], indices)


def test_bad_strategy(videos):
    with pytest.raises(ValueError, match="strategy"):
        iter_luma(videos["h264_mp4"][0], [0], strategy="fast")


# --------------------------------------------------------------------------------- iter_rgb

def test_iter_rgb_chunks(videos):
    path = videos["h264_mkv"][0]
    chunks = list(iter_rgb(path, chunk=25))
    assert [len(c) for c in chunks] == [25, 25, 10]
    with av.open(str(path)) as c:
        expected = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    np.testing.assert_array_equal(np.concatenate(chunks), expected)
    assert all(c.dtype == np.uint8 and c.shape[1:] == (64, 96, 3) for c in chunks)
    with pytest.raises(ValueError, match="chunk"):
        next(iter_rgb(path, chunk=0))


def test_iter_rgb_transforms_each_frame_as_decoded_and_caps_the_transformed_chunk(videos):
    """``transform`` sees every decoded frame alone, full size; the chunks hold its results,
    capped in MiB at their own size (a 4x4 frame: 250 frames fit in 0.01 MiB)."""
    path = videos["h264_mkv"][0]
    seen = []

    def shrink(frame):
        seen.append(frame.shape)
        return frame[::16, ::24].copy()

    chunks = list(iter_rgb(path, chunk=250, max_chunk_mb=0.001, transform=shrink))
    assert seen == [(64, 96, 3)] * 60                                   # one full frame at a time
    assert [len(c) for c in chunks] == [21, 21, 18]                     # 0.001 MiB / 48 bytes: 21
    with av.open(str(path)) as c:
        expected = np.stack([f.to_ndarray(format="rgb24")[::16, ::24] for f in c.decode(video=0)])
    np.testing.assert_array_equal(np.concatenate(chunks), expected)


def test_iter_rgb_does_not_rotate(tmp_path):
    path = write_video(tmp_path / "rot.mp4", n=3, width=64, height=48, rotate=90)
    assert probe(path).rotation == 90
    assert next(iter_rgb(path)).shape == (3, 48, 64, 3)


# ------------------------------------------------------------------------------ VideoWriter

@pytest.mark.parametrize("suffix,codec,size", [
    (".mp4", "libx264", (64, 96)), (".webm", "libvpx-vp9", (63, 95)), (".avi", "mpeg4", (63, 95)),
])
def test_writer_round_trip(tmp_path, suffix, codec, size):
    h, w = size
    frames = synthetic_frames(12, h, w, seed=2)
    path = tmp_path / f"out{suffix}"
    with VideoWriter(path, w, h, 25, codec=codec, crf=18) as writer:
        writer.write(frames[0])                                   # one frame
        writer.write(frames[1:])                                  # a batch
    assert os.listdir(tmp_path) == [path.name]                    # no temporary file left
    info = probe(path)
    assert (info.codec, info.width, info.height, info.n_frames) == (CODEC[suffix], w, h, 12)
    assert info.fps == pytest.approx(25)
    back = np.concatenate(list(iter_rgb(path)))
    assert back.shape == frames.shape
    assert np.abs(back.astype(int) - frames).mean() < 12           # lossy, but the same picture
    assert np.abs(back.astype(int) - synthetic_frames(12, h, w, seed=9)).mean() > 25


@pytest.mark.parametrize("suffix,codec", [(".mp4", "libx264"), (".webm", "libvpx-vp9"), (".avi", "mpeg4")])
def test_writer_crf_sets_the_quality(tmp_path, suffix, codec):
    frames = synthetic_frames(6, 48, 64, seed=4)
    sizes = []
    for crf in (12, 40):
        path = tmp_path / f"q{crf}{suffix}"
        with VideoWriter(path, 64, 48, 25, codec=codec, crf=crf) as writer:
            writer.write(frames)
        sizes.append(path.stat().st_size)
    assert sizes[0] > 1.5 * sizes[1]


def test_writer_lossless_rgb(tmp_path):
    frames = synthetic_frames(4, 33, 47, seed=6)                # odd sizes are fine in RGB
    path = tmp_path / "lossless.mkv"
    with VideoWriter(path, 47, 33, 25, codec="libx264rgb", pix_fmt="rgb24", options={"qp": 0}) as writer:
        writer.write(frames)
    np.testing.assert_array_equal(np.concatenate(list(iter_rgb(path))), frames)


def test_writer_fractional_fps(tmp_path):
    path = tmp_path / "ntsc.mp4"
    with VideoWriter(path, 32, 32, 30000 / 1001) as writer:
        writer.write(synthetic_frames(5, 32, 32))
    assert probe(path).fps == pytest.approx(29.97, abs=0.01)


def test_writer_refuses_odd_sizes_for_h264(tmp_path):
    with pytest.raises(ValueError, match="even"):
        VideoWriter(tmp_path / "odd.mp4", 95, 64, 25)
    assert os.listdir(tmp_path) == []


def test_writer_removes_the_partial_file_on_error(tmp_path):
    path = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(path, 32, 32, 25) as writer:
            writer.write(synthetic_frames(3, 32, 32))
            raise RuntimeError("the caller failed")
    assert os.listdir(tmp_path) == []


def test_writer_checks_frames(tmp_path):
    with VideoWriter(tmp_path / "x.mp4", 32, 32, 25) as writer:
        with pytest.raises(ValueError, match="uint8"):
            writer.write(np.zeros((32, 32, 3), np.float32))
        with pytest.raises(ValueError, match="H=32, W=32"):
            writer.write(np.zeros((2, 32, 30, 3), np.uint8))
        writer.write(np.zeros((32, 32, 3), np.uint8))
    assert probe(tmp_path / "x.mp4").n_frames == 1


def test_writer_unknown_codec(tmp_path):
    with pytest.raises(ValueError, match="codec"):
        VideoWriter(tmp_path / "x.mp4", 32, 32, 25, codec="no-such-codec")
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- bad files

def _bad_files(root: Path) -> dict[str, tuple[Path, str]]:
    root.mkdir(parents=True, exist_ok=True)
    empty = root / "empty.mp4"
    empty.write_bytes(b"")
    text = root / "notes.mp4"
    text.write_text("these are my notes, not a video\n" * 20)
    no_moov = truncate(write_video(root / "cut.mp4", n=30), 0.5)
    cut_first = write_video(root / "cut_first.avi", n=10)
    with av.open(str(cut_first)) as c:                            # cut inside the first frame
        first = next(p for p in c.demux(video=0) if p.size)
    cut_first.write_bytes(cut_first.read_bytes()[: first.pos + first.size // 2])
    return {
        "missing": (root / "missing.mp4", "file not found"),
        "empty": (empty, "empty file (0 bytes)"),
        "text": (text, "not a video container"),
        "wav": (write_audio(root / "tone.wav"), "no video stream (audio only?)"),
        "m4a": (write_audio(root / "tone.m4a"), "no video stream (audio only?)"),
        "no_moov": (no_moov, "truncated or corrupt: mp4/mov without a readable index"),
        "cut_first": (cut_first, "no decodable frames"),
        "directory": (root, "not a file (a directory)"),
        "png": (write_image(root / "frame.mp4"), "not a video (a still image"),
        "jpeg": (write_image(root / "photo.jpg", codec="mjpeg"), "not a video (a still image"),
    }


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    return _bad_files(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "wav", "m4a", "no_moov", "cut_first",
                                  "directory", "png", "jpeg"])
@pytest.mark.parametrize("call", ["probe", "read_luma", "iter_rgb"])
def test_bad_files_raise_video_error(bad_files, kind, call):
    path, reason = bad_files[kind]
    run = {"probe": lambda: probe(path), "read_luma": lambda: read_luma(path, [0]),
           "iter_rgb": lambda: list(iter_rgb(path))}[call]
    with pytest.raises(VideoError) as err:
        run()
    assert err.value.path == str(path)
    assert err.value.reason.startswith(reason), err.value.reason
    assert str(path) in str(err.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_permission_denied(tmp_path):
    path = write_video(tmp_path / "secret.mp4", n=3)
    path.chmod(0)
    with pytest.raises(VideoError, match="permission denied"):
        probe(path)


@pytest.mark.parametrize("suffix,keep,kw", [
    (".webm", 0.5, {}), (".mkv", 0.5, {}), (".avi", 0.7, {}),
    (".mp4", 0.6, {"container_options": {"movflags": "faststart"}}),   # index first, data cut
])
def test_a_cut_stream_yields_the_frames_that_exist(tmp_path, suffix, keep, kw):
    path = write_video(tmp_path / f"v{suffix}", n=N, gop=GOP, width=96, height=64, **kw)
    full, _ = reference(path)
    truncate(path, keep)
    info = probe(path)
    assert 1 <= info.n_frames < N
    assert all(k < info.n_frames for k in info.keyframes)
    got = read_luma(path, np.arange(info.n_frames), info=info)
    np.testing.assert_array_equal(got, np.stack(full[: info.n_frames]))
    last = list(iter_luma(path, [info.n_frames - 1], info=info, strategy="seek"))
    np.testing.assert_array_equal(last[0][1], full[info.n_frames - 1])


@pytest.mark.parametrize("suffix", [".mkv", ".webm", ".avi"])
def test_a_stream_starting_mid_gop_starts_at_its_first_key_frame(tmp_path, suffix):
    full = write_video(tmp_path / f"full{suffix}", n=40, gop=10, width=64, height=48)
    ys, keys = reference(full)
    assert keys[:2] == [0, 10]
    cut = drop_start(full, tmp_path / f"cut{suffix}", 4)       # frames 4..9 lack their key frame
    info = probe(cut)
    assert info.n_frames == 30 and info.keyframes == (0, 10, 20)
    for strategy in ("sequential", "seek"):
        got = read_luma(cut, np.arange(0, 30, 7), info=info, strategy=strategy)
        np.testing.assert_array_equal(got, np.stack(ys[10:40:7]))


def test_frames_hidden_by_an_mp4_edit_list_are_decoded_but_not_counted(tmp_path):
    full = write_video(tmp_path / "full.mp4", n=40, gop=10, width=64, height=48)
    ys, _ = reference(full)
    cut = cut_with_edit_list(full, tmp_path / "cut.mp4", 4)     # key frame 0 hidden, 4..39 shown
    cut_ys, cut_keys = reference(cut)
    np.testing.assert_array_equal(np.stack(cut_ys), np.stack(ys[4:]))
    info = probe(cut)
    assert info.n_frames == 36 and list(info.keyframes) == cut_keys == [6, 16, 26]
    for strategy in ("sequential", "seek"):
        got = read_luma(cut, np.arange(0, 36, 5), info=info, strategy=strategy)
        np.testing.assert_array_equal(got, np.stack(ys[4:40:5]))


def test_reading_past_the_end_of_a_stale_probe(tmp_path):
    path = write_video(tmp_path / "v.webm", n=N, gop=GOP, width=96, height=64)
    info = probe(path)
    truncate(path, 0.5)
    with pytest.raises(VideoError, match="truncated or corrupt: the stream ends before frame"):
        read_luma(path, [N - 1], info=info)


# (encoder, file suffix, canonical codec name, decoders to try besides the default)
CODECS = [("libx264", ".mp4", "h264", ("h264",)), ("libx265", ".mp4", "hevc", ("hevc",)),
          ("libvpx-vp9", ".webm", "vp9", ("vp9", "libvpx-vp9")),
          ("libsvtav1", ".mkv", "av1", ("av1", "libdav1d", "libaom-av1")),
          ("mpeg4", ".avi", "mpeg4", ("mpeg4",))]


def _has(name: str, mode: str) -> bool:
    try:
        av.codec.Codec(name, mode)
    except av.codec.codec.UnknownCodecError:
        return False
    return True


@pytest.mark.parametrize("encoder,suffix,canonical,decoders", CODECS, ids=[c[2] for c in CODECS])
def test_codec_is_recorded_by_its_canonical_name(tmp_path, encoder, suffix, canonical, decoders):
    """The index names the codec (h264, hevc, vp9, av1, mpeg4), not the decoder that opened it
    (libdav1d, libvpx-vp9): codec cues and class-balance queries group by it (issue 16, item 2)."""
    if not _has(encoder, "w"):
        pytest.skip(f"no {encoder} encoder in this PyAV/FFmpeg build")
    path = write_video(tmp_path / f"clip{suffix}", n=8, width=64, height=64, codec=encoder)
    assert probe(path).codec == canonical
    from fvcflow.video.probe import codec_name

    tried = [d for d in decoders if _has(d, "r")]
    assert tried
    for decoder in tried:          # whichever decoder would open the stream
        assert codec_name(av.CodecContext.create(decoder, "r")) == canonical, decoder
