"""DFDC (Deepfake Detection Challenge) adapter.

Layout: ``dfdc_train_part_*/metadata.json`` next to the part's videos, each entry
``{"x.mp4": {"label": "FAKE"|"REAL", "split": "train", "original": "y.mp4"|null}}``. A fake
shares its original's group (union-find, so originals found in another part still join).
"""

from __future__ import annotations

import json
from pathlib import Path

from fvcflow.errors import FvcError
from fvcflow.ingest.common import Candidate, Catalog, UnionFind, require_dir, scan_videos

__all__ = ["catalog_dfdc"]


def _read_metadata(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise FvcError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise FvcError(f"{path}: expected an object {{\"name.mp4\": {{\"label\": ...}}}}")
    for name, entry in data.items():
        if not isinstance(entry, dict) or str(entry.get("label", "")).upper() not in ("REAL", "FAKE"):
            raise FvcError(f"{path}: entry {name!r} has no label REAL or FAKE")
    return data


def catalog_dfdc(root: str | Path) -> Catalog:
    """DFDC videos of every ``dfdc_train_part_*`` folder under ``root`` (or ``root`` itself, one part).

    Examples
    --------
    >>> cat = catalog_dfdc("/data/dfdc")  # doctest: +SKIP
    >>> cat.candidates[0].label_raw  # doctest: +SKIP
    'fake'
    """
    root = require_dir(root, "the DFDC root (dfdc_train_part_*/metadata.json)")
    metas = sorted(root.glob("dfdc_train_part_*/metadata.json")) or sorted(root.glob("metadata.json"))
    if not metas:
        raise FvcError(f"{root}: no dfdc_train_part_*/metadata.json found (not a DFDC root)")
    uf = UnionFind()
    entries: dict[Path, dict] = {}
    for meta in metas:
        for name, entry in _read_metadata(meta).items():
            entries[meta.parent / name] = entry
            if entry.get("original"):
                uf.union(Path(name).stem, Path(entry["original"]).stem)
    cat = Catalog("dfdc")
    videos = [p for meta in metas for p in scan_videos(meta.parent)]
    for path in videos:
        entry = entries.get(path)
        if entry is None:
            cat.unmatched_videos.append(str(path))
            continue
        cat.candidates.append(Candidate(path=path, video_id=f"dfdc-{path.stem}",
                                        label_raw=str(entry["label"]).lower(),
                                        group_id=f"dfdc-{uf.find(path.stem)}", split=entry.get("split")))
    on_disk = set(videos)
    cat.unmatched_rows += [f"{p.parent.name}/metadata.json: {p.name} (no such video)" for p in entries
                           if p not in on_disk]
    return cat
