"""Cross-validation of one tabular model: outer folds, inner grouped grid search, test refit.

For every outer fold the training rows (originals and their augmented copies, never a test row)
go through an inner stratified group k-fold (every fit also gets the rows' ``group_id``, so a
model that splits internally, for calibration or early stopping, splits by group too): each grid
point is scored by the ROC AUC of its inner out-of-fold predictions on originals, and the point
kept is the most restrictive one within one standard error of the best (the one-standard-error
rule, :func:`choose_point`: a registered grid lists each value from least to most restrictive,
so a model given many columns picks the screening and penalty that the inner folds cannot tell
from the best, not the luckiest); it is refitted on all training rows and predicts the fold's
originals. The best point's inner
out-of-fold predictions are kept: the stacking ensemble trains its meta-learner on them, so it
never sees the outer fold's labels.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import polars as pl
from sklearn.inspection import permutation_importance
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from fvcflow.config import TrainConfig, setting_hint
from fvcflow.errors import FvcError
from fvcflow.metrics import binary_metrics, roc_auc
from fvcflow.models import ModelSpec, create_model
from fvcflow.progress import emit
from fvcflow.resume import FoldCache
from fvcflow.training.fitting.data import TrainTable
from fvcflow.training.fitting.grouping import fit_params
from fvcflow.training.fitting.preprocess import build_pipeline, kept_features

log = logging.getLogger("fvcflow.training")


@dataclass
class FitOutcome:
    """A grid search on one training set: the chosen point, the refitted pipeline, inner OOF."""

    params: dict[str, Any]
    pipeline: Pipeline
    inner_oof: pl.DataFrame          # video_id, prob_fake (originals of the training set)
    scores: list[float] = field(default_factory=list)


def inner_splits(t: TrainTable, n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Grouped, stratified inner splits: train on every row of the other groups, validate on originals."""
    fewest = min(np.unique(t.group_id[t.y == c]).size for c in (0, 1))
    if fewest < n:
        fix = (f"lower inner_folds ({setting_hint('inner_folds')}) to at most {fewest}, or lower folds "
               f"({setting_hint('folds')})" if fewest >= 2 else
               f"add data, or lower folds ({setting_hint('folds')}) so that the training folds hold "
               "more groups")
        raise FvcError(f"inner CV: a class occurs in only {fewest} groups of a training set, fewer than "
                       f"the {n} inner folds; {fix}")
    cv = StratifiedGroupKFold(n_splits=n, shuffle=True, random_state=seed)
    out = []
    for tr, va in cv.split(np.zeros(len(t.y)), t.y, t.group_id):
        out.append((tr, va[t.is_original[va]]))
    return out


def _pooled_auc(y: np.ndarray, p: np.ndarray) -> float:
    ok = ~np.isnan(p)
    return roc_auc(y[ok], p[ok]) if ok.any() else float("nan")


def restrictiveness(point: dict[str, Any], grid: dict[str, tuple]) -> int:
    """How far down its grid's lists ``point`` sits (sum of value positions; lists run from the
    least to the most restrictive value)."""
    return sum(list(grid[k]).index(v) for k, v in point.items() if k in grid and v in grid[k])


def choose_point(scores: np.ndarray, fold_scores: np.ndarray, order: list[int]) -> int:
    """The one-standard-error rule: among the points whose pooled score is within one standard
    error (of the best point's per-fold scores) of the best, the one that comes last in ``order``
    (most restrictive); NaN scores never win.

    >>> choose_point(np.array([0.80, 0.79, 0.70]), np.array([[.78, .82], [.77, .81], [.7, .7]]), [0, 1, 2])
    1
    """
    scores = np.where(np.isnan(scores), -np.inf, scores)
    best = int(np.argmax(scores))
    if not np.isfinite(scores[best]):
        return 0
    f = fold_scores[best][~np.isnan(fold_scores[best])]
    se = float(f.std(ddof=1) / np.sqrt(f.size)) if f.size > 1 else 0.0
    near = [i for i in order if scores[i] >= scores[best] - se]
    return near[-1] if near else best


