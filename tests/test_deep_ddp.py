"""One deep model on two ranks (DDP, gloo on the CPU): disjoint clips, averaged gradients, one
MLflow run with one process's predictions, and a killed rank that ends the run with one line.

The CUDA/NCCL path is the same code with ``backend_for(cuda) == "nccl"``; it needs two GPUs.
"""

from __future__ import annotations

import io
import logging
import time

import numpy as np
import polars as pl
import psutil
import pytest
import torch
from mlflow.tracking import MlflowClient

from fvcflow.deep import distributed
from fvcflow.deep.clips import ClipCache
from fvcflow.deep.loop import prepare_sources, validation_split
from fvcflow.errors import ConfigError, DeviceError
from fvcflow.models import get_model_spec
from fvcflow.models.torch_common import build_video_model, clip_spec
from fvcflow.training import run_training
from tests.ddp_ranks import MODEL, PARAMS, one_fit
from tests.deep_lake import deep_rows, resume_store, tiny_deep_config, video_cv, write_deep_lake

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return write_deep_lake(tmp_path_factory.mktemp("ddp") / "fvc-data", n_groups=6)


@pytest.fixture(scope="module")
def single(lake):
    """One process at the union batch of two ranks of batch 2: what every DDP path must give."""
    return video_cv(lake, get_model_spec(MODEL), _config(epochs=2, batch_size=4))


def _config(**deep):
    cfg = tiny_deep_config(MODEL, **deep)
    return cfg.model_copy(update={"params": PARAMS, "report": False, "register_best": False,
                                  "shortcut_check": False})


def test_two_ranks_read_disjoint_clips_and_step_as_one_process_on_their_union(lake, tmp_path):
    cfg = _config(epochs=1, batch_size=4)
    rows = deep_rows(lake, cfg).filter(~pl.col("is_test"))
    fit_rows, val = validation_split(rows, 0.3, 0)
    fit_rows = fit_rows.head(4)                          # 4 videos x 2 clips: one step of 4 clips per rank
    prepare_sources(lake, pl.concat([fit_rows, val]), clip_spec(MODEL, cfg.deep.clip[MODEL]),
                    ClipCache(lake.cache_dir("clips")))
    address = f"tcp://127.0.0.1:{distributed.free_port()}"
    cpu = torch.device("cpu")
    ranks = distributed.start_ranks(one_fit, [cpu, cpu], address, 60,
                                    (str(lake.root), cfg, fit_rows, val, str(tmp_path)))
    try:
        ctx = distributed.join(0, 2, cpu, address, 60)
        try:
            one_fit(ctx, str(lake.root), cfg, fit_rows, val, str(tmp_path))
        finally:
            distributed.leave()
    finally:
        ranks.stop()
    assert ranks.failure() is None
    single = cfg.model_copy(update={"deep": cfg.deep.model_copy(update={"batch_size": 8})})
    one_fit(None, str(lake.root), single, fit_rows, val, str(tmp_path))
    r0, r1, one = (torch.load(tmp_path / f"{n}.pt", weights_only=True) for n in (0, 1, "single"))
    a, b = set(r0["seen"].tolist()), set(r1["seen"].tolist())
    assert len(a) == len(b) == 4 and not a & b and a | b == set(range(8))     # disjoint, every clip
    start = build_video_model(MODEL, seed=3, **PARAMS[MODEL]).state_dict()
    moved = 0
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), k                              # averaged: the same step
        # as one process's: AdamW's first step is lr * g / (|g| + eps), so a gradient within float
        # rounding of 0 may move by a fraction of lr (1e-3); an unaveraged or wrong step moves by ~lr
        torch.testing.assert_close(v, one["state"][k], rtol=0, atol=5e-5)
        moved += int(not torch.allclose(v, start[k]))
    assert moved > 0                                                        # and a step was taken
    assert float(r0["loss"]) == pytest.approx(float(one["loss"]), rel=1e-5)  # the loss of every clip


