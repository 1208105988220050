"""Stage 1 augmentation: parameter draws, each op on known input, whole videos on real files."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from scipy import ndimage

from fvcflow.stages.augment import (
    P_SPATIAL,
    RANGES,
    SPATIAL_OPS,
    TEMPORAL_OPS,
    AugmentParams,
    chunk_frames,
    color_matrix,
    copy_seed,
    draw_params,
    elastic_field,
    frame_counts,
    geometry_matrix,
    make_plan,
    transform_frames,
)


def _random_frames(n=3, h=40, w=56, lo=0, hi=256, seed=0):
    return np.random.default_rng(seed).integers(lo, hi, (n, h, w, 3), dtype=np.uint8)


def _apply(frames, first=0, **ops):
    p = AugmentParams("t", 0, seed=ops.pop("seed", 11), **ops)
    return transform_frames(frames.copy(), first, make_plan(p, *frames.shape[1:3]))


# ---- parameter draws -----------------------------------------------------------------------
def test_draws_are_deterministic_and_distinct_per_copy_and_seed():
    a = draw_params("vid-1", 3)
    assert a == draw_params("vid-1", 3)
    assert a.seed == copy_seed("vid-1", 3) != copy_seed("vid-1", 4) != copy_seed("vid-1", 3, seed=1)
    assert draw_params("vid-1", 3, seed=1).seed != a.seed
    assert len({draw_params("vid-1", k).to_json() for k in range(1, 11)}) == 10


def test_draws_do_not_depend_on_python_hash_randomisation():
    code = "from fvcflow.stages.augment import draw_params; print(draw_params('x/y.mp4', 2).to_json())"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": h}).stdout for h in ("1", "2")}
    assert outs == {draw_params("x/y.mp4", 2).to_json() + "\n"}


def test_parameter_ranges_over_many_draws():
    draws = [draw_params(f"v{i}", k, seed=3) for i in range(300) for k in range(1, 8)]
    seen = {op: 0 for op in SPATIAL_OPS + TEMPORAL_OPS}
    for p in draws:
        spatial = [op for op in p.ops if op in SPATIAL_OPS]
        assert 1 <= len(spatial) and len(p.ops) - len(spatial) <= 1
        for op in p.ops:
            seen[op] += 1
        if p.rotation is not None:
            assert abs(p.rotation) <= 10.0
        if p.temporal == "drop":
            assert 0.05 <= p.temporal_rate <= 0.25
        if p.temporal == "duplicate":
            assert 0.05 <= p.temporal_rate <= 0.25
        if p.color is not None:
            b, c, s = p.color
            assert abs(b) <= 25 and 0.8 <= c <= 1.2 and 0.7 <= s <= 1.3
        if p.affine is not None:
            tx, ty, sc, sh = p.affine
            assert max(abs(tx), abs(ty)) <= 0.05 and 0.9 <= sc <= 1.1 and abs(sh) <= 8
        if p.cutout is not None:
            top, left, h, w = p.cutout
            assert 0.1 <= h <= 0.25 and 0.1 <= w <= 0.25 and top + h <= 1 and left + w <= 1
        for name, key in (("noise_sigma", "noise_sigma"), ("blur_sigma", "blur_sigma"),
                          ("elastic", "elastic")):
            v = getattr(p, name)
            assert v is None or RANGES[key][0] <= v <= RANGES[key][1]
    n = len(draws)
    for op in SPATIAL_OPS:  # each op chosen about P_SPATIAL of the time (more via the at-least-one rule)
        assert P_SPATIAL - 0.06 < seen[op] / n < P_SPATIAL + 0.1, (op, seen[op] / n)
    for op in TEMPORAL_OPS:
        assert 0.12 < seen[op] / n < 0.22, (op, seen[op] / n)


def test_params_json_round_trip_and_validation():
    p = draw_params("abc", 5)
    assert AugmentParams.from_json(p.to_json()) == p
    assert json.loads(p.to_json())["video_id"] == "abc"
    with pytest.raises(ValueError, match="temporal must be one of"):
        AugmentParams("v", 0, 1, temporal="shuffle")
    with pytest.raises(ValueError, match="temporal_rate"):
        AugmentParams("v", 0, 1, temporal="drop", temporal_rate=None)
    with pytest.raises(ValueError, match="affine must have 4"):
        AugmentParams("v", 0, 1, affine=(0.1, 0.1))


def test_chunk_cap_bounds_bytes_per_chunk():
    assert chunk_frames(250, 256, 256) == 250
    assert chunk_frames(250, 1080, 1920) * 1080 * 1920 * 3 <= 256 * 2**20
    assert chunk_frames(250, 1080, 1920, None) == 250
    assert chunk_frames(7, 4000, 4000, 1) == 1
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        chunk_frames(0, 8, 8)


# ---- each op on known input ----------------------------------------------------------------
def test_hflip_mirrors():
    f = _random_frames()
    np.testing.assert_array_equal(_apply(f, hflip=True), f[:, :, ::-1])


def test_rotation_zero_is_identity_and_ninety_is_rot90():
    f = _random_frames()
    np.testing.assert_array_equal(_apply(f, rotation=0.0), f)
    sq = _random_frames(h=32, w=32)
    np.testing.assert_array_equal(_apply(sq, rotation=90.0), np.rot90(sq, 1, axes=(1, 2)))


def test_small_rotation_matches_forward_warp():
    f = _random_frames(n=1, h=60, w=80)
    ops = dict(rotation=7.0, hflip=True, affine=(0.03, -0.02, 1.08, 5.0))
    m = geometry_matrix(AugmentParams("t", 0, 1, **ops), 60, 80)
    ref = cv2.warpAffine(f[0], m[:2], (80, 60), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    diff = np.abs(_apply(f, **ops)[0].astype(int) - ref)
    assert np.median(diff) <= 1 and np.mean(diff) < 2.0


def test_translation_shifts_by_whole_pixels():
    f = _random_frames(w=40, h=30)
    out = _apply(f, affine=(0.1, 0.0, 1.0, 0.0))  # 4 px to the right
    np.testing.assert_array_equal(out[:, :, 4:], f[:, :, :-4])
    out = _apply(f, affine=(0.0, 0.0, 1.0, 0.0))
    np.testing.assert_array_equal(out, f)


def test_color_brightness_contrast_saturation():
    f = _random_frames(lo=40, hi=200)
    out = _apply(f, color=(20.0, 1.0, 1.0))
    np.testing.assert_array_equal(out, f + 20)
    assert out.mean() == pytest.approx(f.mean() + 20)
    out = _apply(f, color=(0.0, 1.2, 1.0)).astype(float)
    np.testing.assert_allclose(out, 128 + 1.2 * (f.astype(float) - 128), atol=0.6)
    grey = _apply(f, color=(0.0, 1.0, 0.0)).astype(float)
    luma = f.astype(float) @ np.array([0.299, 0.587, 0.114])
    for c in range(3):
        np.testing.assert_allclose(grey[..., c], luma, atol=0.6)  # float32 matrix
    sat = _apply(f, color=(0.0, 1.0, 1.3)).astype(float)
    assert sat.std(axis=-1).mean() > 1.2 * f.astype(float).std(axis=-1).mean()
    clip = _apply(np.full((1, 4, 4, 3), 250, np.uint8), color=(25.0, 1.0, 1.0))
    assert (clip == 255).all()
    assert color_matrix(0.0, 1.0, 1.0) == pytest.approx(np.hstack([np.eye(3), np.zeros((3, 1))]), abs=1e-6)


def test_blur_matches_independent_gaussian_filter():
    f = _random_frames(n=1)
    out = _apply(f, blur_sigma=1.2)[0].astype(float)
    ref = ndimage.gaussian_filter(f[0].astype(float), sigma=(1.2, 1.2, 0), mode="mirror")
    np.testing.assert_allclose(out, ref, atol=2.0)
    assert out.std() < 0.6 * f.std()


def test_noise_is_gaussian_deterministic_per_frame_and_chunk_independent():
    f = np.full((6, 80, 100, 3), 128, np.uint8)
    out = _apply(f, noise_sigma=6.0).astype(float) - 128
    assert out.std() == pytest.approx(6.0, rel=0.05) and abs(out.mean()) < 0.2
    assert not np.array_equal(out[0], out[1])  # fresh noise per frame
    whole = _apply(f, noise_sigma=6.0)
    split = np.concatenate([_apply(f[:4], 0, noise_sigma=6.0), _apply(f[4:], 4, noise_sigma=6.0)])
    np.testing.assert_array_equal(whole, split)
    other = _apply(f, noise_sigma=6.0, seed=12)
    assert not np.array_equal(other, whole)


def test_elastic_field_is_smooth_bounded_and_the_same_for_every_frame():
    dx, dy = elastic_field(5, 0.02, 120, 160)
    amp = 0.02 * 120
    assert 0.2 * amp < np.abs(dx).max() <= 1.3 * amp and np.abs(dy).max() <= 1.3 * amp
    assert np.abs(np.diff(dx, axis=1)).max() < amp / 10  # smooth: tiny pixel-to-pixel change
    np.testing.assert_array_equal(elastic_field(5, 0.02, 120, 160)[0], dx)
    assert not np.array_equal(elastic_field(6, 0.02, 120, 160)[0], dx)
    frame = _random_frames(n=1, h=120, w=160)
    out = _apply(np.repeat(frame, 3, axis=0), elastic=0.02, seed=5)
    np.testing.assert_array_equal(out[0], out[2])
    assert np.abs(out[0].astype(int) - frame[0]).mean() > 10


def test_cutout_blacks_out_exactly_the_box():
    f = _random_frames(lo=1, h=40, w=50)
    out = _apply(f, cutout=(0.25, 0.2, 0.5, 0.4))
    assert (out[:, 10:30, 10:30] == 0).all()
    mask = np.ones(f.shape, bool)
    mask[:, 10:30, 10:30] = False
    np.testing.assert_array_equal(out[mask], f[mask])


def test_skipped_frames_are_left_alone():
    f = _random_frames()
    p = make_plan(AugmentParams("t", 0, 1, hflip=True), 40, 56)
    out = transform_frames(f.copy(), 0, p, keep=np.array([True, False, True]))
    np.testing.assert_array_equal(out[1], f[1])
    np.testing.assert_array_equal(out[2], f[2, :, ::-1])


def test_frame_counts_drop_and_duplicate():
    drop = frame_counts(AugmentParams("t", 0, 3, temporal="drop", temporal_rate=0.25), 101)
    assert (drop == 0).sum() == 25 and set(np.unique(drop)) == {0, 1}
    dup = frame_counts(AugmentParams("t", 0, 3, temporal="duplicate", temporal_rate=0.1), 101)
    assert dup.sum() == 111 and (dup == 2).sum() == 10
    assert frame_counts(AugmentParams("t", 0, 3, temporal="reverse"), 50).tolist() == [1] * 50
    assert frame_counts(AugmentParams("t", 0, 3, temporal="drop", temporal_rate=0.9), 1).tolist() == [1]
    again = frame_counts(AugmentParams("t", 0, 3, temporal="drop", temporal_rate=0.25), 101)
    np.testing.assert_array_equal(drop, again)
    assert math.floor(0.25 * 101) == 25


# ---- whole videos on real files ------------------------------------------------------------
from fvcflow import video  # noqa: E402
from fvcflow.errors import VideoError  # noqa: E402
from fvcflow.stages.augment import augment_video  # noqa: E402
from tests.media import truncate, write_video  # noqa: E402

N_LEVELS = 20


@pytest.fixture(scope="module")
def levels_video(tmp_path_factory):
    """Frame i is flat grey at level 20 + 10 i, so a decoded frame's mean tells its index."""
    frames = np.repeat((20 + 10 * np.arange(N_LEVELS, dtype=np.uint8))[:, None, None, None], 3, axis=3)
    frames = np.ascontiguousarray(np.broadcast_to(frames, (N_LEVELS, 48, 64, 3)))
    return write_video(tmp_path_factory.mktemp("aug") / "levels.mp4", frames=frames)


