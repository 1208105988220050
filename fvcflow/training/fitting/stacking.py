"""The stacking ensemble's cross-validation, without leakage.

For outer fold ``k`` the meta-learner is fitted on the *inner* out-of-fold probabilities of the
base models trained on the other folds (every one from a base model that saw neither the row
nor fold ``k``), then scores fold ``k`` from the base models' outer out-of-fold probabilities.
The final meta-learner, for the test set and the deployable model, is fitted on the outer
out-of-fold probabilities of all training rows (none of which saw the test set). Bases of any
kind take part (tabular, deep, embedding) when they have inner out-of-fold predictions (deep
models compute them when an ensemble is selected: ``train.deep.inner_oof``). A stack whose grid
has several points (``stack_s24``'s L1 path, ``topk_mean``'s ``k``) chooses one for each
meta-learner it fits, on grouped folds of that meta-learner's own rows, by the one-standard-error
rule of the base models (:func:`fvcflow.training.fitting.cv.choose_point`).
"""

from __future__ import annotations

import time

import numpy as np
import polars as pl

from fvcflow.config import TrainConfig
from fvcflow.errors import FvcError
from fvcflow.metrics import binary_metrics, roc_auc
from fvcflow.models import ModelSpec, StackedModel, create_model
from fvcflow.models.grouped import grouped_kfold
from fvcflow.models.stack import video_column
from fvcflow.training.fitting.cv import CVOutput, FitOutcome, choose_point, restrictiveness
from fvcflow.training.fitting.data import TrainTable
from fvcflow.training.fitting.grouping import fit_params
from fvcflow.training.fitting.results import ModelResult


def _wide(frames: list[pl.DataFrame], names: list[str], keys: list[str]) -> pl.DataFrame:
    """Join per-base ``prob_fake`` columns on ``keys`` (inner: rows every base predicted)."""
    out = frames[0].select(*keys, pl.col("prob_fake").alias(names[0]))
    for f, n in zip(frames[1:], names[1:]):
        out = out.join(f.select(*[k for k in keys if k in ("video_id", "outer_fold")],
                                pl.col("prob_fake").alias(n)),
                       on=[k for k in keys if k in ("video_id", "outer_fold")], how="inner")
    return out


def stack_inputs(bases: list[ModelResult]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Wide tables of base probabilities: outer OOF, inner OOF (with labels), test."""
    names = [b.name for b in bases]
    keys = ["video_id", "group_id", "label", "fold"]
    oof = _wide([b.predictions.filter(pl.col("split") == "oof") for b in bases], names, keys)
    test = _wide([b.predictions.filter(pl.col("split") == "test") for b in bases], names, keys)
    inner = _wide([b.inner_oof for b in bases], names, ["outer_fold", "video_id"])
    inner = inner.join(oof.select("video_id", "group_id", "label"), on="video_id", how="inner")
    return oof.sort("video_id"), inner.sort("outer_fold", "video_id"), test.sort("video_id")


def stack_cv(spec: ModelSpec, bases: list[ModelResult], cfg: TrainConfig) -> CVOutput:
    """Nested stacking CV over ``bases``; ``final.pipeline`` is the deployable :class:`StackedModel`."""
    if len(bases) < 2:
        raise FvcError(f"{spec.name} needs at least two trained base models, got {len(bases)}: "
                       "train more models (--models) or leave the stack out")
    start = time.perf_counter()
    names = [b.name for b in bases]
    oof, inner, test = stack_inputs(bases)
    points = spec.grid_points(cfg.grids.get(spec.name))
    grid = {key: tuple(v) for key, v in (cfg.grids.get(spec.name) or spec.grid).items()}
    order = sorted(range(len(points)), key=lambda i: (restrictiveness(points[i], grid), i))
    base = cfg.params.get(spec.name, {})

    def make(point: dict, df: pl.DataFrame):
        est = create_model(spec.name, seed=cfg.seed, n_jobs=cfg.n_jobs, **{**base, **point})
        # a meta-learner that splits internally gets the groups, like every base model
        return est.fit(df.select(names).to_numpy(), df["label"].to_numpy(),
                       **fit_params(est, df["group_id"].to_numpy()))

    def choose(df: pl.DataFrame) -> dict:
        """The grid point for a meta-learner fitted on ``df``: grouped folds of ``df`` itself."""
        if len(points) == 1:
            return points[0]
        y, g = df["label"].to_numpy(), df["group_id"].to_numpy()
        scores, fold_scores = [], []
        for point in points:
            p, per_fold = np.full(len(y), np.nan), []
            for tr, va in grouped_kfold(y, g, cfg.inner_folds, seed=cfg.seed, what=f"{spec.name}'s grid"):
                p[va] = make(point, df[tr]).predict_proba(df[va].select(names).to_numpy())[:, 1]
                per_fold.append(roc_auc(y[va], p[va]))          # NaN for a one-class fold
            scores.append(roc_auc(y, p))
            fold_scores.append(per_fold)
        return points[choose_point(np.array(scores), np.array(fold_scores, dtype=float), order)]

    def fit(df: pl.DataFrame):
        point = choose(df)
        chosen.append({**base, **point})
        return make(point, df)

    preds, fold_metrics, chosen = [], [], []
    for k in sorted(oof["fold"].unique().to_list()):
        meta = fit(inner.filter(pl.col("outer_fold") == k))
        val = oof.filter(pl.col("fold") == k)
        p = meta.predict_proba(val.select(names).to_numpy())[:, 1]
        preds.append(val.select("video_id", "group_id", "label", "fold").with_columns(
            split=pl.lit("oof"), prob_fake=pl.Series(p)))
        fold_metrics.append(binary_metrics(val["label"].to_numpy(), p))
    final_meta = fit(oof)
    params = chosen[-1]
    if test.height:
        p = final_meta.predict_proba(test.select(names).to_numpy())[:, 1]
        preds.append(test.select("video_id", "group_id", "label", "fold").with_columns(
            split=pl.lit("test"), prob_fake=pl.Series(p)))
    model = StackedModel([(b.name, b.model, b.columns) for b in bases], final_meta)
    weights = pl.DataFrame({"feature": names, "importance": np.abs(final_meta.coef_.ravel()),
                            "method": "abs_coef"}).sort("importance", descending=True)
    inner_out = pl.DataFrame(schema={"outer_fold": pl.Int32, "video_id": pl.Utf8, "prob_fake": pl.Float64})
    return CVOutput(pl.concat(preds), inner_out, fold_metrics, chosen[:-1],
                    FitOutcome(params, model, inner_out), time.perf_counter() - start, importance=weights)


def stack_example(t: TrainTable, bases: list[ModelResult], n: int = 20):
    """The stack's input example: ``n`` feature rows, plus ``prob_<name>`` columns for the bases that
    score videos (deep, embedding), from their out-of-fold predictions of the same videos."""
    example = t.X.head(n).copy()
    ids = t.video_id[:len(example)]
    for b in bases:
        if hasattr(b.model, "predict_video"):
            oof = b.predictions.filter(pl.col("split") == "oof")
            prob = dict(zip(oof["video_id"].to_list(), oof["prob_fake"].to_list()))
            example[video_column(b.name)] = [float(prob.get(v, 0.5)) for v in ids]
    return example
