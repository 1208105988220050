"""The cross-corpus protocol (issue 22, part 4): train on one labelled corpus, evaluate on another.

The field's cross-dataset test in miniature: every model of :data:`ABLATION_MODELS` (the booster
without and with the learned tile evidence) is fitted on ALL labelled training rows of this
lake (its grid point chosen by grouped inner folds, as in the cross-validation; the test
hold-out of this lake left out), with and without the self-blended pseudo-fakes, and scores the
labelled originals of the other lake (``train.evaluate_on``; its stage 2 features made with the
same settings, which ``fvc train --evaluate-on`` does first). The ROC AUC of each has a 95 %
grouped bootstrap interval (:func:`fvcflow.training.fitting.bootstrap.grouped_bootstrap`, over
the other corpus's ``group_id``). The table is ``stage5/cross_corpus.parquet`` and the report's
section "Cross-corpus evaluation".

A model that cannot be fitted one way (the tile evidence without pseudo-fakes or masks: no
blended tile to learn from) keeps its row, with NaN and the reason in ``note``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl

from fvcflow.config import TrainConfig
from fvcflow.errors import FvcError
from fvcflow.models import get_model_spec
from fvcflow.schema import BLEND_PREFIX, ORIGINAL
from fvcflow.stages.tiles import lake_tiles
from fvcflow.store import Lake, read_parquet, write_parquet_atomic
from fvcflow.training.fitting.bootstrap import grouped_bootstrap
from fvcflow.training.fitting.cv import predict_rows, search_and_fit
from fvcflow.training.fitting.data import TrainTable, load_features, train_table
from fvcflow.training.fitting.splits import load_splits
from fvcflow.training.fitting.tiles import TileEvidence

log = logging.getLogger("fvcflow.training")

#: the ablation's models: the booster on s2l, and on s2l + the learned tile evidence
ABLATION_MODELS = ("xgb_s2l", "xgb_s2lt")
#: the other corpus's video ids carry this prefix inside the protocol (two corpora may share ids)
EVAL_PREFIX = "eval:"
COLUMNS = ["train_corpus", "eval_corpus", "model", "feature_set", "pseudo_fakes", "n_train", "n_eval",
           "roc_auc", "roc_auc_lo", "roc_auc_hi", "fit_s", "tile_fit_s", "note"]


def _prefixed() -> pl.Expr:
    return (pl.lit(EVAL_PREFIX) + pl.col("video_id")).alias("video_id")


def evaluation_rows(other: Lake) -> pl.DataFrame:
    """The other corpus's labelled originals as split rows (one fold, no test): errors name the
    work dir and what is missing."""
    index = read_parquet(other.index)
    if index is None:
        raise FvcError(f"train.evaluate_on: no video index at {other.index}: ingest the other corpus into "
                       f"that work dir first (fvc ingest KIND ROOT --home {other.root})")
    rows = index.filter(pl.col("label").is_not_null())
    counts = {int(k): int(v) for k, v in rows.group_by("label").len().iter_rows()}
    if len(counts) < 2:
        have = ", ".join(f"{v} {'fake' if k else 'real'}" for k, v in counts.items()) or "no labelled video"
        raise FvcError(f"train.evaluate_on: {other.index} has {have}: the ROC AUC needs real and fake "
                       "videos")
    return rows.select(_prefixed(), "group_id", pl.col("label").cast(pl.Int8),
                       pl.lit(ORIGINAL).alias("variant"), pl.lit(0, pl.Int32).alias("fold"),
                       pl.lit(False).alias("is_test"))


def _eval_table(other: Lake, feature_set: str) -> TrainTable:
    rows = evaluation_rows(other)
    if not other.stage2.exists():
        raise FvcError(f"train.evaluate_on: no stage 2 features at {other.stage2}: run the features stage "
                       f"there with these settings (fvc run --home {other.root} --stages features)")
    feats = load_features(other, feature_set).with_columns(_prefixed())
    return train_table(feats, rows, feature_set)


def cross_corpus(lake: Lake, other: Lake, cfg: TrainConfig,
                 models: Sequence[str] = ABLATION_MODELS) -> pl.DataFrame:
    """The ablation table (module docstring); also written to ``stage5/cross_corpus.parquet``.

    >>> table = cross_corpus(Lake.at("demo-a"), Lake.at("demo-b"), TrainConfig())   # doctest: +SKIP
    >>> table.select("model", "pseudo_fakes", "roc_auc", "roc_auc_lo", "roc_auc_hi")  # doctest: +SKIP
    """
    if Path(other.root).resolve() == Path(lake.root).resolve():
        raise FvcError(f"train.evaluate_on is this work dir ({lake.root}): name another corpus's work dir")
    splits = load_splits(lake, cfg).filter(~pl.col("is_test"))
    has_blend = splits.filter(pl.col("variant").str.starts_with(BLEND_PREFIX)).height > 0
    out = []
    for name in models:
        spec = get_model_spec(name)
        evaluated = _eval_table(other, spec.feature_set)
        for pseudo in ((True, False) if has_blend else (False,)):
            rows = splits if pseudo else splits.filter(~pl.col("variant").str.starts_with(BLEND_PREFIX))
            train = train_table(load_features(lake, spec.feature_set), rows, spec.feature_set,
                                use_augmented=cfg.use_augmented)
            row = {"train_corpus": str(lake.root), "eval_corpus": str(other.root), "model": name,
                   "feature_set": spec.feature_set, "pseudo_fakes": pseudo, "n_train": len(train.y),
                   "n_eval": len(evaluated.y), "roc_auc": np.nan, "roc_auc_lo": np.nan, "roc_auc_hi": np.nan,
                   "fit_s": np.nan, "tile_fit_s": np.nan, "note": ""}
            start = time.perf_counter()
            try:
                tr, ev = train, evaluated
                if spec.kind == "tile":
                    tiles = pl.concat([lake_tiles(lake, train.video_id),
                                       _eval_tiles(other, evaluated.video_id)])
                    hook = TileEvidence(tiles, folds=cfg.inner_folds, seed=cfg.seed, n_jobs=cfg.n_jobs)
                    tr, ev = hook(train, evaluated)
                    row["tile_fit_s"] = hook.fit_seconds
                fit = search_and_fit(spec, tr, cfg)
            except FvcError as exc:
                row["note"] = str(exc)
                log.warning("cross-corpus %s (pseudo-fakes %s): %s", name, pseudo, exc)
                out.append(row)
                continue
            row["fit_s"] = time.perf_counter() - start
            p = predict_rows(fit.pipeline, ev)
            iv = grouped_bootstrap(ev.y, p, ev.group_id, seed=cfg.seed, metrics=("roc_auc",))["roc_auc"]
            row.update(roc_auc=iv.estimate, roc_auc_lo=iv.lo, roc_auc_hi=iv.hi)
            out.append(row)
    table = pl.DataFrame(out, schema_overrides={"pseudo_fakes": pl.Boolean}).select(COLUMNS)
    write_parquet_atomic(table, lake.stage5 / "cross_corpus.parquet")
    return table


def _eval_tiles(other: Lake, ids) -> pl.DataFrame:
    """The other corpus's tiles under the protocol's ids (never fitted on: scored only)."""
    raw = [i[len(EVAL_PREFIX):] for i in ids]
    return lake_tiles(other, raw).with_columns(_prefixed())


def markdown(table: pl.DataFrame) -> str:
    """The ablation as a Markdown table: AUC [95 % CI] per model, with and without pseudo-fakes."""
    lines = ["| model | feature set | pseudo-fakes | trained on | evaluated on | AUC [95 % CI] | note |",
             "|---|---|---|---|---|---|---|"]
    for r in table.iter_rows(named=True):
        auc = ("n/a" if np.isnan(r["roc_auc"]) else
               f"{r['roc_auc']:.3f} [{r['roc_auc_lo']:.3f}, {r['roc_auc_hi']:.3f}]")
        lines.append(f"| {r['model']} | {r['feature_set']} | {'with' if r['pseudo_fakes'] else 'without'} | "
                     f"{r['n_train']} rows | {r['n_eval']} videos | {auc} | {r['note']} |")
    return "\n".join(lines)
