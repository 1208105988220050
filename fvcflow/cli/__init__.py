"""``fvc``: the command line. Each subcommand lives in its own module with ``register(sub)``.

Every command takes ``--config FILE`` and ``--home DIR`` (before or after its name); the
settings are loaded and validated before the command starts (``args.settings``), so a bad
settings file or variable stops every command the same way. A user mistake
(:class:`fvcflow.errors.FvcError`) prints one line, ``error: ...``, and exits 2; no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, Callable

from fvcflow.config import Settings
from fvcflow.errors import FvcError

#: modules under fvcflow.cli, each with ``register(subparsers)``; the order is the help order
COMMANDS = ("ingest", "demo", "run", "verify", "serve", "train", "explore", "predict", "scan", "app",
            "faces", "sql", "weights")


def add_verbose(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``-v``: library logs (Prefect, Dask, MLflow) on the terminal too, plain progress lines."""
    p.add_argument("-v", "--verbose", action="store_true", default=False if top else argparse.SUPPRESS,
                   help="show the libraries' log records too (they always go to <home>/logs/)")


def add_common(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``--config`` and ``--home``: on the top-level parser and on every command (a command's
    value wins; unset there, it leaves the top-level one alone)."""
    default = None if top else argparse.SUPPRESS
    p.add_argument("--config", default=default, help="TOML settings file (default $FVC_CONFIG)")
    p.add_argument("--home", default=default, help="work directory (default $FVC_HOME or ./fvc-data)")


def load_settings(args: argparse.Namespace, overrides: dict | None = None) -> Settings:
    """The command's settings: defaults, ``--config``/$FVC_CONFIG, FVC_* variables, ``--home``,
    then ``overrides``; validated, with an absolute work dir."""
    over = dict(overrides or {})
    if args.home:
        over["home"] = args.home
    return Settings.load(args.config, overrides=over).resolved()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fvc", description="fvcflow: deepfake-video detection pipeline")
    add_common(parser, top=True)
    add_verbose(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"fvcflow.cli.{name}").register(sub)
    for command in sub.choices.values():
        add_common(command)
    return parser


def flow_layer(args: argparse.Namespace, settings: Settings):
    """The Prefect layer (``fvcflow.flows``) for a command that starts flows, as the entry point
    (``fvcflow.__main__``) hands it over: the library never imports it."""
    if args.flows is None:
        raise FvcError(f"fvc {args.command} starts Prefect flows: run it through the entry point "
                       f"(`fvc {args.command}` after `make install`, or `python -m fvcflow {args.command}`)")
    return args.flows(settings)


def main(argv: list[str] | None = None, *, flows: Callable[[Settings], Any] | None = None) -> int:
    """Parse ``argv``, load and validate the settings, run the command. ``flows`` loads the
    Prefect layer for a work dir (given by the entry point, ``fvcflow.__main__``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.flows = flows
    try:
        args.settings = load_settings(args)      # validated before any command does work
        return int(args.func(args) or 0)
    except FvcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished work is kept, rerun to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
