"""Progress events from the real work, for whoever shows them (the ``fvc`` terminal display).

The library calls :func:`emit` at the points where work really finishes: a stage planned, a
batch of videos back from a Dask worker, a training fold done, a model tracked. Nothing is
timed or guessed here. A sink is any callable ``sink(event, fields)``; :func:`listening`
installs one for the length of a ``with`` block. With no sink installed, :func:`emit` costs
one list check, so library code calls it unconditionally. Sinks run in the emitting thread
and must not raise (one that does is removed, and the work goes on).

Events and their fields (every field is a plain value):

``stage_start``   stage, total (videos of the stage), todo (to compute), cached
``stage_batch``   stage, done (videos finished in the batch), failed
``stage_end``     stage, videos (rows of the stage table), done, cached, failed, seconds, reasons
``ingest_start``  source, total (videos to probe)
``ingest_step``   source, done (probed so far), total
``ingest_end``    source, found, indexed, failed, seconds
``train_start``   models (names, in fitting order), folds
``model_start``   model
``fold_end``      model, fold (0-based), folds
``model_end``     model, oof_roc_auc, seconds
``train_end``     best, best_auc, best_auc_low, best_auc_high (None until intervals exist), seconds
``note``          text: something a user can act on, in plain words (shown once)

>>> seen = []
>>> with listening(lambda event, fields: seen.append((event, fields["todo"]))):
...     emit("stage_start", stage="features", total=3, todo=3, cached=0)
>>> seen
[('stage_start', 3)]
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, Callable, Iterator

Sink = Callable[[str, dict[str, Any]], None]

_sinks: list[Sink] = []
_lock = threading.Lock()
log = logging.getLogger("fvcflow.progress")


def emit(event: str, **fields: Any) -> None:
    """Send ``event`` with ``fields`` to every installed sink (none installed: nothing happens)."""
    if not _sinks:
        return
    for sink in list(_sinks):
        try:
            sink(event, fields)
        except Exception:  # noqa: BLE001 - a display must never stop the work
            log.exception("progress sink %r failed; removed", sink)
            remove(sink)


def add(sink: Sink) -> None:
    with _lock:
        _sinks.append(sink)


def remove(sink: Sink) -> None:
    with _lock:
        if sink in _sinks:
            _sinks.remove(sink)


@contextlib.contextmanager
def listening(sink: Sink) -> Iterator[Sink]:
    """Install ``sink`` for the ``with`` block."""
    add(sink)
    try:
        yield sink
    finally:
        remove(sink)
