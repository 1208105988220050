"""The model registry, and a tiny fit of every registered model (driven by the registry)."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fvcflow.errors import FvcError
from fvcflow.models import KINDS, create_model, get_model_spec, list_models, register_model, unregister_model
from fvcflow.models.tabular import _optional
from fvcflow.training.fitting.data import feature_set_columns
from fvcflow.training.fitting.preprocess import CorrelationFilter, build_pipeline, kept_features
from tests.feature_tables import DUPLICATE, SIGNAL, synthetic_corpus

TABULAR = list_models(kind="tabular")


@pytest.fixture(scope="module")
def tiny():
    t = synthetic_corpus(24, per_group=(2, 2), n_aug=0, seed=5, signal=2.5)
    s4 = [c for c in t["stage4"].columns if c.startswith("s4_") or c.startswith("is_")]
    s2 = t["stage2"].join(t["stage4"].select("video_id", *s4), on="video_id")
    s2 = s2.filter(s2["label"].is_not_null())
    return s2.to_pandas(), s2["label"].to_numpy()


def test_the_issue_s_models_are_registered():
    names = list_models()
    for n in ("logreg_s2", "logreg_s24", "svm_rbf_s24", "xgb_s24", "lgbm_s24", "catboost_s24", "stack_s24",
              "logreg_s2l", "xgb_s2l", "logreg_s2lf", "xgb_s2lf", "xgb_s24l"):
        assert n in names
    assert get_model_spec("logreg_s2").feature_set == "s2"
    assert get_model_spec("stack_s24").kind == "stack" and get_model_spec("stack_s24").input == "oof"
    assert all(get_model_spec(n).kind in KINDS for n in names)


def test_list_models_patterns():
    assert list_models("logreg_*") == ["logreg_s2", "logreg_s24", "logreg_s2l", "logreg_s2lf", "logreg_s2lt"]
    assert list_models("logreg_s2,xgb_*") == ["logreg_s2", "xgb_s24", "xgb_s24l", "xgb_s2l", "xgb_s2lf",
                                              "xgb_s2lt"]
    assert list_models("nothing*") == []
    assert list_models(kind="stack") == ["stack_s24", "topk_mean"]


def test_duplicate_registration_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        def logreg_s2(**kw):
            return None

        register_model(kind="tabular", feature_set="s2")(logreg_s2)


def test_bad_registrations_are_errors():
    def x_bad_fs(**kw):
        return None

    with pytest.raises(ValueError, match="kind must be one of"):
        register_model(kind="magic")
    with pytest.raises(ValueError, match="needs feature_set"):
        register_model(kind="tabular", feature_set="s9")(x_bad_fs)
    assert "x_bad_fs" not in list_models()


def test_a_model_s_name_is_written_once_its_constructor_s():
    """Every registration takes its name from the constructor (as timm's @register_model does)."""
    import re

    from tests.test_layers import ROOT

    for path in (ROOT / "fvcflow" / "models").glob("*.py"):
        assert not re.search(r"@register_(video_)?model\(\s*[\"']", path.read_text()), path
    for name in list_models():
        assert get_model_spec(name).constructor.__name__ == name


def test_a_torch_video_model_registers_with_frames_input():
    @register_model(kind="torch_video", mlflow_flavor="pytorch", extra={"clip_len": 8})
    def test_clip_net(**kw):
        return "net"

    try:
        spec = get_model_spec("test_clip_net")
        assert (spec.kind, spec.input, spec.feature_set, spec.extra["clip_len"]) == ("torch_video", "frames",
                                                                                     None, 8)
        assert create_model("test_clip_net") == "net"
    finally:
        unregister_model("test_clip_net")
    assert "test_clip_net" not in list_models()


def test_unknown_model_suggests_close_names():
    with pytest.raises(FvcError, match="did you mean logreg_s2"):
        create_model("logreg_s3")


def test_missing_optional_package_names_the_extra():
    with pytest.raises(FvcError, match=r"pip install 'fvcflow\[boost\]'"):
        _optional("fvcflow_no_such_booster")


def test_grid_points_are_every_combination():
    spec = get_model_spec("logreg_s2")
    assert spec.grid_points() == [{"C": c, "k": k} for c in spec.grid["C"] for k in spec.grid["k"]]
    assert spec.grid_points({"C": [1], "max_iter": [5, 6]}) == [{"C": 1, "max_iter": 5},
                                                                {"C": 1, "max_iter": 6}]


@pytest.mark.parametrize("name", TABULAR)
def test_every_tabular_model_fits_and_predicts(name, tiny):
    X, y = tiny
    spec = get_model_spec(name)
    cols = feature_set_columns(spec.feature_set)
    for point in spec.grid_points():                     # every grid key is a constructor keyword
        create_model(name, seed=0, n_jobs=1, **point)
    pipe = build_pipeline(spec, create_model(name, seed=0, n_jobs=1)).fit(X[cols], y)
    p = pipe.predict_proba(X[cols])[:, 1]
    assert p.shape == (len(y),) and np.all((p >= 0) & (p <= 1))
    assert roc_auc_score(y, p) > 0.75                   # the planted signal is learnt
    kept = kept_features(pipe, cols)
    assert DUPLICATE[1] in kept and DUPLICATE[0] not in kept   # near-copy dropped inside the pipeline
    assert ("scale" in pipe.named_steps) == spec.needs_scaling


def test_correlation_filter_against_numpy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=200)
    X = np.column_stack([a, rng.normal(size=200), -a + rng.normal(0, 0.01, 200), np.ones(200),
                         a + rng.normal(0, 0.6, 200)])
    r = np.corrcoef(X[:, [0, 4]].T)[0, 1]
    f = CorrelationFilter(0.95).fit(X)
    assert list(f.keep_) == [0, 1, 4] and abs(r) < 0.95     # negative correlation counts; constant dropped
    assert list(CorrelationFilter(abs(r) - 0.01).fit(X).keep_) == [0, 1]
    assert f.transform(X).shape == (200, 3)
    assert list(f.get_feature_names_out(["a", "b", "c", "d", "e"])) == ["a", "b", "e"]


def test_signal_features_exist_in_the_contract():
    assert set(SIGNAL) <= set(feature_set_columns("s2"))
