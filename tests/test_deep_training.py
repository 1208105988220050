"""The deep engine on real videos: clip sampling, the clip cache, the training loop, MLflow, predict."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import mlflow
import numpy as np
import polars as pl
import pytest
import torch
from mlflow.tracking import MlflowClient

from fvcflow.cli import main as fvc
from fvcflow.deep import clips as clips_mod
from fvcflow.deep.clips import ClipCache, ClipSource, window, window_indices
from fvcflow.deep.data import ClipDataset, make_loader
from fvcflow.deep.device import choose_device
from fvcflow.errors import ConfigError, FvcError
from fvcflow.models import get_model_spec
from fvcflow.models.torch_common import ClipSpec, build_video_model
from fvcflow.store import read_parquet
from fvcflow.training import run_training
from fvcflow.training.run import PREDICTION_COLUMNS
from fvcflow.video import probe, read_rgb
from tests.deep_lake import deep_rows, resume_store, tiny_deep_config, video_cv, write_deep_lake
from tests.media import write_vfr_video, write_video

SPEC = ClipSpec(frames=4, clips=2, size=32)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return write_deep_lake(tmp_path_factory.mktemp("deep") / "fvc-data")


def _sources(lake) -> list[ClipSource]:
    rows = deep_rows(lake, tiny_deep_config("naive_3dcnn"))
    return [ClipSource(r["video_id"], r["path"], r["content_hash"], r["n_frames"]) for r in rows.to_dicts()]


# -- sampling -----------------------------------------------------------------------------------
def test_windows_are_evenly_spaced_and_short_videos_loop():
    idx = window_indices(100, ClipSpec(frames=8, clips=4, stride=2, size=32))
    assert idx.shape == (4, window(ClipSpec(frames=8, clips=4, stride=2, size=32))) == (4, 17)
    assert idx[0, 0] == 0 and idx[-1, -1] == 99 and (np.diff(idx, axis=1) == 1).all()
    starts = idx[:, 0]
    assert np.ptp(np.diff(starts)) <= 1                          # evenly spaced
    short = window_indices(3, SPEC)                             # shorter than one window: loops
    assert short.tolist() == [[0, 1, 2, 0, 1]] * 2


def test_read_rgb_returns_the_frames_a_full_decode_gives(tmp_path):
    path = write_video(tmp_path / "v.mp4", n=20, width=64, height=48, seed=3)
    from fvcflow.video import iter_rgb

    every = np.concatenate(list(iter_rgb(path)))
    got, decoded = read_rgb(path, [0, 7, 19])
    assert np.array_equal(got, every[[0, 7, 19]]) and decoded == 20
    got, decoded = read_rgb(path, [2, 25])                       # past the end: the last frame again
    assert np.array_equal(got[1], every[-1]) and decoded == 20
    with pytest.raises(ValueError, match="sorted"):
        read_rgb(path, [3, 1])


def test_variable_frame_rate_and_one_frame_videos_give_whole_clips(tmp_path):
    vfr = write_vfr_video(tmp_path / "vfr.mp4", [0, 40, 50, 200, 210, 400, 410, 420])
    one = write_video(tmp_path / "one.mp4", n=1, width=32, height=32)
    for path in (vfr, one):
        info = probe(path)
        arr = clips_mod.decode_clips(ClipSource("x", str(path), "h", info.n_frames), SPEC)
        assert arr.shape == (2, window(SPEC), 32, 32, 3) and arr.dtype == np.uint8


# -- the cache ----------------------------------------------------------------------------------
def test_second_epoch_and_second_model_decode_nothing(lake, tmp_path, monkeypatch):
    calls = []
    real = clips_mod.read_rgb
    monkeypatch.setattr(clips_mod, "read_rgb", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    sources = _sources(lake)
    cache = ClipCache(tmp_path / "clips")
    ds = ClipDataset(sources, [0] * len(sources), SPEC, cache, train=True).prepare()
    assert len(calls) == len(sources) == cache.decoded
    loader = make_loader(ds, batch_size=4, shuffle=True, workers=0, pin_memory=False)
    epochs = []
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        epochs.append(torch.cat([x for x, _, _ in loader]))
    assert len(calls) == len(sources)                            # epochs read the cache only
    assert epochs[0].shape == (len(sources) * 2, 3, 4, 32, 32)
    again = ClipCache(tmp_path / "clips")                        # a second model, same clip config
    ClipDataset(sources, [0] * len(sources), SPEC, again, train=False).prepare()
    assert again.decoded == 0 and again.reused == len(sources) and len(calls) == len(sources)
    files = sorted((tmp_path / "clips").rglob("*.clip"))
    assert len(files) == len(sources)                            # one file per video and clip config
    ClipCache(tmp_path / "clips").load(sources[0], ClipSpec(frames=2, clips=2, size=32))
    assert len(sorted((tmp_path / "clips").rglob("*.clip"))) == len(sources) + 1


def test_training_clips_vary_by_epoch_evaluation_clips_do_not(lake, tmp_path):
    sources = _sources(lake)[:2]
    cache = ClipCache(tmp_path / "c")
    train = ClipDataset(sources, [0, 1], SPEC, cache, train=True, seed=3).prepare()
    evaluation = ClipDataset(sources, [0, 1], SPEC, cache, train=False).prepare()
    n = len(train)
    assert not torch.equal(train[0][0], train[n][0])             # epoch 1 of item 0 differs from epoch 0
    assert torch.equal(train[0][0], ClipDataset(sources, [0, 1], SPEC, cache, train=True, seed=3)[0][0])
    assert torch.equal(evaluation[0][0], evaluation[n][0])
    x = evaluation[0][0]
    mean = torch.tensor(SPEC.mean).view(3, 1, 1, 1)
    std = torch.tensor(SPEC.std).view(3, 1, 1, 1)
    raw = torch.from_numpy(np.ascontiguousarray(cache.load(sources[0], SPEC)[0, 0:4])).permute(3, 0, 1, 2)
    assert torch.allclose(x * std + mean, raw.float() / 255, atol=1e-5)   # the model's normalisation


def test_worker_processes_give_the_same_batches_as_the_trainer_process(lake, tmp_path):
    sources = _sources(lake)[:4]
    cache = ClipCache(tmp_path / "w")
    ds = ClipDataset(sources, [0, 1, 0, 1], SPEC, cache, train=True, seed=1).prepare()
    batches = {}
    for workers in (0, 2):
        loader = make_loader(ds, batch_size=3, shuffle=True, workers=workers, pin_memory=False, seed=4)
        loader.sampler.set_epoch(1)
        batches[workers] = [(x, v) for x, _, v in loader]
    assert len(batches[0]) == len(batches[2]) == 3
    for (xa, va), (xb, vb) in zip(batches[0], batches[2]):
        assert torch.equal(va, vb) and torch.equal(xa, xb)


def test_a_killed_run_resumes_without_recomputing_finished_clips(lake, tmp_path):
    root = tmp_path / "clips"
    script = textwrap.dedent(f"""
        import os, signal
        from fvcflow.deep.clips import ClipCache, ClipSource
        from fvcflow.models.torch_common import ClipSpec
        cache = ClipCache({str(root)!r})
        for i, s in enumerate({[tuple(vars(s).values()) for s in _sources(lake)]!r}):
            if i == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            cache.load(ClipSource(*s), ClipSpec(frames=4, clips=2, size=32))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=os.getcwd(), capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    done = {p: p.stat().st_mtime_ns for p in root.rglob("*.clip")}
    assert len(done) == 3 and not list(root.rglob("*.tmp"))
    cache = ClipCache(root)
    for s in _sources(lake):
        cache.load(s, SPEC)
    assert cache.reused == 3 and cache.decoded == len(_sources(lake)) - 3
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())


