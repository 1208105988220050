"""A small, fast training configuration shared by the training, analytics and predict tests."""

import os

from fvcflow.training import TrainConfig

MODELS = "logreg_s2,logreg_s24,xgb_s24,stack_s24"


def small_config(**kw) -> TrainConfig:
    """3 outer folds, 2 inner folds, one- or two-point grids, small boosters."""
    base = dict(folds=3, inner_folds=2, models=MODELS,
                grids={"logreg_s2": {"C": [0.1, 1.0]}, "logreg_s24": {"C": [1.0]},
                       "xgb_s24": {"max_depth": [2]}},
                params={"xgb_s24": {"n_estimators": 25}})
    base.update(kw)
    return TrainConfig(**base)


_SHARED: dict = {}


def shared_trained_lake(tmp_path_factory):
    """One trained synthetic lake per test session (training is the slow part; the analytics and
    predict tests only read it). Returns ``(lake, cfg, summary)``."""
    if "lake" not in _SHARED:
        from fvcflow.training import run_training
        from tests.feature_tables import write_lake

        root = tmp_path_factory.mktemp("shared-lake")
        lake = write_lake(root, n_groups=30, n_aug=2, signal=2.0, seed=11)
        cfg = small_config()
        cwd = os.getcwd()
        os.chdir(root)              # the working directory is the lake: a stray ./mlruns would show
        try:
            _SHARED["lake"] = (lake, cfg, run_training(lake, cfg))
        finally:
            os.chdir(cwd)
    return _SHARED["lake"]
