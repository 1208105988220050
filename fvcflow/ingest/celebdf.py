"""Celeb-DF (v2) adapter.

Layout: ``Celeb-real/idX_NNNN.mp4`` (real), ``YouTube-real/NNNNN.mp4`` (real, no celebrity id),
``Celeb-synthesis/idX_idY_NNNN.mp4`` (fake: idX's face on idY's video) and
``List_of_testing_videos.txt`` (lines ``<label> <folder>/<file>.mp4``, 1 = real, 0 = fake),
which marks the official test split; everything else is the training split. Groups join
celebrities: a fake links idX and idY (union-find), so no identity straddles a split.
"""

from __future__ import annotations

import re
from pathlib import Path

from fvcflow.errors import FvcError
from fvcflow.ingest.common import Candidate, Catalog, UnionFind, require_dir, scan_videos

__all__ = ["catalog_celebdf"]

FOLDERS = {"Celeb-real": "real", "YouTube-real": "real", "Celeb-synthesis": "fake"}
_REAL = re.compile(r"^(id\d+)_\d+$")
_FAKE = re.compile(r"^(id\d+)_(id\d+)_\d+$")
TEST_LIST = "List_of_testing_videos.txt"


def _read_test_list(root: Path) -> dict[str, str]:
    """``folder/file.mp4`` -> label ("real"/"fake") of the official test videos (absent: empty)."""
    path = root / TEST_LIST
    if not path.exists():
        return {}
    tests = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or fields[0] not in ("0", "1"):
            raise FvcError(f"{path}:{n}: expected '<1|0> <folder>/<file>.mp4', found {line!r}")
        tests[fields[1].replace("\\", "/")] = "real" if fields[0] == "1" else "fake"
    return tests


def _identities(folder: str, stem: str) -> list[str]:
    if folder == "Celeb-synthesis":
        m = _FAKE.match(stem)
        return [m.group(1), m.group(2)] if m else []
    if folder == "Celeb-real":
        m = _REAL.match(stem)
        return [m.group(1)] if m else []
    return []


def catalog_celebdf(root: str | Path) -> Catalog:
    """Celeb-DF videos with labels, celebrity groups and the official test split.

    Examples
    --------
    >>> cat = catalog_celebdf("/data/Celeb-DF-v2")  # doctest: +SKIP
    >>> cat.candidates[0].split  # doctest: +SKIP
    'train'
    """
    root = require_dir(root, "the Celeb-DF root (Celeb-real/, Celeb-synthesis/, YouTube-real/)")
    present = [f for f in FOLDERS if (root / f).is_dir()]
    if not present:
        raise FvcError(f"{root}: none of {', '.join(FOLDERS)} found (not a Celeb-DF root)")
    tests = _read_test_list(root)
    uf = UnionFind()
    cat = Catalog("celebdf")
    found = []
    for folder in present:
        for path in scan_videos(root / folder):
            ids = _identities(folder, path.stem)
            if folder != "YouTube-real" and not ids:
                cat.unmatched_videos.append(str(path))
                continue
            keys = ids or [f"yt-{path.stem}"]
            for k in keys[1:]:
                uf.union(keys[0], k)
            found.append((folder, path, keys))
    seen = set()
    for folder, path, keys in found:
        rel = f"{folder}/{path.relative_to(root / folder).as_posix()}"
        seen.add(rel)
        label = FOLDERS[folder]
        if rel in tests and tests[rel] != label:
            cat.notes.append(f"{TEST_LIST}: {rel} is marked {tests[rel]} but sits in {folder}/ ({label}); "
                             "the folder's label is used")
        cat.candidates.append(Candidate(path=path, video_id=f"celebdf-{folder}-{path.stem}", label_raw=label,
                                        group_id=f"celebdf-{uf.find(keys[0])}",
                                        split="test" if rel in tests else "train"))
    cat.unmatched_rows += [f"{TEST_LIST}: {rel} (no such video)" for rel in tests if rel not in seen]
    return cat
