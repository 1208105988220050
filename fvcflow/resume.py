"""Fold-level resume for every trainer: a killed training restarts from its last completed fold.

A :class:`FoldCache` holds one model's finished folds (and anything else a trainer wants back
after a crash: the final refit, a torch loop's last epoch checkpoint) under
``stage5/resume/<model>/<key>/``. The key is a digest of everything that decides the result:
the model's registered spec (name, kind, grid), the training settings that reach the fit
(seeds, folds, grids, params, the deep settings) and the training data with its splits (the
caller passes a digest, :func:`table_digest` for tabular data). Any change gives a new key, so
a stale entry is never reused. Entries are checked blobs (:func:`fvcflow.store.write_checked_bytes`):
written atomically, verified on read; a damaged one is reported and recomputed. An object entry
holds no pickle (:meth:`FoldCache.save`): a zip of JSON, NumPy arrays (``allow_pickle=False``),
Parquet frames and skops estimators loaded with fvcflow's trusted types; an entry in any other
form (an older version's pickle, a planted file) is refused, never unpickled, and recomputed. The trainer
calls :meth:`FoldCache.clear` once the model is logged: resume is for interrupted trainings,
a finished one retrains from scratch when run again (and entries under older keys go too).

>>> cache = FoldCache.for_model(Lake.at("/tmp/fvc-doc"), "logreg_s2", TrainConfig(), data="d0")
>>> cache.load("fold0") is None
True
>>> cache.save("fold0", {"p": [0.1, 0.9]}); cache.load("fold0")
{'p': [0.1, 0.9]}
>>> cache.clear(); cache.load("fold0") is None
True

Torch loops keep a per-epoch checkpoint with ``save_bytes`` / ``load_bytes`` (``torch.save``
into a ``BytesIO``): ``cache.save_bytes(f"fold{k}.epoch", buf.getvalue())``, and ``remove`` it
once the finished fit is stored (:mod:`fvcflow.deep.loop`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from fvcflow.config import TrainConfig
from fvcflow.errors import DiskFullError, FvcError
from fvcflow.models import boosters, get_model_spec
from fvcflow.models.skops_safe import dump_estimator, load_estimator
from fvcflow.store import CorruptEntry, Lake, read_checked_bytes, write_checked_bytes

log = logging.getLogger("fvcflow.training")

#: settings that do not change what a fit produces (where it is tracked, what is selected)
_NOT_IN_KEY = {"models", "experiment", "registered_name", "register_best", "report", "tracking_uri",
               "reuse_splits"}


def _digest(obj: Any) -> str:
    return hashlib.blake2b(json.dumps(obj, sort_keys=True, default=repr).encode(), digest_size=16).hexdigest()


def table_digest(*arrays: Any) -> str:
    """Digest of the training data: arrays (NumPy, pandas, Polars) by value, in order."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        if hasattr(a, "columns"):                        # a data frame: names, then values
            h.update(json.dumps([str(c) for c in a.columns]).encode())
            a = a.to_numpy()
        arr = np.asarray(a)
        if arr.dtype == object:
            h.update(json.dumps(arr.tolist(), default=repr).encode())
        else:
            h.update(str(arr.dtype).encode() + str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


class FoldCache:
    """Finished folds (JSON-able values, arrays, frames, estimators; or raw bytes) of one model's
    training, by name."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @classmethod
    def for_model(cls, lake: Lake, model: str, cfg: TrainConfig, *, data: str, **extra: Any) -> "FoldCache":
        """The cache of ``model`` trained with ``cfg`` on data whose digest is ``data``; ``extra``
        (JSON-able) joins the key for anything else that decides the result."""
        spec = get_model_spec(model)
        settings = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in _NOT_IN_KEY}
        key = _digest({"model": spec.name, "kind": spec.kind, "grid": spec.grid, "input": spec.input,
                       "feature_set": spec.feature_set, "settings": settings, "data": data, "extra": extra})
        return cls(lake.resume / spec.name / key)

    def _file(self, name: str) -> Path:
        return self.root / f"{name}.bin"

    def load_bytes(self, name: str) -> bytes | None:
        """What :meth:`save_bytes` stored as ``name``, or ``None`` (never stored, or damaged:
        a damaged entry is reported, removed and so recomputed)."""
        try:
            return read_checked_bytes(self._file(name))
        except CorruptEntry as exc:
            log.warning("damaged resume entry, recomputing it: %s", exc)
            self._file(name).unlink(missing_ok=True)
            return None

    def save_bytes(self, name: str, data: bytes) -> None:
        """Store ``data`` as ``name`` (atomically). Best effort: on a full disk nothing is kept
        (a warning; the training goes on, and fails where its real output cannot be written)."""
        try:
            write_checked_bytes(data, self._file(name))
        except DiskFullError as exc:
            log.warning("cannot keep %s for resume: %s", name, exc)

    def remove(self, name: str) -> None:
        """Forget entry ``name`` (nothing when it is not stored)."""
        self._file(name).unlink(missing_ok=True)

    def load(self, name: str) -> Any | None:
        """What :meth:`save` stored as ``name``, or ``None``: never stored, damaged, or not in this
        format (an older version's pickle, a file naming an untrusted type): such an entry is
        refused without loading it (a warning naming the file), removed and recomputed."""
        data = self.load_bytes(name)
        if data is None:
            return None
        try:
            return decode_entry(data, self._file(name))
        except FvcError as exc:
            log.warning("resume entry refused, recomputing it: %s", exc)
            self._file(name).unlink(missing_ok=True)
            return None

    def save(self, name: str, obj: Any) -> None:
        """Store ``obj`` as ``name``: dicts, lists and JSON values, NumPy arrays, Polars frames and
        estimators (skops, fvcflow's trusted types). Anything else is not stored (a warning: that fold
        would be refitted after a crash), the training goes on."""
        try:
            data = encode_entry(obj)
        except (FvcError, TypeError, ValueError) as exc:
            log.warning("cannot keep %s for resume (%s: %s)", name, type(exc).__name__, exc)
            return
        self.save_bytes(name, data)

    def names(self) -> list[str]:
        """The entries stored so far."""
        return sorted(p.stem for p in self.root.glob("*.bin")) if self.root.exists() else []

    def clear(self) -> None:
        """Forget this model's entries, and any left under older keys (after its result is logged)."""
        shutil.rmtree(self.root.parent, ignore_errors=True)


_ENTRY = "entry.json"


def encode_entry(obj: Any) -> bytes:
    """``obj`` as a zip: ``entry.json`` (the tree; arrays, frames and estimators replaced by
    references), ``arrays.npz``, ``f<N>.parquet``, ``e<N>.skops`` and the tree boosters inside
    an estimator in their own formats, ``e<N>.b<K>.json/.txt/.cbm`` (:mod:`fvcflow.models.boosters`).
    No pickle anywhere."""
    arrays: dict[str, np.ndarray] = {}
    files: dict[str, bytes] = {}

    def enc(v: Any) -> Any:
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, np.ndarray):
            if v.dtype == object:
                raise TypeError("an object array cannot be stored without pickle")
            arrays[key := f"a{len(arrays)}"] = v
            return {"$array": key}
        if isinstance(v, dict):
            if not all(isinstance(k, str) for k in v):
                raise TypeError("only string keys can be stored")
            return {"$dict": {k: enc(x) for k, x in v.items()}}
        if isinstance(v, (list, tuple)):
            return [enc(x) for x in v]
        if type(v).__module__.startswith("polars") and hasattr(v, "write_parquet"):
            buf = io.BytesIO()
            v.write_parquet(buf)
            files[key := f"f{len(files)}.parquet"] = buf.getvalue()
            return {"$frame": key}
        if hasattr(v, "fit") and hasattr(v, "get_params"):
            key, n = f"e{len(files)}", iter(range(1 << 30))
            shell, lifted = boosters.lift(v, lambda suffix: f"{key}.b{next(n)}{suffix}")
            for entry in lifted:                     # tree boosters in their own formats
                files[entry["part"]] = boosters.to_bytes(entry)
            files[key + ".skops"] = dump_estimator(shell)
            node = {"$estimator": key + ".skops"}
            return node | {"$boosters": [boosters.describe(e) for e in lifted]} if lifted else node
        raise TypeError(f"cannot store a {type(v).__name__} without pickle")

    tree = enc(obj)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr(_ENTRY, json.dumps(tree))
        if arrays:
            buf = io.BytesIO()
            np.savez(buf, allow_pickle=False, **arrays)
            z.writestr("arrays.npz", buf.getvalue())
        for key, data in files.items():
            z.writestr(key, data)
    return out.getvalue()


def decode_entry(data: bytes, where: Path) -> Any:
    """What :func:`encode_entry` wrote; a :class:`FvcError` naming ``where`` for anything else."""
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
        tree = json.loads(z.read(_ENTRY))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise FvcError(f"{where}: not a resume entry of this version ({type(exc).__name__}); "
                       "an older version's pickle is never loaded") from None
    with z:
        arrays = (np.load(io.BytesIO(z.read("arrays.npz")), allow_pickle=False)
                  if "arrays.npz" in z.namelist() else {})

        def dec(v: Any) -> Any:
            if isinstance(v, list):
                return [dec(x) for x in v]
            if not isinstance(v, dict):
                return v
            if "$dict" in v:
                return {k: dec(x) for k, x in v["$dict"].items()}
            if "$array" in v:
                return np.asarray(arrays[v["$array"]])
            if "$frame" in v:
                import polars as pl

                return pl.read_parquet(io.BytesIO(z.read(v["$frame"])))
            if "$estimator" in v:
                model = load_estimator(z.read(v["$estimator"]), f"{where}:{v['$estimator']}")
                if "$boosters" not in v:
                    return model
                return boosters.drop(model, {b["part"]: boosters.from_bytes(b, z.read(b["part"]))
                                             for b in v["$boosters"]})
            raise FvcError(f"{where}: unknown value {sorted(v)}; refused")

        try:
            return dec(tree)
        except (KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise FvcError(f"{where}: damaged resume entry ({type(exc).__name__}: {exc})") from None
