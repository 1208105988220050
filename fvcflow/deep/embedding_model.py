"""The deployable model of the ``embedding`` kind: a frozen backbone and the estimator fitted on its
embedding columns (trained by :mod:`fvcflow.training.fitting.embedding`; logged and loaded as parts
of the safe model format, :mod:`fvcflow.saved.format`: no pickle).

It scores a video file (``predict_video``) or embedding rows (``predict_proba``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


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

    def predict_video(self, path: str | Path, *, original: str | Path | None = None,
                      face_tracker: dict | None = None, tracks=None, **source: Any) -> float:
        """``P(fake)`` of a (letterboxed) video file: its frozen embedding through the estimator.
        ``original``, ``face_tracker`` and ``tracks`` (a face-clip video model's faces) are not used:
        the embedding tables are of the letterboxed frames, as in training."""
        return float(self.predict_proba(self.embed_video(path, **source))[0, 1])
