"""A killed training, injected for real: ``kill -9`` of a process training a model, mid
cross-validation. The rerun restores every completed fold (none refitted) and its predictions and
metrics equal an uninterrupted run's (CPU)."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from fvcflow.training import run_training
from tests.feature_tables import write_lake
from tests.reliability_media import assert_lake_sound
from tests.test_reliability_resume import wait_for
from tests.training_runs import small_config

FOLDS = 4


def slow_enough_config():
    """One booster, four folds, 120 trees: seconds of CV, so the kill lands mid-way."""
    return small_config(models="xgb_s24", folds=FOLDS, inner_folds=2, report=False,
                        params={"xgb_s24": {"n_estimators": 120}})


@pytest.mark.slow
def test_kill9_during_training_resumes_from_the_last_completed_fold_and_matches(tmp_path, caplog):
    cfg = slow_enough_config()
    reference_lake = write_lake(tmp_path / "reference", n_groups=30, n_aug=1, signal=2.0, seed=5)
    lake = write_lake(tmp_path / "killed", n_groups=30, n_aug=1, signal=2.0, seed=5)
    code = ("import sys\n"
            "from fvcflow.store import Lake\n"
            "from fvcflow.training import TrainConfig, run_training\n"
            "run_training(Lake.at(sys.argv[1]), TrainConfig.model_validate_json(sys.argv[2]))\n")
    resume = lake.stage5 / "resume" / "xgb_s24"
    folds_done = lambda: sorted(p.stem for p in resume.glob("*/fold*.bin"))  # noqa: E731
    proc = subprocess.Popen([sys.executable, "-c", code, str(lake.root), cfg.model_dump_json()],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: len(folds_done()) >= 1, 240, "a completed fold", proc, poll=0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    kept = folds_done()
    assert 1 <= len(kept) < FOLDS and not list(resume.glob("*/final.bin")), kept   # killed mid-CV

    with caplog.at_level(logging.INFO, logger="fvcflow.training"):
        resumed = run_training(lake, cfg)
    restored = [r.getMessage() for r in caplog.records if "restored from" in r.getMessage()]
    assert sorted(m.split(": ")[1].split()[0] for m in restored) == kept      # every kept fold, none refitted
    assert not resume.exists()                                                  # cleared once logged
    reference = run_training(reference_lake, cfg)

    got, want = resumed.results[0], reference.results[0]
    assert got.fold_metrics == want.fold_metrics
    assert got.oof_metrics == want.oof_metrics and got.test_metrics == want.test_metrics
    assert_frame_equal(pl.read_parquet(lake.predictions).sort("video_id", "split"),
                       pl.read_parquet(reference_lake.predictions).sort("video_id", "split"))
    assert_lake_sound(lake.root)
