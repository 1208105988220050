"""``fvc scan PATH... [--model NAME_OR_URI] [--name NAME]``: score a folder of videos on Dask.

Files, folders (recursively) and ``.txt``/``.csv`` lists of paths; every video is scored with the
registered detector (or ``--model``) on the Dask engine, with the live progress line. Results are
cached per (content, model, version): a rerun scores only what is new. Writes
``<home>/scans/<name>/scores.parquet`` and ``scan.html``; ``fvc sql`` sees them as ``scans``.
"""

from __future__ import annotations

import json

from fvcflow.cli import add_verbose
from fvcflow.cli.options import add_engine, add_model, engine_settings, live


def register(sub) -> None:
    """Add the ``scan`` subcommand to the ``fvc`` parser."""
    p = sub.add_parser("scan", help="score every video of folders or lists in parallel, with a triage page",
                       description="Score every video under PATH (files, folders searched recursively, "
                                   ".txt/.csv lists of paths) with the detector on the Dask engine. A "
                                   "file that cannot be scored is a row with its reason; the scan never "
                                   "stops for it. Rerunning scores only contents not scored yet by this "
                                   "model version.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="video files, folders or lists of paths")
    add_model(p)
    p.add_argument("--name", default=None, help="the scan's name (folder under <home>/scans; default "
                                                "scan-<date>-<time>)")
    p.add_argument("--threshold", type=float, default=None,
                   help="P(fake) at or above which the verdict is fake (default: the model's own, "
                        "chosen at training on its out-of-fold predictions; 0.5 when it has none)")
    p.add_argument("--overlays", choices=("fake", "all", "none"), default="fake",
                   help="which scored videos get the deviant-tile overlay (the frame where the local "
                        "features deviate most, and the top tiles' coordinates and robust z): those "
                        "with verdict fake (default), all, or none")
    p.add_argument("--json", action="store_true",
                   help="print the rows of scores.parquet as JSON (one object per file), not the summary")
    add_engine(p)
    add_verbose(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from fvcflow.scan.core import run_scan

    settings = engine_settings(args)
    with live(settings, "scan", args) as log_file:
        res = run_scan(settings, args.paths, model=args.model, name=args.name,
                       threshold=args.threshold, overlays=args.overlays)
    if args.json:
        rows = res.scores.to_dicts()
        for r in rows:
            for k in ("top_features", "top_tiles"):
                r[k] = json.loads(r[k]) if r[k] else None
        print(json.dumps(rows, indent=1))
        return 1 if res.failed else 0
    scored = res.scores.height - res.failed
    fakes = int((res.scores["verdict"] == "fake").sum())
    print(f"scan {res.name}: {res.scores.height} files, {scored} scored ({res.computed} computed, "
          f"{res.cached} from the cache), {res.failed} failed; {fakes} fake at P(fake) >= "
          f"{res.scores['threshold'][0] if res.scores.height else 0.5:g}")
    if res.skipped:
        print(f"{len(res.skipped)} files in the folders have no video suffix and were not scanned "
              f"(first: {res.skipped[0]}); name them on the command line to scan them")
    print(f"table: {res.table}\npage:  {res.page}\nquery: fvc sql \"SELECT * FROM scans WHERE scan = "
          f"'{res.name}' ORDER BY prob_fake DESC\"\nlog:   {log_file}")
    return 1 if res.failed else 0
