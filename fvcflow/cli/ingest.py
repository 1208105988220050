"""``fvc ingest {fvc,ffpp,celebdf,dfdc,folder} ROOT [--labels CSV] [--workers N]``.

The FVC archives' password comes from ``FVC_ZIP_PASSWORD`` (``Settings.zip_password``) or a
prompt; it is handed to the extractor as bytes and never printed, logged or stored.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from pathlib import Path

from fvcflow import progress
from fvcflow.cli import add_verbose, logs
from fvcflow.cli.display import Display
from fvcflow.config import Settings
from fvcflow.errors import FvcError
from fvcflow.ingest.archive import is_encrypted
from fvcflow.ingest.fvc import fvc_archives
from fvcflow.ingest.index import KINDS, ingest


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"--workers must be a positive integer, not {value!r}")
    return n


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "ingest", help="index a corpus (FVC archives, FaceForensics++, Celeb-DF, DFDC, a labelled folder)",
        description="Probe every video of a corpus and write index/videos.parquet and index/failures.parquet "
                    "in the work dir. FVC: ROOT holds FVC1-3.zip and Metadata.zip (password from "
                    "FVC_ZIP_PASSWORD or a prompt) or their extracted tree.")
    p.add_argument("kind", choices=KINDS, help="corpus layout")
    p.add_argument("root", type=Path, help="corpus folder (fvc: the archives' folder)")
    p.add_argument("--labels", type=Path, help="labels CSV path,label[,group] (folder corpora)")
    p.add_argument("--workers", type=_positive, help="probing processes (default: all cores)")
    p.add_argument("--dask-address", help="probe and hash on the workers of this Dask scheduler, tcp://host:port")
    p.add_argument("--resplit", action="store_true",
                   help="decide the test hold-out again (train.test_size, train.seed) for the videos "
                        "without a split of the corpus's own; stage 1 and 5 follow at the next run")
    add_verbose(p)
    p.set_defaults(func=run)


def _password(root: Path, settings: Settings) -> bytes | None:
    """The archives' password when any archive under ``root`` is encrypted, else ``None``."""
    if not root.is_dir() or not any(is_encrypted(a) for a in fvc_archives(root)):
        return None
    if settings.zip_password:
        return settings.password()
    if not sys.stdin.isatty():
        raise FvcError("the FVC archives are encrypted: set FVC_ZIP_PASSWORD (no terminal to prompt on)")
    return getpass.getpass("FVC archive password: ").encode()


def run(args: argparse.Namespace) -> int:
    if args.labels is not None and args.kind != "folder":
        raise FvcError(f"--labels applies to folder corpora only, not {args.kind}")
    if args.kind == "folder" and args.labels is None:
        raise FvcError("fvc ingest folder needs --labels CSV (path,label[,group], paths relative to ROOT)")
    if args.dask_address:
        from fvcflow.engine import check_scheduler

        check_scheduler(args.dask_address)       # one line when nobody answers, before any work
    lake = args.settings.lake()
    password = _password(args.root, args.settings) if args.kind == "fvc" else None
    verbose = getattr(args, "verbose", False)
    log_file = logs.prepare(lake.root, "ingest", verbose=verbose)
    display = Display(interactive=False) if verbose else Display()
    logs.route(log_file, verbose=verbose, show=display.note)
    say = logging.getLogger("fvcflow.ingest").info
    with display, progress.listening(display):
        summary = ingest(args.kind, args.root, lake, labels=args.labels, password=password,
                         workers=args.workers, progress=say, test_size=args.settings.train.test_size,
                         seed=args.settings.train.seed, resplit=args.resplit,
                         dask_address=args.dask_address)
    print(summary.format())
    return 0
