"""The deployable detector with its probability calibration: a fitted model and a monotone map.

:class:`CalibratedDetector` is what ``fvc-detector`` holds: ``predict_proba`` is the calibrated
``P(fake)`` (the calibrator applied to the model's log-odds, clipped to ``[eps, 1 - eps]``: a
detector never claims certainty), ``raw_proba`` the model's own. The calibrator is fitted by
:func:`fvcflow.training.evidence.calibration.fit_calibration` on out-of-fold predictions, never on rows the
model was fitted on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

EPS = 1e-3


def logit(p) -> np.ndarray:
    """Log-odds of probabilities, clipped away from 0 and 1 (1e-6).

    >>> float(logit(np.array([0.5]))[0])
    0.0
    """
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


class CalibratedDetector(ClassifierMixin, BaseEstimator):
    """``model`` whose ``P(fake)`` goes through ``calibrator`` (a fitted ``ScoreCalibrator``).

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from fvcflow.models.grouped import ScoreCalibrator
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array([0, 0, 1, 1])
    >>> m = LogisticRegression().fit(X, y)
    >>> cal = ScoreCalibrator("sigmoid").fit(logit(m.predict_proba(X)[:, 1]), y)
    >>> CalibratedDetector(m, cal, method="sigmoid").predict_proba(X).shape
    (4, 2)
    """

    def __init__(self, model: Any, calibrator: Any, method: str = "", eps: float = EPS):
        self.model = model
        self.calibrator = calibrator
        self.method = method
        self.eps = eps

    @property
    def classes_(self) -> np.ndarray:
        return np.array([0, 1])

    def fit(self, X, y=None):  # pragma: no cover - assembled from fitted parts by the trainer
        raise NotImplementedError("CalibratedDetector is assembled from a fitted model and calibrator")

    def raw_proba(self, X) -> np.ndarray:
        """The model's own ``P(fake)``, before calibration."""
        return np.asarray(self.model.predict_proba(X), dtype=float)[:, 1]

    def predict_proba(self, X) -> np.ndarray:
        p = np.clip(self.calibrator.predict(logit(self.raw_proba(X))), self.eps, 1 - self.eps)
        return np.column_stack([1 - p, p])

    def predict(self, X) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)
