"""Where log records go when ``fvc`` runs: a log file in the work dir, the terminal only with ``-v``.

Prefect, ``distributed``, MLflow, Numba and the rest log a great deal that a user cannot act on
(scheduler start-up lines, heartbeats, worker shutdowns). Without ``-v`` every library record
and every Python warning goes to ``<home>/logs/fvc-<command>.log``; the terminal shows the
progress display. ``fvcflow``'s own warnings (a skipped model, a dropped row) are shown once
each, in plain words, besides going to the file. With ``-v`` the libraries keep their own
console output as well.

Nothing here imports Prefect: its logging is configured through the environment
(``PREFECT_LOGGING_SETTINGS_PATH``, a copy of Prefect's default configuration whose console
handler writes to the log file), before the Prefect layer is imported. Worker processes
started later inherit the environment, so their records go to the same file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

from fvcflow.schema import LAKE_PATHS

#: loggers whose console handlers are moved to the log file
LIBRARIES = ("prefect", "distributed", "mlflow", "numba", "alembic", "urllib3", "httpx", "httpcore",
             "tornado", "bokeh", "asyncio", "py.warnings", "matplotlib", "uvicorn", "fastapi", "docket",
             "sqlalchemy", "git", "fsspec", "websockets", "apprise", "sklearn", "xgboost", "lightgbm")

_PREFECT_LOGGING = """\
# written by fvc: Prefect's default logging with the console handler writing to the log file
version: 1
disable_existing_loggers: False
formatters:
  standard:
    (): prefect.logging.formatters.PrefectFormatter
    format: "%(asctime)s.%(msecs)03d | %(levelname)-7s | %(name)s - %(message)s"
    flow_run_fmt: "%(asctime)s.%(msecs)03d | %(levelname)-7s | Flow run %(flow_run_name)r - %(message)s"
    task_run_fmt: "%(asctime)s.%(msecs)03d | %(levelname)-7s | Task run %(task_run_name)r - %(message)s"
    datefmt: "%H:%M:%S"
handlers:
  console:
    level: 0
    class: logging.FileHandler
    filename: {path}
    encoding: utf-8
    formatter: standard
  api:
    level: 0
    class: prefect.logging.handlers.APILogHandler
  worker_api:
    level: 0
    class: prefect.logging.handlers.WorkerAPILogHandler
loggers:
  prefect:
    level: "${{PREFECT_LOGGING_LEVEL}}"
  prefect.extra:
    level: "${{PREFECT_LOGGING_LEVEL}}"
    handlers: [api]
    propagate: false
  prefect.flow_runs:
    level: NOTSET
    handlers: [api]
  prefect.task_runs:
    level: NOTSET
    handlers: [api]
  prefect.workers:
    level: NOTSET
    handlers: [worker_api]
  prefect.server:
    level: "${{PREFECT_SERVER_LOGGING_LEVEL}}"
  prefect._internal:
    level: "${{PREFECT_INTERNAL_LOGGING_LEVEL}}"
  uvicorn:
    level: "${{PREFECT_SERVER_LOGGING_LEVEL}}"
  fastapi:
    level: "${{PREFECT_SERVER_LOGGING_LEVEL}}"
root:
  level: INFO
  handlers: [console]
"""


class _Once(logging.Handler):
    """Hands each distinct ``fvcflow`` warning to ``show`` once."""

    def __init__(self, show: Callable[[str], None]):
        super().__init__(logging.WARNING)
        self.show, self.seen = show, set()

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith("fvcflow") or record.name == "fvcflow.progress":
            return
        text = record.getMessage()
        if text not in self.seen:
            self.seen.add(text)
            self.show(text)


def _is_console(h: logging.Handler) -> bool:
    if isinstance(h, logging.FileHandler):
        return False
    return isinstance(h, logging.StreamHandler) or type(h).__name__ in ("PrefectConsoleHandler",
                                                                           "RichHandler")


def log_path(home: str | os.PathLike, command: str) -> Path:
    return Path(home) / LAKE_PATHS["logs"].format(command=command)


def prepare(home: str | os.PathLike, command: str, *, verbose: bool = False) -> Path:
    """Before the libraries are imported: route their logs to the log file (the environment, so
    that worker processes follow). Returns the log file's path."""
    path = log_path(home, command)
    path.parent.mkdir(parents=True, exist_ok=True)
    if verbose:
        return path
    config = path.with_name("prefect-logging.yml")
    config.write_text(_PREFECT_LOGGING.format(path=str(path)))
    os.environ["PREFECT_LOGGING_SETTINGS_PATH"] = str(config)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ["MLFLOW_CONFIGURE_LOGGING"] = "false"          # MLflow keeps no handler of its own
    os.environ.setdefault("DASK_DISTRIBUTED__ADMIN__LOG_LENGTH", "0")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")   # not reached by TQDM_DISABLE
    return path


def route(path: Path, *, verbose: bool = False, show: Callable[[str], None] | None = None) -> None:
    """After the libraries are imported: the root logger writes to ``path``; the libraries' own
    console handlers are removed (unless ``verbose``); ``fvcflow`` warnings reach ``show`` once."""
    root = logging.getLogger()
    if not any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path for h in root.handlers):
        fh = logging.FileHandler(path, encoding="utf-8")
        fmt = "%(asctime)s | %(levelname)-7s | %(name)s - %(message)s"
        fh.setFormatter(logging.Formatter(fmt, "%H:%M:%S"))
        root.addHandler(fh)
    root.setLevel(logging.INFO)
    logging.getLogger("fvcflow").setLevel(logging.INFO)
    logging.captureWarnings(True)
    for chatty in ("httpx", "httpcore", "docket", "alembic"):    # a line per HTTP request or timer tick
        logging.getLogger(chatty).setLevel(logging.WARNING)
    if show is not None:
        root.addHandler(_Once(show))
    if verbose:
        return
    # a handler that cannot deliver a record (Prefect's API log handler while its server is away:
    # "--- Error logging to API ---") prints no traceback on the terminal; the command says itself
    # what went wrong, once (the standard library's production setting)
    logging.raiseExceptions = False
    for h in [h for h in root.handlers if _is_console(h)]:
        root.removeHandler(h)
    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] not in LIBRARIES and name != "py.warnings":
            continue
        logger = logging.getLogger(name)
        consoles = [h for h in logger.handlers if _is_console(h)]
        for h in consoles:
            logger.removeHandler(h)
        if consoles:
            logger.propagate = True
