"""DuckDB views over the lake and the MLflow store, the ready queries, and ``fvc sql``."""

import re

import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from fvcflow.analytics import QUERIES, connect, query, tables
from fvcflow.cli import main as fvc
from fvcflow.errors import FvcError
from fvcflow.schema import ALL_VIEWS
from fvcflow.store import FAILURE_SCHEMA, Lake, failure_row, read_parquet, write_parquet_atomic
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
    assert not {"scaled", "faces"} & names                         # no stage3 or faces table in this lake
    assert names == set(ALL_VIEWS) - {"scaled", "faces"}           # every view is named by the schema
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


def test_cli_leaderboard_is_compact_and_wide_on_request(trained, capsys):
    """Six columns a user reads first (the interval beside the AUC, no start times), one line a model;
    ``--wide`` every column."""
    lake, _, summary = trained
    assert fvc(["--home", str(lake.root), "sql", "--query", "leaderboard"]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    header = next(ln for ln in lines if "model" in ln and "feature_set" in ln)
    assert [h for h in re.split(r"[\s│┆|]+", header) if h] == [
        "model", "feature_set", "oof_auc", "[95%", "CI]", "test_auc", "test_eer", "fit_s"]
    assert "start_time" not in out and "cv_roc_auc_std" not in out
    for r in summary.results:
        row = next(ln for ln in lines if re.search(rf"\b{r.name}\b", ln))
        lo, hi = r.intervals["oof_roc_auc_lo"], r.intervals["oof_roc_auc_hi"]
        assert f"{r.oof_metrics['roc_auc']:.3f} [{lo:.3f}, {hi:.3f}]" in row, row
        assert len(row) <= 120
    assert out.rstrip().endswith(f"({len(summary.results)} rows)")
    assert lines[0].count("┬") == 5                                 # six columns
    assert fvc(["--home", str(lake.root), "sql", "--query", "leaderboard", "--wide"]) == 0
    wide = capsys.readouterr().out
    assert wide.splitlines()[0].count("┬") == query(lake, name="leaderboard").width - 1
    assert fvc(["--home", str(lake.root), "sql", "--query", "leaderboard", "--csv"]) == 0   # CSV: all
    header = capsys.readouterr().out.splitlines()[0].split(",")
    assert "start_time" in header and "cv_roc_auc_std" in header and len(header) > 20


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
    with pytest.raises(FvcError, match="nothing has been trained yet"):
        query(lake, name="leaderboard")


def test_failures_query_pairs_each_reason_with_its_own_file(tmp_path):
    """Two failures of one kind: the example path and reason are one failure's (issue 16, item 1)."""
    lake = Lake.at(tmp_path / "fvc-data")
    lake.failures.parent.mkdir(parents=True)
    write_parquet_atomic(pl.DataFrame([
        failure_row("ingest", "/corpus/trunc.mp4", "truncated or corrupt (moov atom not found)",
                    error_type="VideoError"),
        failure_row("ingest", "/corpus/zero.mp4", "a file without audio or video", error_type="VideoError"),
    ], schema=FAILURE_SCHEMA), lake.failures)
    got = query(lake, name="failures").to_dicts()
    assert len(got) == 1 and got[0]["n"] == 2
    pairs = {r["path"]: r["reason"] for r in read_parquet(lake.failures).to_dicts()}
    assert pairs[got[0]["example_path"]] == got[0]["example_reason"]


def test_ready_queries_on_an_empty_work_dir_say_what_to_run(tmp_path, capsys):
    """Nothing trained, nothing ingested: one line saying what to run, no Catalog Error (item 13)."""
    home = tmp_path / "fvc-data"
    for name, advice in [("leaderboard", "nothing has been trained yet: run `fvc train`"),
                         ("feature_auc", "fvc run --stages ingest,features"),
                         ("class_balance", "fvc ingest")]:
        assert fvc(["--home", str(home), "sql", "--query", name]) == 2, name
        err = capsys.readouterr().err
        assert advice in err and "Catalog Error" not in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1
    assert fvc(["--home", str(home), "sql", "--query", "failures", "--csv"]) == 0   # nothing failed
    assert capsys.readouterr().out.splitlines() == ["stage,error_type,n,example_reason,example_path"]
