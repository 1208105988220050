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
