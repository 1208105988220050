"""Training-stage timing on a demo-sized feature table: per-model fit and tracking seconds, total.

Uses the real lake's tables when ``$FVC_HOME`` holds stage 2 features (copied into a temporary
work dir, so the real MLflow store and registry are untouched); otherwise a synthetic table the
size of the demo corpus (``--groups`` groups of 1-2 originals, ``--aug`` copies each), built as
in the tests (``tests/feature_tables.py``). Run from the repository root (``-m`` puts it on the path
for ``tests``)::

    .venv/bin/python -m benchmarks.train [--models PATTERN] [--folds K]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import polars as pl

from fvcflow.store import Lake
from fvcflow.training import TrainConfig, run_training
from tests.feature_tables import write_lake

BUDGET_S = 300.0   # the target: every baseline model in under 5 minutes on 2 cores


def _lake(tmp: Path, groups: int, aug: int) -> tuple[Lake, str]:
    home = os.environ.get("FVC_HOME")
    real = Lake.at(home) if home else None
    if real is not None and real.stage2.exists() and real.index.exists():
        lake = Lake.at(tmp)
        for src in (real.index, real.failures, real.stage1, real.stage2, real.stage4):
            if src.exists():
                dst = lake.root / src.relative_to(real.root)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
        return lake, f"real lake {real.root}"
    return write_lake(tmp, n_groups=groups, per_group=(1, 2), n_aug=aug, signal=1.5), "synthetic"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="*")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--groups", type=int, default=60)
    ap.add_argument("--aug", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fvc-bench-") as tmp:
        lake, what = _lake(Path(tmp), args.groups, args.aug)
        rows = pl.read_parquet(lake.stage2).height
        print(f"table: {what}, {rows} stage-2 rows; folds={args.folds}; cores={os.cpu_count()}")
        start = time.perf_counter()
        summary = run_training(lake, TrainConfig(models=args.models, folds=args.folds))
        total = time.perf_counter() - start
        for r in sorted(summary.results, key=lambda r: -r.fit_seconds):
            print(f"{r.name:14s} fit {r.fit_seconds:7.2f} s  tracking {r.log_seconds:6.2f} s  "
                  f"oof AUC {r.oof_metrics['roc_auc']:.3f}")
        fit = sum(r.fit_seconds for r in summary.results)
        print(f"total {total:.1f} s (fits {fit:.1f} s, tracking/report {total - fit:.1f} s); "
              f"budget {BUDGET_S:.0f} s; total/budget = {total / BUDGET_S:.2f}")


if __name__ == "__main__":
    main()
