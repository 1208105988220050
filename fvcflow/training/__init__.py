"""Stage 5: leakage-free splits, cross-validated baselines, MLflow tracking.

Entry points (plain functions; the Prefect flow wraps each as a task)::

    make_splits(lake, cfg) -> polars.DataFrame
    train_model(lake, model_name, cfg) -> ModelResult
    train_stack(lake, results, cfg) -> ModelResult
    finish(lake, results, cfg) -> TrainSummary
    run_training(lake, cfg) -> TrainSummary

They are loaded on first use (PEP 562), so that importing a room of the package (or
``from fvcflow.training import TrainConfig``) does not pull in scikit-learn, MLflow or the ingest
adapters that ``fvcflow.config`` lists. The rooms, each importing only those before it:
:mod:`.fitting` (splits, tables, cross-validation, trainers), :mod:`.tracking` (MLflow),
:mod:`.evidence` (intervals, calibration, shortcut check, model card, report) and :mod:`.run`
(the entry points above).

>>> from fvcflow.training import TrainConfig
>>> TrainConfig().folds
5
"""

from importlib import import_module

_SETTINGS = ("DeepConfig", "TrainConfig")      # fvcflow.config's
_LAZY = {"ModelResult": "fitting.results", "TrainSummary": "fitting.results",
         "make_result": "fitting.results",
         "ModelPlan": "run", "finish": "run", "make_splits": "run", "plan_models": "run",
         "prepare_splits": "run", "run_training": "run", "select_models": "run", "train_model": "run",
         "train_stack": "run"}

__all__ = [*_SETTINGS, *_LAZY]


def __getattr__(name: str):
    if name in _SETTINGS:
        from fvcflow import config

        return getattr(config, name)
    if name in _LAZY:
        return getattr(import_module(f"fvcflow.training.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'fvcflow.training' has no attribute {name!r}")
