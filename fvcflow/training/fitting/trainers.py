"""One trainer per model kind; each registers itself for its kind where it lives (:func:`trains`).

Every trainer has the signature ``trainer(lake, spec, cfg, bases, log) -> ModelResult``: ``bases``
are the results a kind with ``uses_bases`` (the stack) fits on, and empty for the others; ``log``
tracks a finished result and returns it (the caller's MLflow logger,
:func:`fvcflow.training.tracking.runs.log_result`: fitting never imports tracking). Each returns
a result built by :func:`fvcflow.training.fitting.results.make_result`, logged, so every kind
writes the same prediction rows and goes through the same metrics, leaderboard, report and registry.

A new kind is a line in :data:`fvcflow.models.registry.KINDS` and a function decorated with
``@trains("kind")``; :data:`TRAINERS` holds them (the trainers of :mod:`.embedding` register when
it is imported, as :mod:`fvcflow.training.run` does).
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import polars as pl

from fvcflow.config import TrainConfig
from fvcflow.errors import FvcError
from fvcflow.models import ModelSpec
from fvcflow.resume import FoldCache, table_digest
from fvcflow.store import Lake
from fvcflow.training.fitting.cv import cross_validate, feature_importance
from fvcflow.training.fitting.data import FEATURE_SET_COLUMNS, feature_set_columns, load_features, train_table
from fvcflow.training.fitting.results import ModelResult, make_result
from fvcflow.training.fitting.splits import load_splits
from fvcflow.training.fitting.stacking import stack_cv, stack_example

log = logging.getLogger("fvcflow.training")

#: ``log(result) -> result``: tracks a trained model (MLflow) and returns the result it logged
Log = Callable[[ModelResult], ModelResult]
#: ``trainer(lake, spec, cfg, bases, log) -> ModelResult``
Trainer = Callable[[Lake, ModelSpec, TrainConfig, Sequence[ModelResult], Log], ModelResult]
#: every kind's trainer, registered by :func:`trains` where the trainer is defined
TRAINERS: dict[str, Trainer] = {}


def trains(kind: str) -> Callable[[Trainer], Trainer]:
    """Register the decorated function as the trainer of model kind ``kind`` (one per kind)."""
    def decorator(fn: Trainer) -> Trainer:
        if kind in TRAINERS:
            raise ValueError(f"kind {kind!r} already has a trainer ({TRAINERS[kind].__qualname__})")
        TRAINERS[kind] = fn
        return fn

    return decorator


@trains("tabular")
def train_tabular(lake: Lake, spec: ModelSpec, cfg: TrainConfig, bases: Sequence[ModelResult],
                  log: Log) -> ModelResult:
    """Cross-validate (inner grouped grid search), test, refit and track one tabular model."""
    t = train_table(load_features(lake, spec.feature_set), load_splits(lake, cfg), spec.feature_set,
                    use_augmented=cfg.use_augmented)
    resume = FoldCache.for_model(lake, spec.name, cfg, data=table_digest(
        t.video_id, t.group_id, t.y, t.fold, t.is_test, t.is_original, t.X))
    cv = cross_validate(spec, t, cfg, resume=resume)
    train = t.subset(~t.is_test)
    result = make_result(spec, cv.predictions, cv.fold_metrics, cv.fold_params, cv.final.params,
                         cv.final.pipeline, cv.fit_seconds, feature_set=spec.feature_set,
                         columns=list(t.X.columns), inner_oof=cv.inner_oof,
                         importance=feature_importance(cv.final.pipeline, train, cfg.seed),
                         n_train_rows=len(train.y), example=train.X.head(20))
    result = log(result)
    resume.clear()                      # logged: a rerun trains afresh
    return result


def stack_bases(spec: ModelSpec, bases: Sequence[ModelResult]) -> list[ModelResult]:
    """The results a stack can use: not stacks, and with inner out-of-fold predictions."""
    usable = []
    for b in bases:
        if b.kind == spec.kind:
            continue
        if not b.inner_oof.height:
            log.warning("%s: leaves out %s (kind %s has no inner out-of-fold predictions)", spec.name,
                        b.name, b.kind)
            continue
        usable.append(b)
    return usable


def stack_features(lake: Lake, bases: Sequence[ModelResult]) -> tuple[str, list[str], pl.DataFrame]:
    """What a stack reads: its feature-set label, the columns of all its feature bases (in the
    order of their sets) and their table. Bases of different sets (``s2l`` beside ``s24``) need the
    union; the label is the smallest registered set holding it, else the sets joined by ``+``."""
    sets = list(dict.fromkeys(b.feature_set for b in bases if b.feature_set)) or ["s2"]
    columns = list(dict.fromkeys(c for fs in sets for c in feature_set_columns(fs)))
    covering = [fs for fs in FEATURE_SET_COLUMNS if set(columns) <= set(feature_set_columns(fs))]
    label = min(covering, key=lambda fs: len(feature_set_columns(fs))) if covering else "+".join(sets)
    features = load_features(lake, sets[0])
    for fs in sets[1:]:
        table = load_features(lake, fs)
        features = features.join(table.select("video_id", *[c for c in table.columns
                                                            if c not in features.columns]),
                                 on="video_id", how="inner")
    return label, columns, features


@trains("stack")
def train_stack(lake: Lake, spec: ModelSpec, cfg: TrainConfig, bases: Sequence[ModelResult],
                log: Log) -> ModelResult:
    """Fit the stacking ensemble ``spec`` over ``bases`` (nested, no leakage) and track it."""
    if not bases:
        raise FvcError(f"model {spec.name!r} is of kind {spec.kind!r}: it needs trained base models; "
                       "train it with train_stack(lake, results, cfg)")
    bases = stack_bases(spec, bases)
    cv = stack_cv(spec, bases, cfg)
    feature_set, columns, features = stack_features(lake, bases)
    splits = load_splits(lake, cfg).filter(~pl.col("is_test"))
    example = stack_example(train_table(features, splits, feature_set, columns=columns), bases)
    result = make_result(spec, cv.predictions, cv.fold_metrics, cv.fold_params, cv.final.params,
                         cv.final.pipeline, cv.fit_seconds, feature_set=feature_set,
                         columns=columns, inner_oof=cv.inner_oof,
                         importance=cv.importance, n_train_rows=bases[0].n_train_rows, example=example)
    return log(result)


@trains("torch_video")
def train_torch_video(lake: Lake, spec: ModelSpec, cfg: TrainConfig, bases: Sequence[ModelResult],
                      log: Log) -> ModelResult:
    """Train one deep video model on clips of the stage 3 videos, every fold, and track it."""
    from fvcflow.deep.loop import cross_validate_video, resume_cache  # torch only for deep models

    splits = load_splits(lake, cfg)
    cv = cross_validate_video(lake, spec, cfg, splits, resume=True)
    result = log(make_result(spec, cv.predictions, cv.fold_metrics, cv.fold_params, cv.final_params, cv.model,
                             cv.fit_seconds, n_train_rows=cv.n_train_rows, fold_history=cv.fold_history,
                             fold_artifacts=cv.fold_artifacts, tags=cv.tags, params=cv.params,
                             example=cv.example,
                             **({"inner_oof": cv.inner_oof} if cv.inner_oof is not None else {})))
    resume_cache(lake, spec, cfg, splits).clear()          # logged: a rerun trains afresh
    return result
