"""Inner procedures that split by group: calibration, early stopping, and the splitters they share.

A model that holds out part of its training rows for anything (Platt scaling, an early-stopping
validation set, an internal grid) must keep every ``group_id`` on one side of that split: on a
paired corpus (each fake derived from a real source) a row-wise split puts a pair-mate with the
other label beside every held-out row, and what is learnt there is the pair, not the fake.

The estimators here take ``groups`` in ``fit``; the trainer passes them through the pipeline
(:func:`fvcflow.training.fitting.grouping.fit_params`). ``groups=None`` means "every row is its own
group" (a table without group structure), never "split however".

The splitters are public for any training loop (torch models included)::

    train_idx, val_idx = grouped_holdout(y, groups, fraction=0.2, seed=0)
    for train_idx, val_idx in grouped_kfold(y, groups, n_splits=3, seed=0): ...
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Iterator

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.utils.validation import check_is_fitted

from fvcflow.errors import FvcError

log = logging.getLogger("fvcflow.models")


def _groups(groups: Any, n: int) -> np.ndarray:
    if groups is None:
        return np.arange(n)
    g = np.asarray(groups)
    if g.shape != (n,):
        raise ValueError(f"groups must have one entry per row ({n}), got shape {g.shape}")
    return g


def fewest_groups(y: np.ndarray, groups: np.ndarray) -> int:
    """The number of groups of the rarer class (how many grouped folds are possible)."""
    y = np.asarray(y)
    return min(np.unique(groups[y == c]).size for c in np.unique(y)) if np.unique(y).size == 2 else 0


def grouped_kfold(y, groups, n_splits: int = 3, *, seed: int = 0,
                  what: str = "grouped inner split") -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stratified group k-fold indices ``(train, validation)``: no group on both sides.

    Fewer folds are used when a class occurs in fewer than ``n_splits`` groups (at least 2); with
    fewer than 2 groups in a class it is an :class:`FvcError` naming ``what``.

    >>> y = np.array([0, 1] * 6); g = np.repeat(np.arange(6), 2)
    >>> all(set(g[tr]).isdisjoint(g[va]) for tr, va in grouped_kfold(y, g, 3))
    True
    """
    y = np.asarray(y)
    g = _groups(groups, len(y))
    k = min(n_splits, fewest_groups(y, g))
    if k < 2:
        raise FvcError(f"{what}: a class occurs in fewer than 2 groups of {len(y)} rows; add data or "
                       "lower the number of folds")
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    yield from cv.split(np.zeros(len(y)), y, g)


def grouped_holdout(y, groups, fraction: float = 0.2, *, seed: int = 0,
                    what: str = "grouped validation split") -> tuple[np.ndarray, np.ndarray]:
    """One stratified grouped hold-out, about ``fraction`` of the groups: ``(train, validation)``.

    The validation split for early stopping (boosters, torch training loops): every row of a group
    is on the same side, both classes are on both sides.

    >>> y = np.array([0, 1] * 10); g = np.repeat(np.arange(10), 2)
    >>> tr, va = grouped_holdout(y, g, 0.2)
    >>> set(g[tr]).isdisjoint(g[va]), len(va)
    (True, 4)
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    n_splits = max(2, round(1.0 / fraction))
    return next(grouped_kfold(y, groups, n_splits, seed=seed, what=what))


def _scores(est: Any, X) -> np.ndarray:
    if hasattr(est, "decision_function"):
        return np.asarray(est.decision_function(X), dtype=float)
    return np.asarray(est.predict_proba(X), dtype=float)[:, 1]


class ScoreCalibrator(BaseEstimator):
    """A monotone map from a score to ``P(fake)``: ``sigmoid`` (Platt) or ``isotonic``.

    >>> c = ScoreCalibrator("sigmoid").fit(np.array([-2.0, -1.0, 1.0, 2.0]), np.array([0, 0, 1, 1]))
    >>> bool(c.predict(np.array([3.0]))[0] > 0.5)
    True
    """

    def __init__(self, method: str = "sigmoid"):
        self.method = method

    def fit(self, s, y) -> "ScoreCalibrator":
        s, y = np.asarray(s, dtype=float).ravel(), np.asarray(y, dtype=int)
        if self.method == "sigmoid":
            # standardised first: on raw SVM margins (|s| ~ 0.05) lbfgs stops at the initial slope 0
            self.loc_, self.scale_ = float(s.mean()), float(s.std()) or 1.0
            self.map_ = LogisticRegression(C=1e4, max_iter=1000).fit(self._z(s), y)
        elif self.method == "isotonic":
            self.map_ = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(s, y)
        else:
            raise ValueError(f"method must be 'sigmoid' or 'isotonic', got {self.method!r}")
        return self

    def _z(self, s: np.ndarray) -> np.ndarray:
        return ((s - self.loc_) / self.scale_)[:, None]

    def predict(self, s) -> np.ndarray:
        check_is_fitted(self, "map_")
        s = np.asarray(s, dtype=float).ravel()
        if self.method == "sigmoid":
            return self.map_.predict_proba(self._z(s))[:, 1]
        return np.clip(self.map_.predict(s), 0.0, 1.0)

    @property
    def slope(self) -> float:
        """The sigmoid's slope (positive keeps the ranking); NaN for isotonic."""
        return float(self.map_.coef_.ravel()[0]) if self.method == "sigmoid" else float("nan")


