"""``fvc``: the command line. Each subcommand lives in its own module with ``register(sub)``.

A user mistake (:class:`fvcflow.errors.FvcError`) prints one line, ``error: ...``, and exits 2;
no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from fvcflow.errors import FvcError

#: modules under fvcflow.cli, each with ``register(subparsers)``; the order is the help order
COMMANDS = ("ingest", "demo", "run", "serve", "train", "predict", "sql")


def add_verbose(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``-v``: library logs (Prefect, Dask, MLflow) on the terminal too, plain progress lines."""
    p.add_argument("-v", "--verbose", action="store_true", default=False if top else argparse.SUPPRESS,
                   help="show the libraries' log records too (they always go to <home>/logs/)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fvc", description="fvcflow: deepfake-video detection pipeline")
    parser.add_argument("--home", help="work directory (default $FVC_HOME or ./fvc-data)")
    add_verbose(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"fvcflow.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FvcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished work is kept, rerun to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
