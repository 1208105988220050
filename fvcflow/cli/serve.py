"""``fvc serve``: serve every deployment (``fvc/full``, ``fvc/demo``, one per stage)."""

from __future__ import annotations

import argparse

from fvcflow.cli import flow_layer
from fvcflow.cli.run import add_settings_arguments, settings_from_args


def _serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    flow_layer(args, settings).deployments.serve_all(settings)   # the Prefect layer, from the entry point
    return 0


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve the Prefect deployments (needs PREFECT_API_URL of a server)")
    add_settings_arguments(p)
    p.set_defaults(func=_serve)
