"""The deployable model of the ``embedding`` kind: a frozen backbone and the estimator fitted on its
embedding columns, and its MLflow pyfunc form (trained by :mod:`fvcflow.training.fitting.embedding`).

It scores a video file (``predict_video``) or embedding rows (``predict_proba``).
"""

from __future__ import annotations

import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from fvcflow.models.requirements import pip_requirements


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
                pip_requirements=sorted(set(pip_requirements(self.pipeline))
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
