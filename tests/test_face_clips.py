"""Face clips for the deep models: aligned crops of the face tracks from the full-resolution video,
cached with the track's version, chosen per model (clip.source), a tiny model trained on them end
to end beside frame clips, the video score over several tracks."""

from __future__ import annotations

import json

import cv2
import numpy as np
import polars as pl
import pytest
from mlflow.tracking import MlflowClient

from fvcflow.cli import main as fvc_cli
from fvcflow.config import Settings
from fvcflow.deep.clips import (
    ClipCache,
    decode_face_clips,
    pool_tracks,
    source_of,
    window_indices,
    with_faces,
)
from fvcflow.errors import FvcError
from fvcflow.ingest import ingest
from fvcflow.models.torch_common import ClipSpec
from fvcflow.stages import runner
from fvcflow.stages.facetrack import align_face, boxes_at, yuface_available
from fvcflow.store import read_parquet
from fvcflow.training import TrainConfig
from fvcflow.video import read_rgb
from tests.media import write_video
from tests.test_facetrack import astronaut_pan

pytestmark = [pytest.mark.usefixtures("torch_one_thread"),
              pytest.mark.skipif(not yuface_available(), reason="yuface: CPython <= 3.11 only")]

SPEC = ClipSpec(frames=4, clips=2, size=32, source="face")