class GroupCalibratedClassifier(ClassifierMixin, BaseEstimator):
    """``estimator`` with probabilities calibrated on grouped cross-fitted scores.

    Like ``CalibratedClassifierCV(ensemble=False)`` but the calibration folds are stratified
    *group* k-fold: the score of every calibration row comes from a copy of ``estimator`` that
    saw no row of its group. The deployed estimator is refitted on all rows.

    Examples
    --------
    >>> from sklearn.svm import SVC
    >>> rng = np.random.default_rng(0); X = rng.normal(size=(40, 3)); y = (X[:, 0] > 0).astype(int)
    >>> m = GroupCalibratedClassifier(SVC(), cv=3).fit(X, y, groups=np.arange(40) // 2)
    >>> m.predict_proba(X).shape, m.calibrator_.slope > 0
    ((40, 2), True)
    """

    def __init__(self, estimator: Any, method: str = "sigmoid", cv: int = 3, seed: int = 0):
        self.estimator = estimator
        self.method = method
        self.cv = cv
        self.seed = seed

    def fit(self, X, y, groups=None) -> "GroupCalibratedClassifier":
        y = np.asarray(y, dtype=int)
        g = _groups(groups, len(y))
        scores = np.full(len(y), np.nan)
        for tr, va in grouped_kfold(y, g, self.cv, seed=self.seed, what="grouped calibration"):
            scores[va] = _scores(clone(self.estimator).fit(_rows(X, tr), y[tr]), _rows(X, va))
        self.calibrator_ = ScoreCalibrator(self.method).fit(scores, y)
        self.estimator_ = clone(self.estimator).fit(X, y)
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        p = self.calibrator_.predict(_scores(self.estimator_, X))
        return np.column_stack([1.0 - p, p])

    def decision_function(self, X) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        return _scores(self.estimator_, X)

    def predict(self, X) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


def _rows(X, idx):
    return X.iloc[idx] if hasattr(X, "iloc") else X[idx]


def _library(est: Any) -> str:
    return type(est).__module__.split(".")[0]


