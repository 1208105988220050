"""The training stage's entry points: plain functions the Prefect flow calls as tasks.

``make_splits`` -> ``train_model`` (one per model, any order) -> ``train_stack`` -> ``finish``;
``run_training`` does all of it in one call (``fvc train``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import polars as pl

from fvcflow.errors import FvcError
from fvcflow.models import ModelSpec, get_model_spec, list_models
from fvcflow.store import Lake, read_parquet, write_parquet_atomic
from fvcflow.training import tracking
from fvcflow.training.config import TrainConfig
from fvcflow.training.cv import CVOutput, cross_validate, feature_importance
from fvcflow.training.data import feature_set_columns, load_features, train_table
from fvcflow.training.metrics import binary_metrics, summarize_folds
from fvcflow.training.results import ModelResult, TrainSummary, leaderboard
from fvcflow.training.splits import assign_splits
from fvcflow.training.stacking import stack_cv

log = logging.getLogger("fvcflow.training")

PREDICTION_COLUMNS = ["video_id", "group_id", "label", "model", "feature_set", "fold", "split", "prob_fake"]


def make_splits(lake: Lake, cfg: TrainConfig | None = None) -> pl.DataFrame:
    """Assign folds and the test set from the index and the augmented table; write ``stage5/splits.parquet``.

    >>> splits = make_splits(Lake.at("fvc-data"), TrainConfig())     # doctest: +SKIP
    >>> splits.columns                                                # doctest: +SKIP
    ['video_id', 'group_id', 'label', 'variant', 'fold', 'is_test']
    """
    cfg = cfg or TrainConfig()
    videos = read_parquet(lake.index)
    if videos is None:
        raise FvcError(f"no video index at {lake.index}: run the ingest stage first (fvc ingest ...)")
    table = assign_splits(videos, read_parquet(lake.stage1), cfg)
    write_parquet_atomic(table, lake.splits)
    n_test = table.filter(pl.col("is_test") & (pl.col("variant") == "original")).height
    log.info("splits: %d rows (%d test originals), %d folds -> %s", table.height, n_test, cfg.folds,
             lake.splits)
    return table


def load_splits(lake: Lake, cfg: TrainConfig) -> pl.DataFrame:
    """The split table on disk, made first when there is none."""
    return read_parquet(lake.splits) if lake.splits.exists() else make_splits(lake, cfg)


def _result(spec: ModelSpec, cv: CVOutput, feature_set: str, columns: list[str],
            importance: pl.DataFrame, n_train_rows: int) -> ModelResult:
    pred = cv.predictions
    oof, test = pred.filter(pl.col("split") == "oof"), pred.filter(pl.col("split") == "test")
    return ModelResult(
        name=spec.name, kind=spec.kind, feature_set=feature_set, columns=columns, predictions=pred,
        inner_oof=cv.inner_oof, fold_metrics=cv.fold_metrics, fold_params=cv.fold_params,
        cv_summary=summarize_folds(cv.fold_metrics),
        oof_metrics=binary_metrics(oof["label"].to_numpy(), oof["prob_fake"].to_numpy()),
        test_metrics=binary_metrics(test["label"].to_numpy(),
                                    test["prob_fake"].to_numpy()) if test.height else {},
        best_params=cv.final.params, importance=importance, model=cv.final.pipeline,
        fit_seconds=cv.fit_seconds, n_train_rows=n_train_rows)


def train_tabular(lake: Lake, spec: ModelSpec, cfg: TrainConfig) -> ModelResult:
    """Cross-validate, test, refit and track one tabular model."""
    t = train_table(load_features(lake, spec.feature_set), load_splits(lake, cfg), spec.feature_set,
                    use_augmented=cfg.use_augmented)
    cv = cross_validate(spec, t, cfg)
    train = t.subset(~t.is_test)
    result = _result(spec, cv, spec.feature_set, list(t.X.columns),
                     feature_importance(cv.final.pipeline, train, cfg.seed), len(train.y))
    return tracking.log_result(lake, cfg, result, example=train.X.head(20))


#: how a model of each kind is trained by :func:`train_model`; later kinds add themselves here
TRAINERS: dict[str, Callable[[Lake, ModelSpec, TrainConfig], ModelResult]] = {"tabular": train_tabular}


def train_model(lake: Lake, model_name: str, cfg: TrainConfig | None = None) -> ModelResult:
    """Train one registered model on all folds and the test set, tracked in MLflow.

    >>> r = train_model(Lake.at("fvc-data"), "logreg_s2", TrainConfig())   # doctest: +SKIP
    >>> r.oof_metrics["roc_auc"]                                           # doctest: +SKIP
    0.91
    """
    cfg = cfg or TrainConfig()
    spec = get_model_spec(model_name)
    trainer = TRAINERS.get(spec.kind)
    if trainer is None:
        how = "train it with train_stack(lake, results, cfg)" if spec.kind == "stack" else \
            f"no trainer for kind {spec.kind!r} is installed"
        raise FvcError(f"model {model_name!r} is of kind {spec.kind!r}: {how}")
    log.info("training %s (%s, %s)", spec.name, spec.kind, spec.feature_set)
    return trainer(lake, spec, cfg)


def train_stack(lake: Lake, results: list[ModelResult], cfg: TrainConfig | None = None,
                name: str = "stack_s24") -> ModelResult:
    """Fit the stacking ensemble ``name`` over the non-stack ``results`` (nested, no leakage)."""
    cfg = cfg or TrainConfig()
    spec = get_model_spec(name)
    bases = [r for r in results if get_model_spec(r.name).kind != "stack"]
    cv = stack_cv(spec, bases, cfg)
    feature_set = "s24" if any(b.feature_set == "s24" for b in bases) else "s2"
    columns = feature_set_columns(feature_set)
    splits = load_splits(lake, cfg).filter(~pl.col("is_test"))
    example = train_table(load_features(lake, feature_set), splits, feature_set).X.head(20)
    result = _result(spec, cv, feature_set, columns, cv.importance, bases[0].n_train_rows)
    return tracking.log_result(lake, cfg, result, example=example)


def finish(lake: Lake, results: list[ModelResult], cfg: TrainConfig | None = None,
           skipped: dict[str, str] | None = None) -> TrainSummary:
    """Write ``stage5/predictions.parquet``, register the best model, write the report."""
    from fvcflow import report  # the report draws on the whole package; imported when needed

    cfg = cfg or TrainConfig()
    if not results:
        raise FvcError("no model was trained: check --models (fvc train --list shows the registered ones)")
    preds = pl.concat([r.predictions.with_columns(model=pl.lit(r.name), feature_set=pl.lit(r.feature_set))
                       .select(PREDICTION_COLUMNS) for r in results])
    write_parquet_atomic(preds, lake.predictions)
    board = leaderboard(results)
    scored = board.height and board["oof_roc_auc"].fill_nan(None)[0] is not None
    best_name = board["model"][0] if scored else None
    summary = TrainSummary(results, board, report.feature_separation(lake), best=best_name,
                           predictions_path=lake.predictions, skipped=dict(skipped or {}))
    if cfg.register_best and best_name:
        best = next(r for r in results if r.name == best_name)
        summary.registered_name = cfg.registered_name
        summary.registered_version = tracking.register(lake, cfg, best)
    if cfg.report:
        summary.report_path = report.write_report(lake, summary)
    return summary


def select_models(lake: Lake, cfg: TrainConfig) -> tuple[list[str], dict[str, str]]:
    """Registered models matching ``cfg.models`` that this lake can train, and the skipped ones (why)."""
    names = list_models(cfg.models)
    if not names:
        raise FvcError(f"no registered model matches {cfg.models!r}; registered: {', '.join(list_models())}")
    chosen, skipped = [], {}
    for name in names:
        spec = get_model_spec(name)
        if spec.kind not in TRAINERS and spec.kind != "stack":
            skipped[name] = f"no trainer for kind {spec.kind!r} in this installation"
        elif spec.feature_set == "s24" and not lake.stage4.exists():
            skipped[name] = f"needs stage 4 features ({lake.stage4} does not exist)"
        else:
            chosen.append(name)
    return chosen, skipped


@dataclass
class ModelPlan:
    """The models a training run fits: base models first (any order), then stacks over them."""

    base: list[str]
    stacks: list[str]
    skipped: dict[str, str] = field(default_factory=dict)   # model -> why


def plan_models(lake: Lake, cfg: TrainConfig) -> ModelPlan:
    """Split the models ``cfg.models`` selects into base models and stacks; say what is skipped.

    >>> plan_models(Lake.at("fvc-data"), TrainConfig(models="logreg_*")).stacks   # doctest: +SKIP
    []
    """
    names, skipped = select_models(lake, cfg)
    base = [n for n in names if get_model_spec(n).kind != "stack"]
    stacks = [n for n in names if get_model_spec(n).kind == "stack"]
    if stacks and len(base) < 2:
        skipped.update({n: f"needs at least two base models, {len(base)} selected" for n in stacks})
        stacks = []
    return ModelPlan(base, stacks, dict(skipped))


def run_training(lake: Lake, cfg: TrainConfig | None = None) -> TrainSummary:
    """Splits, every selected model, the stack, predictions, registration and report.

    >>> summary = run_training(Lake.at("fvc-data"), TrainConfig(models="logreg_*"))   # doctest: +SKIP
    >>> print(summary.markdown())                                                      # doctest: +SKIP
    """
    cfg = cfg or TrainConfig()
    plan = plan_models(lake, cfg)
    make_splits(lake, cfg)
    results = [train_model(lake, n, cfg) for n in plan.base]
    results += [train_stack(lake, results, cfg, name=n) for n in plan.stacks]
    for n, why in plan.skipped.items():
        log.warning("skipped %s: %s", n, why)
    return finish(lake, results, cfg, plan.skipped)
