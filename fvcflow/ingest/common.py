"""What every corpus adapter returns, and the small helpers they share.

An adapter turns a corpus on disk into a :class:`Catalog`: the video files it found with their
labels and groups (:class:`Candidate`), plus what it could not pair (videos without a metadata
row, metadata rows without a video). The index writer (:mod:`fvcflow.ingest.index`) hashes and
probes the candidates and writes the index.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from fvcflow.errors import FvcError

#: File suffixes taken for videos when a corpus folder is scanned.
VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".3gp", ".ts", ".mpg",
                            ".mpeg", ".wmv"})
_REAL = {"real", "0", "original", "pristine"}
_FAKE = {"fake", "1", "manipulated"}


@dataclass
class Candidate:
    """A video file of a corpus with what the corpus says about it (before hashing and probing).

    ``video_id`` is the corpus's own id, prefixed with the source (``fvc-youtube-<id>``,
    ``ffpp-Deepfakes-c23-000_003``); ``None`` means "the content hash" (folder corpora).
    ``group_id`` ``None`` means "the video's own id".
    """

    path: Path
    video_id: str | None
    label_raw: str | None
    group_id: str | None = None
    split: str | None = None
    platform: str | None = None
    cascade_id: str | None = None


@dataclass
class Catalog:
    """An adapter's answer: candidates to index, and what could not be paired (never dropped)."""

    source: str
    candidates: list[Candidate] = field(default_factory=list)
    unmatched_videos: list[str] = field(default_factory=list)  # paths of videos with no metadata row
    unmatched_rows: list[str] = field(default_factory=list)  # metadata rows (ids/urls) with no video
    notes: list[str] = field(default_factory=list)  # anything else a user should read
    refused: list[tuple[Path, str]] = field(default_factory=list)  # (file, reason): failures, never probed


def label_value(label_raw: str | None) -> int | None:
    """0 for real, 1 for fake, ``None`` for any other label (FVC's uncertain, debunked, parody).

    Examples
    --------
    >>> label_value("FAKE"), label_value("real"), label_value("parody")
    (1, 0, None)
    """
    if label_raw is None:
        return None
    key = label_raw.strip().lower()
    return 0 if key in _REAL else 1 if key in _FAKE else None


def resolved_path(path: str | os.PathLike) -> Path:
    """``path`` made absolute with links resolved; a symlink loop stays as it is (absolute).

    >>> resolved_path("a/../b").name
    'b'
    """
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError):  # Python 3.11 raises RuntimeError on a loop
        return Path(os.path.abspath(path))


def require_dir(root: str | os.PathLike, what: str) -> Path:
    """``root`` as a Path; a clear error when it is not an existing folder.

    Examples
    --------
    >>> require_dir("/no/such/dir", "a corpus")
    Traceback (most recent call last):
    ...
    fvcflow.errors.FvcError: /no/such/dir: not a folder (a corpus expected)
    """
    root = Path(root)
    if not root.is_dir():
        raise FvcError(f"{root}: not a folder ({what} expected)")
    return root


def scan_videos(root: Path) -> list[Path]:
    """Every file under ``root`` with a video suffix, sorted (hidden files and folders skipped).

    Examples
    --------
    >>> scan_videos(Path("corpus"))[:1]  # doctest: +SKIP
    [PosixPath('corpus/a.mp4')]
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in filenames
                  if not f.startswith(".") and Path(f).suffix.lower() in VIDEO_SUFFIXES]
    return sorted(found)


class UnionFind:
    """Disjoint sets over string keys; the representative of a set is its smallest key.

    Examples
    --------
    >>> uf = UnionFind(); uf.union("b", "c"); uf.union("a", "c")
    >>> uf.find("b")
    'a'
    """

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}

    def find(self, key: str) -> str:
        root = self._parent.setdefault(key, key)
        while self._parent[root] != root:
            root = self._parent[root]
        while key != root:  # path compression
            self._parent[key], key = root, self._parent[key]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = sorted((ra, rb))
            self._parent[hi] = lo
