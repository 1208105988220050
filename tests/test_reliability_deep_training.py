"""A killed deep training, injected for real: ``kill -9`` of a process training a torch video model
mid-fold. The rerun restores every finished fit, continues the fit under way from its last
finished epoch, and ends with the metrics and predictions of an uninterrupted run, bit for bit (CPU).
"""

from __future__ import annotations

import io
import logging
import signal
import subprocess
import sys

import polars as pl
import pytest
import torch
from polars.testing import assert_frame_equal

from fvcflow.deep.clips import ClipCache
from fvcflow.deep.loop import Trainer, validation_split
from fvcflow.models import get_model_spec
from fvcflow.models.torch_common import clip_spec
from fvcflow.resume import FoldCache
from fvcflow.store import read_checked_bytes
from tests.deep_lake import deep_rows, resume_store, tiny_deep_config, video_cv, write_deep_lake
from tests.test_reliability_resume import wait_for

pytestmark = pytest.mark.usefixtures("torch_one_thread")

MODEL = "naive_3dcnn"           # the smallest registered deep model; its dropout draws from torch's RNG


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return write_deep_lake(tmp_path_factory.mktemp("deep-resume") / "fvc-data")


def _losses(history):
    return [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in history]


def test_loaders_never_move_the_global_rng_that_dropout_draws_from(lake, tmp_path):
    """Else a resumed epoch would draw other dropout masks: a loader's first iteration (persistent
    workers) or every iteration (in process) draws a base seed."""
    cfg = tiny_deep_config(MODEL)
    rows = deep_rows(lake, cfg).head(4)
    trainer = Trainer(get_model_spec(MODEL), clip_spec(MODEL, cfg.deep.clip[MODEL]), cfg.deep,
                      ClipCache(tmp_path / "clips"), params={}, weights=None, seed=0,
                      device=torch.device("cpu"))
    loader = trainer._loader(rows, train=True, seed=3)
    before = torch.get_rng_state()
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        assert sum(len(v) for _, _, v in loader) == 4 * loader.dataset.spec.clips
    assert torch.equal(torch.get_rng_state(), before)


class Interrupted(Exception):
    """Stands for the process dying right after an epoch checkpoint was written."""


def test_an_interrupted_fit_resumes_at_its_last_epoch_with_the_same_weights(lake, tmp_path, monkeypatch,
                                                                          caplog):
    cfg = tiny_deep_config(MODEL, epochs=3, patience=3)
    spec = get_model_spec(MODEL)
    trainer = Trainer(spec, clip_spec(MODEL, cfg.deep.clip[MODEL]), cfg.deep, ClipCache(tmp_path / "clips"),
                      params={}, weights=None, seed=cfg.seed, device=torch.device("cpu"))
    rows = deep_rows(lake, cfg).filter(~pl.col("is_test"))
    fit_rows, val_rows = validation_split(rows, cfg.deep.val_fraction, 7)

    def fit(resume, name):
        workdir = tmp_path / name
        workdir.mkdir()
        return trainer.fit(fit_rows, val_rows, seed=7, workdir=workdir, tag="fold0", resume=resume)

    reference = fit(None, "reference")                               # uninterrupted, no cache
    want = torch.load(reference.checkpoint, weights_only=True)

    store = FoldCache(tmp_path / "resume")
    real_save = FoldCache.save_bytes
    saved = []

    def save_then_die(self, name, data):
        real_save(self, name, data)
        saved.append(name)
        if len(saved) == 2:                                          # after epoch 1 of 0, 1, 2
            raise Interrupted(name)

    monkeypatch.setattr(FoldCache, "save_bytes", save_then_die)
    with pytest.raises(Interrupted):
        fit(store, "killed")
    monkeypatch.setattr(FoldCache, "save_bytes", real_save)
    assert saved == ["fold0.epoch", "fold0.epoch"] and store.names() == ["fold0.epoch"]
    kept = torch.load(io.BytesIO(read_checked_bytes(store.root / "fold0.epoch.bin")), weights_only=True)
    assert kept["epoch"] == 1 and len(kept["history"]) == 2

    caplog.clear()                  # the fits above may have logged (an earlier test set INFO)
    with caplog.at_level(logging.INFO, logger="fvcflow.deep"):
        resumed = fit(store, "resumed")
    assert f"{MODEL} fold0: resumed at epoch 2 from the resume cache" in caplog.messages
    epochs_run = [m for m in caplog.messages if " epoch " in m and "train loss" in m]
    assert len(epochs_run) == 1                                       # only epoch 2 was trained again
    got = torch.load(resumed.checkpoint, weights_only=True)
    assert got["best_epoch"] == want["best_epoch"] and got["val_loss"] == want["val_loss"]
    assert _losses(got["history"]) == _losses(want["history"])
    for name, tensor in reference.module.state_dict().items():        # bit-identical weights
        assert torch.equal(resumed.module.state_dict()[name], tensor), name
    assert want.keys() == got.keys() and all(torch.equal(got["state_dict"][k], v)
                                             for k, v in want["state_dict"].items())

    # a damaged epoch checkpoint is reported and ignored: the fit starts again and still matches
    blob = store.root / "fold0.epoch.bin"
    blob.write_bytes(blob.read_bytes()[:-5] + b"zzzzz")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        again = fit(store, "damaged")
    assert any("damaged resume entry" in m for m in caplog.messages)
    assert not any("resumed at" in m for m in caplog.messages)
    assert all(torch.equal(again.module.state_dict()[k], v) for k, v in reference.module.state_dict().items())
    assert store.names() == ["fold0.epoch"]        # fit() keeps its epochs; _fit_or_restore drops them


