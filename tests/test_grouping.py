"""Every inner procedure splits by group: calibration, grid search, early stopping (issue 12)."""

import inspect

import numpy as np
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.svm import SVC
from xgboost import XGBClassifier

from fvcflow.errors import FvcError
from fvcflow.models import create_model, get_model_spec, list_models
from fvcflow.models.grouped import (
    GroupCalibratedClassifier,
    GroupEarlyStopping,
    ScoreCalibrator,
    grouped_holdout,
    grouped_kfold,
)
from fvcflow.training.fitting.cv import cross_validate
from fvcflow.training.fitting.grouping import audit_splits, fit_params, static_findings
from fvcflow.training.fitting.preprocess import build_pipeline
from tests.leakage_tables import ci_config, oof_auc, paired_table

#: kinds whose models are not sklearn-style estimators: their trainer owns every split and must use
#: fvcflow.models.grouped (grouped_holdout / grouped_kfold); a new kind must say how it groups here
GROUPED_BY_TRAINER = {"torch_video": "the deep training loop's validation split is grouped_holdout",
                      "tile": "the tabular CV; its tile model cross-fits by GroupKFold (see the canary "
                              "of test_tile_evidence)"}


def _early_stopping_variants(name: str) -> list[dict]:
    """The model as registered, and with its grouped early stopping on (when it has one)."""
    params = inspect.signature(get_model_spec(name).constructor).parameters
    return [{}] + ([{"early_stopping_rounds": 3}] if "early_stopping_rounds" in params else [])


def test_paired_corpus_svm_keeps_the_ranking_of_its_margin():
    # issue 12's defect: CalibratedClassifierCV(cv=3) calibrated on row-wise folds, so each
    # calibration video's pair-mate (other label) sat in the SVM's training rows; the sigmoid's
    # slope came out negative and the out-of-fold AUC fell below chance
    t = paired_table(150, signal=0.5, seed=1)
    cfg = ci_config(["svm_rbf_s24"])
    auc = oof_auc(cross_validate(get_model_spec("svm_rbf_s24"), t, cfg).predictions)
    # the raw margin of the same SVM, same folds: the reference ranking
    raw = np.full(len(t.y), np.nan)
    for k in t.folds:
        tr, va = t.fold != k, t.fold == k
        pipe = build_pipeline(get_model_spec("svm_rbf_s24"), SVC(C=0.5)).fit(t.X[tr], t.y[tr])
        raw[va] = pipe.decision_function(t.X[va])
    ref = roc_auc_score(t.y, raw)
    assert ref > 0.7 and auc > 0.7 and abs(auc - ref) < 0.06, (auc, ref)
    # the old construction on the same table inverts (documents what the test guards against)
    old = np.full(len(t.y), np.nan)
    for k in t.folds:
        tr, va = t.fold != k, t.fold == k
        est = CalibratedClassifierCV(SVC(C=0.5), method="sigmoid", cv=3, ensemble=False)
        pipe = build_pipeline(get_model_spec("svm_rbf_s24"), est).fit(t.X[tr], t.y[tr])
        old[va] = pipe.predict_proba(t.X[va])[:, 1]
    assert roc_auc_score(t.y, old) < 0.4


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_splits_by_group(name):
    """Walk the registry: no model splits its training rows without groups, statically or while it
    is cross-validated (outer folds, inner grid, calibration, early stopping)."""
    spec = get_model_spec(name)
    if spec.kind == "stack":
        assert static_findings(create_model(name)) == []     # the stack's inner folds: test_leakage_canary
        return
    if spec.kind not in ("tabular", "embedding"):   # embedding models: the tabular CV on other columns
        assert spec.kind in GROUPED_BY_TRAINER, f"{name}: kind {spec.kind!r} must declare how it groups"
        return
    t = paired_table(40, signal=0.5, feature_set=spec.feature_set or "s24", seed=3)
    for variant in _early_stopping_variants(name):
        cfg = ci_config([name], params={name: variant})
        est = create_model(name, seed=0, n_jobs=1, **cfg.params[name])
        assert static_findings(est) == [], (name, variant)
        with audit_splits() as audit:
            cross_validate(spec, t, cfg)
        assert audit.calls and audit.ungrouped == [], (name, variant, audit.ungrouped)


def test_the_audit_catches_row_wise_splits():
    t = paired_table(20, seed=2)
    X, y = t.X.to_numpy(), t.y
    with audit_splits() as audit:
        CalibratedClassifierCV(SVC(), cv=3).fit(X, y)
        HistGradientBoostingClassifier(early_stopping=True, max_iter=5).fit(X, y)
        GroupCalibratedClassifier(SVC(), cv=3).fit(X, y, groups=t.group_id)
    assert audit.ungrouped == ["StratifiedKFold", "StratifiedShuffleSplit"]
    assert audit.calls[-1] == ("StratifiedGroupKFold", True)


