"""Which change moved the demo's best model: the hold-out decided at ingest, or issue 22's models.

On a lake that ``make demo`` (or ``fvc run``) built, cross-validates models on the same feature
tables under two hold-outs and several model variants, side by side in one run:

- hold-outs: ``ingest`` (the index's ``split``, decided by group at ingest, as stage 5 trains
  now) and ``drawn`` (the stratified grouped hold-out drawn at training time, as before the
  ingest decided it: the index's split cleared). Stage 1 made no copies of the ingest's test
  videos, so under ``drawn`` those training videos have none;
- variants: ``new`` (the registered model: screening ``k``, its regularisation grid, grouped
  early stopping for the boosters, the one-standard-error choice), ``no-screen`` (``k`` = all
  columns, boosters' early stopping off at 150 rounds), ``no-es`` (early stopping off),
  ``argmax`` (the best inner grid point instead of the one-standard-error rule) and ``before``
  (the estimators, grids and best-point choice of the stop before issue 22: XGBoost with 150
  rounds, depth 2/4, column sampling 0.8; the RBF SVM on every column with C 0.5/2/8).

Prints one line per (hold-out, model, variant): out-of-fold ROC AUC with its 95 % grouped
bootstrap interval, test AUC and the chosen grid points; then, per hold-out and model, each
variant's paired difference from ``new`` (grouped bootstrap over the same videos, 95 % interval,
two-sided p). Run from the repository root::

    .venv/bin/python -m benchmarks.demo_regression [--home fvc-data] [--models xgb_s24l,svm_rbf_s24]
        [--variants new,no-screen,no-es,argmax,before] [--holdouts ingest,drawn]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl
from sklearn.svm import SVC

from fvcflow.config import TrainConfig
from fvcflow.metrics import binary_metrics
from fvcflow.models import create_model, get_model_spec
from fvcflow.models.grouped import GroupCalibratedClassifier
from fvcflow.store import Lake, read_parquet
from fvcflow.training.fitting import cv as cvmod
from fvcflow.training.fitting.bootstrap import grouped_bootstrap, paired_comparison
from fvcflow.training.fitting.data import load_features, train_table
from fvcflow.training.fitting.splits import assign_splits

#: the grids of the stop before issue 22 (least to most restrictive does not apply: best point)
BEFORE_GRIDS = {"xgb": {"max_depth": [2, 4]}, "svm": {"C": [0.5, 2.0, 8.0]}}


def before_model(name: str, seed: int = 0, n_jobs: int = 1, **kw):
    """The estimator a model name built before issue 22 (XGBoost and the RBF SVM)."""
    from xgboost import XGBClassifier

    if name.startswith("xgb"):
        return XGBClassifier(n_estimators=150, max_depth=kw.get("max_depth", 3), learning_rate=0.1,
                             subsample=0.8, colsample_bytree=0.8, tree_method="hist", n_jobs=n_jobs,
                             random_state=seed, eval_metric="logloss", verbosity=0)
    if name.startswith("svm"):
        return GroupCalibratedClassifier(SVC(C=kw.get("C", 1.0), gamma="scale", kernel="rbf",
                                             random_state=seed), method="sigmoid", cv=3, seed=seed)
    raise SystemExit(f"--variants before: only xgb_* and svm_* models, not {name}")


def best_point(scores, fold_scores, order) -> int:
    return int(np.argmax(np.where(np.isnan(scores), -np.inf, scores)))


def variant_setup(name: str, variant: str, cfg: TrainConfig):
    """(config, model factory, grid-point chooser) of one variant."""
    spec, booster = get_model_spec(name), name.startswith(("xgb", "lgbm", "catboost"))
    no_es = {"early_stopping_rounds": None, "n_estimators": 150} if name.startswith("xgb") else (
        {"early_stopping_rounds": None} if booster else {})
    if variant == "new":
        return cfg, create_model, cvmod.choose_point
    if variant == "no-screen":
        grid = {k: list(v) for k, v in spec.grid.items()} | {"k": [None]}
        return (cfg.model_copy(update={"grids": {name: grid}, "params": {name: no_es}}), create_model,
                cvmod.choose_point)
    if variant == "no-es":
        return cfg.model_copy(update={"params": {name: no_es}}), create_model, cvmod.choose_point
    if variant == "argmax":
        return cfg, create_model, best_point
    if variant == "before":
        return (cfg.model_copy(update={"grids": {name: BEFORE_GRIDS[name.split("_")[0]]}}), before_model,
                best_point)
    raise SystemExit(f"unknown variant {variant!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", default="fvc-data")
    ap.add_argument("--models", default="xgb_s24l,svm_rbf_s24")
    ap.add_argument("--variants", default="new,no-screen,no-es,argmax,before")
    ap.add_argument("--holdouts", default="ingest,drawn")
    a = ap.parse_args()
    lake, cfg = Lake.at(a.home), TrainConfig()
    videos, stage1 = read_parquet(lake.index), read_parquet(lake.stage1)
    if videos is None:
        raise SystemExit(f"no index under {a.home}: run make demo (or fvc run) first")
    splits = {"ingest": assign_splits(videos, stage1, cfg),
              "drawn": assign_splits(videos.with_columns(split=pl.lit(None, pl.Utf8)), stage1, cfg)}
    for h in a.holdouts.split(","):
        o = splits[h].filter(pl.col("variant") == "original")
        print(f"hold-out {h}: test groups {sorted(o.filter('is_test')['group_id'].unique().to_list())}, "
              f"{o.filter(~pl.col('is_test')).height} out-of-fold videos, "
              f"{splits[h].filter(~pl.col('is_test')).height} training rows", flush=True)
    chooser, factory = cvmod.choose_point, cvmod.create_model
    preds: dict[tuple[str, str, str], pl.DataFrame] = {}
    try:
        for h in a.holdouts.split(","):
            for name in a.models.split(","):
                spec = get_model_spec(name)
                t = train_table(load_features(lake, spec.feature_set), splits[h], spec.feature_set)
                for variant in a.variants.split(","):
                    vcfg, cvmod.create_model, cvmod.choose_point = variant_setup(name, variant, cfg)
                    t0 = time.perf_counter()
                    out = cvmod.cross_validate(spec, t, vcfg)
                    oof = out.predictions.filter(pl.col("split") == "oof")
                    test = out.predictions.filter(pl.col("split") == "test")
                    iv = grouped_bootstrap(oof["label"].to_numpy(), oof["prob_fake"].to_numpy(),
                                           oof["group_id"].to_numpy())["roc_auc"]
                    ta = binary_metrics(test["label"].to_numpy(), test["prob_fake"].to_numpy())["roc_auc"]
                    print(f"{h:6s} {name:12s} {variant:9s} OOF AUC {iv.format()}  test AUC {ta:.3f}  "
                          f"points {out.fold_params}  {time.perf_counter() - t0:.0f} s", flush=True)
                    preds[h, name, variant] = out.predictions
                for variant in a.variants.split(","):
                    new = preds.get((h, name, "new"))
                    if variant == "new" or new is None:
                        continue
                    c = paired_comparison((variant, preds[h, name, variant]), ("new", new))
                    print(f"{h:6s} {name:12s} {variant:9s} - new: {c.diff:+.3f} [{c.lo:+.3f}, {c.hi:+.3f}] "
                          f"p {c.p_value:.2f} ({c.n_videos} videos, {c.n_groups} groups)", flush=True)
    finally:
        cvmod.create_model, cvmod.choose_point = factory, chooser


if __name__ == "__main__":
    main()