# -- the loop -----------------------------------------------------------------------------------
def test_two_cpu_runs_give_equal_predictions_and_folds_come_from_the_splits(lake):
    cfg = tiny_deep_config("naive_3dcnn", epochs=2)
    spec = get_model_spec("naive_3dcnn")
    a = video_cv(lake, spec, cfg)        # no resume cache: both runs train
    b = video_cv(lake, spec, cfg)
    assert a.predictions.equals(b.predictions)
    assert a.fold_metrics == b.fold_metrics
    splits = read_parquet(lake.splits)
    oof = a.predictions.filter(pl.col("split") == "oof").join(splits, on="video_id", suffix="_s")
    assert oof.height == splits.filter(~pl.col("is_test")).height
    assert (oof["fold"] == oof["fold_s"]).all()
    test = a.predictions.filter(pl.col("split") == "test")
    assert sorted(test["video_id"]) == sorted(splits.filter(pl.col("is_test"))["video_id"])
    assert all(1 <= len(h) <= 2 for h in a.fold_history)
    assert a.tags["fvc.weights"] == "random" and a.tags["fvc.device"] == "cpu"


def test_a_killed_training_resumes_from_its_finished_fits(lake, monkeypatch):
    from fvcflow.deep import loop

    cfg = tiny_deep_config("naive_3dcnn", epochs=1)
    spec = get_model_spec("naive_3dcnn")
    store = resume_store(lake, spec, cfg)
    store.clear()
    first = video_cv(lake, spec, cfg, resume=True)
    assert store.names() == ["final", "fold0", "fold1"]
    monkeypatch.setattr(loop.Trainer, "fit", lambda *a, **k: pytest.fail("refitted a stored fit"))
    again = video_cv(lake, spec, cfg, resume=True)          # every fit restored
    assert again.predictions.equals(first.predictions) and again.fold_history == first.fold_history
    store.clear()
    assert store.names() == []


