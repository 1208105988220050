"""The ensembles over trained models of any kind, by their out-of-fold probabilities.

- ``stack_s24``: a logistic regression with non-negative, L1-penalised weights on the base models'
  probabilities (:class:`NonNegativeLogit`).
- ``topk_mean``: the mean of the ``k`` best base models' calibrated probabilities (:class:`TopKMean`),
  ``k`` chosen on grouped inner folds, every base's mean being the most regularised choice.

Both are kind ``stack``: the trainer fits them without leakage (see ``fvcflow.training.fitting.stacking``:
for outer fold ``k`` on the bases' *inner* out-of-fold probabilities, so the ensemble's choices,
``k`` included, are made on inner folds); this module holds the registrations and
:class:`StackedModel`, the deployable form (fitted bases + the fitted ensemble).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from sklearn.base import BaseEstimator, ClassifierMixin

from fvcflow.metrics import roc_auc
from fvcflow.models.registry import register_model


@register_model(kind="stack", grid={"C": (1.0, 0.3, 0.1, 0.03, 0.01)})
def stack_s24(*, seed: int = 0, n_jobs: int = 1, C: float = 1.0) -> "NonNegativeLogit":
    """Logistic regression with non-negative weights along an L1 path, on the base models'
    out-of-fold probabilities (any kinds); ``C`` chosen on grouped folds of the meta-learner's rows."""
    return NonNegativeLogit(C=C)


#: ``topk_mean``'s path of ``k``, least to most restrictive: the best base alone ... the mean of all
TOPK_PATH = (1, 2, 4, 8, None)


@register_model(kind="stack", grid={"k": TOPK_PATH})
def topk_mean(*, seed: int = 0, n_jobs: int = 1, k: int | None = None,
              max_k: int | None = None) -> "TopKMean":
    """Mean of the k best base models' calibrated probabilities, ``k`` chosen on grouped inner
    folds of the ensemble's rows by the one-standard-error rule, the mean of every base being the
    most regularised point (averaging more bases fits nothing more; picking fewer is selection
    on the same rows). ``max_k`` alone (``train.grids``) keeps the in-sample choice of k up to it."""
    return TopKMean(max_k=max_k, k=k)


class NonNegativeLogit(ClassifierMixin, BaseEstimator):
    """Logistic regression with non-negative, L1-penalised weights: the stack's meta-learner.

    Minimises ``C * sum(log loss) + sum(w)`` subject to ``w >= 0`` (the intercept is free) on the
    columns standardised by their spread on the fitted rows, so ``C`` weighs every base alike. Each
    column is a base model's ``P(fake)``: a base can only count for the verdict, never against it;
    a negative weight on a base that predicts fake is the meta-learner fitting the noise the bases
    share (Breiman's non-negativity constraint for stacking, the super learner's convex weights).
    ``coef_`` and ``intercept_`` are in the columns' own units (``logit = P @ coef_.T + intercept_``).

    Examples
    --------
    >>> y = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    >>> P = np.column_stack([[.1, .2, .4, .6, .8, .9, .3, .7], [.9, .8, .6, .4, .2, .1, .7, .3]])
    >>> m = NonNegativeLogit(C=10.0).fit(P, y)
    >>> bool(m.coef_[0, 0] > 0), float(m.coef_[0, 1])
    (True, 0.0)
    """

    def __init__(self, C: float = 1.0):
        self.C = C

    @property
    def classes_(self) -> np.ndarray:
        return np.array([0, 1])

    def fit(self, P, y) -> "NonNegativeLogit":
        P, y = np.asarray(P, dtype=np.float64), np.asarray(y).astype(np.float64)
        if P.ndim != 2 or P.shape[1] < 1 or np.unique(y).size < 2:
            raise ValueError("NonNegativeLogit.fit: needs a 2-D array of probabilities and both classes in y")
        mu, sd = P.mean(axis=0), P.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        Z = (P - mu) / sd
        C = float(self.C)

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            s = theta[0] + Z @ theta[1:]
            r = 1.0 / (1.0 + np.exp(-s)) - y
            loss = C * float(np.sum(np.logaddexp(0.0, s) - y * s)) + float(np.sum(theta[1:]))
            return loss, np.concatenate([[C * r.sum()], C * (Z.T @ r) + 1.0])

        start = np.concatenate([[np.log(y.mean() / (1 - y.mean()))], np.zeros(P.shape[1])])
        bounds = [(None, None)] + [(0.0, None)] * P.shape[1]
        res = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds)
        w = np.maximum(res.x[1:], 0.0) / sd
        self.coef_ = w[None, :]
        self.intercept_ = np.array([res.x[0] - float(w @ mu)])
        return self

    def decision_function(self, P) -> np.ndarray:
        return np.asarray(P, dtype=np.float64) @ self.coef_[0] + self.intercept_[0]

    def predict_proba(self, P) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-self.decision_function(P)))
        return np.column_stack([1 - p, p])

    def predict(self, P) -> np.ndarray:
        return (self.predict_proba(P)[:, 1] >= 0.5).astype(int)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def platt(X: np.ndarray, y: np.ndarray, C: float = 1.0) -> np.ndarray:
    """Platt scaling of every column of ``X`` at once: ``(intercept, slope)`` per column minimising
    ``slope**2 / 2 + C * sum(log loss)`` (scikit-learn's ``LogisticRegression()`` on that column,
    to its tolerance), by Newton's method on the two parameters; shape ``(n_columns, 2)``.

    >>> x = np.array([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 0.2, -0.2]); y = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    >>> from sklearn.linear_model import LogisticRegression
    >>> ref = LogisticRegression().fit(x[:, None], y)
    >>> bool(np.allclose(platt(x[:, None], y)[0], [ref.intercept_[0], ref.coef_[0, 0]], atol=1e-4))
    True
    """
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)[:, None]
    theta = np.zeros((X.shape[1], 2))
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(theta[:, 0] + X * theta[:, 1])))
        r, v = p - y, p * (1 - p)
        g = np.column_stack([C * r.sum(0), theta[:, 1] + C * (r * X).sum(0)])
        h00, h01, h11 = C * v.sum(0), C * (v * X).sum(0), 1.0 + C * (v * X * X).sum(0)
        det = h00 * h11 - h01 * h01
        step = np.column_stack([(h11 * g[:, 0] - h01 * g[:, 1]) / det, (h00 * g[:, 1] - h01 * g[:, 0]) / det])
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    return theta


