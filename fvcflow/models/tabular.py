"""The CPU baselines on the handcrafted features (stage 2, or stage 2 + stage 4).

Every constructor takes ``seed`` and ``n_jobs`` (the trainer passes both) plus its grid keywords.
Whatever a model does with part of its training rows (Platt scaling, early stopping) splits by
group: the trainer passes ``groups`` to the grouped wrappers of :mod:`fvcflow.models.grouped`.
``extra["ci_params"]`` are cheap constructor settings for the registry-driven tests.

Models that survive many columns (issue 22): every model screens its columns (``k``, the
:data:`~fvcflow.models.select.SCREEN_PATH` of :class:`~fvcflow.models.select.Screened`) and
regularises (the linear models along an L1 path of ``C``; the boosters by depth and column
sampling, their rounds by early stopping on grouped folds), all chosen by the trainer's
grid search on grouped inner folds. The first point of every grid is the least restrictive (all
columns, the weakest penalty), which the registry-driven canaries use.
LightGBM and CatBoost are the optional extra ``boost``: they are registered always and imported
here, inside the constructor, so that a missing package fails only when such a model is built.
"""

from __future__ import annotations

import importlib

from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

from fvcflow.errors import FvcError
from fvcflow.models.grouped import GroupCalibratedClassifier, GroupEarlyStopping
from fvcflow.models.registry import register_model
from fvcflow.models.select import SCREEN_PATH, Screened

#: the L1 path of the linear models' ``C`` (weakest penalty first)
L1_PATH = (3.0, 0.3, 0.03)
#: the linear models' grid: screening and the L1 path
LINEAR_GRID = {"k": SCREEN_PATH, "C": L1_PATH}
#: the boosters' grid: screening and depth (rounds: grouped early stopping; column sampling 0.5)
BOOST_ROUNDS = 20