@pytest.fixture(scope="module")
def textured_video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("aug") / "textured.mp4", n=30, width=128, height=96, seed=3)


def _decode(path):
    return np.concatenate(list(video.iter_rgb(path, chunk=250)))


def _indices(path):
    return np.round((_decode(path).reshape(-1, 48 * 64 * 3).mean(axis=1) - 20) / 10).astype(int).tolist()


def _params(**ops):
    return AugmentParams("t", 1, seed=ops.pop("seed", 99), **ops)


def test_reversal_reverses_frame_order_across_chunks(levels_video, tmp_path):
    row = augment_video(levels_video, tmp_path / "rev.mp4", _params(temporal="reverse"), chunk=7)
    assert _indices(tmp_path / "rev.mp4") == list(range(N_LEVELS))[::-1]
    assert row["n_frames_in"] == row["n_frames_out"] == N_LEVELS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rev.mp4"]  # temporary segments removed


def test_drop_and_duplicate_write_the_mapped_frames(levels_video, tmp_path):
    drop = _params(temporal="drop", temporal_rate=0.25)
    row = augment_video(levels_video, tmp_path / "drop.mp4", drop, chunk=6)
    counts = frame_counts(drop, N_LEVELS)
    assert row["n_frames_out"] == N_LEVELS - 5 and (counts == 0).sum() == 5
    assert _indices(tmp_path / "drop.mp4") == np.flatnonzero(counts).tolist()
    dup = _params(temporal="duplicate", temporal_rate=0.2)
    row = augment_video(levels_video, tmp_path / "dup.mp4", dup, chunk=6)
    counts = frame_counts(dup, N_LEVELS)
    assert row["n_frames_out"] == N_LEVELS + 4
    assert _indices(tmp_path / "dup.mp4") == np.repeat(np.arange(N_LEVELS), counts).tolist()


