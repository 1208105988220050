"""The one model registry: each model is registered once, with everything the trainer needs.

A model is a short constructor decorated with :func:`register_model`; the trainer reads the
registered :class:`ModelSpec` (``kind``, ``input``, ``feature_set``, ``needs_scaling``, ``grid``,
``mlflow_flavor``) and never branches on a model's name.

>>> from fvcflow.models import create_model, list_models
>>> "logreg_s2" in list_models("logreg_*")
True
>>> create_model("logreg_s2", C=0.5).estimator.C
0.5
"""

from __future__ import annotations

import difflib
import fnmatch
import itertools
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

from fvcflow.errors import FvcError
from fvcflow.schema import FEATURE_SETS as _FEATURE_SET_COLUMNS


@dataclass(frozen=True)
class Kind:
    """What a kind of model consumes and which trainer fits it.

    ``trainer`` is ``"module:function"``, imported when a model of the kind is trained (the
    registry never imports the training code); the function is called as
    ``trainer(lake, spec, cfg, bases) -> ModelResult`` (see :mod:`fvcflow.training.fitting.trainers`).
    ``uses_bases``: the trainer fits on other models' results (stacks), so it runs after them.
    ``device``: ``"gpu"`` kinds run as Prefect tasks under the global concurrency limit ``gpu``.
    ``by_default``: selected by the pattern ``*``; when false (deep models: hours on a CPU) a
    model of the kind trains only when a pattern other than ``*`` names it.
    """

    input: str
    uses_bases: bool = False
    device: str = "cpu"
    by_default: bool = True


#: every kind of model -> what it consumes and its trainer; a new kind is one line here
KINDS: dict[str, Kind] = {
    # an sklearn-style estimator on a stage 2 / 2+4 feature table
    "tabular": Kind("features"),
    # a meta-learner on the other models' out-of-fold probabilities
    "stack": Kind("oof", uses_bases=True),
    # a torch module on decoded clips of the stage 3 videos (deep models)
    "torch_video": Kind("frames", device="gpu", by_default=False),
    # an sklearn-style estimator on frozen deep embeddings of the stage 3 videos (XGBoost on deep features)
    "embedding": Kind("embeddings", device="gpu", by_default=False),
    # a tabular model whose te_ columns a tile model fitted inside each fold gives (issue 22)
    "tile": Kind("features", by_default=False),
}
#: the feature sets a tabular model may name (fvcflow.schema.FEATURE_SETS: their columns)
FEATURE_SETS = tuple(_FEATURE_SET_COLUMNS)
FLAVORS = ("sklearn", "pytorch", "pyfunc")


@dataclass(frozen=True)
class ModelSpec:
    """Everything the trainer and the tracker know about one registered model."""

    name: str
    constructor: Callable[..., Any]
    kind: str
    input: str
    feature_set: str | None
    needs_scaling: bool
    grid: Mapping[str, tuple]
    mlflow_flavor: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    def grid_points(self, override: Mapping[str, Iterable] | None = None) -> list[dict[str, Any]]:
        """Every combination of the grid (or of ``override``), in a stable order."""
        grid = self.grid if override is None else {k: tuple(v) for k, v in override.items()}
        keys = sorted(grid)
        return [dict(zip(keys, vals)) for vals in itertools.product(*(grid[k] for k in keys))] or [{}]

    @property
    def kind_spec(self) -> Kind:
        return KINDS[self.kind]

    @property
    def doc(self) -> str:
        return (self.constructor.__doc__ or "").strip().splitlines()[0] if self.constructor.__doc__ else ""


_REGISTRY: dict[str, ModelSpec] = {}
#: loaders of model modules run on the first look-up (``defer``): the torch ones, so that importing
#: the registry (a scan worker, a tabular detector's loader) does not import torch
_DEFERRED: list[Callable[[], Any]] = []


def defer(loader: Callable[[], Any]) -> Callable[[], Any]:
    """Run ``loader`` (which imports modules that register models) on the registry's first
    look-up (:func:`get_model_spec`, :func:`list_models`, :func:`create_model`), not now."""
    _DEFERRED.append(loader)
    return loader


def _registered() -> dict[str, ModelSpec]:
    """The registry, with the deferred model modules imported (once)."""
    while _DEFERRED:
        _DEFERRED.pop(0)()
    return _REGISTRY


