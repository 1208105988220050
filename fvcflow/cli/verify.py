"""``fvc verify [--stages augment,scale] [--workers N] [--dask-address ADDR]``.

Reads every video the stages wrote, in parallel on the Dask engine, and compares it with the
content hash recorded when it was written (:mod:`fvcflow.stages.verify`); the manifests' files
are checked by their checksums. A damaged video is removed and named (the next ``fvc run`` makes
it again); exit 1 when anything was damaged, 0 when all is sound.
"""

from __future__ import annotations

import argparse

from fvcflow.cli import add_verbose
from fvcflow.cli.options import add_engine, engine_settings, live
from fvcflow.errors import FvcError
from fvcflow.stages.specs import SPECS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "verify", help="check every video the stages wrote against its recorded content hash",
        description="Hash every video the video stages wrote (in parallel on the Dask engine) and compare "
                    "it with the hash recorded at write time; damaged ones are removed and named, so that "
                    "the next run makes them again. Runs plan by size and modification time only.")
    p.add_argument("--stages", help=f"comma-separated subset of {','.join(SPECS)} (default: all)")
    add_engine(p)
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

    stages = stages_of(args.stages)
    settings = engine_settings(args)
    with live(settings, "verify", args):
        report = verify(settings, stages)
    print(report.format())
    return 0 if report.ok else 1
