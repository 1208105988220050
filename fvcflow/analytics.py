"""DuckDB over the lake: a view per Parquet table and per MLflow table, plus ready queries.

The MLflow SQLite store is read with Python's ``sqlite3`` into Arrow and registered (DuckDB's
sqlite extension would need a download); the snapshot is taken when :func:`connect` is called.

>>> con = connect(Lake.at("fvc-data"))                       # doctest: +SKIP
>>> con.sql(QUERIES["leaderboard"]).pl()                      # doctest: +SKIP
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa

from fvcflow.errors import FvcError
from fvcflow.schema import NOT_FEATURES, ORIGINAL, SCAN_COLUMNS, SCANS_VIEW, STAGE_TABLES, VIEWS
from fvcflow.store import FAILURE_SCHEMA, Lake

_MLFLOW_TABLES = ("experiments", "runs", "latest_metrics", "params", "tags", "registered_models",
                  "model_versions", "model_version_tags")

_MLFLOW_VIEWS = {
    "mlflow_runs": """
        SELECT r.run_uuid AS run_id, r.name AS run_name, e.name AS experiment, r.status,
               make_timestamp(r.start_time * 1000) AS start_time,
               make_timestamp(r.end_time * 1000) AS end_time,
               max(t.value) FILTER (WHERE t.key = 'mlflow.parentRunId') AS parent_run_id,
               max(t.value) FILTER (WHERE t.key = 'fvc.model') AS model,
               max(t.value) FILTER (WHERE t.key = 'fvc.role') AS role,
               max(t.value) FILTER (WHERE t.key = 'fvc.feature_set') AS feature_set,
               max(t.value) FILTER (WHERE t.key = 'fvc.fold') AS fold
        FROM _mlflow_runs r JOIN _mlflow_experiments e USING (experiment_id)
        LEFT JOIN _mlflow_tags t USING (run_uuid)
        WHERE r.lifecycle_stage = 'active' GROUP BY ALL""",
    "mlflow_metrics": """
        SELECT run_uuid AS run_id, key, CASE WHEN is_nan = 1 THEN 'NaN'::DOUBLE ELSE value END AS value, step
        FROM _mlflow_latest_metrics""",
    "mlflow_params": "SELECT run_uuid AS run_id, key, value FROM _mlflow_params",
    "mlflow_model_versions": """
        SELECT v.name, v.version, v.run_id, v.source, v.current_stage,
               make_timestamp(v.creation_time * 1000) AS created,
               max(t.value) FILTER (WHERE t.key = 'fvc.model') AS model
        FROM _mlflow_model_versions v LEFT JOIN _mlflow_model_version_tags t USING (name, version)
        GROUP BY ALL""",
}

_LEADERBOARD_METRICS = ("oof_roc_auc", "oof_roc_auc_lo", "oof_roc_auc_hi", "cv_roc_auc_mean",
                        "cv_roc_auc_std", "oof_eer", "oof_eer_lo", "oof_eer_hi", "oof_average_precision",
                        "oof_average_precision_lo", "oof_average_precision_hi",
                        "test_roc_auc", "test_roc_auc_lo", "test_roc_auc_hi", "test_eer", "test_eer_lo",
                        "test_eer_hi", "test_accuracy", "fit_seconds")

#: ready queries for ``fvc sql --query NAME``
QUERIES: dict[str, str] = {
    "leaderboard": f"""
        WITH latest AS (
            SELECT run_id, model, feature_set, start_time,
                   row_number() OVER (PARTITION BY model ORDER BY start_time DESC) AS rk
            FROM mlflow_runs WHERE role = 'model')
        SELECT l.model, l.feature_set,
               {", ".join(f"max(m.value) FILTER (WHERE m.key = '{k}') AS {k}" for k in _LEADERBOARD_METRICS)},
               l.start_time
        FROM latest l JOIN mlflow_metrics m USING (run_id) WHERE l.rk = 1
        GROUP BY ALL ORDER BY oof_roc_auc DESC NULLS LAST""",
    "feature_auc": """
        WITH ranked AS (
            SELECT feature, label,
                   rank() OVER (PARTITION BY feature ORDER BY value)
                   + (count(*) OVER (PARTITION BY feature, value) - 1) / 2.0 AS r
            FROM feature_values),
        counts AS (
            SELECT feature, sum(r) FILTER (WHERE label = 1) AS rank_sum,
                   count(*) FILTER (WHERE label = 1) AS n_fake, count(*) FILTER (WHERE label = 0) AS n_real
            FROM ranked GROUP BY feature)
        SELECT feature, (rank_sum - n_fake * (n_fake + 1) / 2.0) / (n_fake * n_real) AS auc,
               abs((rank_sum - n_fake * (n_fake + 1) / 2.0) / (n_fake * n_real) - 0.5) AS separation,
               n_real, n_fake
        FROM counts WHERE n_fake > 0 AND n_real > 0 ORDER BY separation DESC, feature""",
    "class_balance": """
        WITH v AS (SELECT *, CAST(width AS VARCHAR) || 'x' || CAST(height AS VARCHAR) AS resolution
                   FROM videos)
        SELECT 'source' AS dimension, CAST(source AS VARCHAR) AS value,
               count(*) FILTER (WHERE label = 0) AS real,
               count(*) FILTER (WHERE label = 1) AS fake, count(*) FILTER (WHERE label IS NULL) AS excluded,
               count(*) AS total FROM v GROUP BY ALL
        UNION ALL
        SELECT 'codec', CAST(codec AS VARCHAR), count(*) FILTER (WHERE label = 0),
               count(*) FILTER (WHERE label = 1),
               count(*) FILTER (WHERE label IS NULL), count(*) FROM v GROUP BY ALL
        UNION ALL
        SELECT 'resolution', resolution, count(*) FILTER (WHERE label = 0), count(*) FILTER (WHERE label = 1),
               count(*) FILTER (WHERE label IS NULL), count(*) FROM v GROUP BY ALL
        ORDER BY dimension, total DESC, value""",
    # the example path and reason come from one failure (the first by path), never mixed from two
    "failures": """
        WITH grouped AS (
            SELECT stage, error_type, count(*) AS n, min({'path': path, 'reason': reason}) AS example
            FROM failures GROUP BY ALL)
        SELECT stage, error_type, n, example.reason AS example_reason, example.path AS example_path
        FROM grouped ORDER BY n DESC, stage, error_type""",
}

def compact_leaderboard(board: pl.DataFrame) -> pl.DataFrame:
    """What a user reads first of the ``leaderboard`` query: model, feature set, out-of-fold AUC with
    its 95% interval, test AUC, test equal error rate and fit seconds, numbers rounded;
    ``fvc sql --query leaderboard --wide`` prints every column.

    >>> board = pl.DataFrame({"model": ["xgb_s24"], "feature_set": ["s24"], "oof_roc_auc": [0.9123],
    ...     "oof_roc_auc_lo": [0.88], "oof_roc_auc_hi": [0.94], "test_roc_auc": [0.9], "test_eer": [0.1],
    ...     "fit_seconds": [1.234]})
    >>> compact_leaderboard(board).row(0)
    ('xgb_s24', 's24', '0.912 [0.880, 0.940]', 0.9, 0.1, 1.2)
    """
    def num(col: str) -> pl.Expr:
        return pl.col(col) if col in board.columns else pl.lit(None, dtype=pl.Float64)

    def fmt(expr: pl.Expr) -> pl.Expr:
        return expr.cast(pl.Float64).map_elements(lambda v: f"{v:.3f}", return_dtype=pl.String)

    auc = fmt(num("oof_roc_auc"))
    interval = pl.format("{} [{}, {}]", auc, fmt(num("oof_roc_auc_lo")), fmt(num("oof_roc_auc_hi")))
    return board.select(
        pl.col("model"), num("feature_set").alias("feature_set") if "feature_set" in board.columns
        else pl.lit(None, dtype=pl.String).alias("feature_set"),
        pl.when(num("oof_roc_auc_lo").is_not_null() & num("oof_roc_auc_hi").is_not_null())
          .then(interval).otherwise(auc).alias("oof_auc [95% CI]"),
        num("test_roc_auc").round(3).alias("test_auc"),
        num("test_eer").round(3).alias("test_eer"),
        num("fit_seconds").round(1).alias("fit_s"))


#: the views of the feature tables (those feature_values reads)
_FEATURE_VIEWS = tuple(view for view, key in VIEWS.items()
                       if key in (STAGE_TABLES["features"], STAGE_TABLES["scaled_features"]))
#: ready query -> (the views it needs, what to run to make them)
NEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    "leaderboard": (("mlflow_runs", "mlflow_metrics"),
                    "nothing has been trained yet: run `fvc train` (or `fvc run`) first"),
    "feature_auc": (("feature_values",),
                    "no labelled features yet: run `fvc run --stages ingest,features` first"),
    "class_balance": (("videos",), "no videos indexed yet: run `fvc ingest KIND ROOT` (or `fvc run`) first"),
}



def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _sqlite_tables(db: Path) -> dict[str, pa.Table]:
    """The MLflow store's tables as Arrow (read-only connection)."""
    out = {}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as src:
        present = {r[0] for r in src.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for name in _MLFLOW_TABLES:
            if name in present:
                cur = src.execute(f"SELECT * FROM {name}")
                cols = [d[0] for d in cur.description]
                rows = cur.fetchall()
                out[name] = pa.table({c: pa.array([r[i] for r in rows]) for i, c in enumerate(cols)})
    return out


def _feature_values_view(con: duckdb.DuckDBPyConnection, views: set[str]) -> None:
    """``feature_values`` (video_id, label, feature, value): every numeric feature of the labelled
    originals, long format, NULL, NaN and infinities left out (``isfinite``: DuckDB 2.0.1's
    ``isnan`` answers false for NaN read from Parquet)."""
    parts = []
    for view in _FEATURE_VIEWS:
        if view not in views:
            continue
        rel = con.sql(f"SELECT * FROM {view} LIMIT 0")
        numeric = [name for name, typ in zip(rel.columns, rel.types)
                   if name not in NOT_FEATURES and str(typ) in ("DOUBLE", "FLOAT", "BIGINT", "INTEGER",
                                                                 "BOOLEAN")]
        if numeric and {"label", "variant"} <= set(rel.columns):
            for c in numeric:
                parts.append(f"SELECT video_id, label, '{c}' AS feature, CAST(\"{c}\" AS DOUBLE) AS value "
                             f"FROM {view} WHERE variant = '{ORIGINAL}' AND label IS NOT NULL AND \"{c}\" IS "
                             f"NOT NULL AND isfinite(CAST(\"{c}\" AS DOUBLE))")
    if parts:
        con.execute("CREATE VIEW feature_values AS " + " UNION ALL ".join(parts))


def _scans_view(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    """``scans``: every scan's rows (``<home>/scans/<name>/scores.parquet``, ``scan`` names it);
    empty, with its columns, before the first scan."""
    files = sorted(p for p in (lake.root / "scans").glob("*/scores.parquet")
                   if not p.parent.name.startswith("_"))
    if files:
        cols = ", ".join(f'CAST("{c}" AS {t}) AS "{c}"' for c, t in SCAN_COLUMNS.items())
        con.execute(f"CREATE VIEW {SCANS_VIEW} AS SELECT {cols} FROM read_parquet("
                    f"[{', '.join(_quote(p) for p in files)}], union_by_name = true)")
    else:
        con.execute(f"CREATE VIEW {SCANS_VIEW} AS SELECT "
                    + ", ".join(f'NULL::{t} AS "{c}"' for c, t in SCAN_COLUMNS.items()) + " WHERE false")


def connect(lake: Lake) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with views over every table the lake has.

    Parquet: one per table of the layout with a view (``fvcflow.schema.VIEWS``: videos, failures,
    augmented, features, ...); derived: ``DERIVED_VIEWS`` (feature_values); MLflow:
    ``MLFLOW_VIEWS`` (mlflow_runs, ...): every name is ``fvcflow.schema.ALL_VIEWS``.

    >>> con = connect(Lake.at("fvc-data"))                                   # doctest: +SKIP
    >>> con.sql("SELECT label, count(*) FROM videos GROUP BY label").pl()     # doctest: +SKIP
    """
    con = duckdb.connect()
    views = set()
    for name, key in VIEWS.items():
        path = lake.path(key)
        if path.exists():
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet({_quote(path)})")
            views.add(name)
    if "failures" not in views:   # nothing failed (yet): the view exists, empty
        con.execute("CREATE VIEW failures AS SELECT " + ", ".join(
            f"NULL::{'DOUBLE' if c == 'recorded_at' else 'VARCHAR'} AS {c}" for c in FAILURE_SCHEMA)
            + " WHERE false")
    _feature_values_view(con, views)
    _scans_view(con, lake)
    if lake.mlflow_db.exists():
        tables = _sqlite_tables(lake.mlflow_db)
        for name, table in tables.items():
            con.register(f"_mlflow_{name}", table)
        for view, sql in _MLFLOW_VIEWS.items():
            needed = [t for t in _MLFLOW_TABLES if f"_mlflow_{t}" in sql]
            if all(t in tables for t in needed):
                con.execute(f"CREATE VIEW {view} AS {sql}")
    return con


def tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Names of the views a user can query (internal ``_mlflow_*`` tables left out)."""
    names = con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
    return sorted(r[0] for r in names if not r[0].startswith("_"))


def query(lake: Lake, sql: str | None = None, *, name: str | None = None) -> pl.DataFrame:
    """Run ``sql`` (or the ready query ``name``) on :func:`connect`'s views; a polars DataFrame.

    Bad SQL or a table the lake does not have yet is an :class:`FvcError` with DuckDB's first line.

    >>> query(Lake.at("fvc-data"), name="class_balance")     # doctest: +SKIP
    """
    if (sql is None) == (name is None):
        raise FvcError("give either SQL or a ready query name (--query)")
    if name is not None:
        if name not in QUERIES:
            raise FvcError(f"unknown ready query {name!r}; known: {', '.join(QUERIES)}")
        sql = QUERIES[name]
    con = connect(lake)
    if name in NEEDS:
        needed, advice = NEEDS[name]
        if not set(needed) <= set(tables(con)):
            raise FvcError(f"{advice} (work dir {lake.root})")
    try:
        rel = con.sql(sql)
        return rel.pl() if rel is not None else pl.DataFrame()
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0]
        if isinstance(exc, duckdb.CatalogException):
            first += f" (views of {lake.root}: {', '.join(tables(con)) or 'none'})"
        raise FvcError(first) from None
