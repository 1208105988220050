"""The ensembles over trained models of any kind, by their out-of-fold probabilities.

- ``stack_s24``: a logistic regression on the base models' probabilities.
- ``topk_mean``: the mean of the ``k`` best base models' calibrated probabilities (:class:`TopKMean`).

Both are kind ``stack``: the trainer fits them without leakage (see ``fvcflow.training.fitting.stacking``:
for outer fold ``k`` on the bases' *inner* out-of-fold probabilities, so the ensemble's choices,
``k`` included, are made on inner folds); this module holds the registrations and
:class:`StackedModel`, the deployable form (fitted bases + the fitted ensemble).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from fvcflow.models.registry import register_model


@register_model(kind="stack", grid={"C": (1.0, 0.1, 0.01)})
def stack_s24(*, seed: int = 0, n_jobs: int = 1, C: float = 1.0) -> LogisticRegression:
    """L1-path logistic regression on the base models' out-of-fold probabilities (any kinds);
    ``C`` chosen on grouped folds of the meta-learner's rows."""
    return LogisticRegression(C=C, l1_ratio=1.0, solver="liblinear", max_iter=5000, random_state=seed)


@register_model(kind="stack", grid={"max_k": (None, 3, 1)})
def topk_mean(*, seed: int = 0, n_jobs: int = 1, max_k: int | None = None) -> "TopKMean":
    """Mean of the k best base models' calibrated probabilities, k chosen on inner folds."""
    return TopKMean(max_k=max_k)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


class TopKMean(ClassifierMixin, BaseEstimator):
    """The mean of the ``k`` best columns' calibrated probabilities; ``k`` chosen on the fitted rows.

    ``fit(P, y)`` takes one column of ``P(fake)`` per base model (out-of-fold probabilities:
    the trainer passes inner out-of-fold ones), calibrates each column by Platt scaling on the
    logit (a one-feature logistic regression), ranks the columns by ROC AUC and keeps the ``k``
    (at most ``max_k``) whose mean calibrated probability has the best ROC AUC on those rows
    (ties: the smaller ``k``). It never splits its rows, so it needs no groups. ``coef_`` holds
    each column's weight in the mean (``1/k`` or 0).

    Examples
    --------
    >>> y = np.array([0, 0, 0, 1, 1, 1])
    >>> P = np.column_stack([[.1, .2, .3, .7, .8, .9], [.5, .5, .5, .5, .5, .5], [.4, .1, .6, .3, .9, .8]])
    >>> m = TopKMean().fit(P, y)
    >>> int(m.k_), m.coef_.ravel().tolist()
    (1, [1.0, 0.0, 0.0])
    """

    def __init__(self, max_k: int | None = None):
        self.max_k = max_k

    @property
    def classes_(self) -> np.ndarray:
        return np.array([0, 1])

    def _calibrated(self, P: np.ndarray) -> np.ndarray:
        P = np.asarray(P, dtype=np.float64)
        return np.column_stack([cal.predict_proba(_logit(P[:, j])[:, None])[:, 1]
                                for j, cal in enumerate(self.calibrators_)])

    def fit(self, P, y) -> "TopKMean":
        P, y = np.asarray(P, dtype=np.float64), np.asarray(y).astype(int)
        if P.ndim != 2 or P.shape[1] < 1 or len(np.unique(y)) < 2:
            raise ValueError("TopKMean.fit: needs a 2-D array of probabilities and both classes in y")
        self.calibrators_ = [LogisticRegression(max_iter=1000).fit(_logit(P[:, j])[:, None], y)
                             for j in range(P.shape[1])]
        cal = self._calibrated(P)
        aucs = np.array([roc_auc_score(y, cal[:, j]) for j in range(cal.shape[1])])
        self.order_ = np.argsort(-aucs, kind="stable")
        top = min(self.max_k or cal.shape[1], cal.shape[1])
        scores = [roc_auc_score(y, cal[:, self.order_[:k]].mean(axis=1)) for k in range(1, top + 1)]
        self.k_scores_ = np.array(scores)
        self.k_ = int(np.argmax(self.k_scores_)) + 1           # first maximum: the smallest k
        self.coef_ = np.zeros((1, cal.shape[1]))
        self.coef_[0, self.order_[: self.k_]] = 1.0 / self.k_
        return self

    def predict_proba(self, P) -> np.ndarray:
        p = self._calibrated(P)[:, self.order_[: self.k_]].mean(axis=1)
        return np.column_stack([1 - p, p])

    def predict(self, P) -> np.ndarray:
        return (self.predict_proba(P)[:, 1] >= 0.5).astype(int)


def video_column(name: str) -> str:
    """The input column that carries the ``P(fake)`` of base model ``name`` when it scores videos."""
    return f"prob_{name}"


class StackedModel(ClassifierMixin, BaseEstimator):
    """Fitted base models of any kind and a fitted meta-learner, predicting on a DataFrame.

    A base on a feature table reads its columns of the input; a base that scores video files
    (a deep model, an embedding model: it has ``predict_video``) is read from the input column
    :func:`video_column` (``prob_<name>``), which ``fvc predict`` fills by running that base on
    the video (:attr:`video_bases`).

    Parameters
    ----------
    bases : sequence of (name, fitted model, feature columns)
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

    @property
    def video_bases(self) -> list[tuple[str, object]]:
        """(name, model) of the bases that score video files, not feature rows."""
        return [(name, est) for name, est, _ in self.bases if hasattr(est, "predict_video")]

    def base_probabilities(self, X: pd.DataFrame) -> np.ndarray:
        """``P(fake)`` of every base model, one column per base."""
        out = []
        for name, est, cols in self.bases:
            if hasattr(est, "predict_video"):
                if video_column(name) not in X:
                    raise ValueError(f"stack base {name} scores videos: the input needs its column "
                                     f"{video_column(name)!r} (fvc predict fills it)")
                out.append(X[video_column(name)].to_numpy(dtype=np.float64))
            else:
                out.append(est.predict_proba(X[list(cols)])[:, 1])
        return np.column_stack(out)

    def fit(self, X, y=None):  # pragma: no cover - assembled by fvcflow.training.fitting.stacking
        raise NotImplementedError("StackedModel is assembled from fitted parts by the trainer")

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self.meta.predict_proba(self.base_probabilities(X))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)
