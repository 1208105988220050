"""Groups reach every inner procedure: fit parameters for group-aware models, and an audit.

:func:`fit_params` is how the trainer hands ``group_id`` to a model (through its pipeline) that
splits internally (``GroupCalibratedClassifier``, ``GroupEarlyStopping``, or any estimator whose
``fit`` takes ``groups``). :func:`audit_splits` records every scikit-learn splitter call made
while it is active and says which ones split rows without groups; :func:`static_findings` lists
the parameters of an estimator that would make it split internally by rows (an ``*CV`` wrapper,
``early_stopping`` of scikit-learn estimators, a booster's own early stopping). Both power the
registry-driven tests; both are usable on any new model.

>>> from fvcflow.models import create_model
>>> static_findings(create_model("svm_rbf_s24"))
[]
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import sklearn.model_selection as skms
from sklearn.base import BaseEstimator

from fvcflow.models.grouped import GroupCalibratedClassifier, GroupEarlyStopping

#: fvcflow's wrappers that split by the groups the trainer gives them
GROUPED_WRAPPERS = (GroupCalibratedClassifier, GroupEarlyStopping)


def _takes_groups(est: Any) -> bool:
    fit = getattr(est, "fit", None)
    if fit is None:
        return False
    try:
        return "groups" in inspect.signature(fit).parameters
    except (TypeError, ValueError):
        return False


def fit_params(model: Any, groups: np.ndarray | None) -> dict[str, Any]:
    """Keyword arguments that give ``groups`` to every step of ``model`` whose ``fit`` takes them.

    ``model`` is a scikit-learn ``Pipeline`` (keys ``<step>__groups``) or a bare estimator
    (key ``groups``).

    >>> from sklearn.pipeline import Pipeline
    >>> from sklearn.svm import SVC
    >>> from fvcflow.models.grouped import GroupCalibratedClassifier
    >>> sorted(fit_params(Pipeline([("model", GroupCalibratedClassifier(SVC()))]), np.arange(3)))
    ['model__groups']
    """
    if groups is None:
        return {}
    steps = getattr(model, "steps", None)
    if steps is None:
        return {"groups": np.asarray(groups)} if _takes_groups(model) else {}
    return {f"{name}__groups": np.asarray(groups) for name, step in steps
            if step not in (None, "passthrough") and _takes_groups(step)}


def _group_splitter(cls: type) -> bool:
    mixin = getattr(skms._split, "GroupsConsumerMixin", None)
    return (mixin is not None and issubclass(cls, mixin)) or "Group" in cls.__name__


def _splitter_classes() -> list[type]:
    out = []
    for name in dir(skms):
        obj = getattr(skms, name)
        if isinstance(obj, type) and callable(getattr(obj, "split", None)) and name[0].isupper():
            out.append(obj)
    return out


@dataclass
class SplitAudit:
    """Every splitter call seen by :func:`audit_splits`: ``(splitter, grouped)``."""

    calls: list[tuple[str, bool]] = field(default_factory=list)

    @property
    def ungrouped(self) -> list[str]:
        """Splitters that split rows without groups (or a group splitter given no groups)."""
        return [name for name, grouped in self.calls if not grouped]


@contextlib.contextmanager
def audit_splits() -> Iterator[SplitAudit]:
    """Record every scikit-learn cross-validator split made inside the ``with`` block.

    Outer calls only (a splitter calling its parent's ``split`` is one call). Not thread-safe
    across concurrent audits; meant for tests and one-off checks.

    >>> from sklearn.model_selection import KFold, GroupKFold
    >>> with audit_splits() as audit:
    ...     _ = list(KFold(2).split(np.zeros(4)))
    ...     _ = list(GroupKFold(2).split(np.zeros(4), groups=[0, 0, 1, 1]))
    >>> audit.ungrouped
    ['KFold']
    """
    audit = SplitAudit()
    depth = threading.local()
    patched: list[tuple[type, Any]] = []

    def wrap(cls: type, original):
        grouped_kind = _group_splitter(cls)

        @functools.wraps(original)
        def split(self, X, y=None, groups=None, *args, **kw):
            outer = getattr(depth, "n", 0) == 0
            depth.n = getattr(depth, "n", 0) + 1
            try:
                if outer:
                    audit.calls.append((type(self).__name__, grouped_kind and groups is not None))
                yield from original(self, X, y, groups, *args, **kw)
            finally:
                depth.n -= 1

        return split

    try:
        for cls in _splitter_classes():
            original = cls.__dict__.get("split")
            patched.append((cls, original))
            cls.split = wrap(cls, cls.split)
        yield audit
    finally:
        for cls, original in reversed(patched):
            if original is None:
                del cls.split
            else:
                cls.split = original


#: parameters that make an estimator hold out rows of its own (by rows: no groups reach them)
_ROW_SPLIT_PARAMS = {
    "early_stopping": lambda v: v not in (False, None),            # sklearn HGB ('auto'), MLP, SGD
    "n_iter_no_change": lambda v: v is not None,                    # GradientBoosting*
    "early_stopping_rounds": lambda v: v is not None,               # xgboost, catboost
    "early_stopping_round": lambda v: v not in (None, 0),           # lightgbm
    "od_type": lambda v: v is not None, "od_wait": lambda v: v is not None,   # catboost overfit detector
    "use_best_model": lambda v: bool(v),
}


def _children(est: Any) -> list[Any]:
    kids: list[Any] = []
    params = est.get_params(deep=False) if hasattr(est, "get_params") else {}
    for v in params.values():
        if isinstance(v, BaseEstimator) or hasattr(v, "get_params"):
            kids.append(v)
        elif isinstance(v, (list, tuple)):
            for item in v:
                cand = item[1] if isinstance(item, tuple) and len(item) >= 2 else item
                if hasattr(cand, "get_params"):
                    kids.append(cand)
    return kids


def static_findings(est: Any, path: str = "") -> list[str]:
    """Why ``est`` (or an estimator inside it) would split its training rows without groups.

    An estimator with a ``cv`` parameter (``CalibratedClassifierCV``, ``GridSearchCV``,
    ``StackingClassifier``, ``RFECV``, ``LogisticRegressionCV``, ...) is flagged whatever its
    value: the trainer does not route groups into it; use the grouped wrappers of
    :mod:`fvcflow.models.grouped`. A booster's own early stopping is flagged unless it sits in
    :class:`~fvcflow.models.grouped.GroupEarlyStopping` (which sets it on a grouped hold-out).

    >>> from sklearn.calibration import CalibratedClassifierCV
    >>> from sklearn.svm import SVC
    >>> static_findings(CalibratedClassifierCV(SVC(), cv=3))
    ['CalibratedClassifierCV: cv=3 splits rows without groups']
    """
    name = f"{path}{type(est).__name__}"
    out: list[str] = []
    params = est.get_params(deep=False) if hasattr(est, "get_params") else {}
    if "cv" in params and not isinstance(est, GROUPED_WRAPPERS):
        out.append(f"{name}: cv={params['cv']!r} splits rows without groups")
    if not isinstance(est, GroupEarlyStopping):
        for key, bad in _ROW_SPLIT_PARAMS.items():
            if key == "n_iter_no_change" and "early_stopping" in params:
                continue                                     # HGB/MLP/SGD: early_stopping decides
            if key in params and bad(params[key]):
                out.append(f"{name}: {key}={params[key]!r} holds out rows without groups")
    for kid in _children(est):
        if isinstance(est, GroupEarlyStopping) and kid is params.get("estimator"):
            # the wrapper owns the booster's early stopping; only its other settings count
            out += [f for f in static_findings(kid, f"{name}/") if "holds out rows" not in f]
        else:
            out += static_findings(kid, f"{name}/")
    return out
