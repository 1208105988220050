"""DuckDB views over the lake and the MLflow store, the ready queries, and ``fvc sql``."""

import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from fvcflow.analytics import QUERIES, connect, query, tables
from fvcflow.cli import main as fvc
from fvcflow.errors import FvcError
from fvcflow.store import read_parquet
from tests.feature_tables import write_lake
from tests.training_runs import shared_trained_lake


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return shared_trained_lake(tmp_path_factory)


def test_views_over_every_table(trained):
    lake, _, _ = trained
    con = connect(lake)
    names = set(tables(con))
    assert {"videos", "failures", "augmented", "features", "scaled_features", "splits", "predictions",
            "feature_values", "mlflow_runs", "mlflow_metrics", "mlflow_params",
            "mlflow_model_versions"} <= names
    assert "scaled" not in names                                   # no stage3 table in this lake
    n = con.execute("SELECT count(*) FROM predictions").fetchone()[0]
    assert n == read_parquet(lake.predictions).height


def test_leaderboard_query_matches_the_run(trained):
    lake, _, summary = trained
    board = query(lake, name="leaderboard")
    assert sorted(board["model"]) == sorted(r.name for r in summary.results)
    for r in summary.results:
        row = board.filter(pl.col("model") == r.name)
        assert row["oof_roc_auc"][0] == pytest.approx(r.oof_metrics["roc_auc"])
        assert row["cv_roc_auc_mean"][0] == pytest.approx(r.cv_summary["roc_auc_mean"])
        assert row["feature_set"][0] == r.feature_set
    assert board["oof_roc_auc"].to_list() == sorted(board["oof_roc_auc"].to_list(), reverse=True)


def test_feature_auc_query_matches_scikit_learn(trained):
    lake, _, _ = trained
    got = query(lake, name="feature_auc")
    s4 = read_parquet(lake.stage4).select(pl.exclude("group_id", "label", "source", "variant"))
    feats = read_parquet(lake.stage2).join(s4, on="video_id", how="left")
    feats = feats.filter((pl.col("variant") == "original") & pl.col("label").is_not_null())
    checked = 0
    for row in got.iter_rows(named=True):
        part = feats.select(pl.col(row["feature"]).cast(pl.Float64), "label").drop_nulls().filter(
            pl.col(row["feature"]).is_not_nan())
        assert row["auc"] == pytest.approx(roc_auc_score(part["label"], part[row["feature"]]), abs=1e-12)
        checked += 1
    assert checked >= 100 and got["feature"][0] != "codec_fps"
    assert got["separation"].to_list() == sorted(got["separation"].to_list(), reverse=True)


def test_class_balance_query(trained):
    lake, _, _ = trained
    got = query(lake, name="class_balance")
    videos = read_parquet(lake.index)
    for dim, expr in (("source", pl.col("source")), ("codec", pl.col("codec")),
                      ("resolution", pl.format("{}x{}", "width", "height"))):
        want = videos.group_by(expr.alias("value")).agg(
            (pl.col("label") == 0).sum().alias("real"), (pl.col("label") == 1).sum().alias("fake"),
            pl.col("label").is_null().sum().alias("excluded"), pl.len().alias("total")).sort("value")
        mine = got.filter(pl.col("dimension") == dim).select("value", "real", "fake", "excluded",
                                                             "total").sort("value")
        assert mine.cast(want.schema).equals(want)


def test_failures_query(trained):
    lake, _, _ = trained
    got = query(lake, name="failures")
    want = read_parquet(lake.failures)
    assert got["n"].sum() == want.height
    assert set(got["stage"]) == set(want["stage"])


def test_every_ready_query_runs(trained):
    lake, _, _ = trained
    for name in QUERIES:
        assert query(lake, name=name).height > 0, name


def test_cli_sql_prints_a_table(trained, capsys):
    lake, _, _ = trained
    assert fvc(["--home", str(lake.root), "sql",
                "SELECT model, count(*) AS n FROM predictions GROUP BY model ORDER BY model"]) == 0
    out = capsys.readouterr().out
    pred = read_parquet(lake.predictions)
    for model, n in pred.group_by("model").len().iter_rows():
        assert model in out and str(n) in out
    assert fvc(["--home", str(lake.root), "sql", "--query", "failures", "--csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "stage,error_type,n,example_reason,example_path"


@pytest.mark.parametrize("args,message", [
    (["SELEC 1"], "Parser Error"),
    (["SELECT * FROM nope"], "views of"),
    (["--query", "nope"], "unknown ready query 'nope'"),
    ([], "give a SQL statement or --query"),
])
def test_cli_sql_errors_are_one_line(trained, capsys, args, message):
    lake, _, _ = trained
    assert fvc(["--home", str(lake.root), "sql", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_lake_without_mlflow_store(tmp_path):
    lake = write_lake(tmp_path, n_groups=6, n_aug=0)
    assert "mlflow_runs" not in tables(connect(lake))
    assert query(lake, name="class_balance")["total"].sum() > 0
    with pytest.raises(FvcError, match="mlflow_runs"):
        query(lake, name="leaderboard")

