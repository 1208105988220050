"""Grouped bootstrap intervals against a slow reference (rows repeated, scikit-learn metrics)."""

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from fvcflow.metrics import equal_error_rate
from fvcflow.training.fitting.bootstrap import (
    draw_groups,
    grouped_bootstrap,
    paired_comparison,
    percentile_interval,
    prediction_intervals,
)


def _table(n_groups=40, per=(1, 4), seed=0, ties=False):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(per[0], per[1] + 1, n_groups)
    g = np.repeat([f"grp{i:03d}" for i in rng.permutation(n_groups)], sizes)
    y = (rng.random(len(g)) < 0.45).astype(int)
    p = rng.normal(0, 1, len(g)) + 0.8 * y
    if ties:
        p = np.round(p, 1)
    return y, p, g


def _reference(y, p, g, n_boot, seed, level=0.95):
    """One replicate at a time: draw groups, repeat their rows, score with scikit-learn."""
    uniq = np.unique(g)
    rows_of = [np.flatnonzero(g == u) for u in uniq]
    vals = {"roc_auc": [], "average_precision": [], "eer": []}
    for draw in draw_groups(len(uniq), n_boot, seed):
        rows = np.concatenate([rows_of[k] for k in draw])
        yy, pp = y[rows], p[rows]
        if np.unique(yy).size < 2:
            continue
        vals["roc_auc"].append(roc_auc_score(yy, pp))
        vals["average_precision"].append(average_precision_score(yy, pp))
        vals["eer"].append(equal_error_rate(yy, pp))
    return {m: percentile_interval(np.array(v), level) for m, v in vals.items()}


@pytest.mark.parametrize("ties", [False, True])
def test_same_seed_same_interval_as_the_slow_reference(ties):
    y, p, g = _table(seed=3, ties=ties)
    fast = grouped_bootstrap(y, p, g, n_boot=300, seed=7)
    ref = _reference(y, p, g, 300, 7)
    for m in ("roc_auc", "average_precision", "eer"):
        lo, hi, n = ref[m]
        assert (fast[m].lo, fast[m].hi, fast[m].n_valid) == (pytest.approx(lo, abs=1e-12),
                                                             pytest.approx(hi, abs=1e-12), n), m
    assert fast["roc_auc"].estimate == pytest.approx(roc_auc_score(y, p))


def test_replicates_with_one_class_are_left_out():
    # 6 groups, one of them the only fake: many replicates have no fake at all
    y = np.array([0, 0, 0, 0, 0, 1, 0, 0])
    g = np.array([0, 0, 1, 2, 3, 4, 5, 5])
    p = np.linspace(0, 1, 8)
    fast = grouped_bootstrap(y, p, g, n_boot=200, seed=1)
    ref = _reference(y, p, g, 200, 1)
    assert 0 < fast["roc_auc"].n_valid == ref["roc_auc"][2] < 200


def test_groups_not_rows_are_resampled():
    # five near-copies per group share label and score: the rows are not independent, and only
    # resampling groups gives the wider interval that the 40 independent units support
    rng = np.random.default_rng(0)
    y0 = np.tile([0, 1], 20)
    p0 = rng.normal(0, 1, 40) + 0.7 * y0
    y, p, g = np.repeat(y0, 5), np.repeat(p0, 5) + rng.normal(0, 0.01, 200), np.repeat(np.arange(40), 5)
    grouped = grouped_bootstrap(y, p, g, n_boot=400)["roc_auc"]
    rows = grouped_bootstrap(y, p, None, n_boot=400)["roc_auc"]
    assert (grouped.hi - grouped.lo) > 1.7 * (rows.hi - rows.lo)
    units = grouped_bootstrap(y0, p0, None, n_boot=400)["roc_auc"]
    assert (grouped.hi - grouped.lo) == pytest.approx(units.hi - units.lo, rel=0.3)


def test_prediction_intervals_per_split():
    y, p, g = _table(60, seed=5)
    split = np.where(np.arange(len(y)) % 4 == 0, "test", "oof")
    pred = pl.DataFrame({"video_id": [f"v{i}" for i in range(len(y))], "group_id": g, "label": y,
                         "split": split, "prob_fake": p})
    iv = prediction_intervals(pred, n_boot=200, seed=2)
    assert set(iv) == {f"{s}_{m}_{e}" for s in ("oof", "test")
                       for m in ("roc_auc", "average_precision", "eer") for e in ("lo", "hi")}
    oof = pred.filter(pl.col("split") == "oof")
    ref = _reference(oof["label"].to_numpy(), oof["prob_fake"].to_numpy(), oof["group_id"].to_numpy(), 200, 2)
    assert iv["oof_roc_auc_lo"] == pytest.approx(ref["roc_auc"][0])
    assert iv["oof_eer_hi"] == pytest.approx(ref["eer"][1])


def _frame(ids, g, y, p, split="oof"):
    return pl.DataFrame({"video_id": ids, "group_id": g, "label": y, "split": split, "prob_fake": p})


def test_paired_comparison_against_a_reference_and_its_verdict():
    rng = np.random.default_rng(4)
    n = 300
    g = np.repeat(np.arange(n // 2), 2)
    y = np.tile([0, 1], n // 2)
    base = rng.normal(0, 1, n)
    strong, weak = base + 1.2 * y, base + 0.2 * y + rng.normal(0, 0.3, n)
    ids = [f"v{i:04d}" for i in range(n)]
    c = paired_comparison(("strong", _frame(ids, g, y, strong)), ("weak", _frame(ids, g, y, weak)),
                          n_boot=300, seed=3)
    assert c.better and c.lo > 0 and c.p_value < 0.01 and c.n_groups == n // 2
    assert c.diff == pytest.approx(roc_auc_score(y, strong) - roc_auc_score(y, weak))
    # reference: same draws, rows repeated, difference of scikit-learn AUCs
    diffs = []
    for draw in draw_groups(n // 2, 300, 3):
        rows = np.concatenate([np.flatnonzero(g == k) for k in draw])
        diffs.append(roc_auc_score(y[rows], strong[rows]) - roc_auc_score(y[rows], weak[rows]))
    lo, hi, _ = percentile_interval(np.array(diffs))
    assert (c.lo, c.hi) == (pytest.approx(lo), pytest.approx(hi))
    same = paired_comparison(("a", _frame(ids, g, y, strong)), ("b", _frame(ids, g, y, strong + 1e-9 * base)),
                             n_boot=200)
    assert not same.better and same.lo <= 0 <= same.hi
    assert "not distinguishable" in same.sentence() and "is better than" in c.sentence()
