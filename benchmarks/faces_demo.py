"""Do faces help on the demo corpus (its fakes are face swaps)? Measured, not tuned.

    .venv/bin/python -m benchmarks.faces_demo [--dir /tmp/fvc-bench/faces-demo] [--epochs 4] [--no-deep]

Builds the full demo corpus (reused when present), indexes it into a lake under ``--dir`` and runs
the ``faces`` and ``scale`` stages (no augmented copies), then prints:
  1. per detector (yuface, the CNN; haar, the fallback), the share of videos with a face track;
     the out-of-fold ROC AUC of a standardised logistic regression on the 31 face columns
     (``s2lf``'s face part, computed on that detector's tracks), StratifiedGroupKFold (4 folds) over
     the corpus's groups, 6 fold shuffles: mean, min-max over shuffles, and a 95 % interval from
     2000 group bootstrap resamples of the first shuffle's out-of-fold scores;
  2. a tiny deep model (naive_3dcnn, 4 frames x 2 clips at 48 px, ``--epochs`` epochs, random
     initialisation) trained by the pipeline's stage 5 on face clips and then on frame clips, the
     same folds: out-of-fold ROC AUC with the same bootstrap interval.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fvcflow.config import Settings
from fvcflow.demo.corpus import make_demo_corpus
from fvcflow.ingest import ingest
from fvcflow.stages import runner
from fvcflow.stages.faces import face_columns
from fvcflow.stages.facetrack import make_detector, track_video
from fvcflow.stages.features import video_features
from fvcflow.store import read_parquet

BENCH = Path(os.environ.get("FVC_BENCH_DIR", "/tmp/fvc-bench")) / "faces-demo"


def group_bootstrap(y, p, groups, n=2000, seed=0) -> tuple[float, float]:
    """95 % interval of the ROC AUC over resamples of whole groups."""
    rng = np.random.default_rng(seed)
    ug = np.unique(groups)
    idx = {g: np.flatnonzero(groups == g) for g in ug}
    aucs = []
    for _ in range(n):
        take = np.concatenate([idx[g] for g in rng.choice(ug, len(ug))])
        if np.unique(y[take]).size == 2:
            aucs.append(roc_auc_score(y[take], p[take]))
    return float(np.percentile(aucs, 2.5)), float(np.percentile(aucs, 97.5))


def oof(X, y, groups, seed) -> np.ndarray:
    p = np.zeros(len(y))
    for tr, te in StratifiedGroupKFold(4, shuffle=True, random_state=seed).split(X, y, groups):
        m = make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler(),
                          LogisticRegression(C=0.1, max_iter=2000))
        p[te] = m.fit(X[tr], y[tr]).predict_proba(X[te])[:, 1]
    return p


def s2lf_by_detector(rows: list[dict]) -> None:
    y = np.array([r["label"] for r in rows])
    groups = np.array([r["group_id"] for r in rows])
    for kind in ("yuface", "haar"):
        det = make_detector(kind)
        t0 = time.perf_counter()
        X, found = [], 0
        for r in rows:
            tracks, summary = track_video(r["path"], det)
            found += summary["n_tracks"] > 0
            row = video_features(r["path"], face_tracks=tracks)
            X.append([row[c] for c in face_columns()])
        X = np.asarray(X, np.float64)
        aucs = [roc_auc_score(y, oof(X, y, groups, s)) for s in range(6)]
        lo, hi = group_bootstrap(y, oof(X, y, groups, 0), groups)
        print(f"s2lf face columns on {kind:<6} tracks: faces found in {found}/{len(rows)} videos; OOF AUC "
              f"{np.mean(aucs):.3f} (shuffles {min(aucs):.3f}-{max(aucs):.3f}; 95% group bootstrap "
              f"{lo:.3f}-{hi:.3f}); {time.perf_counter() - t0:.0f} s")


def deep_face_vs_frame(settings: Settings, epochs: int) -> None:
    from fvcflow.training import TrainConfig, run_training

    lake = settings.lake()
    clip = {"frames": 4, "clips": 2, "size": 48}
    for source in ("face", "frame"):
        t0 = time.perf_counter()
        cfg = TrainConfig(folds=4, test_size=0.0, models="naive_3dcnn", kinds=["torch_video"], report=False,
                          register_best=False, shortcut_check=False, experiment=f"faces-bench-{source}",
                          deep=dict(epochs=epochs, patience=epochs, batch_size=8, workers=0, device="cpu",
                                    lr=1e-3, clip={"naive_3dcnn": {**clip, "source": source}}))
        run_training(lake, cfg)
        pred = read_parquet(lake.predictions).filter((pl.col("model") == "naive_3dcnn")
                                                     & (pl.col("split") == "oof"))
        y, p, g = pred["label"].to_numpy(), pred["prob_fake"].to_numpy(), pred["group_id"].to_numpy()
        lo, hi = group_bootstrap(y, p, g)
        print(f"naive_3dcnn on {source} clips ({epochs} epochs, {clip['frames']}x{clip['clips']} at "
              f"{clip['size']} px): OOF ROC AUC {roc_auc_score(y, p):.3f} (95% group bootstrap {lo:.3f}-"
              f"{hi:.3f}), {len(y)} videos; {time.perf_counter() - t0:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=BENCH)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--no-deep", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    corpus = make_demo_corpus(args.dir / "corpus")
    settings = Settings(home=args.dir / "fvc-data", workers=1, augment={"copies": 0}).resolved()
    if read_parquet(settings.lake().index) is None:
        ingest("folder", corpus.root, settings.lake(), labels=corpus.labels_csv, workers=1)
    for stage in ("faces", "scale"):
        runner.run_local(stage, settings)
    index = read_parquet(settings.lake().index).filter(pl.col("label").is_not_null()).sort("video_id")
    print(f"demo corpus: {index.height} videos, {index['group_id'].n_unique()} groups; lake ready in "
          f"{time.perf_counter() - t0:.0f} s; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    s2lf_by_detector(index.to_dicts())
    if not args.no_deep:
        deep_face_vs_frame(settings, args.epochs)


if __name__ == "__main__":
    main()
