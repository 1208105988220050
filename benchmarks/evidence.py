"""What the defensible numbers cost and what they change (issue 12), side by side in one run.

    .venv/bin/python -m benchmarks.evidence [--videos 1000] [--boot 1000]

1. The grouped bootstrap (ROC AUC, AP and EER of every replicate from one sort of the scores)
   against the slow reference (rows of the drawn groups repeated, scikit-learn metrics, one
   replicate at a time; timed on a tenth of the replicates and scaled), same draws; and the
   interval width when groups are resampled vs when rows are (near-duplicate groups of 2).
2. On a paired table (one real and one fake per group, weak true signal): out-of-fold ROC AUC of
   the SVM with the former row-wise calibration (``CalibratedClassifierCV(cv=3)``), with the
   grouped calibration (``svm_rbf_s24`` now), and its raw margin.
3. On a demo-sized synthetic lake: ``finish`` with and without the evidence (comparison, shortcut
   check, subgroups, calibration, model card), after the same models were trained.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.svm import SVC

from fvcflow.metrics import equal_error_rate
from fvcflow.models import get_model_spec
from fvcflow.training import TrainConfig, finish, make_splits, train_model
from fvcflow.training.evidence import assess as evidence_mod
from fvcflow.training.fitting.bootstrap import draw_groups, grouped_bootstrap
from fvcflow.training.fitting.cv import cross_validate
from fvcflow.training.fitting.preprocess import build_pipeline
from tests.feature_tables import write_lake
from tests.leakage_tables import ci_config, oof_auc, paired_table


def bootstrap_speed(n_videos: int, n_boot: int) -> None:
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(n_videos // 2), 2)
    y = np.tile([0, 1], n_videos // 2)
    p = rng.normal(0, 1, n_videos) + 0.8 * y
    t0 = time.perf_counter()
    fast = grouped_bootstrap(y, p, g, n_boot=n_boot)
    t_fast = time.perf_counter() - t0
    sub = max(1, n_boot // 10)
    rows_of = [np.flatnonzero(g == k) for k in range(n_videos // 2)]
    t0 = time.perf_counter()
    for draw in draw_groups(n_videos // 2, sub, 0):
        rows = np.concatenate([rows_of[k] for k in draw])
        roc_auc_score(y[rows], p[rows])
        average_precision_score(y[rows], p[rows])
        equal_error_rate(y[rows], p[rows])
    t_ref = (time.perf_counter() - t0) * n_boot / sub
    print(f"grouped bootstrap, {n_videos} videos in {n_videos // 2} groups, {n_boot} replicates, "
          f"AUC+AP+EER: {t_fast:.2f} s vs reference {t_ref:.1f} s (scaled from {sub}): {t_ref / t_fast:.0f}x")
    near = np.repeat(p[: n_videos // 5], 5) + rng.normal(0, 0.01, n_videos // 5 * 5)
    yy, gg = np.repeat(y[: n_videos // 5], 5), np.repeat(np.arange(n_videos // 5), 5)
    a = grouped_bootstrap(yy, near, gg, n_boot=n_boot)["roc_auc"]
    b = grouped_bootstrap(yy, near, None, n_boot=n_boot)["roc_auc"]
    print(f"  groups of 5 near-copies: 95% interval width {a.hi - a.lo:.3f} resampling groups vs "
          f"{b.hi - b.lo:.3f} resampling rows ({(a.hi - a.lo) / (b.hi - b.lo):.2f}x); "
          f"AUC {fast['roc_auc'].format()} on the paired table")


def svm_on_pairs() -> None:
    t = paired_table(150, signal=0.5, seed=1)
    spec = get_model_spec("svm_rbf_s24")
    grouped = oof_auc(cross_validate(spec, t, ci_config(["svm_rbf_s24"])).predictions)
    raw, old = np.full(len(t.y), np.nan), np.full(len(t.y), np.nan)
    for k in t.folds:
        tr, va = t.fold != k, t.fold == k
        raw[va] = build_pipeline(spec, SVC(C=0.5)).fit(t.X[tr], t.y[tr]).decision_function(t.X[va])
        est = CalibratedClassifierCV(SVC(C=0.5), method="sigmoid", cv=3, ensemble=False)
        old[va] = build_pipeline(spec, est).fit(t.X[tr], t.y[tr]).predict_proba(t.X[va])[:, 1]
    print(f"paired table (150 pairs, weak signal), SVM out-of-fold ROC AUC: row-wise calibration "
          f"{roc_auc_score(t.y, old):.3f}, grouped calibration {grouped:.3f}, raw margin "
          f"{roc_auc_score(t.y, raw):.3f}")


def finish_cost() -> None:
    with tempfile.TemporaryDirectory(prefix="fvc-bench-evidence-") as tmp:
        lake = write_lake(Path(tmp), n_groups=60, per_group=(1, 2), n_aug=3, signal=1.0, seed=3)
        cfg = TrainConfig(folds=5, models="logreg_s24,xgb_s24,stack_s24",
                          params={"xgb_s24": {"n_estimators": 60}})
        make_splits(lake, cfg)
        t0 = time.perf_counter()
        results = [train_model(lake, n, cfg) for n in ("logreg_s24", "xgb_s24")]
        results.append(train_model(lake, "stack_s24", cfg, bases=results))
        t_train = time.perf_counter() - t0
        plain = cfg.model_copy(update={"report": False, "register_best": True, "shortcut_check": False})
        saved = evidence_mod.assess, evidence_mod.register_detector, evidence_mod.write_card
        t0 = time.perf_counter()
        try:   # finish as before issue 12: no assessment, the raw model registered, no card
            from fvcflow.training.tracking import runs as tracking

            evidence_mod.assess = lambda lake, summary, cfg: None
            evidence_mod.register_detector = (lambda lake, cfg, best, summary:
                                              tracking.register(lake, cfg, best))
            evidence_mod.write_card = lambda lake, summary, cfg: None
            finish(lake, results, plain)
        finally:
            evidence_mod.assess, evidence_mod.register_detector, evidence_mod.write_card = saved
        t_plain = time.perf_counter() - t0
        t0 = time.perf_counter()
        s = finish(lake, results, cfg.model_copy(update={"report": False}))
        t_full = time.perf_counter() - t0
        ev = s.evidence
        print(f"synthetic lake ({results[0].n_train_rows} training rows with copies, 3 models): training "
              f"{t_train:.1f} s; finish {t_plain:.1f} s without the evidence, {t_full:.1f} s with it "
              f"(+{t_full - t_plain:.1f} s: shortcut check on {len(ev.shortcut.columns)} cues, "
              f"{ev.calibration.method} calibration, ECE {ev.calibration.ece['oof_before']:.3f} -> "
              f"{ev.calibration.ece['oof_after']:.3f}, {ev.subgroups.height} subgroup rows)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=1000)
    ap.add_argument("--boot", type=int, default=1000)
    args = ap.parse_args()
    bootstrap_speed(args.videos, args.boot)
    svm_on_pairs()
    finish_cost()


if __name__ == "__main__":
    main()
