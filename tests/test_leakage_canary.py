"""Leakage canaries, run on every registered model (issue 12): the registry drives the parameters.

(a) The only signal is pair identity: each group is one real and one fake whose features are
    nearly equal (``tests/leakage_tables.paired_table``). An honest grouped procedure scores at
    chance; every model's out-of-fold ROC AUC must lie in 0.5 +- 0.12. The null distribution,
    measured over seeds 0-5 at 300 groups (3 outer / 2 inner folds, ci_params): base models
    0.490-0.520, the stack 0.452-0.521 (its probabilities are nearly constant, so the few
    pair-mates' jitter decides more): the band is about 4 null standard deviations wide.
(b) A weak true signal on top (four columns shifted by 0.5 between-group sd): no model may rank
    below chance: every model must reach 0.6 (measured over seeds 0-1: 0.70-0.80; the old
    row-wise-calibrated SVM: 0.21).

Kinds whose models do not read a feature table (deep models) declare how their trainer groups in
``tests/test_grouping.GROUPED_BY_TRAINER``; any other kind fails here until it has a canary.
"""

import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.svm import SVC

from fvcflow.models import get_model_spec, list_models, register_model, unregister_model
from fvcflow.training.fitting.cv import cross_validate
from fvcflow.training.fitting.stacking import stack_cv
from tests.leakage_tables import as_base, ci_config, oof_auc, paired_table
from tests.test_grouping import GROUPED_BY_TRAINER

N_GROUPS = 300
CHANCE_BAND = 0.12
FEATURE_KINDS = ("tabular", "embedding")    # embedding models: the tabular CV on embedding columns
CANARY = [n for n in list_models() if get_model_spec(n).kind in FEATURE_KINDS
          or get_model_spec(n).kind_spec.uses_bases]
_RUNS: dict[float, dict[str, float]] = {}


def _run_all(signal: float) -> dict[str, float]:
    """Out-of-fold AUC of every canary model on one paired table (the stacks over all bases)."""
    if signal not in _RUNS:
        bases, auc = [], {}
        names = [n for n in CANARY if not get_model_spec(n).kind_spec.uses_bases]
        cfg = ci_config(CANARY)
        for name in names:
            spec = get_model_spec(name)
            t = paired_table(N_GROUPS, signal=signal, feature_set=spec.feature_set or "s24", seed=0)
            cv = cross_validate(spec, t, cfg)
            auc[name] = oof_auc(cv.predictions)
            bases.append(as_base(spec, cv, list(t.X.columns)))
        for name in set(CANARY) - set(names):
            auc[name] = oof_auc(stack_cv(get_model_spec(name), bases, cfg).predictions)
        _RUNS[signal] = auc
    return _RUNS[signal]


def test_every_kind_has_a_canary_or_says_how_it_groups():
    for name in list_models():
        kind = get_model_spec(name).kind
        assert name in CANARY or kind in GROUPED_BY_TRAINER, f"{name}: kind {kind!r} has no canary"


@pytest.mark.parametrize("name", CANARY)
def test_pair_identity_alone_scores_at_chance(name):
    auc = _run_all(0.0)[name]
    assert abs(auc - 0.5) <= CHANCE_BAND, f"{name}: out-of-fold AUC {auc:.3f} on pair identity alone"


@pytest.mark.parametrize("name", CANARY)
def test_a_weak_true_signal_is_never_ranked_below_chance(name):
    auc = _run_all(0.5)[name]
    assert auc >= 0.6, f"{name}: out-of-fold AUC {auc:.3f} with a weak true signal (below chance: inverted)"


def test_the_canary_catches_row_wise_calibration():
    # the construction issue 12 found in svm_rbf_s24, registered for this test only
    @register_model(kind="tabular", feature_set="s2", needs_scaling=True)
    def canary_rowwise_svm(*, seed=0, n_jobs=1):
        return CalibratedClassifierCV(SVC(random_state=seed), method="sigmoid", cv=3, ensemble=False)

    try:
        spec = get_model_spec("canary_rowwise_svm")
        t = paired_table(150, signal=0.5, feature_set="s2", seed=0)
        auc = oof_auc(cross_validate(spec, t, ci_config(["canary_rowwise_svm"])).predictions)
    finally:
        unregister_model("canary_rowwise_svm")
    assert auc < 0.4
