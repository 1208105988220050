"""Paired synthetic tables for the leakage canaries: each group is one real and one fake video.

The shape of FaceForensics++ and of FVC's cascades: a fake is derived from its real source, so the
two share almost every feature value (a large group effect, a tiny jitter). With ``signal=0`` the
only thing that tells a fake from a real is which pair-mate it is, and an honest grouped
procedure must score at chance; a procedure that lets a group sit on both sides of a split sees
the pair-mate with the other label as its nearest neighbour and ranks *below* chance (or above,
if it memorises). ``signal`` adds a weak true shift to a few columns of every fake.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import polars as pl
from sklearn.model_selection import StratifiedGroupKFold

from fvcflow.models import ModelSpec, get_model_spec
from fvcflow.training import TrainConfig
from fvcflow.training.fitting.data import S4_FLAGS, TrainTable, feature_set_columns

#: columns that carry the weak true signal (when ``signal`` > 0), shift in between-group sd units
SIGNAL_COLUMNS = ("noise_energy_mean", "dct_hf_ratio_mean", "blockiness_mean", "lap_var_mean")


def paired_table(n_groups: int = 150, *, signal: float = 0.0, feature_set: str = "s24", seed: int = 0,
                 jitter: float = 0.05, folds: int = 3) -> TrainTable:
    """A :class:`TrainTable` of ``n_groups`` pairs (real, fake), grouped folds, no test rows."""
    rng = np.random.default_rng(seed)
    cols = feature_set_columns(feature_set)
    effect = rng.normal(0.0, 1.0, (n_groups, len(cols)))
    X = np.repeat(effect, 2, axis=0) + rng.normal(0.0, jitter, (2 * n_groups, len(cols)))
    y = np.tile([0, 1], n_groups)
    for c in SIGNAL_COLUMNS:
        if c in cols:
            X[:, cols.index(c)] += signal * y
    for flag in S4_FLAGS:
        if flag in cols:
            X[:, cols.index(flag)] = np.repeat(rng.random(n_groups) < 0.5, 2).astype(float)
    groups = np.repeat([f"g{g:04d}" for g in range(n_groups)], 2)
    # ids carry no order (like content hashes): rows sorted by id interleave the pairs at random, as
    # the trainer's tables (sorted by video_id) do, so an unshuffled row-wise split separates mates
    # drawn apart from the features, so that every feature set's table has the same rows under the
    # same ids (a stack joins its bases on video_id; the number of columns must not reorder them)
    ids = np.random.default_rng([seed, 7919]).permutation(2 * n_groups) * 7919 % 2**32
    video_id = np.array([f"v{h:08x}-{'fake' if lab else 'real'}" for h, lab in zip(ids, y)])
    order = np.argsort(video_id)
    X, y, groups, video_id = X[order], y[order], groups[order], video_id[order]
    fold = np.full(len(y), -1)
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, idx) in enumerate(cv.split(X, y, groups)):
        fold[idx] = k
    n = len(y)
    return TrainTable(video_id=video_id, group_id=groups, y=y, fold=fold, is_test=np.zeros(n, bool),
                      is_original=np.ones(n, bool), X=pd.DataFrame(X, columns=cols), feature_set=feature_set)


def ci_config(names: list[str], **kw) -> TrainConfig:
    """3 outer / 2 inner folds, each model's first grid point and its registered ``ci_params``."""
    specs = [get_model_spec(n) for n in names]
    grids = {s.name: {k: [v] for k, v in s.grid_points()[0].items()} for s in specs}
    params = {s.name: dict(s.extra.get("ci_params", {})) for s in specs}
    for name, extra in kw.pop("params", {}).items():
        params[name] = {**params.get(name, {}), **extra}
    return TrainConfig(folds=3, inner_folds=2, grids=grids, params=params, **kw)


def as_base(spec: ModelSpec, cv, columns: list[str]) -> SimpleNamespace:
    """What a stack reads of a trained base model (name, predictions, inner_oof, model, columns)."""
    return SimpleNamespace(name=spec.name, predictions=cv.predictions, inner_oof=cv.inner_oof,
                           model=cv.final.pipeline if cv.final else None, columns=columns,
                           feature_set=spec.feature_set)


def oof_auc(predictions: pl.DataFrame) -> float:
    from sklearn.metrics import roc_auc_score

    oof = predictions.filter(pl.col("split") == "oof")
    return float(roc_auc_score(oof["label"].to_numpy(), oof["prob_fake"].to_numpy()))