@pytest.mark.parametrize("temporal", ["drop", "reverse"])
def test_output_is_deterministic_and_independent_of_chunk_size(textured_video, tmp_path, temporal):
    p = _params(rotation=-7.5, noise_sigma=5.0, elastic=0.02, color=(-10.0, 1.1, 0.8),
                cutout=(0.1, 0.2, 0.2, 0.2),
                temporal=temporal, temporal_rate=0.2 if temporal == "drop" else None)
    # crf=0 (lossless): what is compared is this module's frames, not x264's rate control, which
    # is not always reproducible with threads on tiny frames (64x48)
    a = augment_video(textured_video, tmp_path / "a.mp4", p, chunk=250, crf=0)
    augment_video(textured_video, tmp_path / "b.mp4", AugmentParams.from_json(a["params"]), chunk=250, crf=0)
    augment_video(textured_video, tmp_path / "c.mp4", p, chunk=7, crf=0)
    first = _decode(tmp_path / "a.mp4")
    np.testing.assert_array_equal(first, _decode(tmp_path / "b.mp4"))
    np.testing.assert_array_equal(first, _decode(tmp_path / "c.mp4"))
    assert len(first) == a["n_frames_out"] == (24 if temporal == "drop" else 30)


def test_spatial_ops_reach_the_encoded_video(textured_video, tmp_path):
    src = _decode(textured_video).astype(float)
    augment_video(textured_video, tmp_path / "flip.mp4", _params(hflip=True), chunk=8)
    flipped = _decode(tmp_path / "flip.mp4").astype(float)
    assert np.abs(flipped - src[:, :, ::-1]).mean() < 0.25 * np.abs(flipped - src).mean()
    augment_video(textured_video, tmp_path / "bright.mp4", _params(color=(20.0, 1.0, 1.0)))
    assert _decode(tmp_path / "bright.mp4").mean() == pytest.approx(np.clip(src + 20, 0, 255).mean(), abs=1.5)


