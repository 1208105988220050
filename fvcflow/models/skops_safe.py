"""Estimators as skops files, loaded with the trusted types written here, never read from a file.

skops rebuilds an estimator from a description of its objects, without unpickling; it builds
only the types it is told to trust. MLflow's scikit-learn flavour reads that list from the
model's own files (so a planted file trusts whatever it names); here the list is
:data:`TRUSTED_TYPES`, in this module. :func:`load_estimator` asks skops which types a file
holds (:func:`skops.io.get_untrusted_types`) and refuses a file naming any type outside it,
before building anything; :func:`dump_estimator` refuses to write such a model (so what we log
is what we load). No tree booster is in that description: the saved-model format lifts each
out into its library's own model file (:mod:`fvcflow.models.boosters`), so the list names the
XGBoost and LightGBM estimator shells only, and no booster or CatBoost type.

>>> from sklearn.linear_model import LogisticRegression
>>> m = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
>>> load_estimator(dump_estimator(m), "doc").predict([[1.0]]).tolist()
[1]
"""

from __future__ import annotations

import sys
import threading
import types as _types
from pathlib import Path
from typing import Any

from fvcflow.errors import FvcError

#: scikit-learn's vendored array-API shims of other libraries: importing ``skops.io`` walks every
#: scikit-learn package (``sklearn.utils.all_estimators``), and walking these imports torch
#: (seconds to a minute on a busy machine, for a logistic regression) and dask.array
_SHIMS = {"torch": "sklearn.externals.array_api_compat.torch",
          "dask": "sklearn.externals.array_api_compat.dask",
          "cupy": "sklearn.externals.array_api_compat.cupy"}
_IMPORTING = threading.Lock()


def _skops_io():
    """``skops.io``, imported without importing torch, dask or cupy through scikit-learn's scan.

    While skops scans scikit-learn's estimators, each shim of a library not imported yet is an
    empty placeholder module (no ``__path__``: the walk does not descend, and ``externals`` holds
    no estimator, so the scan's result is the same); the placeholders are removed after, so a
    later real use of a shim imports it. A process that already holds the library walks as usual."""
    if "skops.io" in sys.modules:
        return sys.modules["skops.io"]
    with _IMPORTING:
        held = [m for lib, m in _SHIMS.items() if lib not in sys.modules and m not in sys.modules]
        for m in held:
            sys.modules[m] = _types.ModuleType(m, "placeholder while skops scans scikit-learn (fvcflow)")
        try:
            import skops.io as sio
        finally:
            for m in held:
                if getattr(sys.modules.get(m), "__doc__", "").startswith("placeholder while skops"):
                    del sys.modules[m]
    return sio

#: every type a logged estimator may hold beyond what skops trusts by default (scikit-learn's
#: estimators, NumPy's arrays and scalars): the registered tabular models and their pipeline
#: steps, the stack's meta-learners, the calibrator. Measured with ``get_untrusted_types`` on each
#: registered model (``tests/test_no_pickle.py`` checks every one loads). A model holding another
#: type is not logged; a file naming another type is not loaded.
TRUSTED_TYPES: frozenset[str] = frozenset({
    "fvcflow.training.fitting.preprocess.CorrelationFilter",
    "fvcflow.models.grouped.GroupCalibratedClassifier",
    "fvcflow.models.grouped.GroupEarlyStopping",
    "fvcflow.models.grouped.ScoreCalibrator",
    "fvcflow.models.select.Screened",
    "fvcflow.models.stack.NonNegativeLogit",
    "fvcflow.models.stack.TopKMean",
    "xgboost.sklearn.XGBClassifier",
    "lightgbm.sklearn.LGBMClassifier",
    "numpy.dtype",
    "collections.OrderedDict",
})


def untrusted(types: list[str]) -> list[str]:
    """The names among ``types`` that are not in :data:`TRUSTED_TYPES`."""
    return sorted(t for t in types if t not in TRUSTED_TYPES)


def dump_estimator(model: Any) -> bytes:
    """``model`` as skops bytes; a :class:`FvcError` when it holds a type outside
    :data:`TRUSTED_TYPES` (or skops cannot describe it): such a model would not load."""
    sio = _skops_io()  # here: importing skops.io scans scikit-learn's estimators (3 s)

    try:
        data = sio.dumps(model)
        types = sio.get_untrusted_types(data=data)
    except Exception as exc:  # noqa: BLE001 - an estimator skops does not know
        raise FvcError(f"cannot save {type(model).__name__} without pickle: {exc}") from None
    if outside := untrusted(types):
        raise FvcError(f"cannot save {type(model).__name__} without pickle: it holds types outside "
                       f"fvcflow's trusted list ({', '.join(outside)})")
    return data


def load_estimator(data: bytes, where: str | Path) -> Any:
    """The estimator in skops bytes ``data`` (read from ``where``, named in errors), built only
    when every type it names is in :data:`TRUSTED_TYPES`; else a :class:`FvcError`, nothing built."""
    sio = _skops_io()
    try:
        types = sio.get_untrusted_types(data=data)
    except Exception as exc:  # noqa: BLE001 - not a skops file at all
        raise FvcError(f"{where}: not a skops model file ({type(exc).__name__}: {exc}); "
                       "refused, nothing of it was loaded") from None
    if outside := untrusted(types):
        raise FvcError(f"{where}: names types outside fvcflow's trusted list ({', '.join(outside)}); "
                       "refused, nothing of it was loaded")
    return sio.loads(data, trusted=sorted(types))
