"""Intervals, the calibrated detector, the shortcut check and the model card of a run (issue 12).

Every expected value is recomputed here from the run's own files (predictions.parquet, the index,
the calibrated predictions), never typed in.
"""

import html
import math
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from fvcflow.analytics import query
from fvcflow.errors import FvcError
from fvcflow.store import read_parquet, write_parquet_atomic
from fvcflow.training import TrainConfig, make_splits
from fvcflow.training.evidence.assess import _ci, resolution_band
from fvcflow.training.evidence.calibration import (
    expected_calibration_error,
    fit_calibration,
    reliability_table,
)
from fvcflow.training.evidence.shortcut import shortcut_check
from fvcflow.training.fitting.bootstrap import grouped_bootstrap, prediction_intervals
from tests.feature_tables import synthetic_corpus, write_lake
from tests.training_runs import shared_trained_lake


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return shared_trained_lake(tmp_path_factory)


def test_leaderboard_intervals_come_from_the_predictions(trained):
    lake, _, summary = trained
    pred = read_parquet(lake.predictions)
    board = summary.leaderboard
    for r in summary.results:
        mine = pred.filter(pl.col("model") == r.name)
        want = prediction_intervals(mine)            # same seed: the same groups are drawn
        row = board.filter(pl.col("model") == r.name).row(0, named=True)
        for split in ("oof", "test"):
            for m in ("roc_auc", "average_precision", "eer"):
                lo, hi = row[f"{split}_{m}_lo"], row[f"{split}_{m}_hi"]
                assert lo == pytest.approx(want[f"{split}_{m}_lo"])
                assert hi == pytest.approx(want[f"{split}_{m}_hi"])
                assert lo <= row[f"{split}_{m}"] <= hi
        assert row["oof_roc_auc_hi"] > row["oof_roc_auc_lo"]       # ~80 videos: never a point


def test_intervals_in_sql_leaderboard_and_mlflow(trained):
    lake, _, summary = trained
    board = query(lake, name="leaderboard")
    client = MlflowClient(lake.mlflow_uri)
    for r in summary.results:
        row = board.filter(pl.col("model") == r.name).row(0, named=True)
        metrics = client.get_run(r.run_id).data.metrics
        for key in ("oof_roc_auc_lo", "oof_roc_auc_hi", "test_roc_auc_lo", "test_eer_hi"):
            assert row[key] == pytest.approx(r.intervals[key]) == pytest.approx(metrics[key])


def test_paired_comparison_of_best_and_runner_up(trained):
    lake, _, summary = trained
    ev = summary.evidence
    first, second = summary.leaderboard["model"][:2].to_list()
    oof = [c for c in ev.comparisons if c.split == "oof"][0]
    assert (oof.a, oof.b) == (first, second)
    pred = read_parquet(lake.predictions).filter(pl.col("split") == "oof")
    a = pred.filter(pl.col("model") == first).sort("video_id")
    b = pred.filter(pl.col("model") == second).sort("video_id")
    diff = roc_auc_score(a["label"], a["prob_fake"]) - roc_auc_score(b["label"], b["prob_fake"])
    assert oof.diff == pytest.approx(diff)
    assert oof.lo <= oof.diff <= oof.hi and 0 <= oof.p_value <= 1
    page = summary.report_path.read_text()
    assert "Best model vs runner-up" in page and f"difference {oof.diff:+.3f}" in page


