"""Column screening (fvcflow.models.select) and the one-standard-error choice of a grid point (issue 22)."""

import numpy as np
import pytest
from sklearn.feature_selection import f_classif
from sklearn.linear_model import LogisticRegression
from xgboost import XGBClassifier

from fvcflow.models import create_model, get_model_spec, list_models
from fvcflow.models.grouped import GroupEarlyStopping
from fvcflow.models.select import SCREEN_PATH, Screened, f_scores
from fvcflow.training.fitting.cv import choose_point, restrictiveness


def _table(n=200, p=30, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    y = (X[:, 3] + 0.8 * X[:, 17] + rng.normal(size=n) > 0).astype(int)
    return X, y


def test_f_scores_match_scikit_learn_and_never_give_nan():
    X, y = _table()
    X[:, 5] = 1.0                                    # constant: sklearn says NaN, we say 0
    ref, _ = f_classif(X, y)
    ours = f_scores(X, y)
    live = np.isfinite(ref)
    np.testing.assert_allclose(ours[live], ref[live], rtol=1e-10)
    assert ours[5] == 0.0 and np.isfinite(ours).all()


def test_screened_keeps_the_strongest_columns_and_names_them_in_its_weights():
    X, y = _table()
    m = Screened(LogisticRegression(), k=2).fit(X, y)
    assert m.keep_.tolist() == [3, 17]
    assert m.coef_.shape == (1, 30) and np.count_nonzero(m.coef_) == 2
    np.testing.assert_allclose(m.predict_proba(X), LogisticRegression().fit(X[:, [3, 17]], y).predict_proba(
        X[:, [3, 17]]))
    assert Screened(LogisticRegression(), k=None).fit(X, y).keep_.size == 30
    assert Screened(LogisticRegression(), k=99).fit(X, y).keep_.size == 30
    w = Screened(LogisticRegression(), k=2, weigh=True).fit(X, y)
    assert w.scale_.max() == 1.0 and 0 < w.scale_.min() < 1.0


@pytest.mark.parametrize("k", [0, -1, 2.5, "all"])
def test_screened_refuses_a_bad_k(k):
    X, y = _table()
    with pytest.raises(ValueError, match="k must be a count"):
        Screened(LogisticRegression(), k=k).fit(X, y)


def test_screened_hands_the_groups_to_a_grouped_estimator():
    X, y = _table()
    g = np.arange(len(y)) // 2
    m = Screened(GroupEarlyStopping(XGBClassifier(n_estimators=50, verbosity=0), rounds=5), k=4)
    m.fit(X, y, groups=g)
    assert 1 <= m.estimator_.best_rounds_ <= 50
    assert m.feature_importances_.shape == (30,) and np.count_nonzero(m.feature_importances_) <= 4


def test_every_tabular_model_screens_on_the_registered_path():
    for name in list_models(kind="tabular"):
        spec = get_model_spec(name)
        assert tuple(spec.grid["k"]) == SCREEN_PATH, name
        assert isinstance(create_model(name), Screened), name


def test_the_one_standard_error_rule_takes_the_most_restrictive_point_near_the_best():
    grid = {"k": (None, 64, 16, 4), "C": (3.0, 0.3)}
    points = [{"k": k, "C": c} for k in grid["k"] for c in grid["C"]]
    order = sorted(range(len(points)), key=lambda i: (restrictiveness(points[i], grid), i))
    assert points[order[0]] == {"k": None, "C": 3.0} and points[order[-1]] == {"k": 4, "C": 0.3}
    scores = np.array([0.80, 0.79, 0.78, 0.77, 0.70, 0.60, 0.79, 0.65])
    folds = np.array([[s - 0.03, s + 0.03] for s in scores])       # se = 0.03 / sqrt(2) * sqrt(2) = 0.03
    # within 0.03 of the best (0.80): indices 0, 1, 2, 3 and 6; the most restrictive is 6 (k=4, C=3)
    assert choose_point(scores, folds, order) == 6
    # no spread: the best alone
    assert choose_point(scores, np.column_stack([scores, scores]), order) == 0
    # NaN scores never win
    assert choose_point(np.array([np.nan, 0.6]), np.array([[np.nan, np.nan], [0.6, 0.6]]), [0, 1]) == 1
