"""The Fake Video Corpus adapter: archives (or an extracted tree) plus CSVs -> a Catalog.

Extracted, the corpus looks like ``FVC1/<platform>/<video_id>/video.{mp4,mkv,webm}`` and
``FVC2|FVC3/<video_id>/video.*``; each video is matched to its metadata row by the id parsed
from the row's URL. ``group_id`` is the cascade id (near-duplicates share their seed's cascade).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Callable

from fvcflow.errors import FvcError
from fvcflow.ingest.archive import extract_zip, verify_password
from fvcflow.ingest.common import Candidate, Catalog, require_dir, scan_videos
from fvcflow.ingest.fvc_meta import FvcRow, find_csvs, read_fvc_csv

__all__ = ["fvc_archives", "prepare_fvc", "catalog_fvc"]


def fvc_archives(root: Path) -> list[Path]:
    """The FVC archives in ``root`` (``FVC1.zip``..., ``Metadata.zip``), metadata first.

    Examples
    --------
    >>> [p.name for p in fvc_archives(Path("downloads/fvc"))]  # doctest: +SKIP
    ['Metadata.zip', 'FVC1.zip', 'FVC2.zip', 'FVC3.zip']
    """
    zips = [p for p in sorted(root.iterdir()) if p.is_file() and p.suffix.lower() == ".zip"
            and (p.stem.upper().startswith("FVC") or p.stem.lower() == "metadata")]
    return sorted(zips, key=lambda p: (p.stem.lower() != "metadata", p.name))


def _archive_target(archive: Path, dest: Path) -> Path:
    """``dest`` when the archive's entries already sit under ``<stem>/``, else ``dest/<stem>``."""
    with zipfile.ZipFile(archive) as zf:
        names = [n.replace("\\", "/") for n in zf.namelist()]
    prefix = archive.stem.lower() + "/"
    return dest if names and all(n.lower().startswith(prefix) for n in names) else dest / archive.stem


def prepare_fvc(root: str | Path, raw: Path, *, password: bytes | None = None,
                log: Callable[[str], None] = lambda s: None) -> Path:
    """The extracted corpus tree: ``root`` itself, or ``raw/fvc`` after extracting its archives.

    Every archive's password is checked before any archive is extracted.

    Examples
    --------
    >>> tree = prepare_fvc("downloads/fvc", Lake.at().raw, password=b"...")  # doctest: +SKIP
    """
    root = require_dir(root, "the FVC archives (FVC1-3.zip, Metadata.zip) or their extracted tree")
    archives = fvc_archives(root)
    if not archives:
        return root
    for archive in archives:
        verify_password(archive, password)
    dest = raw / "fvc"
    for archive in archives:
        log(f"extracting {archive.name} ...")

        def step(name: str, done: int, total: int, _a=archive.name) -> None:
            if done == total or done % 200 == 0:
                log(f"  {_a}: {done}/{total} members")

        res = extract_zip(archive, _archive_target(archive, dest), password=password, progress=step)
        log(f"  {archive.name}: {len(res.extracted)} extracted, {len(res.skipped)} already there")
    return dest


def _platform_of(path: Path, tree: Path) -> str | None:
    parts = path.relative_to(tree).parts
    for i, part in enumerate(parts[:-2]):
        if part.upper() == "FVC1" and i + 2 < len(parts) - 1:
            return parts[i + 1].lower()
    return None


def _row_index(rows: list[FvcRow], notes: list[str]) -> dict[str, FvcRow]:
    """First row per video id (CSV priority order); conflicting later rows are noted."""
    index: dict[str, FvcRow] = {}
    for row in rows:
        if row.video_id is None:
            continue
        first = index.setdefault(row.video_id, row)
        if first is not row and (first.cascade_id, first.label_raw) != (row.cascade_id, row.label_raw):
            notes.append(f"{row.file}:{row.line}: video {row.video_id} also in {first.file}:{first.line} "
                         f"with cascade/label {first.cascade_id}/{first.label_raw}; the first row is used")
    return index


def catalog_fvc(tree: str | Path, metadata_root: str | Path | None = None) -> Catalog:
    """Match the videos of an extracted FVC tree to their metadata rows.

    The CSVs are looked for under ``tree``, then under ``metadata_root`` (the archives' folder).

    Examples
    --------
    >>> cat = catalog_fvc("fvc-data/raw/fvc")  # doctest: +SKIP
    >>> cat.candidates[0].video_id  # doctest: +SKIP
    'fvc-youtube-dQw4w9WgXcQ'
    """
    tree = require_dir(tree, "an extracted FVC tree")
    cat = Catalog("fvc")
    rows: list[FvcRow] = []
    roots = [tree] + ([Path(metadata_root)] if metadata_root is not None else [])
    for path in find_csvs(*roots).values():
        got, bad = read_fvc_csv(path)
        rows += got
        cat.unmatched_rows += bad
    index = _row_index(rows, cat.notes)
    videos = [p for p in scan_videos(tree) if p.stem.lower() == "video"]
    if not videos:
        raise FvcError(f"{tree}: no FVC videos found (expected FVC1/<platform>/<id>/video.* or "
                       "FVC2/<id>/video.*)")
    matched: set[str] = set()
    for path in videos:
        vid = path.parent.name
        row = index.get(vid)
        if row is None:
            cat.unmatched_videos.append(str(path))
            continue
        matched.add(vid)
        platform = _platform_of(path, tree) or row.platform
        cat.candidates.append(Candidate(path=path, video_id=f"fvc-{platform or 'unknown'}-{vid}",
                                        label_raw=row.label_raw, group_id=row.cascade_id, platform=platform,
                                        cascade_id=row.cascade_id))
    cat.unmatched_rows += [f"{r.file}:{r.line}: {r.url} (no video {vid})" for vid, r in index.items()
                           if vid not in matched]
    return cat
