"""Learned where-in-frame evidence (issue 22, part 2): a tile model fitted inside each fold.

Where masks exist (the self-blended pseudo-fakes' kept masks; a corpus's own masks through the
``mask_path`` hook of :mod:`fvcflow.stages.tiles`), every tile of the local tile maps is labelled
blended or not. A gradient-boosted tile model (:func:`fvcflow.models.tiles.tile_booster`) learns
from each tile's statistics and their deviation from the rest of its frame which tiles were
blended; per video, summaries of its tiles' scores (:data:`fvcflow.schema.TILE_COLUMNS`,
:func:`tile_summaries`) are the ``te_`` columns of the feature set ``s2lt`` (``s2l`` + them).

The tile model is fitted on the TRAINING FOLDS ONLY. :class:`TileEvidence` is the cross
validation's per-fold hook (:func:`fvcflow.training.fitting.cv.cross_validate`, ``fold_hook``):
given the training rows and the rows to evaluate, it fits the tile model on the labelled tiles
of the training videos and scores the evaluated videos' tiles with it; the training videos' own
columns are cross-fitted (grouped folds over the training groups: a training video's tiles are
scored by a tile model that never saw its group), so the video-level model learns from columns
as noisy as those it is evaluated on. No evaluated video's tile ever enters a tile fit.

>>> s = pl.DataFrame({"video_id": ["a"] * 4, "frame": [0, 0, 1, 1], "score": [0.9, 0.1, 0.2, 0.3]})
>>> tile_summaries(s).row(0)
('a', 0.9, 0.6, 0.25, 0.5, 0.375)
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

import numpy as np
import polars as pl
from sklearn.model_selection import GroupKFold

from fvcflow.config import TrainConfig
from fvcflow.errors import FvcError
from fvcflow.models import ModelSpec
from fvcflow.models.tiles import tile_booster
from fvcflow.schema import TILE_COLUMNS
from fvcflow.stages.tiles import TILE_FEATURES, lake_tiles
from fvcflow.store import Lake
from fvcflow.training.fitting.cv import cross_validate, feature_importance
from fvcflow.training.fitting.data import TrainTable, load_features, train_table
from fvcflow.training.fitting.results import ModelResult, make_result
from fvcflow.training.fitting.splits import load_splits
from fvcflow.training.fitting.trainers import Log, trains

log = logging.getLogger("fvcflow.training")

#: a tile is "hot" when its score reaches this (the tile model is fitted class-balanced)
HOT = 0.5
#: at most this many tiles train one tile model (seeded draws: the blended tiles, at most half of
#: it, then the clean ones)
MAX_TILES = 200_000


def tile_summaries(scored: pl.DataFrame) -> pl.DataFrame:
    """Per video, the :data:`~fvcflow.schema.TILE_COLUMNS` of its tiles' scores.

    ``scored``: ``video_id``, ``frame``, ``score`` (one row per tile). With s a tile's score:
    ``te_peak`` = max s over all tiles and frames; ``te_peak_mean`` = mean over frames of the
    frame's max s; ``te_extent`` = mean over frames of the share of the frame's tiles with
    s >= 0.5; ``te_persistence`` = share of frames with a tile s >= 0.5; ``te_mean`` = mean s over
    all tiles.
    """
    frames = scored.group_by("video_id", "frame").agg(
        fmax=pl.col("score").max(), fhot=(pl.col("score") >= HOT).mean())
    per_video = frames.group_by("video_id").agg(
        te_peak=pl.col("fmax").max(), te_peak_mean=pl.col("fmax").mean(), te_extent=pl.col("fhot").mean(),
        te_persistence=(pl.col("fhot") > 0).mean())
    means = scored.group_by("video_id").agg(te_mean=pl.col("score").mean())
    return (per_video.join(means, on="video_id").select("video_id", *TILE_COLUMNS)
            .with_columns(pl.col(c).cast(pl.Float64) for c in TILE_COLUMNS).sort("video_id"))


class TileEvidence:
    """The per-fold hook that adds the ``te_`` columns (module docstring).

    ``tiles``: the tile tables of every video the tables may hold (:func:`fvcflow.stages.tiles.lake_tiles`);
    ``folds``: grouped folds of the training rows' cross-fitting; ``params``: the tile booster's
    keywords. ``fit_seconds`` adds up the time spent fitting tile models; ``model`` is the last one
    fitted on a whole training set (the one that scored the evaluated rows).
    """

    def __init__(self, tiles: pl.DataFrame, *, folds: int = 3, seed: int = 0, n_jobs: int = 1,
                 params: dict | None = None):
        need = ("video_id", "frame", "ty", "tx", *TILE_FEATURES, "blended")
        missing = [c for c in need if c not in tiles.columns]
        if missing:
            raise FvcError(f"the tile table lacks {', '.join(missing)} (written by an older fvcflow?)")
        self.tiles = tiles.sort("video_id", "frame", "ty", "tx")      # a fit never depends on row order
        self.folds, self.seed, self.n_jobs, self.params = folds, seed, n_jobs, dict(params or {})
        self.fit_seconds, self.fits = 0.0, 0
        self.model = None
        self.last: tuple[TrainTable, TrainTable] | None = None

    # -- the tile model
    def fit(self, video_ids) -> object:
        """A tile model fitted on the labelled tiles of ``video_ids`` (and of no other video)."""
        rows = self.tiles.filter(pl.col("video_id").is_in(list(video_ids)) & pl.col("blended").is_not_nan()
                                 & pl.col("blended").is_not_null())
        y = rows["blended"].to_numpy().astype(np.int8)
        if y.size == 0 or y.min() == y.max():
            raise FvcError(f"the tile model needs blended and clean tiles among the training videos, got "
                           f"{int(y.sum())} blended of {y.size} labelled tiles: turn on self-blended "
                           "pseudo-fakes (augment.self_blend >= 1) or give masks (mask_path)")
        if y.size > MAX_TILES:     # the blended tiles (a draw of half the cap when more), a draw of the clean
            rng = np.random.default_rng(self.seed)
            pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
            if pos.size > MAX_TILES // 2:
                pos = rng.choice(pos, MAX_TILES // 2, replace=False)
            neg = rng.choice(neg, min(neg.size, MAX_TILES - pos.size), replace=False)
            keep = np.sort(np.concatenate([pos, neg]))
            rows, y = rows[keep], y[keep]
        start = time.perf_counter()
        model = tile_booster(seed=self.seed, n_jobs=self.n_jobs, pos_weight=float((y == 0).sum() / y.sum()),
                             **self.params)
        model.fit(rows.select(TILE_FEATURES).to_numpy(), y)
        self.fit_seconds += time.perf_counter() - start
        self.fits += 1
        return model

    def score(self, model, video_ids) -> pl.DataFrame:
        """``video_id`` and the ``te_`` columns of ``video_ids`` from ``model``'s tile scores."""
        rows = self.tiles.filter(pl.col("video_id").is_in(list(video_ids)))
        s = model.predict_proba(rows.select(TILE_FEATURES).to_numpy())[:, 1] if rows.height else []
        scored = rows.select("video_id", "frame").with_columns(score=pl.Series(s, dtype=pl.Float64))
        return tile_summaries(scored)

    # -- the hook
    def columns(self, train: TrainTable, evaluated_ids) -> tuple[pl.DataFrame, pl.DataFrame]:
        """The ``te_`` columns of the training videos (cross-fitted) and of ``evaluated_ids`` (from a
        tile model fitted on all training videos)."""
        ids, groups = np.asarray(train.video_id), np.asarray(train.group_id)
        n = min(self.folds, np.unique(groups).size)
        if n < 2:
            raise FvcError("the tile model's cross-fitting needs at least 2 groups of training videos")
        parts = []
        for fit_idx, score_idx in GroupKFold(n_splits=n).split(ids, groups=groups):
            parts.append(self.score(self.fit(ids[fit_idx]), ids[score_idx]))
        self.model = self.fit(ids)
        return pl.concat(parts), self.score(self.model, evaluated_ids)

    def __call__(self, train: TrainTable, evaluated: TrainTable) -> tuple[TrainTable, TrainTable]:
        own, other = self.columns(train, evaluated.video_id)
        self.last = (with_tile_columns(train, own), with_tile_columns(evaluated, other))
        return self.last


