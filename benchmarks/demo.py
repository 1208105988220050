"""Where ``make demo``'s run spends its time: per-stage (and per-model) seconds of one ``fvc run``.

Runs what ``make demo`` runs after its install (the demo corpus, then every stage of the ``fvc``
flow with ``deployments/demo.toml``, or ``--config``) in a fresh temporary work dir (``--home``
to keep it), with a temporary Prefect server as ``fvc run`` starts one, and prints the seconds
of each part, read from the progress events the stages emit. Also prints how many of the
augmentation ops and op pairs the demo's copies cover (fewer copies must stay as diverse)::

    .venv/bin/python -m benchmarks.demo [--config deployments/demo.toml] [--home DIR] [--workers N]
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import tempfile
import time
from pathlib import Path

import polars as pl

from fvcflow import progress
from fvcflow.cli import logs
from fvcflow.config import Settings
from fvcflow.demo.corpus import make_demo_corpus
from fvcflow.stages.augment import SPATIAL_OPS, TEMPORAL_OPS

BUDGET_S = 300.0   # the target for the run: under 5 minutes on 2 cores


class Recorder:
    """A progress sink keeping each stage's and model's seconds."""

    def __init__(self):
        self.stages: list[tuple[str, int | None, float]] = []
        self.models: list[tuple[str, float, float | None]] = []
        self.train_started: float | None = None

    def __call__(self, event: str, f: dict) -> None:
        if event == "stage_end":
            self.stages.append((f["stage"], f["videos"], f["seconds"]))
        elif event == "ingest_end":
            self.stages.append(("ingest", f["indexed"], f["seconds"]))
        elif event == "train_start":
            self.train_started = time.perf_counter()
        elif event == "model_end":
            self.models.append((f["model"], f["seconds"], f["oof_roc_auc"]))
        elif event == "train_end" and self.train_started is not None:
            self.stages.append(("train", None, time.perf_counter() - self.train_started))


def coverage(lake) -> str:
    """Ops and op pairs among the augmented copies, of all possible."""
    aug = pl.read_parquet(lake.stage1)
    ops = [set(o.split(",")) if o else set() for o in aug["ops"].to_list()]
    every = list(SPATIAL_OPS) + list(TEMPORAL_OPS)
    seen = set().union(*ops)
    pairs = {p for s in ops for p in itertools.combinations(sorted(s), 2)}
    spatial_pairs = set(itertools.combinations(sorted(SPATIAL_OPS), 2))
    return (f"{aug.height} copies; ops covered {len(seen & set(every))}/{len(every)}; spatial op pairs "
            f"{len(pairs & spatial_pairs)}/{len(spatial_pairs)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="deployments/demo.toml")
    ap.add_argument("--home", default=None, help="work dir to use and keep (default: a temporary one)")
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="fvc-demo-bench-"))
    over = {"home": str(home), "corpus": {"kind": "demo"}}
    if args.workers:
        over["workers"] = args.workers
    settings = Settings.load(args.config, overrides=over).resolved()
    os.environ.pop("PREFECT_API_URL", None)      # a temporary server, as `fvc run` starts one
    settings.lake().prefect_home.mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_HOME"] = str(settings.lake().prefect_home)      # as `fvc run` keeps it
    os.environ.setdefault("PREFECT_SERVER_API_HOST", "127.0.0.1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    log_file = logs.prepare(settings.home, "bench-demo")
    t0 = time.perf_counter()
    corpus = make_demo_corpus(home / "demo-corpus")
    t_corpus = time.perf_counter() - t0
    import fvcflow.flows.local as local  # Prefect after its logging is routed (logs.prepare)

    logs.route(log_file)
    rec = Recorder()
    t1 = time.perf_counter()
    with progress.listening(rec):
        state = local.run_in_process(settings)
    t_run = time.perf_counter() - t1
    wall = time.perf_counter() - t0
    if not state.is_completed():
        raise SystemExit(f"the run ended {state.name}: {state.message}; log {log_file}")
    cores = os.cpu_count()
    print(f"make demo's run on {cores} cores (shared with other work while it ran), config {args.config}, "
          f"{settings.n_workers()} Dask workers, {settings.augment.copies} copies per video")
    print(f"  {'demo corpus':<18}{len(corpus.videos):>7} videos {t_corpus:8.1f} s   (built before the run)")
    for stage, videos, seconds in rec.stages:
        count = "" if videos is None else f"{videos:>7} videos"
        print(f"  {stage:<18}{count:>14} {seconds:8.1f} s")
    for model, seconds, auc in rec.models:
        auc_text = "n/a" if auc is None or auc != auc else f"{auc:.3f}"
        print(f"    {model:<22}{seconds:8.1f} s   out-of-fold AUC {auc_text}")
    accounted = sum(s for _, _, s in rec.stages)
    print(f"  {'flow overhead':<25} {t_run - accounted:8.1f} s   (Prefect server start and stop, "
          "Dask cluster, tasks)")
    print(f"  {'total':<25} {wall:8.1f} s   target < {BUDGET_S:.0f} s: "
          f"{'met' if wall < BUDGET_S else 'missed'}")
    print(f"  augmentation: {coverage(settings.lake())}")
    if not args.home:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
