"""Where the fixed cost of a cached ``fvc run`` goes: process start, imports, the temporary Prefect
server, the Dask cluster, the stages' own time.

    .venv/bin/python -m benchmarks.fixed_cost [--videos 200]

Each part is measured on its own, in fresh processes, best of 2, side by side in one run:
interpreter start (``python -c pass``); importing the CLI (``fvcflow.cli``, what every ``fvc``
command pays); importing the Prefect layer ``fvc run`` loads (``fvcflow.flows.local``), and what
the training flow adds (imported only by a run that trains); the
temporary Prefect server's start and stop (``TemporaryServer``); a local Dask cluster's start and
stop (``engine.dask_cluster``, 2 workers); and the whole ``fvc run --stages features`` on a corpus
of ``--videos`` tiny videos whose stage 2 is cached, with the stage's own time from its summary line.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.dfdc_scale import corpus


def best_of(cmd: list[str], n: int = 2, env: dict | None = None) -> tuple[float, str]:
    times, out = [], ""
    for _ in range(n):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"{cmd} failed: {proc.stderr[-2000:]}")
        out = proc.stdout + proc.stderr
    return min(times), out


SERVER = """
import sys, time, tempfile
from pathlib import Path
from fvcflow.flows.local import TemporaryServer
t0 = time.perf_counter()
s = TemporaryServer(Path(tempfile.mkdtemp()))
s.start(timeout=180)
t1 = time.perf_counter()
s.stop()
print(f"{t1 - t0:.3f} {time.perf_counter() - t1:.3f}")
"""

CLUSTER = """
import time
from fvcflow.config import Settings
from fvcflow.engine import dask_cluster
t0 = time.perf_counter()
with dask_cluster(Settings(workers=2)) as address:
    t1 = time.perf_counter()
print(f"{t1 - t0:.3f} {time.perf_counter() - t1:.3f}")
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=200)
    args = ap.parse_args()
    py = sys.executable
    print(f"fixed cost: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    start, _ = best_of([py, "-c", "pass"])
    cli, _ = best_of([py, "-c", "import fvcflow.cli.run"])
    flows, _ = best_of([py, "-c", "import fvcflow.flows.local"])
    both, _ = best_of([py, "-c", "import fvcflow.flows.local, fvcflow.flows.train"])
    print(f"fixed cost: interpreter {start:.2f} s; + the CLI's imports {cli - start:.2f} s; "
          f"+ the Prefect layer's imports (fvc run) {flows - start:.2f} s; + the training flow's "
          f"(torch, MLflow, scikit-learn: now only when training) {both - flows:.2f} s more")
    _, out = best_of([py, "-c", SERVER], n=1)
    up, down = map(float, out.split()[-2:])
    print(f"fixed cost: temporary Prefect server start {up:.2f} s, stop {down:.2f} s")
    _, out = best_of([py, "-c", CLUSTER], n=1)
    up, down = map(float, out.split()[-2:])
    print(f"fixed cost: local Dask cluster (2 workers) start {up:.2f} s, stop {down:.2f} s")
    root = corpus(args.videos)
    home = Path(tempfile.mkdtemp(prefix="fvc-bench-fixed-"))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    cmd = [py, "-m", "fvcflow", "--home", str(home), "run", "--corpus", "folder", "--root", str(root),
           "--labels", str(root / "labels.csv"), "--stages", "ingest,features", "--workers", "2", "-v"]
    subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)     # computes stage 2
    cached = cmd[:cmd.index("--stages") + 1] + ["features"] + cmd[cmd.index("--stages") + 2:]
    whole, out = best_of(cached, env=env)
    own = re.search(r"features: done, .* in ([0-9.]+) s", out)
    print(f"fixed cost: cached `fvc run --stages features` over {args.videos} videos: {whole:.1f} s in all, "
          f"the stage's own {float(own.group(1)) if own else float('nan'):.2f} s")


if __name__ == "__main__":
    main()