class GroupEarlyStopping(ClassifierMixin, BaseEstimator):
    """A gradient booster (XGBoost, LightGBM, CatBoost) whose rounds are chosen on grouped folds.

    The rows are split into ``folds`` stratified group folds; on each, the booster is fitted on
    the other folds, early-stopped on that fold after ``rounds`` rounds without improvement, and
    its validation log loss recorded after every round (a curve that stopped is held at its last
    value beyond). The curves are averaged (weighted by validation rows) and the number of rounds
    is the best of the mean curve (classical early stopping on it, same patience); then the
    booster is refitted on all rows with it (``best_rounds_``; ``curve_`` is the mean curve).

    Every group is validated on once: one hold-out of 20 % of a dozen groups (2-3 groups) chose a
    single round in 4 of 10 fits on the demo corpus, a one-split model (benchmarks/demo_regression.py).
    With ``one_split_groups`` groups or more (default 50), one hold-out of ``1/5`` of them (ten or
    more groups) is enough and the rounds are chosen on it alone: a third of the probe fits.

    >>> from xgboost import XGBClassifier
    >>> rng = np.random.default_rng(0); X = rng.normal(size=(80, 3)); y = (X[:, 0] > 0).astype(int)
    >>> m = GroupEarlyStopping(XGBClassifier(n_estimators=200, verbosity=0), rounds=5)
    >>> m.fit(X, y, groups=np.arange(80) // 2).best_rounds_ < 200
    True
    """

    def __init__(self, estimator: Any, rounds: int = 20, folds: int = 3, seed: int = 0,
                 one_split_groups: int = 50):
        self.estimator = estimator
        self.rounds = rounds
        self.folds = folds
        self.seed = seed
        self.one_split_groups = one_split_groups

    def _rounds_param(self) -> str:
        lib = _library(self.estimator)
        if lib in ("xgboost", "lightgbm"):
            return "n_estimators"
        if lib == "catboost":
            return "iterations"
        raise FvcError(f"GroupEarlyStopping: no early stopping for {type(self.estimator).__name__}")

    def _curve(self, lib: str, Xt, yt, Xv, yv) -> np.ndarray:
        """Validation log loss after every round of the booster fitted on ``Xt, yt``."""
        probe = clone(self.estimator)
        if lib == "xgboost":
            probe.set_params(early_stopping_rounds=self.rounds)
            probe.fit(Xt, yt, eval_set=[(Xv, yv)], verbose=False)
            return np.asarray(probe.evals_result()["validation_0"]["logloss"], dtype=float)
        if lib == "lightgbm":
            import lightgbm

            evals = ({"eval_X": (Xv,), "eval_y": (yv,)}           # lightgbm >= 4.6
                     if "eval_X" in inspect.signature(probe.fit).parameters else {"eval_set": [(Xv, yv)]})
            probe.fit(Xt, yt, eval_metric="binary_logloss",
                      callbacks=[lightgbm.early_stopping(self.rounds, verbose=False)], **evals)
            return np.asarray(next(iter(probe.evals_result_.values()))["binary_logloss"], dtype=float)
        probe.fit(Xt, yt, eval_set=(Xv, yv), early_stopping_rounds=self.rounds, verbose=False)
        return np.asarray(probe.get_evals_result()["validation"]["Logloss"], dtype=float)

    def fit(self, X, y, groups=None) -> "GroupEarlyStopping":
        y = np.asarray(y, dtype=int)
        g = _groups(groups, len(y))
        lib, param = _library(self.estimator), self._rounds_param()
        try:
            if len(np.unique(g)) >= self.one_split_groups:     # enough groups: one 20 % hold-out
                splits = list(grouped_kfold(y, g, 5, seed=self.seed, what="grouped early stopping"))[:1]
            else:
                splits = list(grouped_kfold(y, g, self.folds, seed=self.seed, what="grouped early stopping"))
        except FvcError as exc:     # too few groups to hold any out: the configured rounds, said in the log
            log.warning("%s; fitting %s with its configured %s instead", exc, type(self.estimator).__name__,
                        param)
            self.best_rounds_ = int(self.estimator.get_params()[param])
            self.estimator_ = clone(self.estimator).fit(X, y)
            self.classes_ = np.array([0, 1])
            return self
        curves, weights = [], []
        for tr, va in splits:
            curves.append(self._curve(lib, _rows(X, tr), y[tr], _rows(X, va), y[va]))
            weights.append(len(va))
        n = max(len(c) for c in curves)
        held = [np.concatenate([c, np.full(n - len(c), c[-1])]) for c in curves]
        self.curve_ = np.average(np.stack(held), axis=0, weights=weights)
        best, since = 0, 0
        for i in range(1, n):              # classical early stopping on the mean curve
            if self.curve_[i] < self.curve_[best]:
                best, since = i, 0
            else:
                since += 1
                if since >= self.rounds:
                    break
        self.best_rounds_ = best + 1
        self.estimator_ = clone(self.estimator).set_params(**{param: self.best_rounds_}).fit(X, y)
        self.classes_ = np.array([0, 1])
        return self

    @property
    def feature_importances_(self) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        return self.estimator_.feature_importances_

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict_proba(X)

    def predict(self, X) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)
