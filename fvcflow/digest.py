"""Content digests of the lake's tables: one short hex string per table, equal when the values are.

Two runs of the same commit (two machines, two work dirs) should publish the same tables. A
digest per table, shown in ``fvc run``'s summary, in each stage's Prefect artifact and as tags of
every MLflow training run, makes comparing them one line; :func:`column_digests` (and
``python -m fvcflow.digest DIR_A DIR_B``) names the columns that differ.

What a digest covers: the table's columns (names, types, values) without those that legitimately
differ between runs (``IGNORED``: timings, and absolute paths, which hold the work dir or the
corpus folder), rows sorted by every column (the key first), floats with ``-0.0`` counted as
``0.0`` and every NaN alike. Equal values give equal digests, whatever the Parquet writer or the
row order; one changed value changes it.

>>> import polars as pl
>>> a = pl.DataFrame({"video_id": ["b", "a"], "x": [1.5, -0.0], "seconds": [3.0, 4.0]})
>>> b = pl.DataFrame({"video_id": ["a", "b"], "x": [0.0, 1.5], "seconds": [9.0, 9.0]})
>>> frame_digest(a) == frame_digest(b), frame_digest(a) == frame_digest(b.with_columns(x=pl.lit(1.0)))
(True, False)
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl

from fvcflow.schema import STAGE_TABLES
from fvcflow.store import Lake

#: columns no digest covers: timings, and paths (they name the work dir or the corpus folder)
TIMING = ("seconds", "fit_seconds", "log_seconds", "recorded_at")
#: the tables of a lake, in pipeline order: what a digest is kept of (the stages' tables from the schema)
TABLES = ("index", *STAGE_TABLES.values(), "splits", "predictions")
#: the tables a model is trained from (its MLflow run carries their digests, ``fvc.digest.<table>``)
INPUT_TABLES = TABLES[:TABLES.index("predictions")]
#: digits of the hex digest
SIZE = 12


def ignored(column: str) -> bool:
    """Whether ``column`` is left out of digests (a timing or a path column)."""
    return column in TIMING or column == "path" or column.endswith("_path")


def _hash_column(h, s: pl.Series) -> None:
    h.update(f"{s.name}\0{s.dtype}\0".encode())
    h.update(s.is_null().to_numpy().tobytes())
    if s.dtype.is_float():
        x = s.cast(pl.Float64).to_numpy().astype("<f8", copy=True)
        x[np.isnan(x)] = np.nan                     # one NaN pattern (nulls too; their mask is above)
        h.update((x + 0.0).tobytes())               # -0.0 + 0.0 is 0.0
    elif s.dtype.is_integer() or s.dtype == pl.Boolean:
        h.update(s.cast(pl.Int64).fill_null(0).to_numpy().astype("<i8").tobytes())
    else:
        h.update(json.dumps(s.to_list(), default=str, ensure_ascii=False).encode())


def _canonical(df: pl.DataFrame) -> pl.DataFrame:
    df = df.drop([c for c in df.columns if ignored(c)])
    nested = (pl.List, pl.Array, pl.Struct, pl.Object)
    sortable = [c for c, t in df.schema.items() if not isinstance(t, nested)]
    return df.sort(sortable, nulls_last=True, maintain_order=True) if sortable and df.height else df


def frame_digest(df: pl.DataFrame) -> str:
    """The digest of a table's content (see the module's docstring)."""
    h = hashlib.blake2b(digest_size=16)
    for s in _canonical(df).get_columns():
        _hash_column(h, s)
    return h.hexdigest()[:SIZE]


def column_digests(df: pl.DataFrame) -> dict[str, str]:
    """One digest per column (rows in the table digest's order): which columns two tables differ in."""
    out = {}
    for s in _canonical(df).get_columns():
        h = hashlib.blake2b(digest_size=16)
        _hash_column(h, s)
        out[s.name] = h.hexdigest()[:SIZE]
    return out


def parquet_digest(path: str | Path) -> str | None:
    """The digest of the Parquet table at ``path``; None when there is none."""
    path = Path(path)
    return frame_digest(pl.read_parquet(path)) if path.exists() else None


def lake_digests(lake: Lake, tables: tuple[str, ...] = TABLES) -> dict[str, str]:
    """``{table: digest}`` of the lake's tables that exist (names as ``Lake``'s attributes)."""
    out = {}
    for name in tables:
        digest = parquet_digest(getattr(lake, name))
        if digest is not None:
            out[name] = digest
    return out


def compare(home_a: str | Path, home_b: str | Path) -> list[str]:
    """Lines saying, table by table, whether two work dirs agree and which columns differ."""
    lake_a, lake_b = Lake.at(home_a), Lake.at(home_b)
    lines = []
    for name in TABLES:
        pa, pb = getattr(lake_a, name), getattr(lake_b, name)
        if not (pa.exists() and pb.exists()):
            continue
        a, b = pl.read_parquet(pa), pl.read_parquet(pb)
        da, db = frame_digest(a), frame_digest(b)
        if da == db:
            lines.append(f"{name}: {da} in both")
            continue
        ca, cb = column_digests(a), column_digests(b)
        differ = [c for c in ca if ca[c] != cb.get(c)] + [c for c in cb if c not in ca]
        lines.append(f"{name}: {da} vs {db}; {len(differ)} columns differ: {', '.join(differ)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """``python -m fvcflow.digest DIR`` prints a work dir's digests; with two dirs, compares them."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 1:
        for name, digest in lake_digests(Lake.at(args[0])).items():
            print(f"{name}: {digest}")
        return 0
    if len(args) == 2:
        print("\n".join(compare(*args)))
        return 0
    print("usage: python -m fvcflow.digest WORK_DIR [OTHER_WORK_DIR]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
