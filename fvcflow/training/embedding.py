"""The ``embedding`` kind's trainer: the tabular cross-validation on frozen deep embeddings.

The backbone embeds every video once (:func:`fvcflow.deep.embeddings.embedding_table`, cached
Parquet); the rows are joined with ``stage5/splits.parquet`` like a feature table and go through
:func:`fvcflow.training.cv.cross_validate` (outer folds, inner grouped grid search, test refit,
inner out-of-fold predictions for the ensembles). Nothing is fitted on the evaluated videos: the
backbone is never fitted at all, and the estimator of fold ``k`` sees only the other folds' rows.
The deployable :class:`EmbeddingModel` holds the frozen backbone and the refitted estimator, so
it scores a video file (``predict_video``) or embedding rows (``predict_proba``).
"""

from __future__ import annotations

import logging
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import mlflow.pyfunc
import numpy as np
import pandas as pd

from fvcflow.models import ModelSpec
from fvcflow.store import Lake
from fvcflow.training import tracking
from fvcflow.training.config import TrainConfig
from fvcflow.training.cv import cross_validate
from fvcflow.training.data import train_table
from fvcflow.training.results import ModelResult, make_result
from fvcflow.training.splits import load_splits

log = logging.getLogger("fvcflow.training")


@dataclass
class EmbeddingModel:
    """A frozen backbone (a ``TrainedVideo``) and the estimator fitted on its embedding columns."""

    name: str
    backbone: Any
    pipeline: Any
    columns: list[str]

    @property
    def classes_(self) -> np.ndarray:
        return np.array([0, 1])

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self.pipeline.predict_proba(X[self.columns])

    def embed_video(self, path: str | Path, **source: Any) -> pd.DataFrame:
        """The one-row embedding table of a (letterboxed) video file."""
        from fvcflow.deep.embeddings import video_embedding

        emb = video_embedding(self.backbone.module, self.backbone.clip, path, **source)
        return pd.DataFrame([emb], columns=self.columns)

    def predict_video(self, path: str | Path, **source: Any) -> float:
        """``P(fake)`` of a video file: its frozen embedding through the estimator."""
        return float(self.predict_proba(self.embed_video(path, **source))[0, 1])

    def log_mlflow(self, example: pd.DataFrame):
        """Log as an MLflow pyfunc (input: the embedding columns; ``predict_video`` after loading)."""
        from mlflow.models import infer_signature

        from fvcflow.deep.export import _requirements as torch_requirements
        from fvcflow.deep.export import save_trained

        with tempfile.TemporaryDirectory(prefix="fvc-embedding-model-") as tmp:
            save_trained(self.backbone, Path(tmp) / "backbone")
            (Path(tmp) / "estimator.pkl").write_bytes(pickle.dumps(
                {"name": self.name, "pipeline": self.pipeline, "columns": self.columns}))
            return mlflow.pyfunc.log_model(
                name="model", python_model=EmbeddingPythonModel(),
                artifacts={"backbone": str(Path(tmp) / "backbone"),
                           "estimator": str(Path(tmp) / "estimator.pkl")},
                signature=infer_signature(example, self.predict_proba(example)[:, 1]),
                input_example=example.head(3),
                pip_requirements=sorted(set(tracking._requirements(self.pipeline))
                                        | set(torch_requirements())))


class EmbeddingPythonModel(mlflow.pyfunc.PythonModel):
    """MLflow ``PythonModel`` of an :class:`EmbeddingModel`: ``P(fake)`` of embedding rows."""

    def load_context(self, context) -> None:
        from fvcflow.deep.export import load_trained

        saved = pickle.loads(Path(context.artifacts["estimator"]).read_bytes())
        self.trained = EmbeddingModel(saved["name"], load_trained(context.artifacts["backbone"]),
                                    saved["pipeline"], saved["columns"])

    def predict(self, context, model_input, params=None):
        return self.trained.predict_proba(pd.DataFrame(model_input))[:, 1]


def train_embedding(lake: Lake, spec: ModelSpec, cfg: TrainConfig,
                    bases: Sequence[ModelResult] = ()) -> ModelResult:
    """Embed every video with ``spec``'s frozen backbone (once), then cross-validate, test and track."""
    from fvcflow.deep.clips import ClipCache
    from fvcflow.deep.device import choose_device, device_tags
    from fvcflow.deep.embeddings import Backbone, columns_of, embedding_table, table_path
    from fvcflow.deep.export import TrainedVideo
    from fvcflow.deep.loop import _source as source_of
    from fvcflow.deep.loop import prepare_sources, resolve_weights, video_rows
    from fvcflow.models.torch_common import clip_spec

    deep, name = cfg.deep, spec.extra["backbone"]
    device = choose_device(deep.device)
    clip = clip_spec(name, deep.clip.get(name))
    weights = resolve_weights(name, deep)
    params = dict(cfg.params.get(name, {}))
    backbone = Backbone(name, clip, weights, tuple(sorted(params.items())), cfg.seed)
    cache = ClipCache(lake.cache_dir("clips") if deep.cache else None)
    rows = prepare_sources(lake, video_rows(lake, cfg), clip, cache)
    table = embedding_table(lake, backbone, [source_of(r) for r in rows.to_dicts()], device=device,
                            batch_size=deep.batch_size, workers=deep.workers, cache=cache)
    cols = columns_of(table)
    t = train_table(table.select("video_id", *cols), load_splits(lake, cfg), f"emb:{name}",
                    use_augmented=cfg.use_augmented, columns=cols)
    cv = cross_validate(spec, t, cfg)
    train = t.subset(~t.is_test)
    frozen = TrainedVideo(name, backbone.build("cpu"), clip, params, weights)
    model = EmbeddingModel(spec.name, frozen, cv.final.pipeline, cols)
    tags = {"fvc.backbone": name, "fvc.weights": weights or "random",
            "fvc.embeddings": str(table_path(lake, backbone)), **device_tags(device)}
    run_params = {"backbone": name, "embedding_dim": len(cols), "frames": clip.frames,
                  "clips": clip.clips, "stride": clip.stride, "size": clip.size, "weights": weights or "none",
                  "inner_folds": cfg.inner_folds, **{f"backbone_{k}": v for k, v in params.items()}}
    result = make_result(spec, cv.predictions, cv.fold_metrics, cv.fold_params, cv.final.params, model,
                         cv.fit_seconds, columns=cols, inner_oof=cv.inner_oof, n_train_rows=len(train.y),
                         example=train.X.head(20), tags=tags, params=run_params)
    return tracking.log_result(lake, cfg, result)
