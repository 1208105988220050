"""The local and face features in stage 2, the s2l/s2lf feature sets, the flow, predict and report."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from numpy.testing import assert_allclose

from fvcflow.cli import main as fvc_cli
from fvcflow.config import Settings
from fvcflow.demo.scenes import _portrait
from fvcflow.errors import ConfigError, FvcError
from fvcflow.kernels import FEATURE_NAMES, MAP_NAMES, frame_features, local_frame, tile_maps
from fvcflow.stages.faces import FaceAccumulator, FaceDetector, FaceTrack, face_columns, face_frame_features
from fvcflow.stages.features import feature_columns, video_features
from fvcflow.stages.local import LocalAccumulator, local_columns
from fvcflow.store import write_parquet_atomic
from fvcflow.training import TrainConfig
from fvcflow.training.fitting.data import feature_set_columns, load_features, missing_for
from fvcflow.training.run import select_models
from fvcflow.video import iter_luma, iter_yuv, probe, sample_indices
from tests.feature_tables import write_lake
from tests.media import write_video


@pytest.fixture(scope="module")
def portrait(tmp_path_factory):
    """A drawn, nodding head in front of a textured wall (the demo corpus's portrait scene)."""
    frames = _portrait(30, 144, 192, np.random.default_rng(0))
    path = tmp_path_factory.mktemp("faces") / "portrait.mp4"
    return write_video(path, frames=np.clip(frames, 0, 255).astype(np.uint8), fps=10)


@pytest.fixture(scope="module")
def faceless(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("faces") / "noise.mp4", n=30, width=192, height=144, seed=4)


def test_local_columns_equal_the_kernels_on_the_decoded_planes(faceless):
    row = video_features(faceless, local=True)
    plain = video_features(faceless)
    assert {c: row[c] for c in plain} == plain                 # the 51 columns do not change
    info = probe(faceless)
    acc = LocalAccumulator()
    for _, (y, cb, cr) in iter_yuv(faceless, sample_indices(info.n_frames), info=info):
        acc.add(y, cb, cr)
    want = acc.row()
    assert list(want) == local_columns()
    assert_allclose([row[c] for c in want], list(want.values()), rtol=0, atol=0, equal_nan=True)
    one = local_frame(*[np.ascontiguousarray(p) for p in next(iter(iter_yuv(faceless, [0])))[1]])
    assert_allclose(acc.frames[0].features, one.features, equal_nan=True)
    assert np.isfinite(want["l32_noise_spread_mean"]) and np.isfinite(want["l32_cb_mean_maxz_max"])
    assert row["n_sampled"] == len(acc.frames) == 5


def test_face_stage_finds_and_follows_the_rendered_face(portrait):
    row = video_features(portrait, local=True, faces=FaceDetector(), face_every=2)
    assert [c for c in row if c.startswith("f_")] == face_columns()
    assert row["f_found"] >= 0.6
    assert 0.05 < row["f_box_area"] < 0.6
    held = [c for c in face_columns() if c not in ("f_phase_match", "f_lm_instability", "f_lm_step")]
    assert np.isfinite([row[c] for c in held]).all()                # no landmarks without a track
    assert np.isnan([row["f_lm_instability"], row["f_lm_step"]]).all()
    # the same values from the accumulator fed the decoded planes by hand
    info = probe(portrait)
    acc = FaceAccumulator(FaceDetector(), every=2)
    for _, (y, cb, cr) in iter_yuv(portrait, sample_indices(info.n_frames), info=info):
        box = acc.add(y, cb, cr)
    assert_allclose([row[c] for c in face_columns()], list(acc.row().values()), equal_nan=True)
    # per frame: the box's own 12 features are frame_features of the crop; the comparisons are
    # medians of the 16 px tile maps over face / background tiles
    x0, y0, x1, y1 = (int(round(v)) for v in (box[0], box[1], box[0] + box[2], box[1] + box[3]))
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, y.shape[1]), min(y1, y.shape[0])
    values = face_frame_features(y, cb, cr, box)
    named = dict(zip(face_columns()[1:], values))
    assert_allclose([named[f"f_box_{n}"] for n in FEATURE_NAMES], frame_features(y[y0:y1, x0:x1]))
    maps = tile_maps(y, cb, cr, tile=16)
    cy, cx = np.meshgrid((np.arange(maps.shape[1]) + 0.5) * 16, (np.arange(maps.shape[2]) + 0.5) * 16,
                         indexing="ij")
    mx, my = box[0] + box[2] / 2, box[1] + box[3] / 2
    face = (np.abs(cx - mx) <= box[2] / 2) & (np.abs(cy - my) <= box[3] / 2)
    big = (np.abs(cx - mx) <= 0.8 * box[2]) & (np.abs(cy - my) <= 0.8 * box[3])
    noise = maps[MAP_NAMES.index("noise")]
    assert named["f_noise_vs_bg"] == pytest.approx(
        np.log((np.median(noise[face]) + 1e-6) / (np.median(noise[~big]) + 1e-6)))
    cbm = maps[MAP_NAMES.index("cb_mean")]
    assert named["f_cb_mean_vs_ring"] == pytest.approx(np.median(cbm[face]) - np.median(cbm[big & ~face]))


