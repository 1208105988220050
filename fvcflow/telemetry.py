"""Prefect's usage analytics are off in every fvcflow entry point (``fvc``, ``deployments/serve.py``,
the flows, ``make demo``): no anonymous usage data is sent and no notice about it is printed.

Prefect reads these variables when it is imported (the client's ``DO_NOT_TRACK``) and when a server
starts (``PREFECT_SERVER_ANALYTICS_ENABLED``); a value the user set explicitly is kept.
"""

from __future__ import annotations

import os

ANALYTICS_OFF = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def analytics_off() -> None:
    """Set the variables that turn Prefect's analytics off, unless the user has set them."""
    for name, value in ANALYTICS_OFF.items():
        os.environ.setdefault(name, value)


#: what the processes the Prefect layer starts inherit (Prefect's flow-run subprocesses started by
#: ``python -m prefect.engine``, its server, the Dask workers): Python never puts their working
#: directory first on sys.path, so that a run from a checkout of the repository cannot import the
#: top-level ``kernels/`` folder as Hugging Face's ``kernels`` (README, "The repository root never
#: comes first on sys.path"); a value the user set explicitly is kept
SAFE_PATH = {"PYTHONSAFEPATH": "1"}


def safe_path_for_children() -> None:
    """Set :data:`SAFE_PATH` for the child processes of this one, unless the user has set it."""
    for name, value in SAFE_PATH.items():
        os.environ.setdefault(name, value)
