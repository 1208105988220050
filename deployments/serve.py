"""Serve every fvcflow deployment (``fvc/full``, ``fvc/demo``, one per stage) from this process.

    PREFECT_API_URL=http://127.0.0.1:4200/api python deployments/serve.py

then ``prefect deployment run fvc/full`` from any shell. ``fvc serve`` does the same.
"""

import sys

from fvcflow.errors import FvcError
from fvcflow.flows.deployments import serve_all

if __name__ == "__main__":
    try:
        serve_all()
    except FvcError as exc:     # a user mistake: one line, no traceback (as ``fvc``)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