def test_drawn_copies_match_their_params(textured_video, tmp_path):
    for k in (1, 2, 3):
        p = draw_params("textured", k)
        row = augment_video(textured_video, tmp_path / f"aug{k}.mp4", p, chunk=9)
        assert AugmentParams.from_json(row["params"]) == p and row["ops"] == ",".join(p.ops)
        assert row["n_frames_in"] == 30 and row["n_frames_out"] == int(frame_counts(p, 30).sum())
        assert len(_decode(tmp_path / f"aug{k}.mp4")) == row["n_frames_out"] and row["seconds"] > 0
        info = video.probe(tmp_path / f"aug{k}.mp4")
        assert (info.width, info.height, info.fps) == (128, 96, 25)


def test_odd_size_source_is_cropped_to_even(tmp_path):
    frames = _random_frames(n=6, h=49, w=65, lo=60, hi=190)  # mid-range: no clipping in YUV
    src = write_video(tmp_path / "odd.mkv", frames=frames, codec="libx264rgb", pix_fmt="rgb24",
                      options={"qp": "0"})  # lossless RGB source
    row = augment_video(src, tmp_path / "even.mp4", _params(rotation=0.0), crf=0)
    assert (row["width"], row["height"]) == (64, 48)
    out = _decode(tmp_path / "even.mp4")
    assert out.shape == (6, 48, 64, 3)
    luma = np.array([0.299, 0.587, 0.114])  # chroma is subsampled by yuv420p: compare luma
    kept, shifted = frames[:, :48, :64] @ luma, frames[:, 1:, 1:] @ luma
    assert np.abs(out @ luma - kept).mean() < 1.5 < 10 < np.abs(out @ luma - shifted).mean()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_bad_source_raises_video_error_and_leaves_no_output(textured_video, tmp_path, damage):
    src = tmp_path / "in" / "bad.mp4"
    src.parent.mkdir()
    if damage == "garbage":
        src.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    else:
        src.write_bytes(textured_video.read_bytes())
        truncate(src, 0.5)
    out = tmp_path / "out"
    for temporal in (None, "reverse"):
        with pytest.raises(VideoError, match="bad.mp4") as err:
            augment_video(src, out / "copy.mp4", _params(hflip=True, temporal=temporal), chunk=4)
        assert err.value.path == str(src)
        assert not out.exists() or list(out.iterdir()) == []