@pytest.mark.slow
def test_kill9_during_a_deep_training_resumes_from_its_last_epoch_and_matches(lake, monkeypatch, caplog):
    cfg = tiny_deep_config(MODEL, epochs=4, patience=4)
    spec = get_model_spec(MODEL)
    store = resume_store(lake, spec, cfg)
    store.clear()
    code = ("import sys, torch\n"
            "torch.set_num_threads(1)\n"
            "from fvcflow.deep.loop import cross_validate_video\n"
            "from fvcflow.models import get_model_spec\n"
            "from fvcflow.store import Lake\n"
            "from fvcflow.training import TrainConfig\n"
            "from fvcflow.training.fitting.splits import load_splits\n"
            "lake, cfg = Lake.at(sys.argv[1]), TrainConfig.model_validate_json(sys.argv[2])\n"
            "cross_validate_video(lake, get_model_spec(sys.argv[3]), cfg, load_splits(lake, cfg),\n"
            "                     resume=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(lake.root), cfg.model_dump_json(), MODEL],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:       # fold 0 finished and fold 1 under way: kill it between two epochs of fold 1
        wait_for(lambda: {"fold0", "fold1.epoch"} <= set(store.names()), 240, "an epoch of fold 1", proc,
                 poll=0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    names = store.names()
    finished = [n for n in names if not n.endswith(".epoch")]
    epochs = {n[:-len(".epoch")]: torch.load(io.BytesIO(read_checked_bytes(store.root / f"{n}.bin")),
                                             weights_only=True)["epoch"]
              for n in names if n.endswith(".epoch")}
    assert finished == ["fold0"] and list(epochs) == ["fold1"], names       # killed mid-fit of fold 1

    fitted = []
    real_fit = Trainer.fit
    monkeypatch.setattr(Trainer, "fit",
                        lambda self, *a, **k: fitted.append(k["tag"]) or real_fit(self, *a, **k))
    with caplog.at_level(logging.INFO, logger="fvcflow.deep"):
        resumed = video_cv(lake, spec, cfg, resume=True)
    assert f"{MODEL} fold0: restored from the resume cache" in caplog.messages
    assert f"{MODEL} fold1: resumed at epoch {epochs['fold1'] + 1} from the resume cache" in caplog.messages
    assert fitted == ["fold1", "final"]                                  # the finished fold was not refitted
    assert store.names() == ["final", "fold0", "fold1"]                  # epoch checkpoints dropped
    store.clear()
    monkeypatch.setattr(Trainer, "fit", real_fit)
    reference = video_cv(lake, spec, cfg)                   # uninterrupted, nothing cached

    assert resumed.fold_metrics == reference.fold_metrics
    assert [p["best_epoch"] for p in resumed.fold_params] == [p["best_epoch"] for p in reference.fold_params]
    assert [_losses(h) for h in resumed.fold_history] == [_losses(h) for h in reference.fold_history]
    assert_frame_equal(resumed.predictions.sort("video_id", "split"),
                       reference.predictions.sort("video_id", "split"))