def test_registered_detector_is_calibrated_on_grouped_out_of_fold_predictions(trained):
    lake, cfg, summary = trained
    cal = summary.evidence.calibration
    best = next(r for r in summary.results if r.name == summary.best)
    assert cal.model == best.name and cal.method in ("sigmoid", "isotonic")
    assert cal.log_loss[cal.method] == min(cal.log_loss["sigmoid"], cal.log_loss["isotonic"])
    again = fit_calibration(best.predictions, folds=cfg.folds, seed=cfg.seed)   # deterministic
    assert again.ece == pytest.approx(cal.ece) and again.method == cal.method
    saved = read_parquet(lake.stage5 / "calibrated_predictions.parquet").filter(pl.col("split") == "oof")
    y = saved["label"]
    assert cal.ece["oof_after"] == pytest.approx(expected_calibration_error(y, saved["prob_calibrated"]))
    assert cal.ece["oof_before"] == pytest.approx(expected_calibration_error(y, saved["prob_fake"]))
    page = summary.report_path.read_text()
    assert "report/reliability.png" in page
    assert (lake.stage5 / "report" / "reliability.png").stat().st_size > 1000
    assert f"{cal.ece['oof_after']:.3f}" in page


def test_calibration_lowers_the_ece_of_a_miscalibrated_score():
    rng = np.random.default_rng(0)
    n_groups = 400
    g = np.repeat([f"g{i:03d}" for i in range(n_groups)], 2)
    q = np.repeat(rng.uniform(0.02, 0.98, n_groups), 2)          # the true P(fake) of each pair
    y = (rng.random(2 * n_groups) < q).astype(int)
    over = q ** 3 / (q ** 3 + (1 - q) ** 3)                      # overconfident, same ranking
    split = np.where(np.repeat(np.arange(n_groups) % 5 == 0, 2), "test", "oof")
    pred = pl.DataFrame({"video_id": [f"v{i:04d}" for i in range(2 * n_groups)], "group_id": g, "label": y,
                         "split": split, "prob_fake": over})
    cal = fit_calibration(pred, folds=5, seed=0)
    assert cal.ece["oof_after"] < 0.6 * cal.ece["oof_before"]
    assert cal.ece["test_after"] < cal.ece["test_before"]
    assert cal.log_loss[cal.method] < cal.log_loss["none"]
    oof = cal.predictions.filter(pl.col("split") == "oof")
    # monotone: the calibrated ranking is the raw one (up to isotonic ties)
    assert roc_auc_score(oof["label"], oof["prob_calibrated"]) == pytest.approx(
        roc_auc_score(oof["label"], oof["prob_fake"]), abs=0.02)


def test_ece_and_reliability_against_a_loop():
    rng = np.random.default_rng(1)
    p, y = rng.random(500), (rng.random(500) < 0.3).astype(int)
    total = 0.0
    for k in range(10):
        m = (p >= k / 10) & ((p < (k + 1) / 10) if k < 9 else (p <= 1))
        if m.any():
            total += m.sum() / 500 * abs(y[m].mean() - p[m].mean())
    assert expected_calibration_error(y, p) == pytest.approx(total)
    t = reliability_table(y, p)
    assert t["n"].sum() == 500 and np.all(np.diff(t["mean_prob"].to_numpy()) > 0)


def _facts(lake):
    splits = read_parquet(lake.splits).filter(pl.col("variant") == "original")
    return splits.join(read_parquet(lake.index).select("video_id", "codec", "width", "height", "source"),
                       on="video_id")