def test_weights_from_a_local_file_and_bad_settings(lake, tmp_path):
    spec = get_model_spec("naive_3dcnn")
    ckpt = tmp_path / "init.pt"
    torch.save({"state_dict": build_video_model("naive_3dcnn", seed=5).state_dict()}, ckpt)
    cfg = tiny_deep_config("naive_3dcnn", epochs=1, weights={"naive_3dcnn": str(ckpt)})
    result = video_cv(lake, spec, cfg)
    assert result.tags["fvc.weights"] == str(ckpt) and result.params["weights"] == str(ckpt)
    bad = tiny_deep_config("naive_3dcnn", weights={"naive_3dcnn": str(tmp_path / "missing.pt")})
    with pytest.raises(FvcError, match="train.deep.weights.naive_3dcnn"):
        video_cv(lake, spec, bad)
    with pytest.raises(FvcError, match="train.deep.clip.naive_3dcnn"):
        video_cv(lake, spec, tiny_deep_config("naive_3dcnn").model_copy(
            update={"deep": tiny_deep_config("naive_3dcnn").deep.model_copy(
                update={"clip": {"naive_3dcnn": {"frame": 3}}})}))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="train.deep.device"):
            choose_device("cuda")


@pytest.fixture(scope="module")
def trained(lake):
    """Two deep models trained, tracked and registered (the best) on the tiny lake."""
    cfg = tiny_deep_config("naive_3dcnn,variable_aspect_cnn", epochs=2)
    cfg.deep.clip["variable_aspect_cnn"] = {"frames": 4, "clips": 2, "size": None}
    return cfg, run_training(lake, cfg)


def test_deep_runs_are_tracked_like_every_model(lake, trained):
    cfg, summary = trained
    pred = read_parquet(lake.predictions)
    assert pred.columns == PREDICTION_COLUMNS and set(pred["model"]) == {"naive_3dcnn", "variable_aspect_cnn"}
    assert pred["feature_set"].is_null().all()
    assert set(summary.leaderboard["model"]) == {"naive_3dcnn", "variable_aspect_cnn"}
    client = MlflowClient(lake.mlflow_uri)
    exp = client.get_experiment_by_name(cfg.experiment)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    for res in summary.results:
        parent = next(r for r in runs if r.info.run_id == res.run_id)
        assert parent.data.tags["fvc.kind"] == "torch_video" and parent.data.tags["fvc.weights"] == "random"
        assert parent.data.tags["fvc.device"] == "cpu"
        assert parent.data.metrics["oof_roc_auc"] == pytest.approx(res.oof_metrics["roc_auc"])
        kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == res.run_id]
        assert len(kids) == 2
        for kid in kids:
            fold = int(kid.data.tags["fvc.fold"])
            steps = client.get_metric_history(kid.info.run_id, "val_loss")
            assert [m.step for m in steps] == list(range(len(res.fold_history[fold])))
            arts = [a.path for a in client.list_artifacts(kid.info.run_id, "checkpoints")]
            assert arts == [f"checkpoints/fold{fold}_best.pt"]


