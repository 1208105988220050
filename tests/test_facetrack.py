"""The face tracker and the faces stage: ground truth (astronaut pans, the demo corpus's portraits),
augmented copies, no face, two faces, one frame, determinism, the cache and a killed run, the
fallback detector, alignment, and ``fvc faces``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import cv2
import numpy as np
import polars as pl
import pytest
from skimage.data import astronaut

from fvcflow.cli import main as fvc_cli
from fvcflow.config import Settings
from fvcflow.errors import FvcError
from fvcflow.ingest import ingest
from fvcflow.stages import facetrack, runner
from fvcflow.stages.augment import AugmentParams, augment_video, geometry_matrix
from fvcflow.stages.facetrack import (
    align_face,
    alignment_matrix,
    fallback_note,
    iou,
    make_detector,
    template_points,
    track_video,
    yuface_available,
)
from fvcflow.store import file_hash
from fvcflow.video import probe, sample_indices
from tests.media import write_video

#: the astronaut's face in skimage's 512 x 512 astronaut() (yuface's box, issue 21)
FACE = np.array([178.0, 63.0, 89.0, 112.0])
SIDE = 256                      # the astronaut is drawn at this size into the frames
N = 150

needs_cnn = pytest.mark.skipif(not yuface_available(), reason="yuface has wheels for CPython <= 3.11 only")


def _background(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 200, (h // 16 + 1, w // 16 + 1, 3)).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def astronaut_pan(n: int = N, width: int = 640, height: int = 360, side: int = SIDE, faces: int = 1,
                  seed: int = 0, travel: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Frames with ``faces`` astronauts (``side`` px) panning left to right over ``travel`` pixels
    (default: across their share of the frame); their true face boxes ``float64[n, faces, 4]``."""
    img = cv2.resize(astronaut(), (side, side), interpolation=cv2.INTER_AREA)
    bg = _background(height, width, seed)
    frames = np.empty((n, height, width, 3), np.uint8)
    boxes = np.empty((n, faces, 4))
    span = width // faces
    for i in range(n):
        frame = bg.copy()
        for k in range(faces):
            x = k * span + round(i * (span - side if travel is None else travel) / max(1, n - 1))
            y = (height - side) // 2
            frame[y:y + side, x:x + side] = img
            boxes[i, k] = FACE * side / 512 + [x, y, 0, 0]
        frames[i] = frame
    return frames, boxes


@pytest.fixture(scope="module")
def pan(tmp_path_factory):
    frames, boxes = astronaut_pan()
    path = write_video(tmp_path_factory.mktemp("pan") / "pan.mp4", frames=frames, fps=25)
    return path, boxes[:, 0]


@pytest.fixture(scope="module")
def detector():
    return make_detector("auto")


def _hits(table: pl.DataFrame, truth: np.ndarray, track: int = 0) -> float:
    """Share of the sampled frames where ``track``'s box overlaps the true box by IoU >= 0.5."""
    sampled = sample_indices(len(truth))
    rows = {r["frame"]: np.array([r["x"], r["y"], r["w"], r["h"]])
            for r in table.filter(pl.col("track") == track).to_dicts()}
    return float(np.mean([i in rows and iou(rows[i], truth[i]) >= 0.5 for i in sampled]))


@needs_cnn
def test_the_tracker_follows_a_panning_face_on_sampled_frames(pan, detector):
    path, truth = pan
    table, summary = track_video(path, detector, every=3, max_tracks=2)
    assert summary["detector"] == "yuface" and table["detector"].unique().to_list() == ["yuface"]
    assert summary["n_tracks"] == 1 and summary["n_sampled"] == len(sample_indices(N))
    assert summary["n_detect"] < summary["n_sampled"]          # every 3rd (and the last), not all
    assert _hits(table, truth) >= 0.9
    assert summary["face_found"] == 1.0
    # landmarks in image order, inside the box: eyes above the nose above the mouth
    r = table.row(0, named=True)
    assert r["eye_l_x"] < r["eye_r_x"] and r["mouth_l_x"] < r["mouth_r_x"]
    assert max(r["eye_l_y"], r["eye_r_y"]) < r["nose_y"] < min(r["mouth_l_y"], r["mouth_r_y"])
    assert r["x"] < r["nose_x"] < r["x"] + r["w"]


