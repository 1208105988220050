"""Serve every fvcflow deployment (``fvc/full``, ``fvc/demo``, one per stage) from this process.

    PREFECT_API_URL=http://127.0.0.1:4200/api python deployments/serve.py

then ``prefect deployment run fvc/full`` from any shell. ``fvc serve`` does the same.
"""

from fvcflow.flows.deployments import serve_all

if __name__ == "__main__":
    serve_all()
