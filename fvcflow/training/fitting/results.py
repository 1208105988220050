"""What training returns: one :class:`ModelResult` per model and a :class:`TrainSummary`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from fvcflow.deep.nested import INNER_OOF_SCHEMA

LEADERBOARD_METRICS = ("roc_auc", "average_precision", "eer", "accuracy", "f1", "log_loss", "brier")
#: metrics with a grouped bootstrap 95 % interval (``{split}_{metric}_lo`` / ``_hi``)
INTERVAL_METRICS = ("roc_auc", "average_precision", "eer")


@dataclass
class ModelResult:
    """One model's cross-validated, tested and tracked outcome, whatever its kind.

    ``predictions`` has video_id, group_id, label, fold, split ("oof"/"test"), prob_fake for the
    originals; ``inner_oof`` (outer_fold, video_id, prob_fake) feeds the stacking ensemble (empty
    for kinds without an inner CV: such models are not stack bases). ``feature_set``, ``columns``
    and ``importance`` belong to models of a feature table and are ``None``/empty otherwise.
    ``fold_history[k]`` holds one dict of metrics per epoch of fold ``k`` (MLflow steps);
    ``fold_artifacts[k]`` maps an artifact path to a local file (the fold's best checkpoint);
    ``tags``/``params`` are extra MLflow tags and parameters of the parent run; ``example`` is the
    input example the model logger uses (a feature DataFrame, a clip batch). ``intervals`` holds
    the grouped bootstrap 95 % bounds ``{oof,test}_{roc_auc,average_precision,eer}_{lo,hi}``
    (:func:`fvcflow.training.fitting.bootstrap.prediction_intervals`).
    """

    name: str
    kind: str
    predictions: pl.DataFrame
    fold_metrics: list[dict[str, float]]
    fold_params: list[dict[str, Any]]
    cv_summary: dict[str, float]
    oof_metrics: dict[str, float]
    test_metrics: dict[str, float]
    best_params: dict[str, Any]
    model: Any
    fit_seconds: float
    feature_set: str | None = None
    columns: list[str] = field(default_factory=list)
    inner_oof: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=INNER_OOF_SCHEMA))
    importance: pl.DataFrame | None = None
    n_train_rows: int = 0
    fold_history: list[list[dict[str, float]]] = field(default_factory=list)
    fold_artifacts: list[dict[str, Path]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    example: Any = None
    intervals: dict[str, float] = field(default_factory=dict)
    log_seconds: float = 0.0
    run_id: str | None = None
    model_uri: str | None = None

    @property
    def has_importance(self) -> bool:
        return self.importance is not None and self.importance.height > 0

    def leaderboard_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"model": self.name, "kind": self.kind, "feature_set": self.feature_set}
        for m in LEADERBOARD_METRICS:
            row[f"oof_{m}"] = self.oof_metrics.get(m, math.nan)
            if m in INTERVAL_METRICS:
                row[f"oof_{m}_lo"] = self.intervals.get(f"oof_{m}_lo", math.nan)
                row[f"oof_{m}_hi"] = self.intervals.get(f"oof_{m}_hi", math.nan)
        row["cv_roc_auc_mean"] = self.cv_summary.get("roc_auc_mean", math.nan)
        row["cv_roc_auc_std"] = self.cv_summary.get("roc_auc_std", math.nan)
        for m in LEADERBOARD_METRICS:
            row[f"test_{m}"] = self.test_metrics.get(m, math.nan)
            if m in INTERVAL_METRICS:
                row[f"test_{m}_lo"] = self.intervals.get(f"test_{m}_lo", math.nan)
                row[f"test_{m}_hi"] = self.intervals.get(f"test_{m}_hi", math.nan)
        row["fit_s"] = self.fit_seconds
        row["run_id"] = self.run_id
        return row


def make_result(spec: Any, predictions: pl.DataFrame, fold_metrics: list[dict[str, float]],
                fold_params: list[dict[str, Any]], best_params: dict[str, Any], model: Any,
                fit_seconds: float, **optional: Any) -> ModelResult:
    """A :class:`ModelResult` whose summary metrics come from ``predictions`` (video level).

    Every trainer builds its result here, so that every kind is summarised alike: the fold
    summary from ``fold_metrics``, ``oof_metrics``/``test_metrics`` by :func:`binary_metrics`
    over the out-of-fold and test rows, their grouped bootstrap intervals (resampling
    ``group_id``). ``optional`` sets the other fields of ModelResult.
    """
    from fvcflow.metrics import binary_metrics, summarize_folds
    from fvcflow.training.fitting.bootstrap import prediction_intervals

    oof = predictions.filter(pl.col("split") == "oof")
    test = predictions.filter(pl.col("split") == "test")
    return ModelResult(
        name=spec.name, kind=spec.kind, predictions=predictions, fold_metrics=fold_metrics,
        fold_params=fold_params, cv_summary=summarize_folds(fold_metrics),
        oof_metrics=binary_metrics(oof["label"].to_numpy(), oof["prob_fake"].to_numpy()),
        test_metrics=(binary_metrics(test["label"].to_numpy(), test["prob_fake"].to_numpy())
                      if test.height else {}),
        best_params=best_params, model=model, fit_seconds=fit_seconds,
        **{"intervals": prediction_intervals(predictions), **optional})


def leaderboard(results: list[ModelResult]) -> pl.DataFrame:
    """One row per model (every kind side by side), best out-of-fold ROC AUC first (NaN last)."""
    if not results:
        return pl.DataFrame()
    df = pl.DataFrame([r.leaderboard_row() for r in results],
                      schema_overrides={"feature_set": pl.Utf8, "run_id": pl.Utf8})
    return df.sort(pl.col("oof_roc_auc").fill_nan(None), descending=True, nulls_last=True)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def markdown_table(df: pl.DataFrame, columns: list[str]) -> str:
    """A GitHub-style Markdown table of ``columns`` of ``df``."""
    cols = [c for c in columns if c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in df.select(cols).iter_rows()]
    return "\n".join(lines)


@dataclass
class TrainSummary:
    """The outcome of a training stage: leaderboard, registration, written files."""

    results: list[ModelResult]
    leaderboard: pl.DataFrame
    top_features: pl.DataFrame                 # feature, auc, separation (|auc - 0.5|)
    best: str | None = None
    registered_name: str | None = None
    registered_version: str | None = None
    predictions_path: Path | None = None
    report_path: Path | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    evidence: Any = None           # fvcflow.training.evidence.assess.Evidence (intervals' context)
    digests: dict[str, str] = field(default_factory=dict)   # table -> content digest (fvcflow.digest)
    cross_corpus: pl.DataFrame | None = None   # train.evaluate_on's ablation (fitting.crosscorpus)

    def markdown(self, top: int = 10) -> str:
        """The leaderboard and the most separating features, as Markdown (a Prefect artifact)."""
        parts = ["# fvcflow training", ""]
        if self.best:
            reg = (f", registered as `{self.registered_name}` version {self.registered_version}"
                   if self.registered_version else "")
            parts += [f"Best by out-of-fold ROC AUC: **{self.best}**{reg}.", ""]
        parts += ["## Leaderboard", "", markdown_table(self.leaderboard, [
            "model", "feature_set", "oof_roc_auc", "oof_roc_auc_lo", "oof_roc_auc_hi", "cv_roc_auc_mean",
            "cv_roc_auc_std", "oof_eer", "oof_average_precision", "test_roc_auc", "test_roc_auc_lo",
            "test_roc_auc_hi", "test_eer", "test_accuracy", "fit_s"]), "",
            "`_lo`/`_hi`: grouped bootstrap 95 % interval (groups resampled, not videos).", ""]
        if self.top_features.height:
            parts += ["## Features that separate the classes best (single-feature ROC AUC, training "
                      "originals)",
                      "", markdown_table(self.top_features.head(top), ["feature", "auc", "separation"]), ""]
        if self.evidence is not None:        # an Evidence (fvcflow.training.evidence.assess)
            parts += self.evidence.markdown_sections()
        if self.cross_corpus is not None and self.cross_corpus.height:
            parts += [f"## Cross-corpus: evaluated on {self.cross_corpus['eval_corpus'][0]}", "",
                      markdown_table(self.cross_corpus, [
                          "model", "feature_set", "pseudo_fakes", "n_train", "n_eval", "roc_auc",
                          "roc_auc_lo", "roc_auc_hi", "note"]), ""]
        if self.skipped:
            parts += ["## Skipped", ""] + [f"- `{k}`: {v}" for k, v in self.skipped.items()] + [""]
        if self.report_path:
            parts += [f"Report: `{self.report_path}`"]
        return "\n".join(parts)
