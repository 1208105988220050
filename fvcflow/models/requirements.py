"""The pinned pip requirements of a fitted model: what an MLflow model's environment must install.

>>> from sklearn.linear_model import LogisticRegression
>>> sorted(r.split("==")[0] for r in pip_requirements(LogisticRegression()))
['fvcflow', 'scikit-learn']
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

#: packages whose estimators may sit inside a logged model -> their distribution names
_DISTRIBUTIONS = {"sklearn": "scikit-learn", "xgboost": "xgboost", "lightgbm": "lightgbm",
                  "catboost": "catboost", "fvcflow": "fvcflow"}


def pip_requirements(model: Any) -> list[str]:
    """Pinned distributions of every estimator inside ``model`` (pipelines, stacks)."""
    found: set[str] = {"sklearn", "fvcflow"}
    todo = [model]
    while todo:
        obj = todo.pop()
        found.add(type(obj).__module__.split(".")[0])
        todo += [s for _, s in getattr(obj, "steps", [])]
        todo += [est for _, est, _ in getattr(obj, "bases", [])]
        todo += [m for m in [getattr(obj, "meta", None)] if m is not None]
        todo += [m for m in [getattr(obj, "estimator_", None), getattr(obj, "model", None)]
                 if m is not None and hasattr(m, "fit")]      # grouped wrappers, the calibrated detector
    out = []
    for mod in sorted(found & _DISTRIBUTIONS.keys()):
        dist = _DISTRIBUTIONS[mod]
        out.append(f"{dist}=={metadata.version(dist)}")
    return out
