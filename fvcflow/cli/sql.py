"""``fvc sql "SELECT ..."`` / ``fvc sql --query NAME``: DuckDB over the lake and the MLflow store."""

from __future__ import annotations

from fvcflow.schema import ALL_VIEWS


def register(sub) -> None:
    """Add the ``sql`` subcommand to the ``fvc`` parser."""
    p = sub.add_parser("sql", help="query the lake with DuckDB SQL",
                       description=f"Views: {', '.join(ALL_VIEWS)} (those that exist).")
    p.add_argument("sql", nargs="?", help="a SQL statement")
    p.add_argument("--query", "-q", metavar="NAME", help="a ready query (see --list)")
    p.add_argument("--list", action="store_true", help="list the ready queries and the views, then exit")
    p.add_argument("--max-rows", type=int, default=50, help="rows to print (default 50)")
    p.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    p.add_argument("--wide", action="store_true",
                   help="every column of a ready query (the leaderboard is compact by default)")
    p.set_defaults(func=run)


def run(args) -> int:
    import polars as pl

    from fvcflow.analytics import QUERIES, compact_leaderboard, connect, query, tables
    from fvcflow.errors import FvcError

    lake = args.settings.lake()
    if args.list:
        print("ready queries: " + ", ".join(QUERIES))
        print("views: " + (", ".join(tables(connect(lake))) or f"none (no tables under {lake.root})"))
        return 0
    if not args.sql and not args.query:
        raise FvcError("give a SQL statement or --query NAME (fvc sql --list shows them)")
    df = query(lake, args.sql if not args.query else None, name=args.query)
    if args.query == "leaderboard" and not args.wide and not args.csv:
        df = compact_leaderboard(df)
    if args.csv:
        print(df.write_csv(), end="")
        return 0
    with pl.Config(tbl_rows=args.max_rows, tbl_cols=-1, fmt_str_lengths=80, tbl_width_chars=250,
                   tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        print(df)
    print(f"({df.height} rows)")
    return 0
