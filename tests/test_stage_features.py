"""Stage 2/4 per-video features against an independent composition of the naive definitions."""

from __future__ import annotations

import av
import numpy as np
import pytest

from fvcflow.errors import VideoError
from fvcflow.kernels import FEATURE_NAMES
from fvcflow.stages.features import AGGREGATES, aggregate, feature_columns, video_features
from fvcflow.stages.scale import letterbox, letterbox_geometry, scale_video
from fvcflow.video import probe
from tests import naive
from tests.media import write_video


def reference_row(path) -> dict:
    """Decode every frame with PyAV, sample per docs/FEATURES.md, run the naive features, aggregate."""
    def y_plane(f):
        plane = f.planes[0]
        return np.frombuffer(plane, np.uint8).reshape(f.height, plane.line_size)[:, : f.width]

    with av.open(str(path)) as c:
        frames = [y_plane(f) for f in c.decode(video=0)]
    n = len(frames)
    k = min(n, max(5, min(50, round(0.10 * n))))
    idx = np.unique(np.rint(np.linspace(0, n - 1, k)).astype(int))
    per = np.array([naive.frame_features(frames[i]) for i in idx])
    # uint8 frames: an AC coefficient of exactly 0.5 is not "below 0.5"; the naive float DCT may land
    # a hair either side of such a tie, so count with the threshold just under it (as test_kernels does)
    zero = FEATURE_NAMES.index("dct_ac_zero_frac")
    per[:, zero] = [naive.dct_stats(frames[i], zero_threshold=0.5 - 1e-9)[4] for i in idx]
    row = {}
    for j, name in enumerate(FEATURE_NAMES):
        col = per[:, j]
        row[f"{name}_mean"] = col.mean()
        row[f"{name}_std"] = col.std()
        row[f"{name}_min"] = col.min()
        row[f"{name}_max"] = col.max()
    return row, len(idx)


@pytest.mark.parametrize("name, n, w, h, fps", [
    ("a.mp4", 60, 64, 48, 25),
    ("b.webm", 23, 33, 27, 12),
    ("c.avi", 130, 80, 40, 30),
])
def test_video_features_match_the_naive_definitions(tmp_path, name, n, w, h, fps):
    path = write_video(tmp_path / name, n=n, width=w, height=h, fps=fps, seed=n)
    row = video_features(path)
    ref, k = reference_row(path)
    assert list(row)[:51] == feature_columns()
    assert row["n_sampled"] == k and row["n_decoded"] >= k
    for col, value in ref.items():
        np.testing.assert_allclose(row[col], value, rtol=1e-6, atol=1e-9, err_msg=col)


def test_codec_cues_come_from_the_container(tmp_path):
    path = write_video(tmp_path / "g.mp4", n=40, width=64, height=48, fps=20, gop=10)
    info = probe(path)
    row = video_features(path)
    assert row["codec_fps"] == pytest.approx(20.0)
    assert row["codec_gop"] == pytest.approx(np.mean(np.diff(info.keyframes)))
    bit_rate = info.bit_rate or info.size_bytes * 8 / info.duration
    assert row["codec_bpp"] == pytest.approx(bit_rate / (64 * 48 * 20))


def test_stage4_prefix_and_aggregate_ignores_nan():
    per = np.array([[np.nan] * 12, list(range(12))], dtype=float)
    row = aggregate(per, prefix="s4_")
    assert list(row) == [f"s4_{n}_{a}" for n in FEATURE_NAMES for a in AGGREGATES]
    assert row["s4_noise_energy_max"] == 0.0 and row["s4_blockiness_std"] == 0.0
    all_nan = aggregate(np.full((3, 12), np.nan))
    assert all(np.isnan(v) for v in all_nan.values())


def test_not_a_video_names_the_file(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_text("hello")
    with pytest.raises(VideoError, match="bad.mp4"):
        video_features(bad)


@pytest.mark.parametrize("w, h, size, expected", [
    (640, 360, 256, (256, 144, 0, 56)),
    (360, 640, 256, (144, 256, 56, 0)),
    (100, 100, 256, (256, 256, 0, 0)),
    (65, 49, 256, (256, 193, 0, 31)),
])
def test_letterbox_geometry(w, h, size, expected):
    assert letterbox_geometry(w, h, size) == expected


def test_letterbox_pads_with_black_and_keeps_the_picture():
    frames = np.full((2, 30, 60, 3), 200, np.uint8)
    out = letterbox(frames, 64)
    assert out.shape == (2, 64, 64, 3)
    assert (out[:, :16] == 0).all() and (out[:, 48:] == 0).all()
    assert (out[:, 17:47] == 200).all()


def test_scale_video_writes_what_a_whole_decode_letterboxed_at_once_gives(tmp_path):
    """Stage 3 letterboxes frame by frame inside the decoder (no full-size RGB frame, chunks
    capped in MiB): the video it writes is byte for byte the one encoded from all the decoded
    frames kept and letterboxed at once (``tests/test_reliability_bounds.py`` compares these
    pictures with the RGB-then-OpenCV letterbox)."""
    from fvcflow.stages.scale import letterbox_decoded
    from fvcflow.video import VideoWriter, limits
    from fvcflow.video.probe import open_video
    from fvcflow.video.read import _decode
    from fvcflow.video.write import STAGE_PRESET

    src = write_video(tmp_path / "s.mp4", n=30, width=320, height=180, seed=3)
    with limits.bounded(limits.Limits(chunk_mb=0.1)):            # chunks of 2 letterboxed frames
        scale_video(src, tmp_path / "new.mp4", size=128, threads=1)
    with open_video(src) as (container, stream):
        frames = [f for f in _decode(container, stream)]
    with VideoWriter(tmp_path / "ref.mp4", 128, 128, 25.0, crf=18, options={"preset": STAGE_PRESET}) as w:
        w.write(np.stack([letterbox_decoded(f, 128) for f in frames]))
    assert (tmp_path / "new.mp4").read_bytes() == (tmp_path / "ref.mp4").read_bytes()


def test_scale_video_writes_a_square_h264_and_flags(tmp_path):
    src = write_video(tmp_path / "s.webm", n=9, width=65, height=49)
    row = scale_video(src, tmp_path / "out" / "s.mp4", size=128)
    info = probe(tmp_path / "out" / "s.mp4")
    assert (info.width, info.height, info.codec, info.n_frames) == (128, 128, "h264", 9)
    assert row == {"src_width": 65, "src_height": 49, "n_frames": 9, "is_upscaled": True,
                   "is_downscaled": False}
