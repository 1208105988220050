"""The Fake Video Corpus metadata: its three CSVs and the video ids inside its URLs.

``FVC.csv`` (LF) and ``FVC_dup.csv`` (CRLF) have the header ``cascade_id,video_url,label``;
``FVC_text_queries.csv`` has five more columns, some rows with unquoted commas. Only the first
three fields are used, so commas further along a row cannot shift them.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from fvcflow.errors import FvcError

#: The metadata files in priority order: a video listed in several takes its first row.
CSV_NAMES = ("FVC.csv", "FVC_dup.csv", "FVC_text_queries.csv")
_CASCADE = re.compile(r"^[fr]\d+$")
_YT_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
_DIGITS = re.compile(r"^\d{5,}$")


@dataclass(frozen=True)
class FvcRow:
    """One metadata row: where it came from and what it says."""

    file: str
    line: int
    cascade_id: str
    url: str
    label_raw: str
    platform: str | None
    video_id: str | None  # the platform's id parsed from the URL


def _youtube_id(parts) -> str | None:
    query = parse_qs(parts.query)
    if "v" in query and _YT_ID.match(query["v"][0]):
        return query["v"][0]
    segs = [s for s in parts.path.split("/") if s]
    host = parts.hostname or ""
    if host.endswith("youtu.be") and segs and _YT_ID.match(segs[0]):
        return segs[0]
    for i, seg in enumerate(segs[:-1]):
        if seg in ("shorts", "embed", "v", "live") and _YT_ID.match(segs[i + 1]):
            return segs[i + 1]
    return None


def _facebook_id(parts) -> str | None:
    query = parse_qs(parts.query)
    for key in ("v", "video_id", "story_fbid"):
        if key in query and _DIGITS.match(query[key][0]):
            return query[key][0]
    segs = [s for s in parts.path.split("/") if s]
    if "videos" in segs:  # /videos/<id>, /<page>/videos/<slug>/<id>, /videos/vb.<page>/<id>
        after = segs[segs.index("videos") + 1:]
        ids = [s for s in after if _DIGITS.match(s)]
        if ids:
            return ids[-1]
    ids = [s for s in segs if _DIGITS.match(s)]
    return ids[-1] if ids else None


def _twitter_id(parts) -> str | None:
    segs = [s for s in parts.path.split("/") if s]
    for i, seg in enumerate(segs[:-1]):
        if seg in ("status", "statuses") and segs[i + 1].isdigit():
            return segs[i + 1]
    return None


def parse_video_url(url: str) -> tuple[str | None, str | None]:
    """``(platform, video id)`` of a YouTube, Facebook or Twitter/X URL; ``(None, None)`` otherwise.

    Examples
    --------
    >>> parse_video_url("https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=3")
    ('youtube', 'dQw4w9WgXcQ')
    >>> parse_video_url("https://www.facebook.com/SomePage/videos/a-title/1234567890123/")
    ('facebook', '1234567890123')
    >>> parse_video_url("https://twitter.com/someone/status/987654321098765432/video/1")
    ('twitter', '987654321098765432')
    """
    url = url.strip()
    if "://" not in url:
        url = "https://" + url
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host.endswith(("youtube.com", "youtu.be", "youtube-nocookie.com")):
        return "youtube", _youtube_id(parts)
    if host.endswith(("facebook.com", "fb.watch", "fb.com")):
        return "facebook", _facebook_id(parts)
    if host.endswith(("twitter.com", "x.com")):
        return "twitter", _twitter_id(parts)
    return None, None


def read_fvc_csv(path: Path) -> tuple[list[FvcRow], list[str]]:
    """Rows of one FVC metadata CSV (LF or CRLF), and the lines that could not be read.

    Raises :class:`FvcError` when the header is not ``cascade_id,video_url,label,...``.

    Examples
    --------
    >>> rows, bad = read_fvc_csv(Path("Metadata/FVC_dup.csv"))  # doctest: +SKIP
    >>> rows[0].cascade_id, rows[0].label_raw, rows[0].video_id  # doctest: +SKIP
    ('f1', 'fake', 'dQw4w9WgXcQ')
    """
    rows, bad = [], []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header[:3]] != ["cascade_id", "video_url", "label"]:
            raise FvcError(f"{path}: expected a header starting with cascade_id,video_url,label, found "
                           f"{header!r}")
        for fields in reader:
            line = reader.line_num
            if not any(f.strip() for f in fields):
                continue
            cascade, url, label = (fields + ["", "", ""])[:3]
            cascade, url, label = cascade.strip(), url.strip(), label.strip().lower()
            if not _CASCADE.match(cascade) or not url or not label:
                bad.append(f"{path.name}:{line}: not cascade_id,video_url,label: {','.join(fields[:3])!r}")
                continue
            platform, vid = parse_video_url(url)
            if vid is None:
                bad.append(f"{path.name}:{line}: no video id in URL {url!r}")
            rows.append(FvcRow(path.name, line, cascade, url, label, platform, vid))
    return rows, bad


def find_csvs(*roots: Path) -> dict[str, Path]:
    """The metadata CSVs under ``roots`` (any depth, first root first) by name.

    Raises :class:`FvcError` when no FVC.csv is found.

    Examples
    --------
    >>> sorted(find_csvs(Path("fvc-data/raw/fvc")))  # doctest: +SKIP
    ['FVC.csv', 'FVC_dup.csv', 'FVC_text_queries.csv']
    """
    found: dict[str, Path] = {}
    for name in CSV_NAMES:
        for root in roots:
            hits = sorted(p for p in root.rglob(name) if not p.relative_to(root).as_posix().startswith("."))
            if hits:
                found[name] = hits[0]
                break
    if "FVC.csv" not in found:
        raise FvcError(f"{roots[0]}: no FVC.csv found (add Metadata.zip, or the CSVs, next to the archives)")
    return found
