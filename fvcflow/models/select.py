"""Column screening inside a model, so that a model survives many columns (issue 22).

With about a hundred training videos and a hundred or more columns, a model fits whichever
columns happen to separate its training rows. :class:`Screened` keeps the ``k`` columns with the
largest univariate ANOVA F statistic on the rows it is fitted on and fits its estimator on those
alone. ``k`` is a constructor keyword of
every tabular model, so the trainer's inner grouped grid search
(:func:`fvcflow.training.fitting.cv.search_and_fit`) chooses it on grouped inner folds, beside
the model's own regularisation (the L1 path of the linear models, depth and column sampling of
the boosters, their rounds by grouped early stopping). :data:`SCREEN_PATH` is the path of ``k``
the registered models search (``None``: every column). With ``weigh``, the kept columns are
scaled by the square root of their F statistic relative to the largest (a relevance-weighted
kernel for the RBF SVM, which otherwise weighs every column alike).

Groups reach the wrapped estimator (a grouped calibrator or early stopper splits by them).
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.validation import check_is_fitted

#: the screening path every tabular model searches, least restrictive first: all columns, 64, 16, 4
SCREEN_PATH = (None, 64, 16, 4)


def f_scores(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """One-way ANOVA F statistic of each column between the two classes; 0 for a constant
    column or one with NaN (no evidence), never NaN.

    >>> X = np.array([[0.0, 5.0], [0.1, 5.0], [1.0, 5.0], [1.1, 5.0]])
    >>> f_scores(X, np.array([0, 0, 1, 1])).round(1).tolist()
    [200.0, 0.0]
    """
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
    n = len(y)
    means = X.mean(axis=0)
    between = np.zeros(X.shape[1])
    within = np.zeros(X.shape[1])
    for c in np.unique(y):
        Xc = X[y == c]
        between += len(Xc) * (Xc.mean(axis=0) - means) ** 2
        within += ((Xc - Xc.mean(axis=0)) ** 2).sum(axis=0)
    df_b, df_w = max(np.unique(y).size - 1, 1), max(n - np.unique(y).size, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = (between / df_b) / (within / df_w)
    f[~np.isfinite(f)] = 0.0
    return f


def _takes_groups(est: Any) -> bool:
    try:
        return "groups" in inspect.signature(est.fit).parameters
    except (TypeError, ValueError):
        return False


class Screened(ClassifierMixin, BaseEstimator):
    """``estimator`` fitted on the ``k`` columns with the largest F statistic (``k=None``: all).

    Ties keep the earlier column. ``keep_`` holds the kept column indices (ascending). With
    ``weigh``, each kept column is multiplied by ``sqrt(F / max F)`` (``scale_``) before the
    estimator sees it: a relevance-weighted input for estimators that weigh columns alike.
    ``coef_`` / ``feature_importances_`` are the wrapped estimator's, spread back over every
    input column (0 for a screened-out one), so importances name the input columns.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> rng = np.random.default_rng(0); X = rng.normal(size=(100, 6)); y = (X[:, 2] > 0).astype(int)
    >>> m = Screened(LogisticRegression(), k=1).fit(X, y)
    >>> m.keep_.tolist(), m.coef_.shape
    ([2], (1, 6))
    """

    def __init__(self, estimator: Any, k: int | None = None, weigh: bool = False):
        self.estimator = estimator
        self.k = k
        self.weigh = weigh

    def fit(self, X, y, groups=None) -> "Screened":
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
        if not (self.k is None or (isinstance(self.k, (int, np.integer)) and self.k >= 1)):
            raise ValueError(f"Screened: k must be a count >= 1 or None, got {self.k!r}")
        self.n_features_in_ = X.shape[1]
        f = f_scores(X, y)
        if self.k is None or self.k >= X.shape[1]:
            self.keep_ = np.arange(X.shape[1])
        else:
            order = np.argsort(-f, kind="stable")
            self.keep_ = np.sort(order[: self.k])
        top = float(f[self.keep_].max()) if self.keep_.size else 0.0
        self.scale_ = (np.sqrt(f[self.keep_] / top) if self.weigh and top > 0
                       else np.ones(self.keep_.size))
        est = clone(self.estimator)
        extra = {"groups": groups} if groups is not None and _takes_groups(est) else {}
        self.estimator_ = est.fit(X[:, self.keep_] * self.scale_, y, **extra)
        self.classes_ = np.asarray(getattr(self.estimator_, "classes_", np.unique(y)))
        return self

    def _spread(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        out = np.zeros(values.shape[:-1] + (self.n_features_in_,))
        out[..., self.keep_] = values
        return out

    @property
    def coef_(self) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        if not hasattr(self.estimator_, "coef_"):
            raise AttributeError("coef_")
        return self._spread(np.atleast_2d(self.estimator_.coef_))

    @property
    def intercept_(self) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        if not hasattr(self.estimator_, "intercept_"):
            raise AttributeError("intercept_")
        return self.estimator_.intercept_

    @property
    def feature_importances_(self) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        if not hasattr(self.estimator_, "feature_importances_"):
            raise AttributeError("feature_importances_")
        return self._spread(self.estimator_.feature_importances_)

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict_proba(np.asarray(X, dtype=np.float64)[:, self.keep_] * self.scale_)

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
