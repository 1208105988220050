"""run_training end to end on a synthetic lake with a real SQLite MLflow store."""


import mlflow
import numpy as np
import polars as pl
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from fvcflow.cli import main as fvc
from fvcflow.errors import FvcError
from fvcflow.models import get_model_spec
from fvcflow.store import read_parquet
from fvcflow.training import TrainConfig, finish, make_splits, select_models, train_model
from fvcflow.training.fitting.cv import cross_validate
from fvcflow.training.fitting.data import load_features, train_table
from fvcflow.training.run import PREDICTION_COLUMNS
from tests.feature_tables import write_lake
from tests.training_runs import shared_trained_lake, small_config

FOLDS = 3


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    lake, cfg, summary = shared_trained_lake(tmp_path_factory)
    return lake, cfg, summary, lake.root


def test_predictions_cover_every_original_once(trained):
    lake, cfg, summary, _ = trained
    pred = read_parquet(lake.predictions)
    splits = read_parquet(lake.splits)
    assert pred.columns == PREDICTION_COLUMNS
    orig = splits.filter(pl.col("variant") == "original")
    train_ids = sorted(orig.filter(~pl.col("is_test"))["video_id"])
    test_ids = sorted(orig.filter(pl.col("is_test"))["video_id"])
    assert len(test_ids) > 0
    for r in summary.results:
        mine = pred.filter(pl.col("model") == r.name)
        assert sorted(mine.filter(pl.col("split") == "oof")["video_id"]) == train_ids
        assert sorted(mine.filter(pl.col("split") == "test")["video_id"]) == test_ids
        assert mine["feature_set"].unique().to_list() == [r.feature_set]
        # the fold of an OOF prediction is the fold the video was held out in
        j = mine.filter(pl.col("split") == "oof").join(splits, on="video_id", suffix="_s")
        assert (j["fold"] == j["fold_s"]).all()
    assert not pred["video_id"].str.contains("~aug").any()        # evaluation on originals only


def test_metrics_come_from_the_predictions(trained):
    lake, _, summary, _ = trained
    pred = read_parquet(lake.predictions)
    for r in summary.results:
        oof = pred.filter((pl.col("model") == r.name) & (pl.col("split") == "oof"))
        assert r.oof_metrics["roc_auc"] == pytest.approx(roc_auc_score(oof["label"], oof["prob_fake"]))
        per_fold = [roc_auc_score(f["label"], f["prob_fake"]) for f in oof.partition_by("fold")]
        assert r.cv_summary["roc_auc_mean"] == pytest.approx(np.mean(per_fold))
    board = summary.leaderboard
    assert board["oof_roc_auc"].to_list() == sorted(board["oof_roc_auc"].to_list(), reverse=True)
    assert summary.best == board["model"][0]
    assert board.filter(pl.col("model") == summary.best)["oof_roc_auc"][0] > 0.8    # the signal is found


def test_inner_oof_never_touches_the_outer_fold_or_test(trained):
    lake, _, summary, _ = trained
    splits = read_parquet(lake.splits)
    for r in summary.results:
        if r.kind == "stack":
            continue
        j = r.inner_oof.join(splits, on="video_id")
        assert j.height > 0 and not j["is_test"].any()
        assert (j["fold"] != j["outer_fold"]).all()
        assert set(j["variant"]) == {"original"}


