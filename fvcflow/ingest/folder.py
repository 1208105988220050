"""Any folder of labelled videos: ``DIR`` plus a labels CSV ``path,label[,group[,split]]``.

Paths are relative to ``DIR``; labels are real/fake/0/1 (any case); a header row
``path,label[,group[,split]]`` is optional. A video without a group gets its own id (the content
hash) as group. ``split`` (train, val or test) is the corpus's own test hold-out; videos without
one get theirs decided by group at ingest (:mod:`fvcflow.ingest.holdout`). Videos under ``DIR``
that the CSV does not name, and CSV rows whose file is
missing, are reported. A row whose file is a symbolic link (or lies under one) leading out of
``DIR`` is a failure naming it: the corpus is what the folder holds, nothing it points at.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fvcflow.errors import FvcError
from fvcflow.ingest.common import Candidate, Catalog, require_dir, resolved_path, scan_videos

__all__ = ["LabelRow", "read_labels", "catalog_folder"]

SPLITS = ("train", "val", "test")
_LABELS = {"real": "real", "0": "real", "fake": "fake", "1": "fake"}


@dataclass(frozen=True)
class LabelRow:
    line: int
    path: str  # relative to the corpus folder, '/'-separated
    label_raw: str  # "real" or "fake"
    group: str | None
    split: str | None = None   # the corpus's own split: train, val or test


def _parse_row(csv_path: Path, line: int, fields: list[str]) -> LabelRow:
    fields = [f.strip() for f in fields]
    if len(fields) not in (2, 3, 4):
        raise FvcError(f"{csv_path}:{line}: expected path,label[,group[,split]], found {len(fields)} fields")
    rel, label = fields[0], fields[1].lower()
    if label not in _LABELS:
        raise FvcError(f"{csv_path}:{line}: label {fields[1]!r} is not one of real, fake, 0, 1")
    pure = PurePosixPath(rel.replace("\\", "/"))
    if not rel or pure.is_absolute() or ".." in pure.parts:
        raise FvcError(f"{csv_path}:{line}: path {rel!r} must be relative to the corpus folder, without '..'")
    group = fields[2] if len(fields) >= 3 and fields[2] else None
    split = fields[3].lower() if len(fields) == 4 and fields[3] else None
    if split not in (None, *SPLITS):
        raise FvcError(f"{csv_path}:{line}: split {fields[3]!r} is not one of {', '.join(SPLITS)} (or empty)")
    return LabelRow(line, pure.as_posix(), _LABELS[label], group, split)


def read_labels(path: str | Path) -> list[LabelRow]:
    """Rows of a labels CSV; the first bad row is a :class:`FvcError` naming the file and line.

    Examples
    --------
    >>> read_labels("corpus/labels.csv")[0]  # doctest: +SKIP
    LabelRow(line=2, path='clips/a.mp4', label_raw='real', group='g1')
    """
    path = Path(path)
    if not path.is_file():
        raise FvcError(f"{path}: labels CSV not found")
    rows: list[LabelRow] = []
    seen: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue
            if not rows and not seen and [f.strip().lower() for f in fields[:2]] == ["path", "label"]:
                seen[""] = reader.line_num  # the header
                continue
            row = _parse_row(path, reader.line_num, fields)
            if row.path in seen:
                raise FvcError(f"{path}:{row.line}: {row.path} is already listed on line {seen[row.path]}")
            seen[row.path] = row.line
            rows.append(row)
    if not rows:
        raise FvcError(f"{path}: no rows (expected path,label[,group])")
    return rows


def catalog_folder(root: str | Path, labels: str | Path | None, *, source: str = "folder") -> Catalog:
    """The videos of ``root`` named in ``labels``; ids are content hashes (set by the index writer).

    Examples
    --------
    >>> cat = catalog_folder("corpus", "corpus/labels.csv")  # doctest: +SKIP
    >>> cat.candidates[0].label_raw  # doctest: +SKIP
    'fake'
    """
    root = require_dir(root, "a folder of videos")
    if labels is None:
        raise FvcError("a folder corpus needs --labels CSV (path,label[,group])")
    cat = Catalog(source)
    listed = set()
    inside = resolved_path(root)
    for row in read_labels(labels):
        path = root / row.path
        if not os.path.lexists(path) or path.is_dir():  # a broken link or a loop is a failure, later
            cat.unmatched_rows.append(f"{Path(labels).name}:{row.line}: {row.path} (no such file)")
            continue
        if not resolved_path(path).is_relative_to(inside):
            listed.add(resolved_path(path))   # named, refused: not also "no metadata row names it"
            cat.refused.append((Path(os.path.abspath(path)),
                                f"a symbolic link leading out of the corpus folder {inside} (not indexed)"))
            continue
        listed.add(resolved_path(path))
        cat.candidates.append(Candidate(path=path, video_id=None, label_raw=row.label_raw,
                                        group_id=row.group, split=row.split))
    cat.unmatched_videos += [str(p) for p in scan_videos(root) if resolved_path(p) not in listed]
    return cat
