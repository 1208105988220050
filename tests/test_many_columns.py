"""Models that survive many columns (issue 22), on every registered feature-table model and stack.

A weak-signal paired table (``tests/leakage_tables.paired_table``: each group a real and a fake
sharing a large group effect, four columns shifted by 0.5 between-group sd in every fake) is
trained twice with each model's full registered grid (screening, the L1 path, depth, chosen on
grouped inner folds by the one-standard-error rule): as it is, and with 100 added columns of pure
noise. The noisy run's out-of-fold ROC AUC must stay within the clean run's 95 % grouped
bootstrap interval.

The stacks are held to it too, each over every base model's results (one per case below), clean
over the clean bases and noisy over the noisy ones. Each feature set's table is its own draw, so
the bases' errors on the signal are nearly independent and a stack gains much over each base;
the noise columns are one draw shared by every noisy table, so the noisy bases err together
where they use them and that gain is what the noise can take. Measured before the fix (150
groups): stack_s24 0.896 [0.872, 0.921] -> 0.861 and topk_mean 0.900 [0.875, 0.926] -> 0.856
(16 bases), topk_mean 0.901 [0.877, 0.928] -> 0.841 (8 bases): its grid's one-standard-error
choice took ``max_k`` = 3 on the noisy bases (a selection of three, fitted on the inner rows)
instead of the mean of all. ``topk_mean`` now chooses ``k`` itself on grouped inner folds with the
mean of every base as its most regularised point; the old grid stays here as the stacks' canary.

Measured before issue 22 (150 groups, 3 outer / 3 inner folds): every model fell below its
interval (logreg_s2 0.735 [0.711, 0.766] -> 0.645; xgb_s24 0.695 [0.669, 0.727] -> 0.634;
svm_rbf_s24 0.739 [0.712, 0.772] -> 0.664); the canary below keeps such a model registered for
the test only, so the test is shown to fail on one (L2 on s2 at C = 10; a first try, L2 on s24 at
C = 1, went 0.670 [0.651, 0.698] -> 0.657 and stayed inside).

Only out-of-fold predictions are read, so no model is refitted on all rows
(``cross_validate(refit=False)``: a quarter of the fits).
"""

import numpy as np
import pandas as pd
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression

from fvcflow.models import get_model_spec, list_models, register_model, unregister_model
from fvcflow.models.stack import TopKMean
from fvcflow.training import TrainConfig
from fvcflow.training.fitting.bootstrap import grouped_bootstrap
from fvcflow.training.fitting.cv import cross_validate
from fvcflow.training.fitting.data import TrainTable
from fvcflow.training.fitting.stacking import stack_cv
from tests.leakage_tables import as_base, paired_table

N_GROUPS, N_NOISE, SIGNAL = 150, 100, 0.5
FEATURE_KINDS = ("tabular", "embedding")
BASES = [n for n in list_models() if get_model_spec(n).kind in FEATURE_KINDS]
STACKS = list_models(kind="stack")


def _setup(name: str) -> tuple:
    """Everything the noise check's result depends on (the cross-validation reads neither a
    model's kind nor its input): two models equal here (xgb_s24 and the ``emb_xgb_*`` family: one
    constructor, xgb_s24's, on the same synthetic table) compute the same numbers."""
    spec = get_model_spec(name)
    est = spec.constructor(seed=0, n_jobs=1, **spec.extra.get("ci_params", {}))
    return (spec.feature_set or "s24", spec.needs_scaling, repr(spec.grid),
            repr(spec.extra.get("ci_params")), repr(est))


#: one case per distinct set-up (its id names every model it stands for)
CASES: dict[str, list[str]] = {}
for _n in BASES:
    CASES.setdefault(_setup(_n), []).append(_n)
_RUNS: dict[str, dict[bool, tuple]] = {}

pytestmark = pytest.mark.slow        # every model's full grid, twice: minutes on two cores


def with_noise(t: TrainTable, n: int, seed: int = 1) -> TrainTable:
    """``t`` with ``n`` more columns of independent standard normal noise."""
    noise = np.random.default_rng(seed).normal(size=(len(t.y), n))
    X = pd.concat([t.X, pd.DataFrame(noise, columns=[f"noise_{j:03d}" for j in range(n)])], axis=1)
    return TrainTable(t.video_id, t.group_id, t.y, t.fold, t.is_test, t.is_original, X, t.feature_set)


def config(names) -> TrainConfig:
    """Full registered grids, the registered cheap settings (``ci_params``), 3 outer / 3 inner folds."""
    return TrainConfig(folds=3, inner_folds=3,
                       params={n: dict(get_model_spec(n).extra.get("ci_params", {})) for n in names})