def test_a_ddp_model_is_one_mlflow_run_with_one_process_predictions(lake, single):
    cfg = _config(epochs=2, batch_size=2, ddp=True)
    summary = run_training(lake, cfg)
    (res,) = summary.results
    client = MlflowClient(lake.mlflow_uri)
    exp = client.get_experiment_by_name(cfg.experiment)
    runs = client.search_runs([exp.experiment_id],
                              f"tags.`fvc.model` = '{MODEL}' and tags.`fvc.role` = 'model'")
    assert [r.info.run_id for r in runs] == [res.run_id]
    assert runs[0].data.tags["fvc.ddp_world"] == "2" and runs[0].data.params["effective_batch"] == "4"
    got = pl.read_parquet(lake.predictions).filter(pl.col("model") == MODEL)
    joined = got.select("video_id", "split", pl.col("prob_fake").alias("ddp")).join(
        single.predictions.select("video_id", "split", "prob_fake"), on=["video_id", "split"])
    assert joined.height == single.predictions.height
    np.testing.assert_allclose(joined["ddp"], joined["prob_fake"], atol=1e-4)   # float sums in another order


def test_a_killed_rank_ends_the_run_with_one_line(lake, caplog):
    cfg = _config(epochs=100, patience=100, batch_size=2, ddp=True)
    me, killed = psutil.Process(), []
    others = {p.pid for p in me.children()}     # e.g. the session's Dask workers: not this run's ranks

    class KillRankOne(logging.Handler):         # once rank 0 has trained an epoch with rank 1
        def emit(self, record):
            if killed or " epoch 0: " not in record.getMessage():
                return
            for child in me.children():
                if child.pid not in others and "spawn_main" in " ".join(child.cmdline()):
                    child.kill()                                    # SIGKILL, as kill -9
                    killed.append(child)

    handler = KillRankOne()
    logging.getLogger("fvcflow.deep").addHandler(handler)
    began = time.monotonic()
    try:
        with caplog.at_level(logging.INFO, logger="fvcflow.deep"), pytest.raises(DeviceError) as err:
            video_cv(lake, get_model_spec(MODEL), cfg)
    finally:
        logging.getLogger("fvcflow.deep").removeHandler(handler)
    assert len(killed) == 1 and time.monotonic() - began < 60         # not the group's timeout (600 s)
    assert str(err.value).startswith(f"{MODEL}: DDP stopped: rank 1 died (killed by signal 9)")
    assert "\n" not in str(err.value)
    assert not killed[0].is_running() or killed[0].status() == psutil.STATUS_ZOMBIE


def test_ddp_settings_name_what_is_wrong():
    assert distributed.world_devices("cpu", None, 3, 0) == [0, 1, 2]
    with pytest.raises(ConfigError, match="DDP needs at least 2 ranks, got 1"):
        distributed.world_devices("cuda", [1], None, 4)
    assert distributed.backend_for("cuda:1") == "nccl" and distributed.backend_for("cpu") == "gloo"


# -- a group started by a launcher (torchrun; srun reads the same way through config.launch_env) -----
def _toml(lake, tmp_path, experiment: str) -> str:
    path = tmp_path / "fvc.toml"
    path.write_text(f"""home = "{lake.root}"
[train]
folds = 2
test_size = 0.2
reuse_splits = true
report = false
register_best = false
shortcut_check = false
experiment = "{experiment}"
models = "{MODEL}"
[train.deep]
epochs = 2
patience = 2
batch_size = 2
workers = 0
device = "cpu"
lr = 1e-3
[train.deep.clip.{MODEL}]
frames = 4
clips = 2
size = 32
[train.params.{MODEL}]
dropout = 0.0
widths = [8, 8, 8]
""")
    return str(path)


