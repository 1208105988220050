"""Can the stage-2 handcrafted features tell the demo corpus's fakes from its reals?

    .venv/bin/python benchmarks/demo_separability.py [--dir /tmp/fvc-bench/demo] [--seed 0] [--splits 4]

Builds the full demo corpus (``fvc demo-corpus``) into ``--dir`` (reused when the same corpus is
already there; the build time is printed either way), computes
:func:`fvcflow.stages.features.video_features` for every video, then prints:
  1. the out-of-fold ROC AUC of a standardised logistic regression on the 51 stage-2 features,
     cross-validated with ``StratifiedGroupKFold`` over the groups of ``labels.csv`` (target >= 0.80),
     then with five other fold shuffles (80 videos: one split's AUC moves by a few hundredths);
  2. the five best single features by ROC AUC (direction-free: max(AUC, 1 - AUC));
  3. each codec cue's AUC alone (target <= 0.70 each: the classes must not be separable by
     encoder settings alone);
  4. the same logistic regression on ``s2l`` (the 51 + the 66 local columns of
     :mod:`fvcflow.stages.local`) over the same 6 fold shuffles, beside ``s2``, and the best
     single local features. Nothing here is tuned: the corpus and the local features were
     written apart, and the figures are what they are.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fvcflow.demo.corpus import make_demo_corpus
from fvcflow.stages.features import CODEC_COLUMNS, feature_columns, video_features
from fvcflow.stages.local import local_columns

BENCH = Path(os.environ.get("FVC_BENCH_DIR", "/tmp/fvc-bench")) / "demo"
TARGET_LR, TARGET_CODEC = 0.80, 0.70


def load_table(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feature matrix (videos x 117: the 51 stage-2 columns, then the 66 local ones), labels
    (1 = fake) and groups, in ``labels.csv`` order."""
    with open(root / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols = feature_columns() + local_columns()
    x = np.array([[f[c] for c in cols] for f in (video_features(root / r["path"], local=True) for r in rows)],
                 np.float64)
    y = np.array([r["label"] == "fake" for r in rows], int)
    groups = np.array([r["group"] for r in rows])
    return x, y, groups


def oof_auc(x: np.ndarray, y: np.ndarray, groups: np.ndarray, splits: int, seed: int) -> float:
    """Out-of-fold ROC AUC of a standardised logistic regression, grouped stratified folds."""
    model = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(),
                          LogisticRegression(max_iter=5000))
    scores = np.full(len(y), np.nan)
    folds = StratifiedGroupKFold(n_splits=splits, shuffle=True, random_state=seed)
    for train, test in folds.split(x, y, groups):
        model.fit(x[train], y[train])
        scores[test] = model.predict_proba(x[test])[:, 1]
    return float(roc_auc_score(y, scores))


def single_auc(column: np.ndarray, y: np.ndarray) -> float:
    """Direction-free ROC AUC of one feature (NaN filled with the median)."""
    col = np.where(np.isnan(column), np.nanmedian(column), column)
    auc = roc_auc_score(y, col)
    return float(max(auc, 1.0 - auc))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=BENCH)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--splits", type=int, default=4)
    args = parser.parse_args()

    t0 = time.perf_counter()
    corpus = make_demo_corpus(args.dir, seed=args.seed)
    build = time.perf_counter() - t0
    state = "reused" if corpus.reused else "built"
    n_fake = sum(v.label == "fake" for v in corpus.videos)
    print(f"corpus: {state} in {build:.1f} s: {len(corpus.videos)} videos ({len(corpus.videos) - n_fake} "
          f"real, {n_fake} fake), {len(corpus.groups)} groups, seed {args.seed}, {args.dir}")

    t0 = time.perf_counter()
    x, y, groups = load_table(args.dir)
    print(f"features: {x.shape[0]} videos x {x.shape[1]} columns in {time.perf_counter() - t0:.1f} s")

    x, x_local = x[:, :len(feature_columns())], x
    auc = oof_auc(x, y, groups, args.splits, args.seed)
    verdict = "PASS" if auc >= TARGET_LR else "MISS"
    print(f"logistic regression, grouped {args.splits}-fold OOF ROC AUC: {auc:.3f} (target >= "
          f"{TARGET_LR:.2f}) {verdict}")
    others = [oof_auc(x, y, groups, args.splits, args.seed + k) for k in range(1, 6)]
    print(f"  the same with 5 other fold shuffles: {', '.join(f'{a:.3f}' for a in others)} "
          f"(mean of all 6 {np.mean([auc, *others]):.3f})")

    cols = feature_columns()
    ranked = sorted(((single_auc(x[:, j], y), c) for j, c in enumerate(cols)), reverse=True)
    print("best single features (AUC, direction-free): "
          + ", ".join(f"{c} {a:.3f}" for a, c in ranked[:5]))
    for cue in CODEC_COLUMNS:
        a = single_auc(x[:, cols.index(cue)], y)
        print(f"codec cue {cue}: AUC {a:.3f} (target <= {TARGET_CODEC:.2f}) "
              f"{'PASS' if a <= TARGET_CODEC else 'MISS'}")

    s2_all = [auc, *others]
    s2l_all = [oof_auc(x_local, y, groups, args.splits, args.seed + k) for k in range(6)]
    print(f"s2 vs s2l, logistic regression, grouped {args.splits}-fold OOF ROC AUC, the same 6 fold "
          "shuffles:")
    print(f"  s2  ({x.shape[1]} columns): {', '.join(f'{a:.3f}' for a in s2_all)} "
          f"(mean {np.mean(s2_all):.3f})")
    print(f"  s2l ({x_local.shape[1]} columns): {', '.join(f'{a:.3f}' for a in s2l_all)} "
          f"(mean {np.mean(s2l_all):.3f}; s2l - s2 per shuffle: "
          f"{', '.join(f'{b - a:+.3f}' for a, b in zip(s2_all, s2l_all))})")
    lcols = local_columns()
    off = len(feature_columns())
    ranked_local = sorted(((single_auc(x_local[:, off + j], y), c) for j, c in enumerate(lcols)
                           if np.isfinite(x_local[:, off + j]).any()), reverse=True)
    print("best single local features (AUC, direction-free): "
          + ", ".join(f"{c} {a:.3f}" for a, c in ranked_local[:5]))


if __name__ == "__main__":
    main()
