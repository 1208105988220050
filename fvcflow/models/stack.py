"""The stacking ensemble: a logistic regression on the base models' out-of-fold probabilities.

The trainer fits the meta-learner without leakage (see ``fvcflow.training.stacking``); this module
holds the registration and :class:`StackedModel`, the deployable form (base pipelines + meta).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

from fvcflow.models.registry import register_model


@register_model("stack_s24", kind="stack", grid={"C": [1.0]})
def stack_s24(*, seed: int = 0, n_jobs: int = 1, C: float = 1.0) -> LogisticRegression:
    """Logistic regression on the tabular models' out-of-fold probabilities."""
    return LogisticRegression(C=C, max_iter=5000, random_state=seed)


class StackedModel(ClassifierMixin, BaseEstimator):
    """Fitted base pipelines and a fitted meta-learner, predicting on a feature DataFrame.

    Parameters
    ----------
    bases : sequence of (name, fitted estimator, feature columns)
    meta : fitted classifier over the bases' ``P(fake)``, in the order of ``bases``

    Examples
    --------
    >>> import pandas as pd
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0]}); y = [0, 0, 1, 1]
    >>> base = LogisticRegression().fit(X, y)
    >>> meta = LogisticRegression().fit(base.predict_proba(X)[:, 1:], y)
    >>> StackedModel([("lr", base, ["a"])], meta).predict_proba(X).shape
    (4, 2)
    """

    def __init__(self, bases: Sequence[tuple[str, object, Sequence[str]]], meta: object):
        self.bases = bases
        self.meta = meta

    @property
    def classes_(self) -> np.ndarray:
        return np.array([0, 1])

    def base_probabilities(self, X: pd.DataFrame) -> np.ndarray:
        """``P(fake)`` of every base model, one column per base."""
        return np.column_stack([est.predict_proba(X[list(cols)])[:, 1] for _, est, cols in self.bases])

    def fit(self, X, y=None):  # pragma: no cover - fitted by the trainer, see fvcflow.training.stacking
        raise NotImplementedError("StackedModel is assembled from fitted parts by the trainer")

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self.meta.predict_proba(self.base_probabilities(X))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)
