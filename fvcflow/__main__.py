"""``fvc`` and ``python -m fvcflow``: the command line's entry point.

The one module under fvcflow/ that may import the Prefect layer (``fvcflow.flows``). It does so
plainly, when a command that starts flows (``fvc run``, ``fvc serve``) asks for it, after it has
pointed Prefect's own state at the work dir; the library's commands receive the layer from it
and never import it themselves. Nothing imports this module (``tests/test_layers.py``).
"""

from __future__ import annotations

import os
import sys

from fvcflow.cli import main as cli_main
from fvcflow.config import Settings
from fvcflow.telemetry import analytics_off


def flow_layer(settings: Settings):
    """``fvcflow.flows`` for a run on ``settings``: Prefect's state (``PREFECT_HOME``) under the
    work dir unless the user points it elsewhere, its server on 127.0.0.1, analytics off."""
    settings.lake().prefect_home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(settings.lake().prefect_home))
    os.environ.setdefault("PREFECT_SERVER_API_HOST", "127.0.0.1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")  # slow, busy machines
    analytics_off()
    import fvcflow.flows.deployments
    import fvcflow.flows.local

    return fvcflow.flows


def main(argv: list[str] | None = None) -> int:
    return cli_main(argv, flows=flow_layer)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
