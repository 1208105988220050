"""The test hold-out, decided once when a corpus is indexed (``split`` of the index).

A corpus's own split (FF++, Celeb-DF and DFDC's official ones, the ``split`` column of a folder
corpus's labels CSV) is kept as it is. Every other labelled video gets ``"test"`` or ``"train"`` by
its group, so that no group straddles the hold-out: a group that already has a split (a video of
it indexed before, or an official one) keeps it; the new groups are taken in an order fixed by
``seed`` (a hash of seed and group id: adding videos later never moves a group) and put in the
hold-out while each class stays under ``test_size`` of its videos. The stages read this column:
stage 1 makes no augmented copies of test videos, stage 5 tests on the same videos.

The parameters are recorded in the index file (:data:`HOLDOUT_KEY` in the Parquet footer), so that
a training run asked for another ``test_size`` says so instead of quietly testing on another set;
changing the hold-out is explicit (``fvc ingest ... --resplit``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os

import polars as pl

#: Parquet footer key of the index: the hold-out's parameters, JSON {"test_size": .., "seed": ..}
HOLDOUT_KEY = "fvc.holdout"
TEST, TRAIN = "test", "train"


def _order(group: str, seed: int) -> str:
    return hashlib.blake2b(f"{seed}\0{group}".encode(), digest_size=8).hexdigest()


def decide_holdout(rows: list[dict], *, test_size: float, seed: int,
                   known: dict[str, str] | None = None) -> int:
    """Fill in ``split`` of the labelled ``rows`` that have none (in place); how many were decided.

    ``known``: group_id -> split already decided for it (earlier ingests). Rows without a label
    (FVC's uncertain ones) are left alone: they are never trained or tested on.

    >>> rows = [{"group_id": f"g{i}", "label": i % 2, "split": None} for i in range(10)]
    >>> decide_holdout(rows, test_size=0.2, seed=0)
    10
    >>> sorted(r["split"] for r in rows).count("test")
    2
    """
    groups: dict[str, str] = dict(known or {})
    for r in rows:                                   # official splits: their groups follow them
        if r.get("split") and r.get("group_id") is not None:
            if r["split"] == TEST or r["group_id"] not in groups:
                groups[r["group_id"]] = TEST if r["split"] == TEST else TRAIN
    todo = [r for r in rows if not r.get("split") and r.get("label") is not None]
    if not todo:
        return 0
    fresh: dict[str, list[dict]] = {}
    for r in todo:
        if r["group_id"] in groups:
            r["split"] = groups[r["group_id"]]
        else:
            fresh.setdefault(r["group_id"], []).append(r)
    labelled = [r for r in rows if r.get("label") is not None]
    totals = {c: sum(1 for r in labelled if r["label"] == c) for c in (0, 1)}
    in_test = {c: sum(1 for r in labelled if r["label"] == c and r.get("split") == TEST) for c in (0, 1)}
    room = {c: math.floor(test_size * totals[c] + 1e-9) - in_test[c] for c in (0, 1)}
    for g in sorted(fresh, key=lambda g: _order(g, seed)):
        members = fresh[g]
        need = {c: sum(1 for r in members if r["label"] == c) for c in (0, 1)}
        take = test_size > 0 and all(need[c] <= room[c] for c in (0, 1)) and any(need.values())
        for r in members:
            r["split"] = TEST if take else TRAIN
        if take:
            room = {c: room[c] - need[c] for c in (0, 1)}
    return len(todo)


def holdout_of(index_path: str | os.PathLike) -> dict | None:
    """The hold-out parameters recorded in the index file, or None (none recorded, no index)."""
    try:
        meta = pl.read_parquet_metadata(index_path)
    except (FileNotFoundError, OSError):
        return None
    text = meta.get(HOLDOUT_KEY)
    return json.loads(text) if text else None