@needs_cnn
@pytest.mark.parametrize("params", [
    AugmentParams("pan", 1, seed=1, hflip=True),
    AugmentParams("pan", 2, seed=2, rotation=8.0),
    AugmentParams("pan", 3, seed=3, affine=(0.05, -0.03, 0.7, 0.0)),
], ids=["flipped", "rotated", "rescaled"])
def test_the_tracker_follows_the_face_in_augmented_copies(pan, detector, params, tmp_path):
    path, truth = pan
    dst = tmp_path / "copy.mp4"
    augment_video(path, dst, params)
    info = probe(dst)
    m = geometry_matrix(params, info.height, info.width)
    moved = []
    for x, y, w, h in truth:            # the true box of the copy: the box of the moved corners
        corners = np.array([[x, y, 1], [x + w, y, 1], [x, y + h, 1], [x + w, y + h, 1]]) @ m.T
        lo, hi = corners[:, :2].min(0), corners[:, :2].max(0)
        moved.append([*lo, *(hi - lo)])
    table, _ = track_video(dst, detector)
    assert _hits(table, np.array(moved)) >= 0.9
    if params.hflip:                     # mirrored: image-left eye is still the left one
        assert (table["eye_l_x"] < table["eye_r_x"]).all()


def test_a_video_without_a_face_has_no_track(tmp_path, detector):
    path = write_video(tmp_path / "noise.mp4", n=20, width=160, height=120, seed=3)
    table, summary = track_video(path, detector)
    assert table.height == 0 and table.columns == [*facetrack.TRACK_COLUMNS, "detector"]
    assert summary["n_tracks"] == 0 and summary["face_found"] == 0.0 and np.isnan(summary["face_area"])


@needs_cnn
def test_two_faces_make_two_tracks_ranked_by_length_times_size(tmp_path, detector):
    frames, boxes = astronaut_pan(n=30, width=960, height=300, side=220, faces=2, travel=40)
    path = write_video(tmp_path / "two.mp4", frames=frames)
    table, summary = track_video(path, detector, max_tracks=2)
    assert summary["n_tracks"] == 2
    lefts = {k: table.filter(pl.col("track") == k)["x"].mean() for k in (0, 1)}
    for k in (0, 1):                     # each track follows one face, whichever is ranked first
        which = 0 if lefts[k] < 480 else 1
        assert _hits(table, boxes[:, which], track=k) >= 0.9
    one, s1 = track_video(path, detector, max_tracks=1)
    assert s1["n_tracks"] == 1 and one.height == table.filter(pl.col("track") == 0).height
    # the settings a logged detector carries to predict, scan and serve reach the tracker
    from fvcflow.stages.facetrack import track_as

    got, s_as = track_as(path, {"max_tracks": 1, "every": 3})
    assert s_as["n_tracks"] == 1 and got.equals(one)
    assert track_as(path, {"detector": "haar"})[1]["detector"].startswith("haar")


@needs_cnn
def test_a_one_frame_video_and_determinism(tmp_path, detector, pan):
    frames, boxes = astronaut_pan(n=1)
    path = write_video(tmp_path / "one.mp4", frames=frames)
    table, summary = track_video(path, detector)
    assert table.height == 1 and summary["n_tracks"] == 1 and iou(table.row(0)[2:6], boxes[0, 0]) >= 0.5
    a, _ = track_video(pan[0], detector)
    b, _ = track_video(pan[0], make_detector("auto"))
    assert a.equals(b)


def test_bad_settings_are_one_line_errors(tmp_path):
    with pytest.raises(FvcError, match="faces.every must be >= 1"):
        facetrack.detection_positions(10, 0)
    with pytest.raises(FvcError, match="needs features.face_model"):
        make_detector("yunet")
    with pytest.raises(FvcError, match="not one of"):
        facetrack.FaceDetector("dlib")


def test_the_fallback_detector_when_the_cnn_is_unavailable(monkeypatch, pan):
    monkeypatch.setattr(facetrack, "yuface_available", lambda: False)
    det = make_detector("auto")
    assert det.name == "haar"
    note = fallback_note(det)
    assert note.startswith("faces: the haar detector ran, not the yuface CNN: yuface is not installed")
    with pytest.raises(FvcError, match="yuface package is not installed"):
        make_detector("yuface")
    path, truth = pan
    table, summary = track_video(path, det)
    assert summary["detector"] == "haar" and table["detector"].unique().to_list() == ["haar"]
    # the frontal cascade finds the astronaut too, boxes sized differently from the CNN's: overlap only
    assert summary["n_tracks"] >= 1 and _hits(table, truth) >= 0.6