def _fake(frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """A crude face swap: the face region re-rendered at low resolution and brightened."""
    out = frames.copy()
    for f, (x, y, w, h) in zip(out, boxes[:, 0]):
        x0, y0, x1, y1 = int(x), int(y), int(x + w), int(y + h)
        face = f[y0:y1, x0:x1]
        low = cv2.resize(cv2.resize(face, (8, 8), interpolation=cv2.INTER_AREA), face.shape[1::-1])
        f[y0:y1, x0:x1] = np.clip(low.astype(np.int16) + 40, 0, 255).astype(np.uint8)
    return out


@pytest.fixture(scope="module")
def face_lake(tmp_path_factory):
    """8 groups of a real and a fake astronaut video, ingested; faces and scale stages run."""
    root = tmp_path_factory.mktemp("facelake")
    corpus = root / "corpus"
    lines = ["path,label,group"]
    for g in range(8):
        frames, boxes = astronaut_pan(n=16, width=256, height=192, side=192, seed=g, travel=16)
        write_video(corpus / f"r{g}.mp4", frames=frames, fps=10)
        write_video(corpus / f"f{g}.mp4", frames=_fake(frames, boxes), fps=10)
        lines += [f"r{g}.mp4,real,g{g}", f"f{g}.mp4,fake,g{g}"]
    (corpus / "labels.csv").write_text("\n".join(lines) + "\n")
    settings = Settings(home=root / "fvc-data", workers=1, augment={"copies": 0}).resolved()
    ingest("folder", corpus, settings.lake(), labels=corpus / "labels.csv", workers=1)
    for stage in ("faces", "scale"):
        runner.run_local(stage, settings)
    return settings


def _rows(settings):
    from fvcflow.deep.loop import video_rows
    from fvcflow.training.fitting.splits import load_splits, make_splits

    cfg = TrainConfig(folds=2, test_size=0.2, reuse_splits=True)
    make_splits(settings.lake(), cfg)
    return video_rows(settings.lake(), cfg, load_splits(settings.lake(), cfg))


def test_face_clips_are_the_aligned_full_resolution_faces_cached_with_the_track_version(face_lake):
    lake = face_lake.lake()
    spec, rows = with_faces(lake, ClipSpec(frames=4, clips=2, size=32), _rows(face_lake))
    assert spec.source == "face"                         # auto: every video has a track
    assert (rows["face_n_tracks"] >= 1).all()
    row = rows.to_dicts()[0]
    src = source_of(row)
    assert src.face is not None and src.face.video != row["path"]      # not the 256 px letterbox
    clips = decode_face_clips(src, SPEC)
    idx = window_indices(src.n_frames, SPEC)
    assert clips.shape == (2, idx.shape[1], 32, 32, 3)
    # the reference: each wanted frame of the full-resolution video, aligned by its interpolated landmarks
    wanted = np.unique(idx)
    _, lms = boxes_at(pl.read_parquet(src.face.tracks), 0, wanted)
    full, _ = read_rgb(src.face.video, wanted)
    ref = np.stack([align_face(f, lm, 32) for f, lm in zip(full, lms)])
    np.testing.assert_array_equal(clips, ref[np.searchsorted(wanted, idx)])
    cache = ClipCache(lake.cache_dir("clips"))
    path = cache.path(src, SPEC)
    assert path != cache.path(source_of({**row, "face_tracks_hash": "another"}), SPEC)   # track version
    assert path != cache.path(source_of({**row, "face_n_tracks": 0}), SPEC)              # frame clips
    np.testing.assert_array_equal(cache.load(src, SPEC), clips)
    assert path.exists() and cache.decoded == 1


def test_clip_source_auto_falls_back_to_frames_and_face_needs_the_stage(face_lake, tmp_path, caplog):
    lake = face_lake.lake()
    rows = _rows(face_lake)
    tracks = read_parquet(lake.faces)
    saved = tracks.clone()
    try:
        from fvcflow.store import write_parquet_atomic

        # most videos without a face: auto takes frames; face keeps them, counted and said once
        write_parquet_atomic(tracks.with_columns(n_tracks=pl.when(pl.col("video_id") == rows["video_id"][0])
                                                 .then(pl.col("n_tracks")).otherwise(0)), lake.faces)
        assert with_faces(lake, ClipSpec(size=32), rows)[0].source == "frame"
        with caplog.at_level("WARNING", logger="fvcflow.deep"):
            spec, joined = with_faces(lake, ClipSpec(size=32, source="face"), rows)
        assert spec.source == "face"
        said = [r.message for r in caplog.records if "no face track" in r.message]
        assert said == [f"clips: {rows.height - 1} of {rows.height} videos have no face track; they are seen "
                        "through frame clips"]
        for r in joined.to_dicts():       # the one video with a track gets face clips, the rest frames
            assert (source_of(r).face is not None) == (r["video_id"] == rows["video_id"][0])
    finally:
        write_parquet_atomic(saved, lake.faces)
    empty = Settings(home=tmp_path / "empty").resolved().lake()
    with pytest.raises(FvcError, match="run the faces stage first"):
        with_faces(empty, ClipSpec(size=32, source="face"), rows)
    with pytest.raises(ValueError, match="source must be"):
        ClipSpec(source="faces")


def test_a_video_score_is_the_max_or_mean_over_its_tracks():
    logits = np.array([-2.0, 3.0, 1.0, 0.5, -1.0])
    owners = np.array([0, 0, 1, 2, 2])
    top, best = pool_tracks(logits, owners, 3, "max")
    np.testing.assert_allclose(top, [3.0, 1.0, 0.5])
    assert best.tolist() == [1, 0, 0]
    mean, _ = pool_tracks(logits, owners, 3, "mean")
    np.testing.assert_allclose(mean, [0.5, 1.0, -0.25])


@pytest.mark.slow
def test_a_tiny_model_trains_on_face_clips_beside_frame_clips_through_the_flow(face_lake, prefect_server,
                                                                              dask_address, tmp_path, capsys):
    from fvcflow.detector.predict import load_detector
    from fvcflow.flows.pipeline import fvc

    corpus = face_lake.home.parent / "corpus"
    clip = {"frames": 4, "clips": 2, "size": 32}
    cfg = TrainConfig(folds=2, test_size=0.2, models="naive_3dcnn,variable_aspect_cnn", kinds=["torch_video"],
                      deep=dict(epochs=2, patience=2, batch_size=4, workers=0, device="cpu", lr=1e-3,
                                clip={"naive_3dcnn": {**clip, "source": "face"},
                                      "variable_aspect_cnn": {**clip, "size": None, "source": "frame"}}))
    settings = Settings(home=tmp_path / "fvc-data", workers=1, augment={"copies": 1},
                        dask_address=dask_address, train=cfg,
                        stages=["ingest", "augment", "faces", "scale", "train"],
                        corpus={"kind": "folder", "root": corpus, "labels": corpus / "labels.csv"})
    state = fvc(config=settings, return_state=True)
    assert state.is_completed(), state.message
    lake = settings.lake()
    originals, copies = read_parquet(lake.index).height, read_parquet(lake.stage1).height
    assert copies and read_parquet(lake.faces).height == originals + copies   # originals and their copies
    pred = read_parquet(lake.predictions)
    assert set(pred["model"]) == {"naive_3dcnn", "variable_aspect_cnn"}
    assert pred["prob_fake"].is_between(0, 1).all()
    client = MlflowClient(lake.mlflow_uri)
    exp = client.get_experiment_by_name(cfg.experiment).experiment_id
    runs = {r.data.tags["fvc.model"]: r for r in client.search_runs([exp], "tags.`fvc.role` = 'model'")}
    face, frame = runs["naive_3dcnn"].data.tags, runs["variable_aspect_cnn"].data.tags
    assert face["fvc.clip_source"] == "face" and face["fvc.face_detector"] == "yuface"
    assert frame["fvc.clip_source"] == "frame" and "fvc.face_detector" not in frame
    assert '"source": "face"' in face["fvc.clip"]
    assert list((lake.cache_dir("clips")).rglob("*.clip"))
    # the logged face model scores a new video through its face track, and fvc predict names the track
    uri = f"runs:/{runs['naive_3dcnn'].info.run_id}/model"
    det = load_detector(lake, uri, tracking_uri=cfg.tracking_uri)
    assert det.video.clip.source == "face"
    frames, _ = astronaut_pan(n=16, width=256, height=192, side=192, seed=99, travel=16)
    new = write_video(tmp_path / "new.mp4", frames=frames, fps=10)
    capsys.readouterr()
    rc = fvc_cli(["--home", str(lake.root), "predict", str(new), "--model", uri, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out[0]["face_track"] == 0 and 0.0 <= out[0]["prob_fake"] <= 1.0
    # fvc predict's feature decode hands its tracks over: the same score as tracking again
    from fvcflow.stages.facetrack import track_as
    from fvcflow.stages.specs import scale_as

    flags = scale_as(new, tmp_path / "new_256.mp4")
    kw = dict(src_width=flags["src_width"], src_height=flags["src_height"], original=new)
    own = det.video.predict_video(tmp_path / "new_256.mp4", **kw)
    tracks = track_as(new)[0]
    assert det.video.predict_video(tmp_path / "new_256.mp4", tracks=tracks, **kw) == own
    assert det.video.last_track == 0
    det.video.predict_video(tmp_path / "new_256.mp4", tracks=tracks.clear(), **kw)
    assert det.video.last_track is None                   # the tracks given are the ones used


def test_the_report_shows_a_video_s_aligned_main_face(face_lake, tmp_path):
    from fvcflow.training.evidence.report import face_crop

    lake = face_lake.lake()
    faces = read_parquet(lake.faces).sort("video_id")
    index = read_parquet(lake.index)
    vid = faces["video_id"][0]
    path = index.filter(pl.col("video_id") == vid)["path"][0]
    assert face_crop(lake, vid, path, tmp_path / "face.png")
    crop = cv2.cvtColor(cv2.imread(str(tmp_path / "face.png")), cv2.COLOR_BGR2RGB)
    tracks = pl.read_parquet(faces["tracks_path"][0]).filter(pl.col("track") == 0).sort("frame")
    mid = int(tracks["frame"][tracks.height // 2])
    _, lm = boxes_at(tracks, 0, [mid])
    np.testing.assert_array_equal(crop, align_face(read_rgb(path, [mid])[0][0], lm[0], 112))
    assert not face_crop(lake, "no-such-video", path, tmp_path / "none.png")


def test_every_track_of_a_two_face_video_is_a_training_sample_and_its_score_is_the_max(tmp_path):
    from dataclasses import replace

    import torch

    from fvcflow.config import DeepConfig
    from fvcflow.deep.clips import per_track
    from fvcflow.deep.loop import Trainer, _source, prepare_sources
    from fvcflow.models.registry import get_model_spec
    from fvcflow.stages.facetrack import make_detector, track_video
    from fvcflow.stages.scale import scale_video
    from fvcflow.store import Lake, write_parquet_atomic

    frames, _ = astronaut_pan(n=16, width=480, height=180, side=160, faces=2, travel=20)
    video = write_video(tmp_path / "two.mp4", frames=frames, fps=10)
    tracks, summary = track_video(video, make_detector("auto"))
    assert summary["n_tracks"] == 2
    tracks_path = write_parquet_atomic(tracks, tmp_path / "two.parquet")
    scale_video(video, tmp_path / "two-64.mp4", size=64)
    two = {"video_id": "two", "path": str(tmp_path / "two-64.mp4"), "content_hash": "s", "n_frames": 16,
           "src_width": 480, "src_height": 180, "label": 1, "face_video": str(video), "face_video_hash": "v",
           "face_tracks": str(tracks_path), "face_tracks_hash": "t", "face_n_tracks": 2}
    rows = pl.DataFrame([two, {**two, "video_id": "main", "label": 0, "face_n_tracks": 1}])
    per = per_track(rows)
    assert per.select("video_id", "face_track").rows() == [("two", 0), ("two", 1), ("main", 0)]
    first, second = (decode_face_clips(_source(r), SPEC) for r in per.head(2).to_dicts())
    assert not np.array_equal(first, second)                 # two faces, two sets of clips
    cache = ClipCache(tmp_path / "clips")
    prepare_sources(Lake.at(tmp_path / "home"), rows, SPEC, cache)
    assert cache.decoded == 2                                # both tracks cached ("main" is track 0)
    spec = get_model_spec("naive_3dcnn")
    deep = DeepConfig(epochs=1, patience=1, batch_size=4, workers=0, device="cpu")
    memory = ClipCache(None)                     # no cache: each source of a loader is decoded once
    trainer = Trainer(spec, SPEC, deep, memory, params={}, weights=None, seed=0, device=torch.device("cpu"))
    fit = trainer.fit(rows, rows, seed=0, workdir=tmp_path, tag="t")
    assert memory.decoded == 3 + 3               # trained on the 3 tracks, validated on them pooled
    p = trainer.predict(fit.module, rows)
    logits = trainer.video_logits(fit.module, trainer._loader(per, train=False, seed=0))
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-np.array([logits[:2].max(), logits[2]]))), rtol=1e-6)
    trainer.clip = replace(SPEC, tracks="mean")
    np.testing.assert_allclose(trainer.predict(fit.module, rows)[0], 1 / (1 + np.exp(-logits[:2].mean())),
                               rtol=1e-6)


def test_the_clip_cache_fill_before_training_fills_face_clips_training_then_decodes_nothing(face_lake):
    from distributed import LocalCluster

    from fvcflow.deep.loop import fill_clip_caches, per_track, prepare_sources
    from fvcflow.training.fitting.splits import load_splits

    lake = face_lake.lake()
    rows = _rows(face_lake)                 # makes the splits
    clip = {"frames": 4, "clips": 2, "size": 24}          # a size no other test caches
    cfg = TrainConfig(folds=2, test_size=0.2, reuse_splits=True,
                      deep=dict(clip={"naive_3dcnn": {**clip, "source": "auto"},
                                      "variable_aspect_cnn": {**clip, "size": None, "source": "frame"}}))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
                      silence_logs=50) as cluster:
        done = fill_clip_caches(lake, cfg, load_splits(lake, cfg), ["naive_3dcnn", "variable_aspect_cnn"],
                                cluster.scheduler_address)
    spec, face_rows = with_faces(lake, ClipSpec(**clip), rows)
    tracks = per_track(face_rows).to_dicts()
    assert spec.source == "face" and len(tracks) >= rows.height
    assert done["naive_3dcnn"] == {"videos": rows.height, "decoded": len(tracks), "cached": 0, "failed": 0}
    assert done["variable_aspect_cnn"]["decoded"] == rows.height          # frame clips, one per video
    cache = ClipCache(lake.cache_dir("clips"))
    for r in tracks:                        # the face clips of every track are the files training reads
        src = source_of(r, r["face_track"])
        assert src.face is not None and cache.path(src, spec).exists()
    assert prepare_sources(lake, face_rows, spec, cache).height == rows.height
    assert cache.decoded == 0                                              # training decodes nothing new
