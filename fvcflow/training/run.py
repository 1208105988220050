"""The training stage's entry points: plain functions the Prefect flow calls as tasks.

``make_splits`` -> ``train_model`` (one per model, any order) -> ``train_stack`` -> ``finish``;
``run_training`` does all of it in one call (``fvc train``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Sequence

import polars as pl

from fvcflow.config import TrainConfig
from fvcflow.digest import lake_digests
from fvcflow.errors import FvcError
from fvcflow.models import KINDS, get_model_spec, list_models
from fvcflow.models.weights import check_selected
from fvcflow.progress import emit
from fvcflow.store import Lake, read_parquet, write_parquet_atomic
from fvcflow.training.evidence import assess as evidence
from fvcflow.training.evidence import report
from fvcflow.training.fitting import crosscorpus, embedding, tiles  # noqa: F401  (register their kinds' trainers)
from fvcflow.training.fitting.data import missing_for
from fvcflow.training.fitting.results import ModelResult, TrainSummary, leaderboard
from fvcflow.training.fitting.splits import load_splits, make_splits, prepare_splits
from fvcflow.training.fitting.trainers import TRAINERS
from fvcflow.training.tracking import runs as tracking

__all__ = ["PREDICTION_COLUMNS", "ModelPlan", "finish", "load_splits", "make_splits", "plan_models",
           "prepare_splits",
           "run_training", "select_models", "train_model", "train_stack"]

log = logging.getLogger("fvcflow.training")

PREDICTION_COLUMNS = ["video_id", "group_id", "label", "model", "feature_set", "fold", "split", "prob_fake"]


def train_model(lake: Lake, model_name: str, cfg: TrainConfig | None = None,
                bases: Sequence[ModelResult] = ()) -> ModelResult:
    """Train one registered model on all folds and the test set, tracked in MLflow.

    The trainer is the one registered for the model's kind (``trainers.TRAINERS``); it logs the
    result through :func:`fvcflow.training.tracking.runs.log_result`; ``bases`` are the trained
    models a stack fits on.

    >>> r = train_model(Lake.at("fvc-data"), "logreg_s2", TrainConfig())   # doctest: +SKIP
    >>> r.oof_metrics["roc_auc"]                                           # doctest: +SKIP
    0.91
    """
    cfg = cfg or TrainConfig()
    spec = get_model_spec(model_name)
    log.info("training %s (%s, %s)", spec.name, spec.kind, spec.feature_set or spec.input)
    emit("model_start", model=spec.name)
    result = TRAINERS[spec.kind](lake, spec, cfg, list(bases), partial(tracking.log_result, lake, cfg))
    emit("model_end", model=result.name, oof_roc_auc=result.oof_metrics.get("roc_auc"),
         seconds=result.fit_seconds + result.log_seconds)
    return result


def train_stack(lake: Lake, results: list[ModelResult], cfg: TrainConfig | None = None,
                name: str = "stack_s24") -> ModelResult:
    """Fit the stacking ensemble ``name`` over the non-stack ``results`` (nested, no leakage)."""
    return train_model(lake, name, cfg, bases=results)


def finish(lake: Lake, results: list[ModelResult], cfg: TrainConfig | None = None,
           skipped: dict[str, str] | None = None, cross_corpus: pl.DataFrame | None = None) -> TrainSummary:
    """Write ``stage5/predictions.parquet``, register the best model, write the report (with the
    cross-corpus ablation of ``train.evaluate_on`` when given)."""
    cfg = cfg or TrainConfig()
    if not results:
        raise FvcError("no model was trained: check --models (fvc train --list shows the registered ones)")
    preds = pl.concat([r.predictions.with_columns(model=pl.lit(r.name), feature_set=pl.lit(r.feature_set,
                                                                                         pl.Utf8))
                       .select(PREDICTION_COLUMNS) for r in results])
    old = read_parquet(lake.predictions) if cfg.reuse_splits else None
    if old is not None and old.columns == PREDICTION_COLUMNS:   # same splits: keep the other models' rows
        preds = pl.concat([old.filter(~pl.col("model").is_in([r.name for r in results])), preds])
    write_parquet_atomic(preds, lake.predictions)
    board = leaderboard(results)
    scored = board.height and board["oof_roc_auc"].fill_nan(None)[0] is not None
    best_name = board["model"][0] if scored else None
    summary = TrainSummary(results, board, report.feature_separation(lake), best=best_name,
                           predictions_path=lake.predictions, skipped=dict(skipped or {}),
                           digests=lake_digests(lake), cross_corpus=cross_corpus)
    evidence.assess(lake, summary, cfg)      # best vs runner-up, shortcut check, subgroups
    # a tile model's te_ columns need its tile model and the video's tiles: a new video's stage 2 row
    # alone cannot give them, so the detector registered is the best model that scores from it
    servable = [m for m in board["model"].to_list() if get_model_spec(m).kind != "tile"] if scored else []
    if cfg.register_best and servable:
        if servable[0] != best_name:
            log.warning("%s is best but its tile evidence cannot be computed at prediction time; "
                        "registering %s", best_name, servable[0])
        best = next(r for r in results if r.name == servable[0])
        summary.registered_name = cfg.registered_name
        summary.registered_version = evidence.register_detector(lake, cfg, best, summary)  # calibrated
    if best_name:
        evidence.write_card(lake, summary, cfg)
    if cfg.report:
        summary.report_path = report.write_report(lake, summary)
    best_auc = board["oof_roc_auc"][0] if best_name else None
    iv = next((r.intervals for r in results if r.name == best_name), {})
    emit("train_end", best=best_name, best_auc=best_auc, models=len(results),
         registered_version=summary.registered_version,
         best_auc_low=iv.get("oof_roc_auc_lo"), best_auc_high=iv.get("oof_roc_auc_hi"),
         digest=summary.digests.get("predictions"))
    return summary


def select_models(lake: Lake, cfg: TrainConfig) -> tuple[list[str], dict[str, str]]:
    """Registered models matching ``cfg.models`` that this lake can train, and the skipped ones (why)."""
    names = list_models(cfg.models)
    if cfg.kinds is not None:
        unknown = sorted(set(cfg.kinds) - set(KINDS))
        if unknown:
            raise FvcError(f"setting 'train.kinds': unknown kinds {', '.join(unknown)}; "
                           f"known: {', '.join(KINDS)}")
        names = [n for n in names if get_model_spec(n).kind in cfg.kinds]
    if not names:
        raise FvcError(f"no registered model matches {cfg.models!r}; registered: {', '.join(list_models())}")
    named = set(list_models(",".join(p for p in cfg.patterns() if p != "*") or "-"))
    chosen, skipped, opt_in = [], {}, []
    for name in names:
        spec = get_model_spec(name)
        if not spec.kind_spec.by_default and name not in named and spec.kind not in (cfg.kinds or ()):
            opt_in.append(name)       # deep models train only when a pattern names them
        elif spec.feature_set and (why := missing_for(lake, spec.feature_set)):
            skipped[name] = why
        elif spec.input == "frames" and not lake.stage3.exists():
            skipped[name] = f"needs the stage 3 videos ({lake.stage3} does not exist)"
        else:
            chosen.append(name)
    if opt_in:
        log.info("not selected by '*' (name them in train.models to train them): %s", ", ".join(opt_in))
    if not chosen and not skipped and opt_in:
        raise FvcError(f"train.models {cfg.models!r} selects only deep models by '*': name them, "
                       f"e.g. {opt_in[0]!r}")
    return chosen, skipped


@dataclass
class ModelPlan:
    """The models a training run fits: base models first (any order), then stacks over them."""

    base: list[str]
    stacks: list[str]
    skipped: dict[str, str] = field(default_factory=dict)   # model -> why

    def on_gpu(self, name: str) -> bool:
        """Whether ``name`` is of a kind that trains on the GPU (its task takes a ``gpu`` slot)."""
        return get_model_spec(name).kind_spec.device == "gpu"


def plan_models(lake: Lake, cfg: TrainConfig) -> ModelPlan:
    """Split the models ``cfg.models`` selects into base models and stacks; say what is skipped.

    >>> plan_models(Lake.at("fvc-data"), TrainConfig(models="logreg_*")).stacks   # doctest: +SKIP
    []
    """
    names, skipped = select_models(lake, cfg)
    check_selected(names, cfg.deep.weights, cfg.params)     # a named weight not cached: stop before any work
    base = [n for n in names if not get_model_spec(n).kind_spec.uses_bases]
    stacks = [n for n in names if get_model_spec(n).kind_spec.uses_bases]
    if stacks and len(base) < 2:
        skipped.update({n: f"needs at least two base models, {len(base)} selected" for n in stacks})
        stacks = []
    emit("train_start", models=base + stacks, folds=cfg.folds)
    for name, why in skipped.items():
        emit("note", text=f"model {name} skipped: {why}")
    return ModelPlan(base, stacks, dict(skipped))


def run_training(lake: Lake, cfg: TrainConfig | None = None) -> TrainSummary:
    """Splits, every selected model, the stack, predictions, registration and report.

    >>> summary = run_training(Lake.at("fvc-data"), TrainConfig(models="logreg_*"))   # doctest: +SKIP
    >>> print(summary.markdown())                                                      # doctest: +SKIP
    """
    cfg = cfg or TrainConfig()
    plan = plan_models(lake, cfg)
    prepare_splits(lake, cfg)
    results = [train_model(lake, n, cfg) for n in plan.base]
    results += [train_stack(lake, results, cfg, name=n) for n in plan.stacks]
    for n, why in plan.skipped.items():
        log.warning("skipped %s: %s", n, why)
    cross = crosscorpus.cross_corpus(lake, Lake.at(cfg.evaluate_on), cfg) if cfg.evaluate_on else None
    return finish(lake, results, cfg, plan.skipped, cross_corpus=cross)
