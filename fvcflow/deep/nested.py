"""Inner out-of-fold predictions of a deep model, so the ensembles can stack it without leakage.

For outer fold ``k`` the stack's meta-learner is fitted on base probabilities of the training
videos that come from base models which saw neither the video nor fold ``k``: the training folds
are split again, by group (``inner_folds``, stratified), and for each inner split the deep model
trains on the other inner groups (early stopping on a grouped split carved from them) and scores
the held-out originals. That is ``inner_folds`` more fits per outer fold, which is why it runs
only when an ensemble is selected (``train.deep.inner_oof = "auto"``) or when asked (``"on"``).
"""

from __future__ import annotations

import polars as pl

from fvcflow.config import TrainConfig
from fvcflow.models import get_model_spec, list_models
from fvcflow.models.grouped import grouped_kfold
from fvcflow.schema import ORIGINAL

#: the columns of a model's inner out-of-fold predictions (``ModelResult.inner_oof``)
INNER_OOF_SCHEMA = {"outer_fold": pl.Int32, "video_id": pl.Utf8, "prob_fake": pl.Float64}


def wants_inner_oof(cfg: TrainConfig) -> bool:
    """Whether deep models compute inner out-of-fold predictions in this run."""
    if cfg.deep.inner_oof != "auto":
        return cfg.deep.inner_oof == "on"
    return any(get_model_spec(n).kind == "stack" for n in list_models(cfg.models))


def inner_oof(fit, predict, train_rows: pl.DataFrame, outer_fold: int, cfg: TrainConfig,
              validation_split) -> pl.DataFrame:
    """``outer_fold, video_id, prob_fake`` of every training original of ``outer_fold`` (nested).

    ``fit(fit_rows, val_rows, seed, tag)`` trains one model (the loop's fit, resumable),
    ``predict(module, rows)`` scores videos, ``validation_split`` carves the early-stopping split.
    """
    orig = train_rows.filter(pl.col("variant") == ORIGINAL)
    out = []
    splits = grouped_kfold(orig["label"].to_numpy(), orig["group_id"].to_numpy(), cfg.inner_folds,
                           seed=cfg.seed + 1000 + outer_fold,
                           what="inner CV of a deep model for the ensembles (train.deep.inner_oof)")
    for j, (_, va) in enumerate(splits):
        held_groups = set(orig[va]["group_id"].to_list())
        rest = train_rows.filter(~pl.col("group_id").is_in(held_groups))
        seed = cfg.seed + 100 * (outer_fold + 1) + j
        fit_rows, val_rows = validation_split(rest, cfg.deep.val_fraction, seed)
        model = fit(fit_rows, val_rows, seed, f"fold{outer_fold}_inner{j}")
        held = orig.filter(pl.col("group_id").is_in(held_groups))
        p = predict(model.module, held)
        out.append(pl.DataFrame({"outer_fold": [outer_fold] * held.height, "video_id": held["video_id"],
                                 "prob_fake": p.astype(float)}, schema=INNER_OOF_SCHEMA))
    return pl.concat(out)
