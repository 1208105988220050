"""Fold-level resume for every trainer: a killed training restarts from its last completed fold.

A :class:`FoldCache` holds one model's finished folds (and anything else a trainer wants back
after a crash: the final refit, a torch loop's last epoch checkpoint) under
``stage5/resume/<model>/<key>/``. The key is a digest of everything that decides the result:
the model's registered spec (name, kind, grid), the training settings that reach the fit
(seeds, folds, grids, params, the deep settings) and the training data with its splits (the
caller passes a digest, :func:`table_digest` for tabular data). Any change gives a new key, so
a stale entry is never reused. Entries are checked blobs (:func:`fvcflow.store.write_checked_bytes`):
written atomically, verified on read; a damaged one is reported and recomputed. The trainer
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
import json
import logging
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from fvcflow.config import TrainConfig
from fvcflow.errors import DiskFullError
from fvcflow.models import get_model_spec
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
    """Finished folds (any picklable object, or raw bytes) of one model's training, by name."""

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
        data = self.load_bytes(name)
        return None if data is None else pickle.loads(data)

    def save(self, name: str, obj: Any) -> None:
        """Store ``obj`` (pickled) as ``name``; an object that cannot be pickled is not stored
        (a warning: that fold would be refitted after a crash), the training goes on."""
        try:
            data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            log.warning("cannot keep %s for resume (%s: %s)", name, type(exc).__name__, exc)
            return
        self.save_bytes(name, data)

    def names(self) -> list[str]:
        """The entries stored so far."""
        return sorted(p.stem for p in self.root.glob("*.bin")) if self.root.exists() else []

    def clear(self) -> None:
        """Forget this model's entries, and any left under older keys (after its result is logged)."""
        shutil.rmtree(self.root.parent, ignore_errors=True)