def _optional(module: str):
    """Import an optional-extra package, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise FvcError(f"this model needs the {module!r} package: pip install 'fvcflow[boost]'") from None


def _logreg(seed: int, C: float, k: int | None) -> Screened:
    """L1-penalised logistic regression (liblinear) on the ``k`` best-screened columns."""
    return Screened(LogisticRegression(C=C, l1_ratio=1.0, solver="liblinear", max_iter=5000,
                                       random_state=seed), k=k)


@register_model(kind="tabular", feature_set="s2", needs_scaling=True,
                grid=LINEAR_GRID)
def logreg_s2(*, seed: int = 0, n_jobs: int = 1, C: float = 1.0, k: int | None = None) -> Screened:
    """L1-path logistic regression, screened columns, on the stage 2 features."""
    return _logreg(seed, C, k)


@register_model(kind="tabular", feature_set="s24", needs_scaling=True,
                grid=LINEAR_GRID)
def logreg_s24(*, seed: int = 0, n_jobs: int = 1, C: float = 1.0, k: int | None = None) -> Screened:
    """L1-path logistic regression, screened columns, on the stage 2 + stage 4 features."""
    return _logreg(seed, C, k)


@register_model(kind="tabular", feature_set="s24", needs_scaling=True,
                grid={"k": SCREEN_PATH, "C": (1.0,)})
def svm_rbf_s24(*, seed: int = 0, n_jobs: int = 1, C: float = 1.0, gamma: str | float = "scale",
                k: int | None = None):
    """RBF support vector machine, Platt-calibrated (sigmoid, grouped 3-fold), screened columns,
    stage 2 + 4 features.

    The calibration folds are stratified *group* folds: with row-wise folds a paired corpus puts
    each calibration video's pair-mate (other label) in the SVM's training rows, the fitted
    sigmoid gets a negative slope and the ranking is reversed (issue 12: OOF AUC 0.27 vs 0.72).
    An RBF kernel weighs every column alike, so screening (``k``) is what keeps noise columns out.
    """
    svc = SVC(C=C, gamma=gamma, kernel="rbf", random_state=seed, cache_size=200)
    return Screened(GroupCalibratedClassifier(svc, method="sigmoid", cv=3, seed=seed), k=k, weigh=True)


def _early_stopped(est, rounds: int | None, seed: int, k: int | None) -> Screened:
    """``est`` on the ``k`` screened columns, early-stopped on grouped folds when ``rounds`` is set."""
    est = est if rounds is None else GroupEarlyStopping(est, rounds=rounds, folds=3, seed=seed)
    return Screened(est, k=k)


@register_model(kind="tabular", feature_set="s24", grid={"k": SCREEN_PATH, "max_depth": (3, 1)},
                extra={"ci_params": {"n_estimators": 30}})
def xgb_s24(*, seed: int = 0, n_jobs: int = 1, max_depth: int = 3, n_estimators: int = 300,
            learning_rate: float = 0.1, colsample_bytree: float = 0.5,
            early_stopping_rounds: int | None = BOOST_ROUNDS, k: int | None = None):
    """Gradient-boosted trees (XGBoost, hist), screened columns, stage 2 + 4 features.

    The rounds are early-stopped on grouped 3-fold validation of the training rows, their log
    loss curves averaged (``early_stopping_rounds`` without improvement; None: all ``n_estimators``).
    """
    from xgboost import XGBClassifier

    est = XGBClassifier(n_estimators=n_estimators, max_depth=max_depth, learning_rate=learning_rate,
                        subsample=0.8, colsample_bytree=colsample_bytree, tree_method="hist", n_jobs=n_jobs,
                        random_state=seed, eval_metric="logloss", verbosity=0)
    return _early_stopped(est, early_stopping_rounds, seed, k)


@register_model(kind="tabular", feature_set="s24", grid={"k": SCREEN_PATH, "num_leaves": (7, 2)},
                extra={"ci_params": {"n_estimators": 30}})
def lgbm_s24(*, seed: int = 0, n_jobs: int = 1, num_leaves: int = 7, n_estimators: int = 300,
             learning_rate: float = 0.05, early_stopping_rounds: int | None = BOOST_ROUNDS,
             k: int | None = None):
    """LightGBM (optional extra ``boost``), stage 2 + 4 features; grouped early stopping as xgb_s24."""
    lgb = _optional("lightgbm")
    est = lgb.LGBMClassifier(n_estimators=n_estimators, num_leaves=num_leaves, learning_rate=learning_rate,
                             min_child_samples=10, subsample=0.8, subsample_freq=1, colsample_bytree=0.5,
                             n_jobs=n_jobs, random_state=seed, verbose=-1)
    return _early_stopped(est, early_stopping_rounds, seed, k)


@register_model(kind="tabular", feature_set="s24", grid={"k": SCREEN_PATH, "depth": (4, 2)},
                extra={"ci_params": {"iterations": 30}})
def catboost_s24(*, seed: int = 0, n_jobs: int = 1, depth: int = 4, iterations: int = 300,
                 learning_rate: float = 0.1, early_stopping_rounds: int | None = BOOST_ROUNDS,
                 k: int | None = None):
    """CatBoost (optional extra ``boost``), stage 2 + 4 features; grouped early stopping as xgb_s24."""
    cb = _optional("catboost")
    est = cb.CatBoostClassifier(iterations=iterations, depth=depth, learning_rate=learning_rate,
                                rsm=0.5, thread_count=n_jobs, random_seed=seed, verbose=0,
                                allow_writing_files=False)
    return _early_stopped(est, early_stopping_rounds, seed, k)


# ---------------------------------------------------------------- on the local feature sets (issue 13)

@register_model(kind="tabular", feature_set="s2l", needs_scaling=True,
                grid=LINEAR_GRID)
def logreg_s2l(*, seed: int = 0, n_jobs: int = 1, C: float = 1.0, k: int | None = None) -> Screened:
    """L1-path logistic regression, screened columns, on the stage 2 + local (tile inconsistency) features."""
    return _logreg(seed, C, k)


@register_model(kind="tabular", feature_set="s2l", grid={"k": SCREEN_PATH, "max_depth": (3, 1)},
                extra={"ci_params": {"n_estimators": 30}})
def xgb_s2l(**kw):
    """XGBoost as xgb_s24, on the stage 2 + local features."""
    return xgb_s24(**kw)


@register_model(kind="tabular", feature_set="s2lf", needs_scaling=True,
                grid=LINEAR_GRID)
def logreg_s2lf(*, seed: int = 0, n_jobs: int = 1, C: float = 1.0, k: int | None = None) -> Screened:
    """L1-path logistic regression, screened columns, on the stage 2 + local + face-region features."""
    return _logreg(seed, C, k)


@register_model(kind="tabular", feature_set="s2lf", grid={"k": SCREEN_PATH, "max_depth": (3, 1)},
                extra={"ci_params": {"n_estimators": 30}})
def xgb_s2lf(**kw):
    """XGBoost as xgb_s24, on the stage 2 + local + face-region features."""
    return xgb_s24(**kw)


@register_model(kind="tabular", feature_set="s24l", grid={"k": SCREEN_PATH, "max_depth": (3, 1)},
                extra={"ci_params": {"n_estimators": 30}})
def xgb_s24l(**kw):
    """XGBoost as xgb_s24, on stages 2 and 4 with the local features of both."""
    return xgb_s24(**kw)