# ---------------------------------------------------------------- the demo corpus's portraits
@needs_cnn
def test_the_tracker_finds_the_demo_corpus_faces_inside_their_true_regions(tmp_path, detector):
    from fvcflow.demo.corpus import make_demo_corpus

    corpus = make_demo_corpus(tmp_path / "demo", small=True)
    faces = [v for v in corpus.videos if v.region == "haar-face"]
    assert faces
    for v in faces:
        table, summary = track_video(corpus.root / v.path, detector)
        assert summary["n_tracks"] >= 1, v.path
        # the region is the face box grown to a talking head's share of the frame: the tracked face
        # lies inside it (most of the face box within the region) on >= 90 % of the sampled frames
        truth = np.asarray(v.track, np.float64)
        t0 = {r["frame"]: r for r in table.filter(pl.col("track") == 0).to_dicts()}
        inside = []
        for i in sample_indices(v.n_frames):
            if i not in t0:
                inside.append(False)
                continue
            r, (x, y, w, h) = t0[i], truth[i]
            ix = max(0.0, min(r["x"] + r["w"], x + w) - max(r["x"], x))
            iy = max(0.0, min(r["y"] + r["h"], y + h) - max(r["y"], y))
            inside.append(ix * iy / (r["w"] * r["h"]) >= 0.5)
        assert np.mean(inside) >= 0.9, v.path


# ---------------------------------------------------------------- alignment
@needs_cnn
def test_aligned_crops_put_the_eyes_on_the_template_line(detector):
    img = cv2.resize(astronaut(), (384, 384), interpolation=cv2.INTER_AREA)
    big = np.pad(img, ((64, 64), (64, 64), (0, 0)), mode="edge")
    # a small roll: the CNN's landmarks follow it (at 17 degrees they read ~2: docs/FACES.md)
    rot = cv2.warpAffine(big, cv2.getRotationMatrix2D((256, 256), 8.0, 1.0), (512, 512),
                         borderMode=cv2.BORDER_REPLICATE)
    face = detector.detect(cv2.cvtColor(rot, cv2.COLOR_RGB2GRAY))[0]
    size = 224
    m = alignment_matrix(face.landmarks, size)
    moved = np.c_[face.landmarks, np.ones(5)] @ m.T
    want = template_points(size)
    assert abs(moved[0, 1] - moved[1, 1]) < 1e-9                   # one horizontal line, exactly
    assert np.allclose(moved[:2, 1], want[:2, 1], atol=1e-6)       # at the template's height
    assert np.allclose(moved[:2, 0], want[:2, 0], atol=0.1 * size)  # and about its eye distance
    crop = align_face(rot, face.landmarks, size)
    assert crop.shape == (size, size, 3)
    again = detector.detect(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY))  # the detector on the crop itself
    assert again, "no face found on the aligned crop"
    eyes = again[0].landmarks[:2]
    assert abs(eyes[0, 1] - eyes[1, 1]) <= 1.0                      # level within a pixel
    assert np.abs(eyes[:, 1] - want[:2, 1]).max() <= 0.03 * size    # at the template's height
    assert np.abs(eyes[:, 0] - want[:2, 0]).max() <= 0.03 * size


def test_alignment_of_exact_landmarks_is_exact():
    want = template_points(112)
    a = np.deg2rad(30)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    src = (want - 56) @ rot.T * 2.5 + [300, 200]                   # the template turned, scaled, moved
    m = alignment_matrix(src, 112)
    np.testing.assert_allclose(np.c_[src, np.ones(5)] @ m.T, want, atol=1e-9)


# ---------------------------------------------------------------- the stage
@pytest.fixture
def lake_settings(tmp_path, pan):
    corpus = tmp_path / "c"
    frames, _ = astronaut_pan(n=20, width=320, height=240, side=160, travel=30)
    write_video(corpus / "face.mp4", frames=frames)
    write_video(corpus / "noise.mp4", n=12, width=64, height=48, seed=1)
    write_video(corpus / "face2.mp4", frames=frames[::-1].copy())
    (corpus / "labels.csv").write_text("path,label,group\nface.mp4,real,a\nnoise.mp4,fake,a\n"
                                       "face2.mp4,fake,b\n")
    settings = Settings(home=tmp_path / "home", workers=1, augment={"copies": 1}).resolved()
    ingest("folder", corpus, settings.lake(), labels=corpus / "labels.csv", workers=1)
    return settings