def interval(predictions: pl.DataFrame):
    oof = predictions.filter(pl.col("split") == "oof")
    return grouped_bootstrap(oof["label"].to_numpy(), oof["prob_fake"].to_numpy(),
                             oof["group_id"].to_numpy())["roc_auc"]


def _cv(name: str, noisy: bool):
    spec = get_model_spec(name)
    t = paired_table(N_GROUPS, signal=SIGNAL, feature_set=spec.feature_set or "s24", seed=0)
    t = with_noise(t, N_NOISE) if noisy else t
    return spec, t, cross_validate(spec, t, config([name]), refit=False)


def _base(name: str) -> dict[bool, tuple]:
    """(interval, base for the stacks) of model ``name``, clean and noisy, computed once."""
    if name not in _RUNS:
        _RUNS[name] = {}
        for noisy in (False, True):
            spec, t, cv = _cv(name, noisy)
            _RUNS[name][noisy] = (interval(cv.predictions), as_base(spec, cv, list(t.X.columns)))
    return _RUNS[name]


def _check(name: str, clean, noisy) -> None:
    assert clean.estimate >= 0.6, f"{name}: clean AUC {clean.format()} (the weak signal was not found)"
    assert clean.lo <= noisy.estimate <= clean.hi, (
        f"{name}: {N_NOISE} noise columns moved the out-of-fold AUC from {clean.format()} to "
        f"{noisy.estimate:.3f}")


def _stack(name: str) -> tuple:
    """(clean interval, noisy interval) of stack ``name`` over every case's base, clean and noisy."""
    spec = get_model_spec(name)
    return tuple(interval(stack_cv(spec, [_base(v[0])[noisy][1] for v in CASES.values()],
                                   config([name])).predictions) for noisy in (False, True))


@pytest.mark.parametrize("names", list(CASES.values()), ids=["+".join(v) for v in CASES.values()])
def test_noise_columns_keep_the_auc_within_its_interval(names):
    runs = _base(names[0])
    _check("+".join(names), runs[False][0], runs[True][0])


@pytest.mark.parametrize("name", STACKS)
def test_noise_columns_keep_each_stacks_auc_within_its_interval(name):
    _check(name, *_stack(name))


def test_the_stack_check_fails_an_ensemble_that_selects_its_bases():
    # topk_mean as it was: max_k from the mean of all (None) to the best one, the most restrictive
    # within one standard error kept; on the noisy bases it keeps three of eleven
    @register_model(kind="stack", grid={"max_k": (None, 3, 1)})
    def canary_topk_select(*, seed=0, n_jobs=1, max_k=None):
        return TopKMean(max_k=max_k)

    try:
        clean, noisy = _stack("canary_topk_select")
    finally:
        unregister_model("canary_topk_select")
    assert noisy.estimate < clean.lo


def test_every_model_but_the_deep_video_ones_is_in_the_check():
    covered = {n for v in CASES.values() for n in v} | set(STACKS)
    assert covered == {n for n in list_models() if get_model_spec(n).kind not in ("torch_video", "tile")}
    assert len(STACKS) >= 2
    # the tile models' columns are learned per fold from blend masks (tests/test_tile_evidence.py):
    # their estimators are those of the s2l models they extend, which are in the check
    tile = [n for n in list_models() if get_model_spec(n).kind == "tile"]
    assert tile
    for name in tile:
        twin = name.removesuffix("t")
        assert twin in covered, name
        assert repr(get_model_spec(name).constructor(seed=0, n_jobs=1)) == \
            repr(get_model_spec(twin).constructor(seed=0, n_jobs=1)), name


def test_every_feature_table_model_is_in_one_case_and_equal_set_ups_build_equal_models():
    assert sorted(n for v in CASES.values() for n in v) == sorted(BASES)
    assert len(CASES[_setup("emb_xgb_clip")]) >= 2          # the family shares one case
    for names in CASES.values():
        built = {repr(get_model_spec(n).constructor(seed=0, n_jobs=1)) for n in names}
        assert len(built) == 1, names


def test_the_test_fails_an_unregularised_model():
    # L2 logistic regression on every column, weakly penalised: what logreg_s2 could be before issue 22
    @register_model(kind="tabular", feature_set="s2", needs_scaling=True, grid={"C": [10.0]})
    def canary_unscreened_logreg(*, seed=0, n_jobs=1, C=10.0):
        return LogisticRegression(C=C, max_iter=5000, random_state=seed)

    try:
        clean = interval(_cv("canary_unscreened_logreg", False)[2].predictions)
        noisy = interval(_cv("canary_unscreened_logreg", True)[2].predictions)
    finally:
        unregister_model("canary_unscreened_logreg")
    assert noisy.estimate < clean.lo