class TopKMean(ClassifierMixin, BaseEstimator):
    """The mean of the ``k`` best columns' calibrated probabilities; ``k`` chosen on the fitted rows.

    ``fit(P, y)`` takes one column of ``P(fake)`` per base model (out-of-fold probabilities:
    the trainer passes inner out-of-fold ones), calibrates each column by Platt scaling on the
    logit (a one-feature logistic regression), ranks the columns by ROC AUC and keeps the ``k``
    best (``k`` given: the registered ``topk_mean`` has it chosen on grouped folds of these rows;
    else the ``k``, at most ``max_k``, whose mean calibrated probability has the best ROC AUC on
    those rows, ties: the smaller ``k``). It never splits its rows, so it needs no groups.
    ``coef_`` holds each column's weight in the mean (``1/k`` or 0).

    Examples
    --------
    >>> y = np.array([0, 0, 0, 1, 1, 1])
    >>> P = np.column_stack([[.1, .2, .3, .7, .8, .9], [.5, .5, .5, .5, .5, .5], [.4, .1, .6, .3, .9, .8]])
    >>> m = TopKMean().fit(P, y)
    >>> int(m.k_), m.coef_.ravel().tolist()
    (1, [1.0, 0.0, 0.0])
    """

    def __init__(self, max_k: int | None = None, k: int | None = None):
        self.max_k = max_k
        self.k = k

    @property
    def classes_(self) -> np.ndarray:
        return np.array([0, 1])

    def _calibrated(self, P: np.ndarray) -> np.ndarray:
        P = np.asarray(P, dtype=np.float64)
        if not hasattr(self, "platt_"):        # a model fitted before the vectorised Platt scaling
            return np.column_stack([cal.predict_proba(_logit(P[:, j])[:, None])[:, 1]
                                    for j, cal in enumerate(self.calibrators_)])
        return 1.0 / (1.0 + np.exp(-(self.platt_[:, 0] + _logit(P) * self.platt_[:, 1])))

    def fit(self, P, y) -> "TopKMean":
        P, y = np.asarray(P, dtype=np.float64), np.asarray(y).astype(int)
        if P.ndim != 2 or P.shape[1] < 1 or len(np.unique(y)) < 2:
            raise ValueError("TopKMean.fit: needs a 2-D array of probabilities and both classes in y")
        self.platt_ = platt(_logit(P), y)           # (intercept, slope) of each column's calibration
        cal = self._calibrated(P)
        aucs = np.array([roc_auc(y, cal[:, j]) for j in range(cal.shape[1])])
        self.order_ = np.argsort(-aucs, kind="stable")
        if self.k is not None:                                 # k set: chosen outside, on grouped folds
            self.k_ = min(int(self.k), cal.shape[1])
        else:
            top = min(self.max_k or cal.shape[1], cal.shape[1])
            self.k_scores_ = np.array([roc_auc(y, cal[:, self.order_[:k]].mean(axis=1))
                                       for k in range(1, top + 1)])
            self.k_ = int(np.argmax(self.k_scores_)) + 1       # first maximum: the smallest k
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
