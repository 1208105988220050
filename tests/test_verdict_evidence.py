"""The evidence behind a verdict: per-prediction contributions of every tabular model kind."""

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.linear_model import LogisticRegression

from fvcflow.detector.evidence import contributions, tabular_contributions, top_features
from fvcflow.models import create_model, get_model_spec
from fvcflow.models.calibrated import CalibratedDetector, logit
from fvcflow.models.grouped import ScoreCalibrator
from fvcflow.models.stack import StackedModel
from fvcflow.training.fitting.preprocess import build_pipeline

SIGNAL = "s2_signal"


@pytest.fixture(scope="module")
def table():
    """Fakes differ from reals in one feature only; five more are noise (one with missing values)."""
    rng = np.random.default_rng(3)
    n = 400
    y = np.repeat([0, 1], n // 2)
    X = pd.DataFrame({f"s2_noise{k}": rng.normal(size=n) for k in range(5)})
    X.insert(2, SIGNAL, 2.5 * y + rng.normal(scale=0.4, size=n))
    X.loc[rng.random(n) < 0.1, "s2_noise4"] = np.nan
    return X, y


def _fit(name, X, y):
    spec = get_model_spec(name)
    est = create_model(name, n_estimators=30) if "xgb" in name or "lgbm" in name else create_model(name)
    return build_pipeline(spec, est).fit(X, y)


@pytest.fixture(scope="module")
def models(table):
    X, y = table
    out = {name: _fit(name, X, y) for name in ("logreg_s2", "xgb_s24", "lgbm_s24")}
    bases = [(n, m, list(X.columns)) for n, m in out.items()]
    meta = LogisticRegression().fit(np.column_stack([m.predict_proba(X)[:, 1] for _, m, _ in bases]), y)
    out["stack"] = StackedModel(bases, meta)
    raw = out["xgb_s24"].predict_proba(X)[:, 1]
    out["calibrated"] = CalibratedDetector(out["xgb_s24"], ScoreCalibrator("sigmoid").fit(logit(raw), y),
                                           method="sigmoid")
    return out


@pytest.mark.parametrize("name", ["logreg_s2", "xgb_s24", "lgbm_s24", "stack", "calibrated"])
def test_the_one_informative_feature_leads_every_fake(table, models, name):
    X, y = table
    c, names, how, approximate = contributions(models[name], X)
    assert c.shape == (len(X), len(names)) and SIGNAL in names
    lead = np.asarray(names)[np.argmax(np.abs(c), axis=1)]
    assert (lead[y == 1] == SIGNAL).all(), how
    j = names.index(SIGNAL)
    assert (c[y == 1, j] > 0).all()                       # it pushes every fake towards "fake"
    assert approximate is (name == "stack")


def test_contributions_add_up_to_the_models_own_margin(table, models):
    """Against each library's own output: the contributions plus the bias are the log-odds, and
    those are the whole fitted pipeline's (column screening and early stopping included)."""
    from fvcflow.detector.evidence import _inner

    X, _ = table
    logreg = models["logreg_s2"]
    c, _, how = tabular_contributions(logreg, X)
    assert how == "coefficient x standardised value (linear)"
    lin, Z, _ = _inner(logreg.named_steps["model"],
                       np.asarray(logreg[:-1].transform(X), dtype=np.float64), list(X.columns))
    np.testing.assert_allclose(c.sum(axis=1) + lin.intercept_[0], lin.decision_function(Z),
                               rtol=1e-10, atol=1e-10)
    p = logreg.predict_proba(X)[:, 1]
    sure = (p > 2e-6) & (p < 1 - 2e-6)         # the pipeline clips probabilities to [1e-6, 1 - 1e-6]
    np.testing.assert_allclose(lin.decision_function(Z)[sure], logit(p[sure]), rtol=1e-6, atol=1e-6)
    for name in ("xgb_s24", "lgbm_s24"):
        pipe = models[name]
        c, _, _ = tabular_contributions(pipe, X)
        est, Z, _ = _inner(pipe.named_steps["model"], np.asarray(pipe[:-1].transform(X), dtype=np.float64),
                           list(X.columns))
        if name == "xgb_s24":
            full = est.get_booster().predict(xgb.DMatrix(Z), pred_contribs=True)
            margin = est.get_booster().predict(xgb.DMatrix(Z), output_margin=True)
        else:
            full = est.booster_.predict(Z, pred_contrib=True)
            margin = est.booster_.predict(Z, raw_score=True)
        np.testing.assert_allclose(c.sum(axis=1) + full[:, -1], margin, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(logit(pipe.predict_proba(X)[:, 1]), margin, rtol=1e-4, atol=1e-4)
        assert isinstance(est, lgb.LGBMClassifier if name == "lgbm_s24" else xgb.XGBClassifier)


def test_top_features_are_ordered_by_size_with_their_values():
    values = {"a": 1.0, "b": float("nan"), "c": 3.0}
    got = top_features(np.array([0.1, -2.0, 0.5]), ["a", "b", "c"], values, n=2)
    assert got == [{"feature": "b", "value": None, "contribution": -2.0},
                   {"feature": "c", "value": 3.0, "contribution": 0.5}]


def test_a_model_without_contributions_says_so(table):
    from sklearn.neighbors import KNeighborsClassifier

    X, y = table
    with pytest.raises(TypeError, match="no per-prediction contributions for KNeighborsClassifier"):
        tabular_contributions(KNeighborsClassifier().fit(X.fillna(0), y), X.fillna(0))
