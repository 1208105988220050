"""Tree boosters out of the skops file, each in its library's own model file.

A fitted XGBoost, LightGBM or CatBoost estimator sits anywhere inside what we save (a pipeline
step, a screened or early-stopped wrapper). :func:`lift` takes a copy of the model with each
booster replaced by a short placeholder string and returns the boosters apart; the saved-model
format (:mod:`fvcflow.saved.format`) writes each one as its library writes it (XGBoost's JSON,
LightGBM's model text, CatBoost's own model file) next to the skops file of the rest, and :func:`drop`
puts them back after loading. So no booster travels inside skops (whose trusted list no longer
names a booster type), and none is read by anything but its library's own model loader:

- XGBoost: the wrapper's ``_Booster`` becomes a placeholder; ``Booster.save_model`` (JSON) and
  ``Booster.load_model``; the wrapper's fitted attributes stay in the skops file.
- LightGBM: likewise with ``Booster.save_model`` (text) and ``Booster(model_file=...)``.
- CatBoost: the whole estimator becomes a placeholder (its fitted state is the model file):
  ``save_model(format="cbm")`` (CatBoost's flatbuffers model file; its JSON export rounds the
  leaf values, which moved probabilities by 1e-16) and, into an estimator of the same class
  built with the saved parameters (JSON), ``load_model(format="cbm")``; an unfitted one (a wrapper's
  template) is its parameters alone, and no file.

>>> LIBRARIES
('xgboost', 'lightgbm', 'catboost')
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any, Callable

from fvcflow.errors import FvcError

LIBRARIES = ("xgboost", "lightgbm", "catboost")
#: the file suffix of each library's own model format
SUFFIX = {"xgboost": ".json", "lightgbm": ".txt", "catboost": ".cbm"}
_INSIDE = ("sklearn", "fvcflow", *LIBRARIES)        # the objects whose attributes are looked into
PREFIX = "fvc-booster:"                          # a placeholder: PREFIX + the part's file name
#: CatBoost estimator classes that may be rebuilt (by name, never from a name in a file)
_CATBOOST = ("CatBoostClassifier", "CatBoostRegressor", "CatBoost")


def _library(obj: Any) -> str | None:
    """The booster library of ``obj`` when it is a booster wrapper we lift, else None."""
    root = type(obj).__module__.split(".")[0]
    if root == "xgboost":
        from xgboost import XGBModel
        return "xgboost" if isinstance(obj, XGBModel) else None
    if root == "lightgbm":
        from lightgbm import LGBMModel
        return "lightgbm" if isinstance(obj, LGBMModel) else None
    if root == "catboost":
        from catboost import CatBoost
        return "catboost" if isinstance(obj, CatBoost) else None
    return None


def _walk(obj: Any, visit: Callable[[Any], Any], seen: set[int]) -> Any:
    """``obj`` with ``visit`` applied to every value reachable through lists, tuples, dicts and
    the attributes of scikit-learn / fvcflow objects (in place where mutable); ``visit`` returns
    a replacement, or None to look inside."""
    new = visit(obj)
    if new is not None:
        return new
    if id(obj) in seen:
        return obj
    seen.add(id(obj))
    if isinstance(obj, list):
        obj[:] = [_walk(v, visit, seen) for v in obj]
    elif isinstance(obj, tuple):
        obj = type(obj)(_walk(v, visit, seen) for v in obj) if type(obj) is tuple else obj
    elif isinstance(obj, dict):
        for k in list(obj):
            obj[k] = _walk(obj[k], visit, seen)
    elif type(obj).__module__.split(".")[0] in _INSIDE and hasattr(obj, "__dict__"):
        for k, v in list(vars(obj).items()):
            vars(obj)[k] = _walk(v, visit, seen)
    return obj


def lift(model: Any, name: Callable[[str], str]) -> tuple[Any, list[dict[str, Any]]]:
    """A deep copy of ``model`` without its fitted boosters, and the boosters apart: one dict
    each ``{"library", "part", "booster", "params"}`` (``part``: the file name ``name(suffix)``
    gives; the placeholder left in the copy is ``PREFIX + part``). A model without boosters
    comes back as it is (not copied) with an empty list."""
    found: list[dict[str, Any]] = []

    def has(obj: Any) -> Any:
        if _library(obj) is not None:
            found.append(obj)
            return obj
        return None

    _walk(model, has, set())
    if not found:
        return model, []
    lifted: list[dict[str, Any]] = []
    model = copy.deepcopy(model)

    def take(obj: Any) -> Any:
        lib = _library(obj)
        if lib is None:
            return None
        if lib == "catboost":                            # an unfitted template: its parameters alone
            part = name(SUFFIX[lib])
            params = json.loads(json.dumps(obj.get_params(), default=str))
            lifted.append({"library": lib, "part": part, "booster": obj if obj.is_fitted() else None,
                           "params": params, "class": type(obj).__name__})
            return PREFIX + part
        booster = vars(obj).get("_Booster")
        if booster is not None and not isinstance(booster, str):    # (a str: lifted already)
            part = name(SUFFIX[lib])
            lifted.append({"library": lib, "part": part, "booster": booster})
            vars(obj)["_Booster"] = PREFIX + part
        return obj                                       # the wrapper stays (in skops)

    model = _walk(model, take, set())
    return model, lifted


def save(entry: dict[str, Any], path: Path) -> None:
    """Write a lifted booster to ``path`` in its library's own format."""
    lib, booster = entry["library"], entry["booster"]
    if lib == "xgboost":
        booster.save_model(str(path))                    # .json: XGBoost's JSON model
    elif lib == "lightgbm":
        booster.save_model(str(path))                    # LightGBM's model text
    elif booster is not None:
        booster.save_model(str(path), format="cbm")