def search_and_fit(spec: ModelSpec, t: TrainTable, cfg: TrainConfig) -> FitOutcome:
    """Choose a grid point by inner grouped CV on ``t`` and refit it on all of ``t``."""
    points = spec.grid_points(cfg.grids.get(spec.name))
    base = dict(cfg.params.get(spec.name, {}))
    splits = inner_splits(t, cfg.inner_folds, cfg.seed)

    def make(point: dict[str, Any]) -> Pipeline:
        est = create_model(spec.name, seed=cfg.seed, n_jobs=cfg.n_jobs, **{**base, **point})
        return build_pipeline(spec, est, corr_threshold=cfg.corr_threshold)

    oofs, scores, fold_scores = [], [], []
    for point in points:
        oof, per_fold = np.full(len(t.y), np.nan), []
        for tr, va in splits:
            pipe = make(point)
            pipe.fit(t.X.iloc[tr], t.y[tr], **fit_params(pipe, t.group_id[tr]))
            oof[va] = pipe.predict_proba(t.X.iloc[va])[:, 1]
            per_fold.append(_pooled_auc(t.y[va], oof[va]) if np.unique(t.y[va]).size == 2 else np.nan)
        oofs.append(oof)
        scores.append(_pooled_auc(t.y, oof))
        fold_scores.append(per_fold)
    grid = {k: tuple(v) for k, v in (cfg.grids.get(spec.name) or spec.grid).items()}
    order = sorted(range(len(points)), key=lambda i: (restrictiveness(points[i], grid), i))
    best = choose_point(np.array(scores), np.array(fold_scores, dtype=float), order)
    best_oof = oofs[best]
    pipe = make(points[best])
    pipe.fit(t.X, t.y, **fit_params(pipe, t.group_id))
    have = ~np.isnan(best_oof)
    inner = pl.DataFrame({"video_id": t.video_id[have], "prob_fake": best_oof[have]})
    return FitOutcome(points[best], pipe, inner, scores)


def predict_rows(pipe: Any, t: TrainTable) -> np.ndarray:
    """``P(fake)`` of every row of ``t``."""
    return pipe.predict_proba(t.X)[:, 1]


def feature_importance(pipe: Pipeline, t: TrainTable, seed: int) -> pl.DataFrame:
    """Importance of each feature that reaches the model: |coefficient| (on standardised inputs),
    the model's ``feature_importances_``, or else permutation importance on the training originals."""
    names = kept_features(pipe, list(t.X.columns))
    model = pipe.named_steps["model"]
    if hasattr(model, "coef_"):
        values = np.abs(np.ravel(model.coef_))
        how = "abs_coef"
    elif hasattr(model, "feature_importances_"):
        values = np.asarray(model.feature_importances_, dtype=float)
        how = "model"
    else:
        orig = t.subset(t.is_original)
        Xt = pipe[:-1].transform(orig.X)
        r = permutation_importance(model, Xt, orig.y, scoring="roc_auc", n_repeats=2, random_state=seed)
        values, how = r.importances_mean, "permutation_auc"
    return (pl.DataFrame({"feature": names, "importance": values.astype(float), "method": how})
            .sort("importance", descending=True))


@dataclass
class CVOutput:
    """Everything one model's cross-validation produced (before tracking)."""

    predictions: pl.DataFrame        # video_id, group_id, label, fold, split, prob_fake
    inner_oof: pl.DataFrame          # outer_fold, video_id, prob_fake
    fold_metrics: list[dict[str, float]]
    fold_params: list[dict[str, Any]]
    final: FitOutcome | None         # None: cross_validate(refit=False)
    fit_seconds: float
    importance: pl.DataFrame | None = None   # set by trainers that know it (the stack's weights)


def _pred_frame(t: TrainTable, p: np.ndarray, fold: int | None, split: str) -> pl.DataFrame:
    return pl.DataFrame({"video_id": t.video_id, "group_id": t.group_id, "label": t.y.astype(np.int8),
                         "fold": pl.Series([fold] * len(t.y), dtype=pl.Int32), "split": split,
                         "prob_fake": p.astype(float)})


#: ``hook(train, evaluated) -> (train, evaluated)``: a per-fold feature set (columns fitted on
#: the training rows only, e.g. the learned tile evidence, :mod:`fvcflow.training.fitting.tiles`)
FoldHook = Callable[[TrainTable, TrainTable], tuple[TrainTable, TrainTable]]


