"""A new SQLite tracking store starts as a copy of an empty one that MLflow built.

MLflow builds a SQLite store by creating its tables and running every schema migration since
its first release: several seconds (about 3 s on an idle core, 10 s on a busy one), paid by each
work dir the first time it trains. :func:`seed_sqlite` builds the empty store that way once per
MLflow version, keeps it in the user's cache (``$XDG_CACHE_HOME/fvcflow``, else
``~/.cache/fvcflow``), and copies it where a new store is wanted. The copy is what MLflow would
have built there: the same tables and migration revision, and its ``Default`` experiment (id 0)
with the artifact location and times MLflow gives it at creation (the cwd's ``mlruns/0``, now).
An existing store is never touched; two processes seeding the same path at once both end up
with the one copy that won (linked in place, never overwritten).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

from fvcflow.config import user_cache

log = logging.getLogger("fvcflow.training")


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` URI (None for any other store, or an in-memory one)."""
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite" or not parsed.path or parsed.path == "/:memory:":
        return None
    return Path(unquote(parsed.path))


def _template() -> Path:
    """The empty store of this MLflow version, built by MLflow itself the first time."""
    import mlflow
    from mlflow.tracking import MlflowClient

    folder = user_cache()                                  # $XDG_CACHE_HOME/fvcflow
    path = folder / f"mlflow-{mlflow.__version__}-empty.db"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".build-") as tmp:
        built = Path(tmp) / "empty.db"
        uri = f"sqlite:///{built}"
        MlflowClient(uri, uri).search_experiments()       # MLflow creates and migrates it
        os.replace(built, path)                           # whole or absent, whoever finishes last
    return path


def _default_artifact_location() -> str:
    """What MLflow writes for the ``Default`` experiment of a store it creates from this process."""
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.utils.uri import append_to_uri_path, resolve_uri_if_local

    return append_to_uri_path(resolve_uri_if_local(DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH), "0")


def seed_sqlite(uri: str) -> bool:
    """Make the SQLite store of ``uri`` a copy of the empty one when it does not exist yet.

    True when this call placed it; False when it existed, ``uri`` is not a SQLite file, or the
    copy could not be made (MLflow then builds the store itself, as it always did)."""
    target = sqlite_path(uri)
    if target is None or target.exists():
        return False
    try:
        template = _template()
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".seed")
        try:
            with os.fdopen(fd, "wb") as out, open(template, "rb") as src:
                out.write(src.read())
            now = int(time.time() * 1000)
            with contextlib.closing(sqlite3.connect(tmp)) as db, db:
                db.execute("UPDATE experiments SET artifact_location = ?, creation_time = ?, "
                           "last_update_time = ? WHERE experiment_id = 0",
                           (_default_artifact_location(), now, now))
            try:
                os.link(tmp, target)                      # never replaces a store made meanwhile
            except FileExistsError:
                return False
            return True
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    except (OSError, sqlite3.Error, ImportError) as exc:
        log.debug("MLflow store %s: not seeded (%s); MLflow builds it", target, exc)
        return False
