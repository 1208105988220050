"""FaceForensics++ adapter.

Layout: ``original_sequences/youtube/{c0,c23,c40}/videos/NNN.mp4`` (real),
``original_sequences/actors/{c}/videos/AA__scene.mp4`` (real, the DeepFakeDetection sources),
``manipulated_sequences/<method>/{c}/videos/TTT_SSS.mp4`` (fake; DeepFakeDetection fakes are
``AA_BB__scene__XXXXXXXX.mp4``), and the official ``splits/{train,val,test}.json`` (lists of
``[a, b]`` pairs). A fake and both its source videos share a group: a union-find over the
pairs, so that transitive links merge. The compression level is part of ``video_id``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from fvcflow.errors import FvcError
from fvcflow.ingest.common import Candidate, Catalog, UnionFind, require_dir, scan_videos

__all__ = ["catalog_ffpp"]

_PAIR = re.compile(r"^(\d{3})_(\d{3})$")
_ORIG = re.compile(r"^(\d{3})$")
_DFD_FAKE = re.compile(r"^(\d{2})_(\d{2})__")
_ACTOR = re.compile(r"^(\d{2})__")


def _read_splits(root: Path) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Split of each youtube id, and all pairs, from ``splits/*.json`` (absent: empty)."""
    split_of: dict[str, str] = {}
    pairs: list[tuple[str, str]] = []
    for split in ("train", "val", "test"):
        path = root / "splits" / f"{split}.json"
        if not path.exists():
            continue
        try:
            data = json.loads(path.read_text())
            got = [(str(a), str(b)) for a, b in data]
        except (ValueError, TypeError) as exc:
            raise FvcError(f"{path}: expected a JSON list of [target, source] pairs ({exc})") from None
        for a, b in got:
            split_of[a] = split_of[b] = split
            pairs.append((a, b))
    return split_of, pairs


def _describe(path: Path, root: Path) -> tuple[str, str, str] | None:
    """``(kind, method, compression)`` from a video's path; ``None`` outside the known layout."""
    parts = path.relative_to(root).parts
    if len(parts) != 5 or parts[3] != "videos":
        return None
    top, method, comp = parts[0], parts[1], parts[2]
    if top == "original_sequences" and method in ("youtube", "actors"):
        return "original", method, comp
    if top == "manipulated_sequences":
        return "fake", method, comp
    return None


def _keys(kind: str, method: str, stem: str) -> list[str] | None:
    """Union-find keys of the source identities a video shows (youtube ids or actor ids)."""
    if kind == "original":
        m = (_ORIG if method == "youtube" else _ACTOR).match(stem)
        return [("yt" if method == "youtube" else "actor") + m.group(1)] if m else None
    m = (_DFD_FAKE if method == "DeepFakeDetection" else _PAIR).match(stem)
    if not m:
        return None
    prefix = "actor" if method == "DeepFakeDetection" else "yt"
    return [prefix + m.group(1), prefix + m.group(2)]


def catalog_ffpp(root: str | Path) -> Catalog:
    """FaceForensics++ videos with labels, pair groups and the official split.

    Examples
    --------
    >>> cat = catalog_ffpp("/data/FaceForensics++")  # doctest: +SKIP
    >>> cat.candidates[0].group_id  # doctest: +SKIP
    'ffpp-yt000'
    """
    root = require_dir(root, "the FaceForensics++ root (original_sequences/, manipulated_sequences/)")
    if not (root / "original_sequences").is_dir() and not (root / "manipulated_sequences").is_dir():
        raise FvcError(f"{root}: no original_sequences/ or manipulated_sequences/ folder (not a "
                       "FaceForensics++ root)")
    split_of, pairs = _read_splits(root)
    uf = UnionFind()
    for a, b in pairs:
        uf.union("yt" + a, "yt" + b)
    cat = Catalog("ffpp")
    found: list[tuple[Path, str, str, str, list[str]]] = []
    for path in scan_videos(root):
        desc = _describe(path, root)
        keys = _keys(desc[0], desc[1], path.stem) if desc else None
        if keys is None:
            cat.unmatched_videos.append(str(path))
            continue
        for k in keys[1:]:
            uf.union(keys[0], k)
        found.append((path, *desc, keys))
    for path, kind, method, comp, keys in found:
        ids = [k[2:] for k in keys if k.startswith("yt")]
        split = split_of.get(ids[0]) if ids else None
        name = "original" if method == "youtube" else method
        cat.candidates.append(Candidate(path=path, video_id=f"ffpp-{name}-{comp}-{path.stem}",
                                        label_raw="real" if kind == "original" else "fake",
                                        group_id=f"ffpp-{uf.find(keys[0])}", split=split))
    return cat