@pytest.mark.slow
def test_torchrun_two_ranks_train_one_mlflow_run_as_one_process(lake, single, tmp_path):
    """``torchrun --standalone --nproc-per-node 2 -m fvcflow train --launcher torchrun``: each rank
    joins the launcher's gloo group from its variables, rank 0 trains and writes, rank 1 follows;
    the result is one process's at the union batch (2 x 2), as the spawned DDP path's."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "fvcflow", "--home", str(lake.root), "train", "--launcher", "torchrun",
           "--config", _toml(lake, tmp_path, "torchrun")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("FVC_HOME", None)                  # `make test` exports one; this run's is the lake's
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(lake.mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("torchrun").experiment_id],
                              f"tags.`fvc.model` = '{MODEL}' and tags.`fvc.role` = 'model'")
    assert len(runs) == 1                                                   # rank 0 alone wrote
    tags, params = runs[0].data.tags, runs[0].data.params
    assert tags["fvc.ddp_world"] == "2" and tags["fvc.launcher"] == "torchrun"
    assert params["effective_batch"] == "4" and params["precision"] == "fp32"
    got = pl.read_parquet(lake.predictions).filter(pl.col("model") == MODEL)
    joined = got.select("video_id", "split", pl.col("prob_fake").alias("ddp")).join(
        single.predictions.select("video_id", "split", "prob_fake"), on=["video_id", "split"])
    assert joined.height == single.predictions.height
    np.testing.assert_allclose(joined["ddp"], joined["prob_fake"], atol=1e-4)   # float sums in another order


def test_inconsistent_launcher_variables_are_one_line(lake, tmp_path, monkeypatch, capsys):
    from fvcflow.cli import main as fvc
    from fvcflow.config import launch_env

    for var in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")                                   # WORLD_SIZE without RANK
    assert fvc(["train", "--launcher", "torchrun", "--config", _toml(lake, tmp_path, "bad")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: train.deep.launcher = torchrun: RANK, LOCAL_RANK, the master address "
                          "(MASTER_ADDR or the node list), the master port (MASTER_PORT or SLURM_JOB_ID) "
                          "not set (set: WORLD_SIZE): run it under torchrun")
    assert err.count("\n") == 1
    with pytest.raises(ConfigError, match=r"inconsistent RANK=2, WORLD_SIZE=2, LOCAL_RANK=0"):
        launch_env("torchrun", {"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "h",
                                "MASTER_PORT": "1"})
    slurm = launch_env("slurm", {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
                                 "SLURM_JOB_NODELIST": "gpu-a[003-006],gpu-b1", "SLURM_JOB_ID": "77"})
    assert (slurm.rank, slurm.world, slurm.local_rank, slurm.address) == (5, 8, 1, "tcp://gpu-a003:15077")
    assert launch_env("none", {"RANK": "0"}) is None


@pytest.mark.slow
def test_a_killed_ddp_model_resumes_with_every_rank_s_own_random_state(lake, caplog):
    """With dropout, each rank draws its own masks: rank 0 keeps every rank's RNG state in the epoch
    checkpoint and each rank continues from its own, so the resumed model equals the uninterrupted
    one (gloo sums two ranks in a fixed order: equal up to float rounding, 1e-6)."""
    spec = get_model_spec(MODEL)
    cfg = _config(epochs=3, patience=3, batch_size=2, ddp=True).model_copy(
        update={"params": {MODEL: {**PARAMS[MODEL], "dropout": 0.5}}})
    whole = video_cv(lake, spec, cfg)                                       # uninterrupted, no resume cache
    store = resume_store(lake, spec, cfg)
    store.clear()
    me, killed = psutil.Process(), []
    others = {p.pid for p in me.children()}     # e.g. the session's Dask workers: not this run's ranks

    class KillRankOne(logging.Handler):         # after fold0's epoch 1: epoch 0 is kept, epoch 1 not
        def emit(self, record):
            if killed or "fold0 epoch 1: " not in record.getMessage():
                return
            for child in me.children():
                if child.pid not in others and "spawn_main" in " ".join(child.cmdline()):
                    child.kill()
                    killed.append(child)

    handler = KillRankOne()
    logging.getLogger("fvcflow.deep").addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger="fvcflow.deep"), \
                pytest.raises(DeviceError, match="rank 1 died"):
            video_cv(lake, spec, cfg, resume=True)
    finally:
        logging.getLogger("fvcflow.deep").removeHandler(handler)
    assert killed and store.names() == ["fold0.epoch"]
    kept = torch.load(io.BytesIO(store.load_bytes("fold0.epoch")), weights_only=True)
    assert len(kept["rng_ranks"]) == 2 and not torch.equal(kept["rng_ranks"][0]["torch"],
                                                           kept["rng_ranks"][1]["torch"])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fvcflow.deep"):
        again = video_cv(lake, spec, cfg, resume=True)
    assert any("fold0: resumed at epoch 1" in r.getMessage() for r in caplog.records)
    assert [h["val_loss"] for h in again.fold_history[0]] == pytest.approx(
        [h["val_loss"] for h in whole.fold_history[0]], abs=1e-6)
    joined = again.predictions.join(whole.predictions, on=["video_id", "split"], suffix="_whole")
    assert joined.height == whole.predictions.height
    np.testing.assert_allclose(joined["prob_fake"], joined["prob_fake_whole"], rtol=0, atol=1e-6)
    store.clear()
