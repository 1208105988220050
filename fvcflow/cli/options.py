"""Options and set-up shared by the commands that score or read videos on the Dask engine.

- :func:`add_model`: ``--model`` (``fvc predict``, ``fvc scan``, ``fvc app``), one help text;
- :func:`engine_settings`: ``--workers`` / ``--dask-address`` applied to the settings, and the
  scheduler checked before anything starts (``fvc scan``, ``fvc verify``);
- :func:`live`: the log file and the live progress display of a command (``fvc scan``, ``fvc verify``).
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Iterator

from fvcflow.config import REGISTERED_NAME, Settings


def add_model(p: argparse.ArgumentParser) -> None:
    """``--model``: the detector that scores, by registry name, alias or MLflow URI."""
    p.add_argument("--model", default=None,
                   help="registered model name (latest version), NAME@champion (the best of the latest "
                        "training), or an MLflow URI (models:/NAME/VERSION, models:/NAME@ALIAS, "
                        f"runs:/ID/model); default the setting train.registered_name ({REGISTERED_NAME})")


def add_engine(p: argparse.ArgumentParser) -> None:
    """``--workers`` and ``--dask-address``."""
    p.add_argument("--workers", type=int, default=None, help="Dask worker processes (default: cores)")
    p.add_argument("--dask-address", default=None, help="use an existing Dask scheduler, tcp://host:port")


def engine_settings(args: argparse.Namespace) -> Settings:
    """The command's settings with ``--workers`` / ``--dask-address`` applied; a user error (one
    line) when the scheduler named does not answer."""
    from fvcflow.cli import load_settings

    over = {k: v for k, v in {"workers": args.workers, "dask_address": args.dask_address}.items()
            if v is not None and v != ""}
    settings = load_settings(args, over) if over else args.settings
    if settings.dask_address:
        from fvcflow.engine import check_scheduler

        check_scheduler(settings.dask_address)
    return settings


@contextlib.contextmanager
def live(settings: Settings, command: str, args: argparse.Namespace) -> Iterator[Path]:
    """The command's log file (yielded) and, while the block runs, the live progress display
    (plain lines with ``-v``, when the libraries' log records go to the terminal too)."""
    from fvcflow import progress
    from fvcflow.cli import logs
    from fvcflow.cli.display import Display

    verbose = getattr(args, "verbose", False)
    log_file = logs.prepare(settings.home, command, verbose=verbose)
    display = Display(interactive=False) if verbose else Display()
    logs.route(log_file, verbose=verbose, show=display.note)
    with display, progress.listening(display):
        yield log_file