def test_static_findings_name_the_row_wise_procedures():
    assert static_findings(CalibratedClassifierCV(SVC(), cv=3)) == [
        "CalibratedClassifierCV: cv=3 splits rows without groups"]
    assert static_findings(HistGradientBoostingClassifier()) == [
        "HistGradientBoostingClassifier: early_stopping='auto' holds out rows without groups"]
    pipe = build_pipeline(get_model_spec("xgb_s24"), XGBClassifier(early_stopping_rounds=5))
    assert static_findings(pipe) == [
        "Pipeline/XGBClassifier: early_stopping_rounds=5 holds out rows without groups"]
    assert static_findings(GroupEarlyStopping(XGBClassifier(), rounds=5)) == []


def test_grouped_splitters_keep_groups_whole_and_both_classes_on_both_sides():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 30, 200)
    y = (groups % 3 == 0).astype(int)
    for tr, va in grouped_kfold(y, groups, 4, seed=1):
        assert set(groups[tr]).isdisjoint(groups[va]) and set(y[va]) == {0, 1}
    tr, va = grouped_holdout(y, groups, 0.25, seed=1)
    assert set(groups[tr]).isdisjoint(groups[va]) and len(tr) + len(va) == 200
    assert 0.1 < len(va) / 200 < 0.45
    with pytest.raises(FvcError, match="grouped early stopping"):
        grouped_holdout(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1]), 0.5, what="grouped early stopping")
    with pytest.raises(ValueError, match="fraction"):
        grouped_holdout(y, groups, 1.5)


def test_fit_params_reach_only_steps_that_take_groups():
    pipe = build_pipeline(get_model_spec("svm_rbf_s24"), create_model("svm_rbf_s24"))
    assert list(fit_params(pipe, np.arange(3))) == ["model__groups"]
    plain = build_pipeline(get_model_spec("logreg_s2"), SVC())
    assert fit_params(plain, np.arange(3)) == {}
    # every registered tabular model screens its columns (issue 22): the screen hands groups on
    assert list(fit_params(build_pipeline(get_model_spec("logreg_s2"), create_model("logreg_s2")),
                           np.arange(3))) == ["model__groups"]
    assert list(fit_params(create_model("xgb_s24", early_stopping_rounds=4), np.arange(3))) == ["groups"]
    assert fit_params(pipe, None) == {}


@pytest.mark.parametrize("name", ["xgb_s24", "lgbm_s24", "catboost_s24"])
def test_grouped_early_stopping_stops_each_booster(name):
    t = paired_table(60, signal=0.0, feature_set="s24", seed=4)
    big = {"catboost_s24": {"iterations": 300}}.get(name, {"n_estimators": 300})
    est = create_model(name, seed=0, early_stopping_rounds=5, **big)
    with audit_splits() as audit:
        est.fit(t.X, t.y, groups=t.group_id)
    assert audit.calls == [("StratifiedGroupKFold", True)]
    assert 1 <= est.estimator_.best_rounds_ < 300          # no signal: stops early (inside the screen)
    assert est.predict_proba(t.X).shape == (len(t.y), 2)
    assert est.feature_importances_.shape == (t.X.shape[1],)


def test_without_groups_every_row_is_its_own_group():
    t = paired_table(30, signal=1.0, seed=5)
    a = GroupCalibratedClassifier(SVC(), cv=3).fit(t.X, t.y)
    b = GroupCalibratedClassifier(SVC(), cv=3).fit(t.X, t.y, groups=np.arange(len(t.y)))
    assert np.allclose(a.predict_proba(t.X), b.predict_proba(t.X))


def test_score_calibrator_sigmoid_and_isotonic():
    rng = np.random.default_rng(0)
    s = rng.normal(0, 0.05, 400)                     # the scale of SVM margins on paired data
    y = (rng.random(400) < 1 / (1 + np.exp(-40 * s))).astype(int)
    sig = ScoreCalibrator("sigmoid").fit(s, y)
    assert sig.slope > 0 and np.all(np.diff(sig.predict(np.sort(s))) >= 0)
    iso = ScoreCalibrator("isotonic").fit(s, y)
    assert np.all(np.diff(iso.predict(np.sort(s))) >= -1e-12) and np.isnan(iso.slope)
    with pytest.raises(ValueError, match="method"):
        ScoreCalibrator("beta").fit(s, y)