def register_model(*, kind: str, feature_set: str | None = None, needs_scaling: bool = False,
                   grid: Mapping[str, Iterable] | None = None, mlflow_flavor: str = "sklearn",
                   input: str | None = None, extra: Mapping[str, Any] | None = None):
    """Register the decorated constructor under its own name (``fn.__name__``, as timm's
    ``@register_model`` does); a second registration of a name is an error.

    Parameters
    ----------
    kind : {"tabular", "stack", "torch_video", "embedding"}
        Picks the trainer (:data:`KINDS`).
    feature_set : one of :data:`FEATURE_SETS` or None
        The feature table of a tabular model (``fvcflow.schema.FEATURE_SETS``: ``s2`` stage 2,
        ``s24`` stage 2 + stage 4, ...); ``None`` for frame models.
    needs_scaling : bool
        Standardise features inside each training fold.
    grid : mapping of str to sequence
        Small hyper-parameter grid (constructor keywords), searched by inner grouped CV.
    mlflow_flavor : str
        How the fitted model is logged.
    input : str, optional
        What the model consumes; defaults to the kind's input (features, oof, frames).
    extra : mapping, optional
        Anything a kind's trainer needs in addition (frame size, clip length, ...).

    Examples
    --------
    >>> @register_model(kind="tabular", feature_set="s2", grid={"C": [1.0]})
    ... def doc_example_model(*, seed=0, n_jobs=1, C=1.0):
    ...     from sklearn.linear_model import LogisticRegression
    ...     return LogisticRegression(C=C, random_state=seed)
    >>> get_model_spec("doc_example_model").kind
    'tabular'
    >>> _ = unregister_model("doc_example_model")
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    if mlflow_flavor not in FLAVORS:
        raise ValueError(f"mlflow_flavor must be one of {FLAVORS}, got {mlflow_flavor!r}")
    input = input or KINDS[kind].input
    frozen_grid = MappingProxyType({k: tuple(v) for k, v in (grid or {}).items()})

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        name = fn.__name__
        if kind in ("tabular", "tile") and feature_set not in FEATURE_SETS:
            raise ValueError(f"model {name!r}: a tabular model needs feature_set in {FEATURE_SETS}, got "
                             f"{feature_set!r}")
        if name in _REGISTRY:     # a deferred module's own names are checked when it registers them
            raise ValueError(f"model {name!r} is already registered (by "
                             f"{_REGISTRY[name].constructor.__module__})")
        _REGISTRY[name] = ModelSpec(name, fn, kind, input, feature_set, needs_scaling, frozen_grid,
                                    mlflow_flavor, MappingProxyType(dict(extra or {})))
        return fn

    return decorator


def unregister_model(name: str) -> ModelSpec:
    """Remove a registration (tests and interactive use); returns the removed spec."""
    return _REGISTRY.pop(name)


def get_model_spec(name: str) -> ModelSpec:
    """The registered spec of ``name``; an unknown name is an FvcError listing close names.

    >>> get_model_spec("logreg_s24").feature_set
    's24'
    """
    try:
        return _registered()[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = (f"; did you mean {', '.join(close)}?" if close
                else f"; registered: {', '.join(sorted(_REGISTRY))}")
        raise FvcError(f"unknown model {name!r}{hint}") from None


def create_model(name: str, **kw: Any) -> Any:
    """A new, unfitted instance of model ``name``; keywords go to its constructor.

    >>> create_model("logreg_s24", C=2.0).estimator.C
    2.0
    """
    return get_model_spec(name).constructor(**kw)


def list_models(pattern: str = "*", *, kind: str | None = None) -> list[str]:
    """Sorted names matching an fnmatch ``pattern`` (comma-separated patterns are OR-ed).

    >>> list_models("logreg_s2*")
    ['logreg_s2', 'logreg_s24', 'logreg_s2l', 'logreg_s2lf', 'logreg_s2lt']
    >>> list_models("xgb_s24,stack_*")
    ['stack_s24', 'xgb_s24']
    """
    pats = [p.strip() for p in pattern.split(",") if p.strip()] or ["*"]
    return sorted(n for n, s in _registered().items()
                  if any(fnmatch.fnmatchcase(n, p) for p in pats) and (kind is None or s.kind == kind))