def test_mlflow_parent_and_nested_runs(trained):
    lake, cfg, summary, root = trained
    assert not (root / "mlruns").exists() and lake.mlflow_db.exists() and lake.mlartifacts.exists()
    client = MlflowClient(lake.mlflow_uri)
    exp = client.get_experiment_by_name(cfg.experiment)
    runs = client.search_runs([exp.experiment_id], max_results=500)
    parents = {r.data.tags["fvc.model"]: r for r in runs if r.data.tags.get("fvc.role") == "model"}
    assert set(parents) == {r.name for r in summary.results}
    for res in summary.results:
        parent = parents[res.name]
        assert parent.info.run_id == res.run_id
        kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert sorted(int(k.data.tags["fvc.fold"]) for k in kids) == list(range(FOLDS))
        for k in kids:
            fold = int(k.data.tags["fvc.fold"])
            assert k.data.metrics["roc_auc"] == pytest.approx(res.fold_metrics[fold]["roc_auc"])
        assert parent.data.metrics["oof_roc_auc"] == pytest.approx(res.oof_metrics["roc_auc"])
        assert parent.data.metrics["test_roc_auc"] == pytest.approx(res.test_metrics["roc_auc"])
        assert parent.data.params["feature_set"] == res.feature_set
        arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
        assert {"roc.png", "pr.png", "confusion_oof.png", "confusion_test.png",
                "feature_importance.png"} <= arts


def test_best_model_registered_and_loadable(trained):
    lake, cfg, summary, _ = trained
    client = MlflowClient(lake.mlflow_uri, lake.mlflow_uri)
    versions = client.search_model_versions(f"name = '{cfg.registered_name}'")
    assert [str(v.version) for v in versions] == [summary.registered_version] == ["1"]
    assert versions[0].tags["fvc.model"] == summary.best
    best = next(r for r in summary.results if r.name == summary.best)
    mlflow.set_tracking_uri(lake.mlflow_uri)
    mlflow.set_registry_uri(lake.mlflow_uri)  # "models:/" resolves in the registry, not the tracking store
    loaded = mlflow.pyfunc.load_model(f"models:/{cfg.registered_name}/1")
    schema = loaded.metadata.get_input_schema()       # the features, or a video by path / base64
    assert schema.input_names() == [*best.columns, "path", "video_b64"]
    assert not any(c.required for c in schema.inputs)
    X = train_model_example(lake, best.columns)
    # the registered detector is the best model followed by its grouped out-of-fold calibration
    detector = summary.evidence.calibration.wrap(best.model)
    assert np.allclose(np.asarray(loaded.predict(X))[:, 1], detector.predict_proba(X)[:, 1])
    assert np.allclose(detector.raw_proba(X), best.model.predict_proba(X)[:, 1])
    assert versions[0].tags["fvc.calibration"] == summary.evidence.calibration.method


def train_model_example(lake, columns):
    feats = read_parquet(lake.stage2).join(read_parquet(lake.stage4).drop("group_id", "label", "source",
                                                                          "variant"),
                                           on="video_id", how="left")
    return feats.head(7).select(columns).to_pandas().astype("float64")


def test_finish_again_adds_a_version(trained, tmp_path):
    lake, cfg, summary, _ = trained
    card = lake.stage5 / "model_card.md"
    before = card.read_bytes()
    try:
        again = finish(lake, summary.results, cfg.model_copy(update={"report": False}))
        assert again.registered_version == "2"
        assert "version 2" in card.read_text()
    finally:   # the lake is shared with other modules (test_evidence reads version 1's card)
        card.write_bytes(before)


def test_report_and_markdown(trained):
    lake, _, summary, _ = trained
    html = summary.report_path.read_text()
    for img in ("roc_oof.png", "roc_test.png", "feature_separation.png", "distributions.png"):
        assert f"report/{img}" in html and (lake.stage5 / "report" / img).stat().st_size > 1000
    md = summary.markdown()
    for row in summary.leaderboard.iter_rows(named=True):
        assert f"| {row['model']} | {row['feature_set']} | {row['oof_roc_auc']:.3f} |" in md
    top = summary.top_features
    assert top["separation"].to_list() == sorted(top["separation"].to_list(), reverse=True)
    assert top["feature"][0] in {"noise_energy_mean", "noise_energy_max", "s4_noise_energy_mean",
                                 "s4_noise_energy_max", "dct_hf_ratio_mean", "s4_dct_hf_ratio_mean"}


def test_stack_needs_base_models_and_is_not_a_train_model_target(tmp_path):
    lake = write_lake(tmp_path, n_groups=12, n_aug=0)
    with pytest.raises(FvcError, match="train_stack"):
        train_model(lake, "stack_s24", TrainConfig())
    with pytest.raises(FvcError, match="no registered model matches"):
        select_models(lake, TrainConfig(models="nope*"))