def test_model_card_and_report_hold_the_run_s_numbers(trained):
    lake, cfg, summary = trained
    ev = summary.evidence
    card = (lake.stage5 / "model_card.md").read_text()
    best = next(r for r in summary.results if r.name == summary.best)
    # metrics with intervals, from the result
    for split, key in (("out-of-fold", "oof"), ("test", "test")):
        m = best.oof_metrics if key == "oof" else best.test_metrics
        ci = _ci(m["roc_auc"], best.intervals[f"{key}_roc_auc_lo"], best.intervals[f"{key}_roc_auc_hi"])
        assert f"| {split} | roc_auc | {ci} |" in card
    # per-subgroup rows: recomputed from predictions.parquet and the index
    pred = read_parquet(lake.predictions).filter(pl.col("model") == best.name)
    j = pred.join(_facts(lake).select("video_id", "codec"), on="video_id")
    for (split, codec), part in j.group_by("split", "codec"):
        iv = grouped_bootstrap(part["label"].to_numpy(), part["prob_fake"].to_numpy(),
                               part["group_id"].to_numpy(), metrics=("roc_auc",), seed=cfg.seed)["roc_auc"]
        assert iv.estimate == pytest.approx(roc_auc_score(part["label"], part["prob_fake"]))
        n_real, n_fake = int((part["label"] == 0).sum()), int((part["label"] == 1).sum())
        ci = _ci(iv.estimate, iv.lo, iv.hi)
        row = f"| codec | {codec} | {split} | {part.height} | {n_real} | {n_fake} | {ci} |"
        assert row in card, row
    # data counts by resolution band, from the index
    f = _facts(lake)
    bands = pl.Series([resolution_band(w, h) for w, h in zip(f["width"], f["height"])])
    for band in bands.unique().to_list():
        sel = f.filter(bands == band)
        real, fake = int((sel["label"] == 0).sum()), int((sel["label"] == 1).sum())
        assert f"| resolution | {band} | {real} | {fake} | {sel.height} |" in card
    assert "Trained without face crops" in card and "Codec and container cues can act as shortcuts" in card
    cue, lo, hi = ev.shortcut.auc("codec/container cues only")
    assert _ci(cue, lo, hi) in card
    # in MLflow: an artifact of the best run and the registered version's description
    client = MlflowClient(lake.mlflow_uri, lake.mlflow_uri)
    assert client.download_artifacts(best.run_id, "model_card.md")
    mv = client.get_model_version(summary.registered_name, summary.registered_version)
    assert mv.description == card
    assert "model_card.md" in summary.report_path.read_text()


def test_shortcut_check_values_come_from_its_predictions(trained):
    _, _, summary = trained
    sc = summary.evidence.shortcut
    oof = sc.predictions.filter(pl.col("split") == "oof")
    want = roc_auc_score(oof["label"], oof["prob_fake"])
    assert sc.auc("codec/container cues only")[0] == pytest.approx(want)
    assert "codec_bpp" in sc.columns and html.escape(sc.sentence()) in summary.report_path.read_text()


def test_shortcut_check_flags_a_corpus_separable_by_its_encoding(tmp_path):
    t = synthetic_corpus(30, n_aug=0, seed=3, signal=0.0)
    v = t["videos"]
    t["videos"] = v.with_columns(
        codec=pl.when(pl.col("label") == 1).then(pl.lit("vp9")).otherwise(pl.lit("h264")))
    lake = write_lake(tmp_path, t)
    cfg = TrainConfig(folds=3, inner_folds=2, models="logreg_s2", grids={"logreg_s2": {"C": [1.0]}})
    splits = make_splits(lake, cfg)
    chance = pl.DataFrame({"video_id": ["a", "b", "c", "d"], "group_id": ["1", "1", "2", "2"],
                           "label": [0, 1, 0, 1], "split": "oof", "prob_fake": [0.5, 0.4, 0.6, 0.5]})
    best = SimpleNamespace(name="logreg_s2", kind="tabular", oof_metrics={"roc_auc": 0.5}, predictions=chance)
    sc = shortcut_check(lake, [best], cfg, splits)
    assert sc.auc("codec/container cues only")[0] > 0.95 and sc.at_risk
    assert "The encoding alone separates this corpus" in sc.sentence()
    assert "cue_codec=vp9" in sc.columns
    assert math.isfinite(sc.auc("full features")[0])
    write_parquet_atomic(t["videos"].with_columns(codec=pl.lit("h264")), lake.index)
    calm = shortcut_check(lake, [best], cfg, splits)
    assert calm.auc("codec/container cues only")[0] < 0.8 and "cue_codec=vp9" not in calm.columns


def test_calibration_needs_two_groups_of_each_class():
    pred = pl.DataFrame({"video_id": ["a", "b", "c"], "group_id": ["g1", "g1", "g2"], "label": [0, 1, 0],
                         "split": "oof", "prob_fake": [0.2, 0.7, 0.4]})
    with pytest.raises(FvcError, match="detector calibration: a class occurs in fewer than 2 groups"):
        fit_calibration(pred)
