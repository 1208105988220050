"""``fvc verify [--stages augment,scale] [--workers N] [--dask-address ADDR]``.

Reads every video the stages wrote, in parallel on the Dask engine, and compares it with the
content hash recorded when it was written (:mod:`fvcflow.stages.verify`); the manifests' files
are checked by their checksums. A damaged video is removed and named (the next ``fvc run`` makes
it again); exit 1 when anything was damaged, 0 when all is sound.
"""

from __future__ import annotations

import argparse

from fvcflow import progress
from fvcflow.cli import add_verbose, load_settings, logs
from fvcflow.cli.display import Display
from fvcflow.errors import FvcError
from fvcflow.stages.specs import SPECS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "verify", help="check every video the stages wrote against its recorded content hash",
        description="Hash every video the video stages wrote (in parallel on the Dask engine) and compare "
                    "it with the hash recorded at write time; damaged ones are removed and named, so that "
                    "the next run makes them again. Runs plan by size and modification time only.")
    p.add_argument("--stages", help=f"comma-separated subset of {','.join(SPECS)} (default: all)")
    p.add_argument("--workers", type=int, help="Dask worker processes (default: cores)")
    p.add_argument("--dask-address", help="use an existing Dask scheduler, tcp://host:port")
    add_verbose(p)
    p.set_defaults(func=run)


def stages_of(text: str | None) -> list[str]:
    stages = [s.strip() for s in (text or "").split(",") if s.strip()] or list(SPECS)
    unknown = [s for s in stages if s not in SPECS]
    if unknown:
        raise FvcError(f"--stages: unknown stage(s) {', '.join(unknown)}; "
                       f"the video stages are {', '.join(SPECS)}")
    return stages


def run(args: argparse.Namespace) -> int:
    from fvcflow.stages.verify import verify

    over: dict = {}
    if args.workers is not None:
        over["workers"] = args.workers
    if args.dask_address:
        over["dask_address"] = args.dask_address
    settings = load_settings(args, over) if over else args.settings
    stages = stages_of(args.stages)
    if settings.dask_address:
        from fvcflow.engine import check_scheduler

        check_scheduler(settings.dask_address)
    verbose = getattr(args, "verbose", False)
    log_file = logs.prepare(settings.home, "verify", verbose=verbose)
    display = Display(interactive=False) if verbose else Display()
    logs.route(log_file, verbose=verbose, show=display.note)
    with display, progress.listening(display):
        report = verify(settings, stages)
    print(report.format())
    return 0 if report.ok else 1