def cross_validate(spec: ModelSpec, t: TrainTable, cfg: TrainConfig, *,
                   resume: FoldCache | None = None, fold_hook: FoldHook | None = None,
                   refit: bool = True) -> CVOutput:
    """Outer folds (grid search inside), then the refit on all training rows and the test set.

    ``fold_hook`` builds columns per fold: each outer fold's training rows and evaluated rows
    (and the final refit's training rows and test rows) pass through it before the fit, so a
    column learned from data (the tile evidence) is learned from that fold's training rows only.

    With ``resume``, every finished fold (and the final refit) is stored there at once and a
    stored one is restored instead of refitted: a killed training resumes from its last fold.
    With ``refit=False`` the out-of-fold evaluation alone (``final`` is None, no test rows scored).

    BLAS is held to ``cfg.n_jobs`` threads meanwhile: on demo-sized tables its threads cost more
    than they give (5x slower fits measured on the 2-core machine with other work running).
    """
    with threadpool_limits(limits=cfg.n_jobs, user_api="blas"):
        return _cross_validate(spec, t, cfg, resume, fold_hook or _no_hook, refit)


def _no_hook(train: TrainTable, evaluated: TrainTable) -> tuple[TrainTable, TrainTable]:
    return train, evaluated


def _fit_or_restore(spec: ModelSpec, t: TrainTable, cfg: TrainConfig, resume: FoldCache | None,
                    name: str) -> tuple[FitOutcome, float]:
    """``search_and_fit`` of one fold, restored from ``resume`` when stored; the seconds its fit
    took in an earlier, interrupted run (0 when fitted now)."""
    if resume is not None and (stored := resume.load(name)) is not None:
        log.info("%s: %s restored from %s", spec.name, name, resume.root)
        fit = FitOutcome(stored["params"], stored["pipeline"], stored["inner_oof"], list(stored["scores"]))
        return fit, stored["seconds"]
    start = time.perf_counter()
    fit = search_and_fit(spec, t, cfg)
    if resume is not None:     # stored as safe parts (no pickle): see fvcflow.resume
        resume.save(name, {"params": fit.params, "pipeline": fit.pipeline, "inner_oof": fit.inner_oof,
                           "scores": [float(s) for s in fit.scores], "seconds": time.perf_counter() - start})
    return fit, 0.0


def _cross_validate(spec: ModelSpec, t: TrainTable, cfg: TrainConfig, resume: FoldCache | None,
                    hook: FoldHook, refit: bool = True) -> CVOutput:
    start = time.perf_counter()
    restored = 0.0                      # fit seconds spent by an interrupted run on restored folds
    train_all = t.subset(~t.is_test)
    preds, inner, fold_metrics, fold_params = [], [], [], []
    for k in train_all.folds:
        train, val = hook(train_all.subset(train_all.fold != k),
                          train_all.subset((train_all.fold == k) & train_all.is_original))
        fit, earlier = _fit_or_restore(spec, train, cfg, resume, f"fold{k}")
        restored += earlier
        p = predict_rows(fit.pipeline, val)
        preds.append(_pred_frame(val, p, k, "oof"))
        inner.append(fit.inner_oof.with_columns(outer_fold=pl.lit(k, pl.Int32)))
        fold_metrics.append(binary_metrics(val.y, p))
        fold_params.append(fit.params)
        emit("fold_end", model=spec.name, fold=len(fold_metrics) - 1, folds=len(train_all.folds))
    if not refit:
        return CVOutput(pl.concat(preds), pl.concat(inner).select("outer_fold", "video_id", "prob_fake"),
                        fold_metrics, fold_params, None, time.perf_counter() - start + restored)
    train_all, test = hook(train_all, t.subset(t.is_test & t.is_original))
    final, earlier = _fit_or_restore(spec, train_all, cfg, resume, "final")
    restored += earlier
    if len(test.y):
        preds.append(_pred_frame(test, predict_rows(final.pipeline, test), None, "test"))
    return CVOutput(pl.concat(preds), pl.concat(inner).select("outer_fold", "video_id", "prob_fake"),
                    fold_metrics, fold_params, final, time.perf_counter() - start + restored)
