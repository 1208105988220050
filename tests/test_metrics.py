"""fvcflow.metrics against scikit-learn and against hand computations."""

import numpy as np
import pytest
from sklearn import metrics as skm

from fvcflow.metrics import (
    METRICS,
    binary_metrics,
    equal_error_rate,
    operating_threshold,
    roc_auc,
    summarize_folds,
)


@pytest.fixture
def scored():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.5 + 0.25 * (y - 0.5) + rng.normal(0, 0.2, 200), 0.001, 0.999)
    return y, p


def test_metrics_match_scikit_learn(scored):
    y, p = scored
    m = binary_metrics(y, p)
    assert set(m) == set(METRICS)
    hard = (p >= 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, hard))
    assert m["f1"] == pytest.approx(skm.f1_score(y, hard))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["average_precision"] == pytest.approx(skm.average_precision_score(y, p))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, p))
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))


@pytest.mark.parametrize("seed", range(6))
def test_roc_auc_equals_scikit_learn_with_ties_and_few_rows(seed):
    """The inner CV's AUC (a rank statistic) against roc_auc_score: coarse scores (many ties, as a
    shallow tree or a constant model gives), a constant, tiny and unbalanced sets."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]                                        # both classes present
    for p in (rng.normal(size=n), np.round(rng.random(n), 1), np.full(n, 0.3), rng.integers(0, 3, n)):
        assert roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
        assert roc_auc(y.astype(float), p) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert np.isnan(roc_auc(np.zeros(5, int), rng.random(5)))
    assert np.isnan(roc_auc(np.ones(3, int), rng.random(3)))


def test_threshold_is_half_inclusive():
    m = binary_metrics(np.array([1, 0]), np.array([0.5, 0.49]))
    assert m["accuracy"] == 1.0 and m["f1"] == 1.0


def test_eer_by_hand_interpolated_on_a_diagonal_segment():
    # ROC points (0,0) (0,1/3) (1/2,2/3) (1/2,1) (1,1); FNR = FPR inside the segment
    # (0,1/3)-(1/2,2/3): FPR = s/2, FNR = 2/3 - s/3  ->  s = 4/5, EER = 2/5
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0.2, 0.7, 0.7, 0.9, 0.4])
    assert equal_error_rate(y, p) == pytest.approx(0.4)


def test_eer_by_hand_at_an_operating_point():
    # ROC (0,0) (0,.5) (.5,.5) (.5,1) (1,1): at (.5,.5) FPR = FNR = 0.5
    assert equal_error_rate(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.4, 0.9])) == pytest.approx(0.5)


def test_eer_perfect_and_inverted():
    y = np.array([0, 0, 1, 1])
    assert equal_error_rate(y, np.array([0.1, 0.2, 0.8, 0.9])) == 0.0
    assert equal_error_rate(y, np.array([0.9, 0.8, 0.2, 0.1])) == 1.0


def test_eer_agrees_with_a_threshold_sweep(scored):
    y, p = scored
    best = min((abs(np.mean(p[y == 0] >= t) - np.mean(p[y == 1] < t)), np.mean(p[y == 0] >= t))
               for t in np.unique(p))
    assert equal_error_rate(y, p) == pytest.approx(best[1], abs=0.02)


def test_single_class_gives_nan_ranking_metrics_only():
    m = binary_metrics(np.array([1, 1, 1]), np.array([0.9, 0.2, 0.7]))
    assert np.isnan(m["roc_auc"]) and np.isnan(m["average_precision"]) and np.isnan(m["eer"])
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["log_loss"] == pytest.approx(skm.log_loss([1, 1, 1], [0.9, 0.2, 0.7], labels=[0, 1]))


@pytest.mark.parametrize("y,p", [([0, 1], [0.5]), ([], []), ([[0, 1]], [[0.2, 0.3]])])
def test_bad_shapes_are_rejected(y, p):
    with pytest.raises(ValueError, match="1-D and of equal"):
        binary_metrics(np.array(y), np.array(p))


def test_summarize_folds_mean_and_population_std_ignoring_nan():
    folds = [{"roc_auc": 0.9, "eer": 0.1}, {"roc_auc": 0.7, "eer": 0.3},
             {"roc_auc": float("nan"), "eer": 0.2}]
    s = summarize_folds(folds)
    assert s["roc_auc_mean"] == pytest.approx(0.8) and s["roc_auc_std"] == pytest.approx(np.std([0.9, 0.7]))
    assert s["eer_mean"] == pytest.approx(0.2) and s["eer_std"] == pytest.approx(np.std([0.1, 0.3, 0.2]))


def _balanced_accuracy(y, p, t):
    pred = p >= t
    return (pred[y == 1].mean() + (~pred[y == 0]).mean()) / 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_operating_threshold_maximises_balanced_accuracy(seed):
    """Against a brute force over every cut between two scores: no cut does better, and the
    threshold lies strictly between the scores it separates (ties, imbalanced classes)."""
    rng = np.random.default_rng(seed)
    n1 = [40, 15, 70][seed]
    y = np.r_[np.zeros(100 - n1, int), np.ones(n1, int)]
    p = np.round(np.clip(0.35 + 0.25 * y + rng.normal(0, 0.15, 100), 0, 1), 2)   # rounded: ties
    t = operating_threshold(y, p)
    cuts = np.unique(p)
    best = max(_balanced_accuracy(y, p, c) for c in np.r_[cuts, cuts[-1] + 1])
    assert _balanced_accuracy(y, p, t) == pytest.approx(best, abs=1e-12)
    assert 0 < t < 1 and t not in set(p)


def test_operating_threshold_of_one_class_is_one_half():
    assert operating_threshold(np.ones(5, int), np.linspace(0.1, 0.9, 5)) == 0.5
