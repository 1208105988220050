"""The ensembles across model kinds: the top-k mean of calibrated probabilities, and the stack."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from fvcflow.models import create_model, get_model_spec, list_models
from fvcflow.models.stack import TopKMean
from fvcflow.training.fitting.cv import cross_validate
from fvcflow.training.fitting.stacking import stack_cv
from tests.leakage_tables import as_base, ci_config, paired_table


def test_topk_mean_is_a_registered_stack():
    assert "topk_mean" in list_models(kind="stack")
    assert isinstance(create_model("topk_mean"), TopKMean)


def test_topk_keeps_the_k_whose_mean_ranks_best():
    rng = np.random.default_rng(0)
    y = np.tile([0, 1], 200)
    # three independent noisy views of the label (their mean beats each) and one useless column
    views = [np.clip(0.5 + 0.25 * (y - 0.5) + rng.normal(0, 0.25, y.size), 0, 1) for _ in range(3)]
    P = np.column_stack([*views, rng.random(y.size)])
    m = TopKMean().fit(P, y)
    assert m.k_ == 3 and set(m.order_[:3]) == {0, 1, 2}
    mean3 = roc_auc_score(y, m.predict_proba(P)[:, 1])
    assert mean3 > max(roc_auc_score(y, v) for v in views) + 0.03
    assert m.coef_.ravel().tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0.0])
    # max_k bounds it
    assert TopKMean(max_k=2).fit(P, y).k_ <= 2


def test_topk_calibrates_before_averaging():
    # a good score squeezed into [0.49, 0.51] would be drowned by a poor one in a raw mean;
    # after Platt scaling both speak on the probability scale and the mean keeps the good ranking
    rng = np.random.default_rng(1)
    y = np.tile([0, 1], 300)
    good = 0.5 + 0.01 * np.tanh(2 * (y - 0.5) + rng.normal(0, 0.5, y.size))
    poor = np.clip(0.5 + 0.1 * (y - 0.5) + rng.normal(0, 0.4, y.size), 0, 1)
    P = np.column_stack([good, poor])
    m = TopKMean().fit(P, y)
    raw = roc_auc_score(y, P.mean(axis=1))
    calibrated = roc_auc_score(y, m._calibrated(P)[:, m.order_[:2]].mean(axis=1))
    assert calibrated > raw + 0.05
    assert m.order_[0] == 0
    p = m.predict_proba(P)
    assert p.shape == (y.size, 2) and np.allclose(p.sum(axis=1), 1) and ((p >= 0) & (p <= 1)).all()


def test_topk_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        TopKMean().fit(np.full((4, 2), 0.5), np.zeros(4))


def test_topk_mean_chooses_k_on_the_inner_folds_of_the_stack():
    t = paired_table(60, signal=1.5, feature_set="s24", seed=4)
    names = ["logreg_s24", "xgb_s24"]
    cfg = ci_config([*names, "topk_mean"])
    bases = [as_base(get_model_spec(n), cross_validate(get_model_spec(n), t, cfg), list(t.X.columns))
             for n in names]
    cv = stack_cv(get_model_spec("topk_mean"), bases, cfg)
    oof = cv.predictions.filter(pl.col("split") == "oof")
    assert sorted(oof["video_id"].to_list()) == sorted(t.video_id[t.is_original].tolist())
    assert len(cv.fold_metrics) == len(t.folds)
    # outer fold k's ensemble is the one fitted on the inner out-of-fold rows of fold k: refit it
    # from them and it gives the same scores to fold k's videos
    wide = {b.name: b.inner_oof for b in bases}
    chosen = dict(zip(sorted(t.folds), cv.fold_params))          # each fold's k, from its inner folds
    for k in t.folds:
        inner = [wide[n].filter(pl.col("outer_fold") == k).sort("video_id") for n in names]
        assert not set(inner[0]["video_id"]) & set(t.video_id[t.fold == k])   # never fold k's videos
        y = pl.DataFrame({"video_id": t.video_id, "label": t.y}).join(inner[0], on="video_id")["label"]
        ref = TopKMean(**chosen[k]).fit(np.column_stack([f["prob_fake"].to_numpy() for f in inner]),
                                        y.to_numpy())
        val = {b.name: b.predictions.filter((pl.col("split") == "oof") & (pl.col("fold") == k))
               .sort("video_id") for b in bases}
        want = ref.predict_proba(np.column_stack([val[n]["prob_fake"].to_numpy() for n in names]))[:, 1]
        got = oof.filter(pl.col("fold") == k).sort("video_id")["prob_fake"].to_numpy()
        assert np.allclose(got, want)
    assert isinstance(cv.final.pipeline.meta, TopKMean)


class _VideoBase:
    """Stands for a deep or embedding base: it scores video files, not feature rows."""

    def predict_video(self, path, **source):  # pragma: no cover - fvc predict calls it
        return 0.5


def test_a_stack_reads_its_video_bases_from_their_prob_columns():
    from sklearn.linear_model import LogisticRegression

    from fvcflow.models.stack import StackedModel, video_column

    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], video_column("deep"): [0.1, 0.2, 0.8, 0.9]})
    y = [0, 0, 1, 1]
    tab = LogisticRegression().fit(X[["a"]], y)
    P = np.column_stack([tab.predict_proba(X[["a"]])[:, 1], X[video_column("deep")]])
    stack = StackedModel([("tab", tab, ["a"]), ("deep", _VideoBase(), [])], LogisticRegression().fit(P, y))
    assert [n for n, _ in stack.video_bases] == ["deep"]
    assert np.allclose(stack.base_probabilities(X), P)
    assert stack.predict_proba(X).shape == (4, 2)
    with pytest.raises(ValueError, match="needs its column 'prob_deep'"):
        stack.predict_proba(X[["a"]])


def test_the_stack_example_carries_the_video_bases_oof_probabilities():
    from types import SimpleNamespace

    from fvcflow.training.fitting.stacking import stack_example

    t = paired_table(6, feature_set="s2", seed=0)
    preds = pl.DataFrame({"video_id": t.video_id.tolist(), "split": "oof",
                          "prob_fake": np.linspace(0, 1, len(t.y)).tolist()})
    base = SimpleNamespace(name="deep", model=_VideoBase(), predictions=preds)
    tab = SimpleNamespace(name="tab", model=object(), predictions=preds)
    ex = stack_example(t, [tab, base], n=5)
    assert list(ex.columns[-1:]) == ["prob_deep"] and "prob_tab" not in ex
    assert ex["prob_deep"].tolist() == pytest.approx(np.linspace(0, 1, len(t.y))[:5].tolist())


def test_stack_s24_weighs_bases_non_negatively_and_matches_an_unpenalised_fit():
    from sklearn.linear_model import LogisticRegression

    from fvcflow.models.stack import NonNegativeLogit

    rng = np.random.default_rng(2)
    y = np.tile([0, 1], 200)
    good = np.clip(0.5 + 0.2 * (y - 0.5) + rng.normal(0, 0.2, y.size), 0.01, 0.99)
    contrary = np.clip(1 - good + rng.normal(0, 0.05, y.size), 0.01, 0.99)   # says real where fake
    P = np.column_stack([good, contrary, rng.random(y.size)])
    assert isinstance(create_model("stack_s24"), NonNegativeLogit)
    m = create_model("stack_s24", C=100.0).fit(P, y)
    assert (m.coef_ >= 0).all() and m.coef_[0, 1] == 0.0 and m.coef_[0, 0] > 0
    # an unconstrained L1 fit gives the contrary base a negative weight
    l1 = LogisticRegression(C=100.0, l1_ratio=1.0, solver="liblinear").fit(P, y)
    assert l1.coef_[0, 1] < 0
    # on one column the constraint does not bind and a weak penalty is no penalty: the plain fit
    one = NonNegativeLogit(C=1e6).fit(P[:, :1], y)
    ref = LogisticRegression(C=1e6, max_iter=5000).fit(P[:, :1], y)
    assert one.coef_[0, 0] == pytest.approx(ref.coef_[0, 0], rel=1e-3)
    assert one.intercept_[0] == pytest.approx(ref.intercept_[0], rel=1e-3, abs=1e-3)
    np.testing.assert_allclose(one.predict_proba(P[:, :1]), ref.predict_proba(P[:, :1]), atol=1e-4)
    # the L1 path: a strong penalty keeps no base (a constant: the base rate)
    assert NonNegativeLogit(C=1e-4).fit(P, y).coef_.sum() == 0.0


def test_a_stack_s24_model_round_trips_without_pickle(tmp_path):
    from fvcflow import saved
    from fvcflow.models.stack import StackedModel

    X = pd.DataFrame({"a": np.linspace(-2, 2, 40), "b": np.cos(np.arange(40.0))})
    y = (X["a"] > 0).astype(int).to_numpy()
    base = create_model("logreg_s2", C=1.0).fit(X, y)
    P = base.predict_proba(X)[:, 1:]
    stack = StackedModel([("lr", base, ["a", "b"])], create_model("stack_s24").fit(P, y))
    back = saved.load_folder(saved.save_folder(stack, tmp_path / "m"))
    assert not list((tmp_path / "m").rglob("*.pkl"))
    np.testing.assert_allclose(back.predict_proba(X), stack.predict_proba(X))


def test_topk_mean_takes_the_k_its_grid_chose_and_ranks_its_path_to_the_mean_of_all():
    from fvcflow.models.stack import TOPK_PATH

    rng = np.random.default_rng(3)
    y = np.tile([0, 1], 100)
    P = np.column_stack([np.clip(0.5 + s * (y - 0.5) + rng.normal(0, 0.25, y.size), 0, 1)
                         for s in (0.4, 0.3, 0.2, 0.0)])
    assert get_model_spec("topk_mean").grid == {"k": TOPK_PATH} and TOPK_PATH[-1] is None
    for k, want in ((1, 1), (2, 2), (8, 4), (None, 4)):
        m = create_model("topk_mean", k=k).fit(P, y)
        assert m.k_ == want and sorted(m.order_[:want]) == list(range(want))   # strongest first
    # without k (a train.grids of max_k): the in-sample choice as before
    assert create_model("topk_mean", max_k=2).fit(P, y).k_ <= 2


def test_topk_calibration_is_scikit_learns_platt_scaling_of_each_column():
    from sklearn.linear_model import LogisticRegression

    from fvcflow.models.stack import _logit, platt

    rng = np.random.default_rng(5)
    y = np.tile([0, 1], 150)
    P = np.column_stack([np.clip(0.5 + s * (y - 0.5) + rng.normal(0, w, y.size), 0.001, 0.999)
                         for s, w in ((0.4, 0.2), (0.1, 0.3), (0.0, 0.25), (0.02, 0.01))])
    got = platt(_logit(P), y)
    for j in range(P.shape[1]):
        ref = LogisticRegression(max_iter=1000, tol=1e-10).fit(_logit(P[:, j])[:, None], y)
        np.testing.assert_allclose(got[j], [ref.intercept_[0], ref.coef_[0, 0]], rtol=1e-5, atol=1e-6)