def test_face_track_detects_every_kth_frame_and_holds_between(portrait):
    info = probe(portrait)
    track = FaceTrack(FaceDetector(), every=3)
    boxes = [track.update(np.ascontiguousarray(y)) for _, y in iter_luma(portrait, range(info.n_frames))]
    assert track.detections == -(-info.n_frames // 3)
    found = [b for b in boxes if b is not None]
    assert len(found) >= 0.8 * len(boxes)
    steps = [np.abs(b - a).max() for a, b in zip(found, found[1:])]
    assert max(steps) < 0.25 * 144                             # smoothed: no jumps


def test_no_face_is_a_recorded_outcome(faceless):
    row = video_features(faceless, faces=FaceDetector())
    assert row["f_found"] == 0.0
    assert np.isnan([row[c] for c in face_columns()[1:]]).all()
    empty = FaceAccumulator(FaceDetector()).row()
    assert np.isnan(empty["f_found"]) and len(empty) == len(face_columns())


def test_face_model_must_be_a_loadable_local_file(tmp_path):
    with pytest.raises(ConfigError, match="features.face_model.*is not a file"):
        Settings.load(overrides={"features": {"face_model": str(tmp_path / "nope.onnx")}})
    with pytest.raises(FvcError, match="features.face_model: .* is not a file"):
        FaceDetector(tmp_path / "nope.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx model")
    with pytest.raises(FvcError, match="features.face_model: OpenCV cannot load"):
        FaceDetector(junk)
    with pytest.raises(FvcError, match="every must be >= 1"):
        FaceTrack(FaceDetector(), every=0)


def test_feature_sets_need_their_columns(tmp_path):
    lake = write_lake(tmp_path / "full", n_groups=8, n_aug=0)
    assert missing_for(lake, "s2l") is None and missing_for(lake, "s2lf") is None
    assert load_features(lake, "s2lf").columns == ["video_id", *feature_set_columns("s2lf")]
    assert load_features(lake, "s24l").width == 1 + len(feature_set_columns("s24l"))
    s2 = pl.read_parquet(lake.stage2)
    write_parquet_atomic(s2.select([c for c in s2.columns if c not in set(face_columns())]), lake.stage2)
    assert "features.faces is off" in missing_for(lake, "s2lf") and missing_for(lake, "s2l") is None
    write_parquet_atomic(s2.select([c for c in s2.columns if c not in set(local_columns() + face_columns())]),
                         lake.stage2)
    names, skipped = select_models(lake, TrainConfig(models="logreg_*,xgb_s2l"))
    assert names == ["logreg_s2", "logreg_s24"]
    assert "features.local is off" in skipped["logreg_s2l"] and "xgb_s2l" in skipped
    with pytest.raises(FvcError, match="feature set 's2l' needs the l32_ columns"):
        load_features(lake, "s2l")
    assert feature_set_columns("s2l") == feature_columns() + local_columns()
    with pytest.raises(FvcError, match="unknown feature set 's9'; known: s2, s24, s2l, s2lf, s24l"):
        feature_set_columns("s9")


# ---------------------------------------------------------------- through the flow and predict

@pytest.mark.slow
def test_local_feature_sets_through_the_flow_predict_and_report(prefect_server, dask_address, tmp_path,
                                                                portrait, capsys):
    import mlflow

    from fvcflow.detector.predict import load_detector
    from fvcflow.flows.pipeline import fvc
    from fvcflow.stages.specs import face_tracks_of
    from tests.corpus import make_tiny_corpus

    corpus = make_tiny_corpus(tmp_path / "corpus", with_bad=False)
    train = TrainConfig(folds=2, inner_folds=2, test_size=0.0, models="logreg_s2,logreg_s2l,xgb_s2lf",
                        grids={"logreg_s2": {"C": [1.0]}, "logreg_s2l": {"C": [1.0]},
                               "xgb_s2lf": {"max_depth": [2]}}, params={"xgb_s2lf": {"n_estimators": 10}})
    settings = Settings(home=tmp_path / "fvc-data", workers=1, dask_address=dask_address,
                        stages=["ingest", "features", "train"],
                        corpus={"kind": "folder", "root": corpus, "labels": corpus / "labels.csv"},
                        features={"faces": True}, faces={"every": 2}, train=train)
    state = fvc(config=settings, return_state=True)
    assert state.is_completed(), state.message
    lake = settings.lake()
    s2 = pl.read_parquet(lake.stage2)
    assert set(local_columns() + face_columns()) <= set(s2.columns)
    one = s2.sort("video_id").row(0, named=True)
    path = pl.read_parquet(lake.index).filter(pl.col("video_id") == one["video_id"])["path"][0]
    direct = video_features(path, local=True, face_tracks=face_tracks_of(path, settings))   # the tracker's
    assert_allclose([one[c] for c in local_columns() + face_columns()],
                    [direct[c] for c in local_columns() + face_columns()], rtol=1e-12, equal_nan=True)
    preds = pl.read_parquet(lake.predictions)
    assert set(preds["model"]) == {"logreg_s2", "logreg_s2l", "xgb_s2lf"}
    assert dict(preds.select("model", "feature_set").unique().iter_rows()) == {
        "logreg_s2": "s2", "logreg_s2l": "s2l", "xgb_s2lf": "s2lf"}
    report = (lake.stage5 / "report.html").read_text()
    assert "Where in the frame" in report and (lake.stage5 / "report" / "local_0.png").stat().st_size > 1000

    # fvc predict with the s2lf model: the same numbers as the model on the directly computed row
    client = mlflow.MlflowClient(lake.mlflow_uri)
    experiment = client.get_experiment_by_name(settings.train.experiment).experiment_id
    runs = client.search_runs([experiment], "tags.`fvc.model` = 'xgb_s2lf' and tags.`fvc.role` = 'model'")
    uri = f"runs:/{runs[0].info.run_id}/model"
    det = load_detector(lake, uri, tracking_uri=settings.train.tracking_uri)
    assert det.needs_local and det.needs_faces and not det.needs_stage4
    capsys.readouterr()
    assert fvc_cli(["--home", str(lake.root), "predict", str(portrait), "--model", uri, "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)[0]
    tracks = face_tracks_of(portrait, Settings())             # fvc predict's settings: faces.every 3
    want = det.predict_rows([video_features(portrait, local=True, face_tracks=tracks)])[0]
    assert rec["error"] is None and rec["prob_fake"] == pytest.approx(want, abs=1e-12)
