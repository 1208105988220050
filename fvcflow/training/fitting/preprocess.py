"""Preprocessing fitted inside each training fold: median imputation, correlation filter, scaling.

Everything here is an sklearn transformer inside one ``Pipeline`` with the model, so a fold's
validation rows never inform the imputation medians, the dropped columns or the scaler.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from fvcflow.models import ModelSpec


class CorrelationFilter(TransformerMixin, BaseEstimator):
    """Drop each column whose ``|Pearson r|`` with an earlier kept column exceeds ``threshold``.

    Columns are visited in order; constant columns (no information in this fold) are dropped
    too. At least one column is always kept.

    Examples
    --------
    >>> X = np.array([[1.0, 2.0, 5.0, 7.0], [2.0, 4.1, 1.0, 7.0], [3.0, 6.0, 4.0, 7.0]])
    >>> CorrelationFilter(0.95).fit(X).keep_
    array([0, 2])
    """

    def __init__(self, threshold: float = 0.95):
        self.threshold = threshold

    def fit(self, X, y=None) -> "CorrelationFilter":
        X = np.asarray(X, dtype=np.float64)
        self.n_features_in_ = X.shape[1]
        std = X.std(axis=0)
        live = np.flatnonzero(std > 0)
        Z = (X[:, live] - X[:, live].mean(axis=0)) / std[live]
        corr = np.abs(Z.T @ Z) / max(len(X), 1)
        kept: list[int] = []
        for j in range(live.size):
            if not kept or corr[j, kept].max() <= self.threshold:
                kept.append(j)
        self.keep_ = live[kept] if kept else np.array([0])
        return self

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self, "keep_")
        return np.asarray(X, dtype=np.float64)[:, self.keep_]

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "keep_")
        names = np.asarray(input_features if input_features is not None
                           else [f"x{i}" for i in range(self.n_features_in_)], dtype=object)
        return names[self.keep_]


def build_pipeline(spec: ModelSpec, estimator: Any, *, corr_threshold: float = 0.95) -> Pipeline:
    """``impute -> decorrelate -> [scale] -> model`` for a tabular model spec.

    >>> from fvcflow.models import create_model, get_model_spec
    >>> [n for n, _ in build_pipeline(get_model_spec("logreg_s2"), create_model("logreg_s2")).steps]
    ['impute', 'decorrelate', 'scale', 'model']
    """
    steps = [("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
             ("decorrelate", CorrelationFilter(corr_threshold))]
    if spec.needs_scaling:
        steps.append(("scale", StandardScaler()))
    steps.append(("model", estimator))
    return Pipeline(steps)


def kept_features(pipe: Pipeline, columns: list[str]) -> list[str]:
    """Names of the columns that reach the model of a fitted pipeline."""
    return [columns[i] for i in pipe.named_steps["decorrelate"].keep_]