def test_the_faces_stage_publishes_a_table_and_one_tracks_file_per_video(lake_settings):
    lake = lake_settings.lake()
    runner.run_local("augment", lake_settings)
    report = runner.run_local("faces", lake_settings)
    table = pl.read_parquet(lake.faces)
    assert report.videos_in == table.height == 6 and report.failed == 0
    det = make_detector("auto").name
    assert set(table["detector"]) == {det}
    names = {r["video_id"]: os.path.basename(r["path"]) for r in pl.read_parquet(lake.index).to_dicts()}
    for r in table.to_dicts():
        tracks = pl.read_parquet(r["tracks_path"])
        assert file_hash(r["tracks_path"]) == r["content_hash"]
        assert r["n_tracks"] == (tracks["track"].n_unique() if tracks.height else 0)
        assert set(tracks.columns) >= set(facetrack.TRACK_COLUMNS)
        if r["variant"] == "original" and det == "yuface":
            face = names[r["video_id"]] != "noise.mp4"
            assert (r["n_tracks"], r["face_found"]) == ((1, 1.0) if face else (0, 0.0))
    again = runner.run_local("faces", lake_settings)
    assert (again.done, again.cached) == (0, 6)
    other = lake_settings.model_copy(update={"faces": lake_settings.faces.model_copy(update={"every": 1})})
    assert len(runner.plan("faces", other).todo) == 6          # the settings are in the key