def test_s24_models_skipped_without_stage4(tmp_path):
    lake = write_lake(tmp_path, n_groups=12, n_aug=0, stage4=False)
    names, skipped = select_models(lake, TrainConfig(models="logreg_*"))
    assert names == ["logreg_s2", "logreg_s2l", "logreg_s2lf"] and "stage 4" in skipped["logreg_s24"]
    make_splits(lake, TrainConfig(folds=3))
    with pytest.raises(FvcError, match="no stage 4 features"):
        train_model(lake, "logreg_s24", TrainConfig(folds=3))


def test_group_splits_do_not_leak_through_copies(tmp_path):
    # no signal at all, strong group effects, near-identical augmented copies: with row-wise folds
    # trees memorise the groups and score far above chance; the grouped splits must stay near it
    lake = write_lake(tmp_path, n_groups=30, per_group=(2, 3), n_aug=3, signal=0.0, seed=4)
    cfg = small_config(models="xgb_s24", params={"xgb_s24": {"n_estimators": 40}})
    splits = make_splits(lake, cfg)
    rng = np.random.default_rng(0)
    row_wise = splits.with_columns(
        fold=pl.when(pl.col("is_test")).then(None).otherwise(pl.Series(rng.integers(0, FOLDS,
                                                                                    splits.height))).cast(pl.Int32),
        group_id=pl.col("video_id"))
    auc = {}
    for name, table in (("grouped", splits), ("row_wise", row_wise)):
        t = train_table(load_features(lake, "s24"), table, "s24")
        oof = cross_validate(get_model_spec("xgb_s24"), t, cfg).predictions.filter(pl.col("split") == "oof")
        auc[name] = roc_auc_score(oof["label"], oof["prob_fake"])
    assert auc["grouped"] < 0.7 < 0.85 < auc["row_wise"], auc


def test_cli_train(tmp_path, capsys, monkeypatch):
    # MLflow's own "Downloading artifacts" bar (logging a pyfunc copies its artifacts back) is off
    # however the process was started: TQDM_DISABLE does not reach it once tqdm is imported
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    lake = write_lake(tmp_path / "home", n_groups=16, n_aug=1, signal=2.0)
    rc = fvc(["--home", str(lake.root), "train", "--models", "logreg_s2", "--folds", "3", "--no-register"])
    out, err = capsys.readouterr()
    assert rc == 0 and "| logreg_s2 | s2 |" in out
    assert "Downloading artifacts" not in out + err and "it/s]" not in err, err[-500:]
    assert read_parquet(lake.predictions)["model"].unique().to_list() == ["logreg_s2"]
    assert fvc(["train", "--list"]) == 0 and "catboost_s24" in capsys.readouterr().out
    assert fvc(["--home", str(lake.root), "train", "--folds", "1"]) == 2
    assert "train.folds" in capsys.readouterr().err


def test_a_stack_over_bases_of_different_feature_sets_reads_every_base_column(tmp_path):
    """A stack over an s2l and an s24 base (make demo trains both): its example and signature hold
    the columns of every base, so it is logged, registered and scores a row (it raised KeyError on
    the l32_ columns when it took the s24 table for its example)."""
    from fvcflow.training import run_training
    from fvcflow.training.fitting.data import feature_set_columns

    lake = write_lake(tmp_path, n_groups=16, n_aug=0, signal=2.0, seed=3)
    cfg = small_config(models="logreg_s2l,logreg_s24,stack_s24", grids={}, params={})
    summary = run_training(lake, cfg)
    stack = next(r for r in summary.results if r.name == "stack_s24")
    want = set(feature_set_columns("s2l")) | set(feature_set_columns("s24"))
    assert set(stack.columns) == want
    assert want <= set(stack.example.columns)
    p = stack.model.predict_proba(stack.example)[:, 1]
    assert np.isfinite(p).all() and ((0 <= p) & (p <= 1)).all()