def with_tile_columns(t: TrainTable, cols: pl.DataFrame) -> TrainTable:
    """``t`` with its ``te_`` columns taken from ``cols`` (by ``video_id``; NaN for a video without
    tiles, imputed by the model's pipeline)."""
    ids = pl.DataFrame({"video_id": pl.Series(list(t.video_id), dtype=pl.Utf8)})
    ordered = ids.join(cols.cast({"video_id": pl.Utf8}), on="video_id", how="left", maintain_order="left")
    X = t.X.copy()
    for c in TILE_COLUMNS:
        X[c] = ordered[c].fill_null(np.nan).to_numpy().astype("float64")
    return TrainTable(t.video_id, t.group_id, t.y, t.fold, t.is_test, t.is_original, X, t.feature_set)


@trains("tile")
def train_tile(lake: Lake, spec: ModelSpec, cfg: TrainConfig, bases: Sequence[ModelResult],
               log: Log) -> ModelResult:
    """Cross-validate a model of kind ``tile``: the tabular CV with :class:`TileEvidence` as its
    per-fold hook (the tile tables read, or made once, from the lake: :func:`lake_tiles`)."""
    t = train_table(load_features(lake, spec.feature_set), load_splits(lake, cfg), spec.feature_set,
                    use_augmented=cfg.use_augmented)
    evidence = TileEvidence(lake_tiles(lake, t.video_id), folds=cfg.inner_folds, seed=cfg.seed,
                            n_jobs=cfg.n_jobs)
    cv = cross_validate(spec, t, cfg, fold_hook=evidence)
    train = evidence.last[0]              # the final refit's training rows, with their te_ columns
    result = make_result(spec, cv.predictions, cv.fold_metrics, cv.fold_params, cv.final.params,
                         cv.final.pipeline, cv.fit_seconds, feature_set=spec.feature_set,
                         columns=list(train.X.columns), inner_oof=cv.inner_oof,
                         importance=feature_importance(cv.final.pipeline, train, cfg.seed),
                         n_train_rows=len(train.y), example=train.X.head(20),
                         tags={"fvc.tile_model_fits": str(evidence.fits),
                               "fvc.tile_model_seconds": f"{evidence.fit_seconds:.2f}"})
    return log(result)
