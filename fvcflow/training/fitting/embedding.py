"""The ``embedding`` kind's trainer: the tabular cross-validation on frozen deep embeddings.

The backbone embeds every video once (:func:`fvcflow.deep.embeddings.embedding_table`, cached
Parquet); the rows are joined with ``stage5/splits.parquet`` like a feature table and go through
:func:`fvcflow.training.fitting.cv.cross_validate` (outer folds, inner grouped grid search, test refit,
inner out-of-fold predictions for the ensembles). Nothing is fitted on the evaluated videos: the
backbone is never fitted at all, and the estimator of fold ``k`` sees only the other folds' rows.
The deployable :class:`fvcflow.deep.embedding_model.EmbeddingModel` holds the frozen backbone and
the refitted estimator, so it scores a video file (``predict_video``) or embedding rows.
"""

from __future__ import annotations

import logging
from typing import Sequence

from fvcflow.config import TrainConfig
from fvcflow.models import ModelSpec
from fvcflow.store import Lake
from fvcflow.training.fitting.cv import cross_validate
from fvcflow.training.fitting.data import train_table
from fvcflow.training.fitting.results import ModelResult, make_result
from fvcflow.training.fitting.splits import load_splits
from fvcflow.training.fitting.trainers import Log, trains

log = logging.getLogger("fvcflow.training")


@trains("embedding")
def train_embedding(lake: Lake, spec: ModelSpec, cfg: TrainConfig, bases: Sequence[ModelResult],
                    log: Log) -> ModelResult:
    """Embed every video with ``spec``'s frozen backbone (once), then cross-validate, test and track."""
    from fvcflow.deep.clips import ClipCache
    from fvcflow.deep.device import CPU_BATCH, choose_device, device_tags
    from fvcflow.deep.embedding_model import EmbeddingModel
    from fvcflow.deep.embeddings import Backbone, columns_of, embedding_table, table_path
    from fvcflow.deep.export import TrainedVideo
    from fvcflow.deep.loop import _source as source_of
    from fvcflow.deep.loop import prepare_sources, resolve_weights, video_rows, weight_params, weight_tags
    from fvcflow.models.torch_common import clip_spec

    deep, name = cfg.deep, spec.extra["backbone"]
    device = choose_device(deep.device)
    params = dict(cfg.params.get(name, {}))
    weights = resolve_weights(name, deep, params)
    params = weight_params(name, weights, params)
    clip = clip_spec(name, deep.clip.get(name), weights=weights, params=params)
    backbone = Backbone(name, clip, weights, tuple(sorted(params.items())), cfg.seed)
    cache = ClipCache(lake.cache_dir("clips") if deep.cache else None)
    splits = load_splits(lake, cfg)
    rows = prepare_sources(lake, video_rows(lake, cfg, splits), clip, cache)
    table = embedding_table(lake, backbone, [source_of(r) for r in rows.to_dicts()], device=device,
                            batch_size=deep.batch_size or CPU_BATCH, workers=deep.workers, cache=cache)
    cols = columns_of(table)
    t = train_table(table.select("video_id", *cols), splits, f"emb:{name}",
                    use_augmented=cfg.use_augmented, columns=cols)
    cv = cross_validate(spec, t, cfg)
    train = t.subset(~t.is_test)
    frozen = TrainedVideo(name, backbone.build("cpu"), clip, params, weights)
    model = EmbeddingModel(spec.name, frozen, cv.final.pipeline, cols)
    tags = {"fvc.backbone": name, **weight_tags(name, weights, params),
            "fvc.embeddings": str(table_path(lake, backbone)), **device_tags(device)}
    run_params = {"backbone": name, "embedding_dim": len(cols), "frames": clip.frames,
                  "clips": clip.clips, "stride": clip.stride, "size": clip.size, "weights": weights or "none",
                  "inner_folds": cfg.inner_folds, **{f"backbone_{k}": v for k, v in params.items()}}
    result = make_result(spec, cv.predictions, cv.fold_metrics, cv.fold_params, cv.final.params, model,
                         cv.fit_seconds, columns=cols, inner_oof=cv.inner_oof, n_train_rows=len(train.y),
                         example=train.X.head(20), tags=tags, params=run_params)
    return log(result)