def load(library: str, path: Path, *, params: dict[str, Any] | None = None, cls: str = "",
         fitted: bool = True) -> Any:
    """The booster (CatBoost: the estimator; ``fitted`` False: unfitted, from ``params`` alone)
    in ``path``, read by its library's own loader."""
    if library == "xgboost":
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(str(path))
        return booster
    if library == "lightgbm":
        import lightgbm

        return lightgbm.Booster(model_file=str(path))
    if library == "catboost":
        import catboost

        if cls not in _CATBOOST:
            raise FvcError(f"{path}: unknown CatBoost class {cls!r}; refused")
        est = getattr(catboost, cls)(**(params or {}))
        if fitted:
            est.load_model(str(path), format="cbm")
        return est
    raise FvcError(f"{path}: unknown booster library {library!r}; refused")


def drop(model: Any, boosters: dict[str, Any]) -> Any:
    """``model`` with each placeholder replaced by its loaded booster (``boosters``: part name
    to booster); a placeholder without its booster, or a booster no placeholder names, is an
    error (the marker and the skops file do not belong together)."""
    used: set[str] = set()

    def put(obj: Any) -> Any:
        if isinstance(obj, str) and obj.startswith(PREFIX):
            part = obj[len(PREFIX):]
            if part not in boosters:
                raise FvcError(f"the saved model names booster {part!r}, which it does not hold; refused")
            used.add(part)
            return boosters[part]
        return None

    model = _walk(model, put, set())
    if set(boosters) - used:
        unused = ", ".join(sorted(set(boosters) - used))
        raise FvcError(f"the saved model holds boosters it does not use ({unused}); refused")
    return model


def to_bytes(entry: dict[str, Any]) -> bytes:
    """A lifted booster's model file as bytes (what :func:`save` writes); empty for an unfitted one."""
    if entry["booster"] is None:
        return b""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"booster{SUFFIX[entry['library']]}"
        save(entry, path)
        return path.read_bytes()


def from_bytes(node: dict[str, Any], data: bytes) -> Any:
    """The booster :func:`to_bytes` gave ``data`` for (``node``: its entry without the booster)."""
    library = str(node["library"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"booster{SUFFIX.get(library, '')}"
        path.write_bytes(data)
        return load(library, path, params=node.get("params"), cls=str(node.get("class", "")),
                    fitted=bool(node.get("fitted", True)))


def describe(entry: dict[str, Any]) -> dict[str, Any]:
    """A lifted booster's JSON node: its entry without the booster object, and whether it is fitted."""
    return {k: v for k, v in entry.items() if k != "booster"} | {"fitted": entry["booster"] is not None}
