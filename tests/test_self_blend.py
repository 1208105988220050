"""Self-blended pseudo-fakes (issue 22): the region, the source transform, the blend, whole videos."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from fvcflow import video
from fvcflow.errors import VideoError
from fvcflow.stages.augment import (
    BLEND_RANGES,
    BlendParams,
    blend_frame,
    blend_outline,
    blend_source,
    blend_video,
    blend_weights,
    draw_blend_params,
    hard_mask,
    read_masks,
    soft_mask,
)
from fvcflow.store import file_hash
from tests.media import synthetic_frames, write_video

H, W, FPS = 96, 128, 25.0


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("blend") / "real.mp4", n=40, width=W, height=H, fps=int(FPS))


def test_draws_are_stable_and_within_their_ranges():
    for copy in range(1, 30):
        p = draw_blend_params("vid", copy)
        assert p == draw_blend_params("vid", copy)
        for name in ("area", "aspect", "drift", "period", "breath", "resample", "brightness", "feather"):
            lo, hi = BLEND_RANGES[name]
            assert lo <= getattr(p, name) <= hi, name
        assert all(1 <= g <= 7 for g in p.grid)                 # never the video's own 8x8 grid
        assert (p.blur is None) != (p.sharpen is None)
    assert draw_blend_params("vid", 1) != draw_blend_params("vid", 1, seed=1)


def test_bad_parameters_are_refused():
    p = draw_blend_params("vid", 1)
    with pytest.raises(ValueError, match="grid offsets"):
        replace(p, grid=(0, 3))
    with pytest.raises(ValueError, match="area"):
        replace(p, area=1.5)
    with pytest.raises(ValueError, match="exactly one of blur and sharpen"):
        replace(p, blur=1.0, sharpen=0.5)
    with pytest.raises(ValueError, match="a region is a polygon"):
        hard_mask(np.zeros((5, 3)), H, W)


def test_the_drawn_region_covers_a_face_share_and_drifts_and_breathes():
    p = draw_blend_params("vid", 4)
    masks = [hard_mask(blend_outline(p, i, FPS, H, W), H, W) for i in range(0, 200, 10)]
    share = np.array([m.mean() for m in masks])
    assert np.all(share > 0.5 * BLEND_RANGES["area"][0]) and np.all(share < 1.6 * BLEND_RANGES["area"][1])
    centres = np.array([np.argwhere(m).mean(axis=0) for m in masks])
    assert np.ptp(centres, axis=0).max() > 0.5 or np.ptp(share) > 0.002          # it moves over time
    for a, b in zip(masks, masks[1:]):                     # smoothly: neighbours overlap mostly
        assert (a & b).sum() / max((a | b).sum(), 1) > 0.6


def test_the_source_is_transformed_and_misaligned_with_the_video_grid():
    f = synthetic_frames(1, H, W, seed=3)[0]
    p = draw_blend_params("vid", 2)
    s = blend_source(f, p)
    assert s.shape == f.shape and s.dtype == np.uint8
    assert np.abs(s.astype(int) - f.astype(int)).mean() > 2.0
    # the JPEG grid is offset: the same transform on the 8x8-aligned grid gives other pixels
    other = replace(p, grid=(p.grid[0] % 7 + 1, p.grid[1]))
    assert (blend_source(f, other) != s).any()


def test_a_pseudo_fake_differs_from_its_real_only_inside_the_mask_before_encoding():
    frames = synthetic_frames(6, H, W, seed=1)
    p = draw_blend_params("vid", 3)
    for i, f in enumerate(frames):
        w = blend_weights(p, i, FPS, H, W)
        out = blend_frame(f, w, blend_source(f, p))
        changed = (out != f).any(axis=-1)
        assert changed.any()
        assert not changed[w == 0].any()                     # bit for bit outside the support
        assert (w == 255).any() and ((w > 0) & (w < 255)).any()    # a core and a feathered ramp
        inside = w == 255
        assert np.abs(out[inside].astype(int) - f[inside].astype(int)).mean() > 2.0


def test_the_feather_is_a_ramp_confined_near_the_region():
    hard = np.zeros((80, 80), np.uint8)
    hard[20:60, 20:60] = 1
    m = soft_mask(hard, 10.0)
    assert m[40, 40] == 255 and m[5, 5] == 0
    grown = cv2.dilate(hard, np.ones((13, 13), np.uint8))
    assert not (m[grown == 0] > 0).any()
    row = m[40, 10:41].astype(int)
    assert (np.diff(row) >= 0).all()                      # monotone from outside to inside


def test_a_face_track_region_replaces_the_drawn_one(real, tmp_path):
    # the hook for face tracks: a per-frame polygon (a landmark hull) or a per-frame mask
    def hull(i):
        return np.array([[30 + i % 5, 20], [90, 25], [95, 70], [35, 75]], float)

    p = draw_blend_params("vid", 1)
    for region in (hull, lambda i: hard_mask(hull(i), H, W) * 255):
        out = blend_video(real, tmp_path / "face.mp4", tmp_path / "face-mask.mkv", p, region=region)
        masks = np.concatenate(list(read_masks(out["mask_path"])))
        for i in (0, 7, 39):
            assert np.array_equal(masks[i] > 0, blend_weights(p, i, FPS, H, W, region) > 0)
            assert masks[i][hard_mask(hull(i), H, W) == 0].max() < 255


def test_a_video_gets_its_copy_and_every_frame_s_mask(real, tmp_path):
    p = draw_blend_params("vid", 2)
    out = blend_video(real, tmp_path / "b.mp4", tmp_path / "b-mask.mkv", p, chunk=7)
    info = video.probe(tmp_path / "b.mp4")
    assert (info.width, info.height, out["n_frames_out"]) == (W, H, 40)
    masks = np.concatenate(list(read_masks(out["mask_path"])))
    assert masks.shape == (40, H, W)
    for i in (0, 13, 39):                                  # lossless: exactly the weights blended with
        assert np.array_equal(masks[i], blend_weights(p, i, FPS, H, W))
    assert 0.5 * p.area < out["mask_area"] < 2.0 * p.area
    assert BlendParams.from_json(out["params"]) == p
    # after encoding the copy still differs from its real most inside the region
    src = np.concatenate(list(video.iter_rgb(real)))
    fake = np.concatenate(list(video.iter_rgb(tmp_path / "b.mp4")))
    diff = np.abs(fake.astype(int) - src.astype(int)).mean(axis=-1)
    assert diff[masks == 255].mean() > 2 * diff[masks == 0].mean()      # re-encoding moves the rest


def test_the_same_seed_gives_the_same_copy(real, tmp_path):
    a = blend_video(real, tmp_path / "a.mp4", tmp_path / "a.mkv", draw_blend_params("vid", 5))
    b = blend_video(real, tmp_path / "b.mp4", tmp_path / "b.mkv", draw_blend_params("vid", 5))
    c = blend_video(real, tmp_path / "c.mp4", tmp_path / "c.mkv", draw_blend_params("vid", 5, seed=9))
    assert file_hash(tmp_path / "a.mp4") == file_hash(tmp_path / "b.mp4") != file_hash(tmp_path / "c.mp4")
    assert file_hash(a["mask_path"]) == file_hash(b["mask_path"]) != file_hash(c["mask_path"])


def test_an_unreadable_source_is_named_and_leaves_nothing(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(VideoError, match="bad.mp4"):
        blend_video(bad, tmp_path / "out" / "x.mp4", tmp_path / "out" / "x.mkv", draw_blend_params("v", 1))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ---------------------------------------------------------------- stage 1 on the face tracks
def test_stage_1_blends_on_the_tracked_face_and_on_the_drawn_region_without_one(tmp_path, monkeypatch):
    from pathlib import Path

    from fvcflow.config import Settings
    from fvcflow.ingest import ingest
    from fvcflow.stages import runner
    from fvcflow.store import read_parquet
    from tests.test_facetrack import astronaut_pan

    corpus = tmp_path / "c"
    frames, boxes = astronaut_pan(n=20, width=320, height=240, side=160, travel=30)
    write_video(corpus / "face.mp4", frames=frames)
    write_video(corpus / "noface.mp4", n=20, width=W, height=H, seed=3)
    write_video(corpus / "f1.mp4", n=12, width=64, height=48, seed=1)
    write_video(corpus / "f2.mp4", n=12, width=64, height=48, seed=2)
    (corpus / "labels.csv").write_text("path,label,group\nface.mp4,real,a\nf1.mp4,fake,a\n"
                                       "noface.mp4,real,b\nf2.mp4,fake,b\n")
    s = Settings(home=tmp_path / "home", workers=1, augment={"copies": 0, "self_blend": 1}).resolved()
    ingest("folder", corpus, s.lake(), labels=corpus / "labels.csv", workers=1)
    runner.run_local("augment", s)
    rows = {r["source_video_id"]: r for r in read_parquet(s.lake().stage1).to_dicts()}
    ids = {Path(r["path"]).name: r["video_id"] for r in read_parquet(s.lake().index).to_dicts()}
    face, noface = rows[ids["face.mp4"]], rows[ids["noface.mp4"]]
    assert len(rows) == 2 and face["ops"] == "self-blend,face-track" and noface["ops"] == "self-blend,drawn"

    masks = np.concatenate(list(read_masks(face["mask_path"]))) > 0
    for i in (0, 10, 19):                            # inside the true face box (a feather's reach around)
        x, y, w, h = boxes[i, 0]
        inside = np.zeros_like(masks[i])
        inside[max(0, int(y) - 8):int(y + h) + 8, max(0, int(x) - 8):int(x + w) + 8] = True
        assert masks[i].any() and not (masks[i] & ~inside).any()
        assert masks[i].sum() > 0.25 * w * h          # and a good part of the face

    p = BlendParams.from_json(noface["params"])
    drawn = np.concatenate(list(read_masks(noface["mask_path"])))
    assert np.array_equal(drawn[5] > 0, blend_weights(p, 5, FPS, H, W) > 0)

    drawn_only = Settings(home=s.home, workers=1,
                          augment={"copies": 0, "self_blend": 1, "blend_region": "drawn"}).resolved()
    assert len(runner.plan("augment", drawn_only).todo) == 2      # the region's source is in the key

    # a source is tracked once: its second pseudo-fake reads the tracks its first one kept
    kept = sorted((s.lake().faces_tracks.parent / "blend").glob("*.parquet"))
    assert len(kept) == 2                                          # one per real source, face or not
    from fvcflow.stages import specs

    def no_tracking(*a, **k):
        raise AssertionError("a pseudo-fake's source was tracked again")

    monkeypatch.setattr(specs, "track_as", no_tracking)
    two = Settings(home=s.home, workers=1, augment={"copies": 0, "self_blend": 2}).resolved()
    report = runner.run_local("augment", two)
    assert (report.done, report.cached, report.failed) == (2, 2, 0)
    second = {r["video_id"]: r for r in read_parquet(s.lake().stage1).to_dicts()}
    assert sum(r["ops"] == "self-blend,face-track" for r in second.values()) == 2   # face.mp4's two