def test_logged_deep_model_loads_without_the_training_run(lake, trained, tmp_path):
    """The logged deep model takes videos as the tabular ones do ({"path"} / {"video_b64"} records,
    the clips extracted inside the pyfunc), loaded by MLflow in a fresh process, with fvc predict's
    score; its clip batches stay reachable through the unwrapped python model."""
    import base64

    from fvcflow.detector.predict import load_detector

    _, summary = trained
    res = summary.results[0]
    video = write_video(tmp_path / "served.mp4", n=14, width=80, height=60, seed=4)
    b64 = base64.b64encode(video.read_bytes()).decode()
    script = textwrap.dedent(f"""
        import mlflow, pandas as pd
        mlflow.set_tracking_uri({lake.mlflow_uri!r})
        model = mlflow.pyfunc.load_model({res.model_uri!r})
        out = model.predict(pd.DataFrame([{{"path": {str(video)!r}}}, {{"video_b64": {b64!r}}}]))
        out.to_json({str(tmp_path / "out.json")!r}, orient="records")
    """)
    env = {**os.environ, "FVC_HOME": str(lake.root)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, env=env)   # a fresh process
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    import json

    out = json.loads((tmp_path / "out.json").read_text())
    want = load_detector(lake, res.model_uri, tracking_uri=lake.mlflow_uri).score(video)
    assert [r["prob_fake"] for r in out] == pytest.approx([want, want], abs=1e-6)
    assert out[0]["evidence_method"].startswith("deep model") and out[0]["verdict"] in ("fake", "real")
    mlflow.set_tracking_uri(lake.mlflow_uri)
    loaded = mlflow.pyfunc.load_model(res.model_uri)
    assert loaded.metadata.get_input_schema().input_names() == ["path", "video_b64"]
    again = loaded.unwrap_python_model().model     # rebuilt from safe parts (fvcflow.saved)
    assert again.name == res.name and again.clip == res.model.clip
    x = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = torch.sigmoid(res.model.clip_logits(x)).numpy()
    assert np.allclose(loaded.unwrap_python_model().predict(None, x.numpy()), expected, atol=1e-6)


def test_predict_scores_a_real_video_with_a_deep_model_and_names_a_bad_file(lake, trained, tmp_path, capsys):
    _, summary = trained
    video = write_video(tmp_path / "new.mp4", n=14, width=80, height=60, seed=9)
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    name = next(r.name for r in summary.results if r.name == summary.best)
    rc = fvc(["--home", str(lake.root), "predict", str(video), str(bad), "--json"])
    captured = capsys.readouterr()
    assert rc == 1
    import json

    out = json.loads(captured.out)
    assert out[0]["model"] == name and 0.0 <= out[0]["prob_fake"] <= 1.0 and out[0]["error"] is None
    assert out[1]["prob_fake"] is None and "bad.mp4" in out[1]["error"]
    assert f"error: {out[1]['error']}" in captured.err and "Traceback" not in captured.err
    # the evidence of a deep model: its clips, highest first; the video's logit is their mean
    import math

    ev, p = out[0]["evidence"], out[0]["prob_fake"]
    logits = [c["contribution"] for c in ev["top_features"]]
    assert ev["method"].startswith("deep model") and logits == sorted(logits, reverse=True)
    assert all(c["value"] == pytest.approx(1 / (1 + math.exp(-c["contribution"])))
               for c in ev["top_features"])
    assert logits[0] >= math.log(p / (1 - p)) - 1e-6          # the best clip is at least the mean
    if len(logits) < 8:                                      # every clip listed: their mean is the score
        assert 1 / (1 + math.exp(-sum(logits) / len(logits))) == pytest.approx(p, abs=1e-6)


def test_the_gpu_limit_is_created_once_per_node_with_a_slot_per_gpu(prefect_server):
    """Two nodes on one Prefect server (two host names) each count their own GPUs: node a's
    cards all taken, node b's task still starts, and a's next one waits."""
    import threading

    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency

    from fvcflow.deep.device import gpu_count
    from fvcflow.flows.train import ensure_gpu_limit, gpu_limit

    first = ensure_gpu_limit()
    assert first == max(1, gpu_count()) and ensure_gpu_limit() == first      # found, not created again
    assert ensure_gpu_limit([0], host="node-a") == 1 and ensure_gpu_limit([0, 1], host="node-b") == 2
    with get_client(sync_client=True) as client:
        limits = {lim.name: lim.limit for lim in client.read_global_concurrency_limits()
                  if lim.name.startswith("gpu:")}
    assert limits == {gpu_limit(): first, "gpu:node-a": 1, "gpu:node-b": 2}
    started = []
    with concurrency("gpu:node-a", occupy=1, strict=True):                    # node a's one card taken
        other = threading.Thread(target=lambda: started.append(_takes("gpu:node-b", 5)))
        other.start()
        other.join()
        assert started == [True]                                              # node b is not held up
        assert _takes("gpu:node-a", 1) is False                               # node a's next waits
    assert _takes("gpu:node-a", 5) is True                                    # given back


def _takes(limit: str, seconds: float) -> bool:
    """Whether a slot of ``limit`` is had within ``seconds`` (given back at once)."""
    from prefect.concurrency.sync import concurrency

    try:
        with concurrency(limit, occupy=1, strict=True, timeout_seconds=seconds):
            return True
    except TimeoutError:
        return False
