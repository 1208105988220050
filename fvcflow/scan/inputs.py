"""What ``fvc scan PATH...`` scores: files, folders (recursively) and lists of paths.

A file whose suffix is ``.txt`` or ``.csv`` is a list: one path a line (a CSV's first column, or its
``path`` column when it has a header naming one); a relative path in a list is taken from the
list's folder. A folder gives every file with a video suffix under it (hidden ones skipped; the
other files are counted and reported, never scored silently or dropped silently). A file named
on the command line is always scored, whatever its name: the scan probes it, and a file that is
not a video becomes a row with its reason.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from fvcflow.errors import FvcError
from fvcflow.ingest.common import VIDEO_SUFFIXES, resolved_path

LIST_SUFFIXES = frozenset({".txt", ".csv"})


@dataclass
class Inputs:
    """The files to score (absolute, in the order given, each once) and what was left aside."""

    files: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)       # files in folders without a video suffix
    repeated: int = 0                                         # a path named twice is scored once

    def add(self, path: Path, seen: set[Path]) -> None:
        path = resolved_path(path)
        if path in seen:
            self.repeated += 1
            return
        seen.add(path)
        self.files.append(path)


def _read_list(path: Path) -> list[Path]:
    """The paths in a ``.txt`` or ``.csv`` list (blank lines and ``#`` comments skipped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FvcError(f"{path}: cannot read the list of paths ({exc})") from None
    if path.suffix.lower() == ".csv":
        rows = [r for r in csv.reader(text.splitlines()) if r and r[0].strip()]
        col = 0
        if rows and any(h.strip().lower() == "path" for h in rows[0]):
            col = [h.strip().lower() for h in rows[0]].index("path")
            rows = rows[1:]
        entries = [r[col].strip() for r in rows if len(r) > col and r[col].strip()]
    else:
        entries = [ln.strip() for ln in text.splitlines()]
    entries = [e for e in entries if e and not e.startswith("#")]
    return [Path(e) if Path(e).is_absolute() else path.parent / e for e in entries]


def _walk(root: Path, out: Inputs, seen: set[Path]) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if f.startswith("."):
                continue
            p = Path(dirpath) / f
            if p.suffix.lower() in VIDEO_SUFFIXES:
                out.add(p, seen)
            else:
                out.skipped.append(p)


def collect(paths: list[str | os.PathLike]) -> Inputs:
    """The files ``fvc scan`` scores for ``paths`` (files, folders, lists).

    A path that does not exist is a user error naming it (nothing has been scored yet); a path in
    a list that does not exist is kept: it becomes that file's failure row.

    >>> collect(["/no/such/folder"])
    Traceback (most recent call last):
    ...
    fvcflow.errors.FvcError: /no/such/folder: no such file or folder
    """
    if not paths:
        raise FvcError("give at least one file, folder or list of paths to scan")
    out, seen = Inputs(), set()
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            _walk(p, out, seen)
        elif p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            for entry in _read_list(p):
                if entry.is_dir():
                    _walk(entry, out, seen)
                else:
                    out.add(entry, seen)
        elif p.exists():
            out.add(p, seen)
        else:
            raise FvcError(f"{p}: no such file or folder")
    return out