def test_a_killed_faces_stage_resumes_without_recomputing_finished_videos(lake_settings, tmp_path):
    script = f"""
import os, signal
from fvcflow.config import Settings
from fvcflow.stages import runner, specs
s = Settings.model_validate_json({lake_settings.model_dump_json()!r})
run = specs.SPECS["faces"].run
done = []
def killing(job, settings):
    if len(done) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    out = run(job, settings)
    done.append(job.video_id)
    return out
specs.SPECS["faces"] = specs.SPECS["faces"].__class__("faces", specs.SPECS["faces"].table,
                                                      specs.SPECS["faces"].jobs, killing)
runner.SPECS["faces"] = specs.SPECS["faces"]
runner.run_local("faces", s)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, env={**os.environ})
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    report = runner.run_local("faces", lake_settings)
    assert (report.cached, report.done) == (2, 1)
    assert pl.read_parquet(lake_settings.lake().faces).height == 3


# ---------------------------------------------------------------- fvc faces
@needs_cnn
def test_fvc_faces_prints_tracks_and_json_in_the_video_own_pixels(pan, tmp_path, capsys):
    path, truth = pan
    noise = write_video(tmp_path / "noise.mp4", n=10, width=96, height=64, seed=2)
    assert fvc_cli(["--home", str(tmp_path / "h"), "faces", str(path), str(noise), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [d["path"] for d in doc] == [str(path), str(noise)]
    assert doc[0]["detector"] == "yuface" and doc[1]["tracks"] == []
    frames = doc[0]["tracks"][0]["frames"]
    assert [f["frame"] for f in frames] == sample_indices(N).tolist()
    assert set(frames[0]) == {"frame", "box", "score", "landmarks"}
    assert len(frames[0]["landmarks"]) == 5 and all(len(p) == 2 for p in frames[0]["landmarks"])
    assert np.mean([iou(np.array(f["box"]), truth[f["frame"]]) >= 0.5 for f in frames]) >= 0.9
    assert fvc_cli(["--home", str(tmp_path / "h"), "faces", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: 1 face track(s) on {len(frames)} sampled frames (640x360), detector yuface" in out
    assert f"track 0: frames 0-{N - 1}" in out


def test_fvc_faces_names_a_bad_file_and_goes_on(tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    good = write_video(tmp_path / "noise.mp4", n=10, width=96, height=64, seed=2)
    assert fvc_cli(["--home", str(tmp_path / "h"), "faces", str(bad), str(good)]) == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(bad) in errors[0] and "Traceback" not in captured.err
    assert f"{good}: 0 face track(s)" in captured.out and "no face found" in captured.out


@needs_cnn
def test_explore_reports_faces_by_label_and_warns_when_face_found_alone_separates_them(lake_settings, capsys):
    from fvcflow.explore import explore

    runner.run_local("faces", lake_settings)
    ex = explore(lake_settings.lake())
    rows = {r["label"]: r for r in ex.faces.to_dicts()}
    assert (rows["real"]["videos"], rows["real"]["with_face"]) == (1, 1.0)       # face.mp4
    assert (rows["fake"]["videos"], rows["fake"]["with_face"]) == (2, 0.5)       # face2.mp4, noise.mp4
    assert rows["real"]["face_area_median"] == pytest.approx(28 * 35 / (320 * 240), rel=0.3)
    assert ex.faces_verdict.startswith(
        "Face found alone separates the labels (ROC AUC 0.750, detector yuface)")
    assert fvc_cli(["--home", str(lake_settings.home), "explore"]) == 0
    out = capsys.readouterr().out
    assert "faces by label" in out and "Face found alone separates the labels" in out
    assert "Faces by label" in ex.path.read_text()


# ---------------------------------------------------------------- face-versus-rest on the tracks
def naive_landmark_instability(rows: list[dict]) -> tuple[float, float]:
    """docs/FEATURES.md's definition, written out: track 0's detection rows in frame order, each
    landmark coordinate relative to the box, the mean of their population stds and of their
    absolute steps."""
    rows = sorted((r for r in rows if r["track"] == 0 and r["detected"]), key=lambda r: r["frame"])
    series = []
    for name in facetrack.LANDMARKS:
        series.append([(r[f"{name}_x"] - r["x"]) / r["w"] for r in rows])
        series.append([(r[f"{name}_y"] - r["y"]) / r["h"] for r in rows])
    stds, steps = [], []
    for s in series:
        m = sum(s) / len(s)
        stds.append((sum((v - m) ** 2 for v in s) / len(s)) ** 0.5)
        steps += [abs(b - a) for a, b in zip(s, s[1:])]
    return (sum(stds) / len(stds) if len(rows) >= 3 else float("nan"),
            sum(steps) / len(steps) if len(rows) >= 2 else float("nan"))


@needs_cnn
def test_stage_2_face_columns_come_from_the_main_track_with_the_landmark_instability(pan, detector):
    from fvcflow.kernels import FEATURE_NAMES, frame_features
    from fvcflow.stages.faces import face_columns, face_frame_features
    from fvcflow.stages.features import video_features
    from fvcflow.video import iter_yuv

    path, _ = pan
    tracks, summary = track_video(path, detector)
    row = video_features(path, local=False, face_tracks=tracks)
    assert [c for c in row if c.startswith("f_")] == face_columns()
    assert row["f_found"] == summary["face_found"] == 1.0
    # the reference: the per-frame values on track 0's box of each sampled frame, averaged
    boxes = {r["frame"]: np.array([r["x"], r["y"], r["w"], r["h"]]) for r in tracks.to_dicts()}
    info = probe(path)
    per_frame = [face_frame_features(np.ascontiguousarray(y), cb, cr, boxes[i])
                 for i, (y, cb, cr) in iter_yuv(path, sample_indices(info.n_frames), info=info)]
    want = np.mean(per_frame, axis=0)
    got = [row[c] for c in face_columns()[1:-2]]
    np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)
    i0, (y0, _, _) = next(iter(iter_yuv(path, [0])))
    x, y, w, h = (int(round(v)) for v in boxes[0])
    np.testing.assert_allclose(per_frame[0][-len(FEATURE_NAMES):], frame_features(y0[y:y + h, x:x + w]))
    spread, step = naive_landmark_instability(tracks.to_dicts())
    assert row["f_lm_instability"] == pytest.approx(spread, rel=1e-12)
    assert row["f_lm_step"] == pytest.approx(step, rel=1e-12)
    assert 0 < row["f_lm_instability"] < 0.05      # a rigid face: its landmarks keep their place in the box


def test_landmark_instability_of_constructed_tracks_and_its_undefined_cases():
    from fvcflow.stages.faces import landmark_instability

    rng = np.random.default_rng(0)
    base = facetrack.template_landmarks(np.array([100.0, 50.0, 80.0, 100.0]))
    rows = []
    for i in range(6):      # the box moves; the landmarks move with it plus a jitter of known size
        box = np.array([100.0 + 7 * i, 50.0 + 3 * i, 80.0, 100.0])
        lm = base + [7 * i, 3 * i] + rng.normal(0, 2.0, (5, 2))
        rows.append({"frame": i * 5, "track": 0, "x": box[0], "y": box[1], "w": box[2], "h": box[3],
                     "score": 0.9, **{f"{n}_{c}": lm[k, j] for k, n in enumerate(facetrack.LANDMARKS)
                                      for j, c in enumerate("xy")}, "detected": True})
    table = pl.DataFrame(rows, schema=facetrack.SCHEMA).with_columns(detector=pl.lit("yuface"))
    got = landmark_instability(table)
    np.testing.assert_allclose(got, naive_landmark_instability(rows), rtol=1e-12)
    assert got[0] == pytest.approx(2.0 / 90, rel=0.5)             # about the jitter over the box side
    two = landmark_instability(table.head(2))
    assert np.isnan(two[0]) and not np.isnan(two[1])              # a std needs 3 detections, a step 2
    assert np.isnan(landmark_instability(table.with_columns(detector=pl.lit("haar")))).all()
    assert np.isnan(landmark_instability(None)).all()


def test_stage_2_reads_the_faces_stage_tracks_and_tracks_itself_without_them(lake_settings):
    from fvcflow.stages.faces import face_columns
    from fvcflow.stages.features import video_features

    features = lake_settings.features.model_copy(update={"faces": True})
    s = lake_settings.model_copy(update={"features": features})
    lake = s.lake()
    alone = runner.run_local("features", s)           # no faces stage yet: tracked inside stage 2
    before = pl.read_parquet(lake.stage2).sort("video_id")
    runner.run_local("faces", s)
    jobs = runner.plan("features", s)
    assert jobs.todo == [] and all(j.params["tracks"] for j in jobs.jobs)   # same key, the stage's files now
    faces = pl.read_parquet(lake.faces)
    for r in pl.read_parquet(lake.index).to_dicts():
        tracks = pl.read_parquet(faces.filter(pl.col("video_id") == r["video_id"])["tracks_path"][0])
        want = video_features(r["path"], local=True, face_tracks=tracks)
        got = before.filter(pl.col("video_id") == r["video_id"]).row(0, named=True)
        np.testing.assert_allclose([got[c] for c in face_columns()], [want[c] for c in face_columns()],
                                   rtol=1e-12, equal_nan=True)
    other = s.model_copy(update={"faces": s.faces.model_copy(update={"max_side": 320})})
    assert len(runner.plan("features", other).todo) == alone.videos_in   # the tracker's settings: in the key


def test_one_decode_gives_the_stage_2_row_and_the_tracker_s_own_tracks(tmp_path, detector):
    from fvcflow.stages.features import video_features

    frames, _ = astronaut_pan(n=30, width=320, height=240, side=160, travel=30)
    path = write_video(tmp_path / "pan.mp4", frames=frames, fps=25)
    info = probe(path)
    alone_tracks, alone_summary = track_video(path, detector, every=3, info=info)
    tracker = facetrack.FrameTracker(detector, info, every=3)
    row = video_features(path, info=info, local=True, tracker=tracker)
    tracks, summary = tracker.result()
    assert summary == alone_summary and summary["n_detect"] == len(tracker.wanted) > 2
    assert tracks.equals(alone_tracks)            # the detection frames of stage 2's decode: same tracks
    want = video_features(path, info=info, local=True)          # and the same row as stage 2 alone
    assert list(row) == list(want)
    np.testing.assert_array_equal(list(row.values()), list(want.values()))
    # the face columns too (features.faces): measured once the tracks of this same decode are done,
    # the row of stage 2 reading those tracks apart (a second decode), bit for bit
    tracker = facetrack.FrameTracker(detector, info, every=3)
    row = video_features(path, info=info, local=True, tracker=tracker, track_faces=True)
    assert tracker.result()[0].equals(alone_tracks)
    want = video_features(path, info=info, local=True, face_tracks=alone_tracks)
    assert list(row) == list(want) and row["f_found"] == 1.0 and np.isfinite(row["f_lm_step"])
    np.testing.assert_array_equal(list(row.values()), list(want.values()))
    with pytest.raises(ValueError, match="track_faces needs a tracker"):
        video_features(path, info=info, track_faces=True)


@pytest.mark.parametrize("faces", [False, True], ids=["features", "features-with-face-columns"])
def test_the_faces_stage_gives_stage_2_its_rows_from_the_same_decode(lake_settings, monkeypatch, faces):
    from fvcflow.stages import specs
    from fvcflow.stages.features import video_features

    lake_settings = lake_settings.model_copy(update={
        "features": lake_settings.features.model_copy(update={"faces": faces})})
    lake = lake_settings.lake()
    assert specs.shares_decode(lake_settings)
    runner.run_local("faces", lake_settings)
    tracks = dict(pl.read_parquet(lake.faces).select("video_id", "tracks_path").iter_rows())

    def no_decode(*a, **k):
        raise AssertionError("stage 2 decoded a video the faces stage had read")

    monkeypatch.setattr(specs, "video_features", no_decode)
    report = runner.run_local("features", lake_settings)
    assert (report.done, report.failed) == (3, 0)
    monkeypatch.undo()
    stage2 = pl.read_parquet(lake.stage2)
    for r in pl.read_parquet(lake.index).to_dicts():
        got = stage2.filter(pl.col("video_id") == r["video_id"]).row(0, named=True)
        face_tracks = pl.read_parquet(tracks[r["video_id"]]) if faces else None   # read apart: 2 decodes
        want = video_features(r["path"], local=True, face_tracks=face_tracks)
        assert ("f_found" in want) == faces
        np.testing.assert_array_equal([got[k] for k in want], list(want.values()))
    # another feature setting (another key) or a forced stage 2: it decodes again, never a stale row
    features = lake_settings.features.model_copy(update={"local": False})
    other = lake_settings.model_copy(update={"features": features, "force": ["features"]})
    monkeypatch.setattr(specs, "video_features", no_decode)
    assert runner.run_local("features", other).failed == 3


def test_an_old_settings_file_naming_features_face_every_is_told_what_replaced_it(tmp_path, capsys):
    old = tmp_path / "fvc.toml"
    old.write_text("[features]\nfaces = true\nface_every = 5\n")
    rc = fvc_cli(["--config", str(old), "--home", str(tmp_path / "home"), "faces", str(tmp_path / "x.mp4")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.strip().splitlines() == ["error: setting 'features.face_every': no longer a setting (the face "
                                        "tracker's detection stride is 'faces.every'; set that instead)"]
    assert Settings.load(overrides={"faces": {"every": 5}}).faces.every == 5
    assert "face_every" not in Settings().features.model_dump()


def _feed(frames: np.ndarray, **kw) -> facetrack.FrameTracker:
    """A FrameTracker fed the sampled frames of ``frames`` (RGB) as luma, no encode."""
    n, h, w = frames.shape[:3]
    info = type("Info", (), {"n_frames": n, "width": w, "height": h})()
    tracker = facetrack.FrameTracker(make_detector("auto"), info, **kw)
    for i in tracker.wanted:
        tracker.add(i, cv2.cvtColor(frames[i], cv2.COLOR_RGB2GRAY))
    return tracker


@needs_cnn
def test_between_whole_frame_searches_the_tracker_looks_near_each_face_and_searches_again_when_lost():
    frames, truth = astronaut_pan(n=60, width=480, height=270, side=180, travel=40)
    windows = _feed(frames, every=1, full_every=100)
    whole = _feed(frames, every=1, full_every=1)
    assert (windows.n_full, whole.n_full, len(windows.frames)) == (1, 6, 6)
    got, want = windows.result()[0], whole.result()[0]
    assert got["track"].unique().to_list() == [0] and got["frame"].to_list() == want["frame"].to_list()
    assert _hits(got, truth[:, 0]) == 1.0
    box = ["x", "y", "w", "h"]
    assert min(iou(a, b) for a, b in zip(got.select(box).to_numpy(), want.select(box).to_numpy())) >= 0.8
    # a cut: from frame 30 on the face is mirrored to the far side, out of its window -> lost -> the
    # whole frame is searched again and the face followed from there
    frames[30:] = frames[30:, :, ::-1]
    truth[30:, 0, 0] = 480 - truth[30:, 0, 0] - truth[30:, 0, 2]
    cut = _feed(frames, every=1, full_every=100)
    table, summary = cut.result()
    assert cut.n_full == 2 and summary["face_found"] == 1.0
    before, after = table.filter(pl.col("frame") < 30), table.filter(pl.col("frame") >= 30)
    assert before["track"].n_unique() == after["track"].n_unique() == 1
    assert _hits(before, truth[:, 0], before["track"][0]) == 0.5     # 3 of the 6 sampled frames
    assert _hits(after, truth[:, 0], after["track"][0]) == 0.5
    with pytest.raises(FvcError, match="faces.full_every must be >= 1"):
        _feed(frames, full_every=0)
