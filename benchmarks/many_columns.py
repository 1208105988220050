"""Models that survive many columns (issue 22): every feature-table model and both stacks, with the
stacks' former meta-learners side by side in one run.

On the weak-signal paired table of ``tests/test_many_columns.py`` (``--groups`` pairs, four columns
shifted by 0.5 between-group sd in every fake, 3 outer / 3 inner grouped folds, each model's full
registered grid), each model is cross-validated as it is and with ``--noise`` added columns of pure
noise (one draw shared by every table, as a corpus's columns are). One line per model: the clean
out-of-fold ROC AUC with its 95 % grouped bootstrap interval, the noisy AUC, whether it stayed
inside, the seconds of both fits. Then the stacks over every base, each beside what it replaced:
``stack_s24`` (non-negative L1 path) vs the L1 logistic regression it was (C 1/0.1/0.01), and
``topk_mean`` (``k`` on grouped inner folds, the mean of all the most regularised) vs its former
``max_k`` grid (None/3/1, one-standard-error rule)::

    .venv/bin/python -m benchmarks.many_columns [--groups 150] [--noise 100] [--models 'logreg_*']
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd
import polars as pl
from sklearn.linear_model import LogisticRegression

from fvcflow.models import get_model_spec, list_models, register_model, unregister_model
from fvcflow.models.stack import TopKMean
from fvcflow.training import TrainConfig
from fvcflow.training.fitting.bootstrap import grouped_bootstrap
from fvcflow.training.fitting.cv import cross_validate
from fvcflow.training.fitting.data import TrainTable
from fvcflow.training.fitting.stacking import stack_cv
from tests.leakage_tables import as_base, paired_table


def with_noise(t: TrainTable, n: int, seed: int = 1) -> TrainTable:
    noise = np.random.default_rng(seed).normal(size=(len(t.y), n))
    X = pd.concat([t.X, pd.DataFrame(noise, columns=[f"noise_{j:03d}" for j in range(n)])], axis=1)
    return TrainTable(t.video_id, t.group_id, t.y, t.fold, t.is_test, t.is_original, X, t.feature_set)


def interval(predictions: pl.DataFrame):
    oof = predictions.filter(pl.col("split") == "oof")
    return grouped_bootstrap(oof["label"].to_numpy(), oof["prob_fake"].to_numpy(),
                             oof["group_id"].to_numpy())["roc_auc"]


def config(name: str) -> TrainConfig:
    params = {name: dict(get_model_spec(name).extra.get("ci_params", {}))}
    return TrainConfig(folds=3, inner_folds=3, params=params)


def line(name: str, clean, noisy, seconds: float) -> str:
    inside = "inside" if clean.lo <= noisy.estimate <= clean.hi else "OUTSIDE"
    return (f"many columns: {name:18s} clean {clean.format()} -> noisy {noisy.estimate:.3f} ({inside} "
            f"its interval; {seconds:.1f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=150)
    ap.add_argument("--noise", type=int, default=100)
    ap.add_argument("--models", default="*", help="base models (pattern); the stacks go over all of them")
    args = ap.parse_args()
    print(f"many columns: {args.groups} pairs, {args.noise} noise columns; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    bases: dict[bool, list] = {False: [], True: []}
    seen: dict[str, str] = {}
    for name in list_models(args.models):
        spec = get_model_spec(name)
        if spec.kind not in ("tabular", "embedding"):
            continue
        est = spec.constructor(seed=0, **spec.extra.get("ci_params", {}))
        key = repr((spec.feature_set or "s24", spec.needs_scaling, spec.grid, est))
        if key in seen:                    # the emb_xgb_* family: xgb_s24's estimator on the same table
            print(f"many columns: {name:18s} as {seen[key]} (the same estimator on the same table)")
            continue
        seen[key] = name
        start, runs = time.perf_counter(), {}
        for noisy in (False, True):
            t = paired_table(args.groups, signal=0.5, feature_set=spec.feature_set or "s24", seed=0)
            t = with_noise(t, args.noise) if noisy else t
            cv = cross_validate(spec, t, config(name), refit=False)
            runs[noisy] = interval(cv.predictions)
            bases[noisy].append(as_base(spec, cv, list(t.X.columns)))
        print(line(name, runs[False], runs[True], time.perf_counter() - start), flush=True)
    if len(bases[False]) < 2:
        return

    @register_model(kind="stack", grid={"C": (1.0, 0.1, 0.01)})
    def former_stack_s24(*, seed=0, n_jobs=1, C=1.0):
        return LogisticRegression(C=C, l1_ratio=1.0, solver="liblinear", max_iter=5000, random_state=seed)

    @register_model(kind="stack", grid={"max_k": (None, 3, 1)})
    def former_topk_mean(*, seed=0, n_jobs=1, max_k=None):
        return TopKMean(max_k=max_k)

    try:
        for name in ("stack_s24", "former_stack_s24", "topk_mean", "former_topk_mean"):
            start = time.perf_counter()
            cvs = {noisy: stack_cv(get_model_spec(name), bases[noisy], config(name))
                   for noisy in (False, True)}
            print(line(name, interval(cvs[False].predictions), interval(cvs[True].predictions),
                       time.perf_counter() - start) + f"; chosen clean {cvs[False].fold_params}, "
                  f"noisy {cvs[True].fold_params}", flush=True)
    finally:
        unregister_model("former_stack_s24")
        unregister_model("former_topk_mean")


if __name__ == "__main__":
    main()
