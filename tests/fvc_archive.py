"""A mini Fake Video Corpus as its users receive it: ZipCrypto archives and the three CSVs.

``FVC1.zip`` (``FVC1/<platform>/<id>/video.*``), ``FVC2.zip``/``FVC3.zip`` (``FVCn/<id>/video.*``)
and ``Metadata.zip`` (``FVC.csv`` with LF line ends, ``FVC_dup.csv`` with CRLF,
``FVC_text_queries.csv`` with unquoted commas), all made by ``zip -P`` (ZipCrypto). Real tiny
videos (48x64, 10 frames) from :mod:`tests.media`; the extra labels (uncertain, debunked,
parody), a video with no row and rows with no video are all there.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.media import write_video

PASSWORD = "Zq7-fvc-test-pw-91x"

# (archive path of the video folder, platform, id, suffix, csv, cascade, url, label)
VIDEOS = [
    ("FVC1/youtube", "youtube", "dQw4w9WgXcQ", ".mp4", "FVC.csv", "f1",
     "https://www.youtube.com/watch?v=dQw4w9WgXcQ&feature=share", "fake"),
    ("FVC1/facebook", "facebook", "1234567890123", ".mkv", "FVC.csv", "r1",
     "https://www.facebook.com/SomePage/videos/a-long-title/1234567890123/", "real"),
    ("FVC1/twitter", "twitter", "1100000000000000001", ".webm", "FVC.csv", "r2",
     "https://twitter.com/someone/status/1100000000000000001", "real"),
    ("FVC2", "youtube", "yt_Shorts01", ".mp4", "FVC_dup.csv", "f1",
     "https://youtube.com/shorts/yt_Shorts01", "fake"),
    ("FVC2", "facebook", "2234567890123", ".mp4", "FVC_dup.csv", "f1",
     "https://www.facebook.com/watch/?v=2234567890123", "uncertain"),
    ("FVC3", "youtube", "youtuBe-id1", ".webm", "FVC_dup.csv", "r1", "https://youtu.be/youtuBe-id1",
     "debunked"),
    ("FVC3", "facebook", "3234567890123", ".mp4", "FVC_dup.csv", "r2",
     "https://m.facebook.com/video.php?v=3234567890123&ref=x", "parody"),
]
#: A video in the archives that no CSV row names.
UNMATCHED_VIDEO = ("FVC2", "NoRowVid001", ".mp4")
#: Rows whose video is in no archive: (csv, cascade, url, label).
UNMATCHED_ROWS = [
    ("FVC.csv", "f2", "https://www.youtube.com/watch?v=MissingVid1", "fake"),
    ("FVC_dup.csv", "f2", "https://www.facebook.com/videos/4234567890123/", "fake"),
    ("FVC_text_queries.csv", "r3", "https://x.com/someone/status/1200000000000000002", "real"),
]


@dataclass
class MiniFvc:
    archives: Path  # folder with FVC1.zip, FVC2.zip, FVC3.zip, Metadata.zip
    password: str
    expected: dict[str, dict] = field(default_factory=dict)  # video_id -> expected index values
    unmatched_video: str = ""  # the id of the video no row names
    unmatched_urls: list[str] = field(default_factory=list)


def _csvs(meta: Path) -> None:
    meta.mkdir(parents=True, exist_ok=True)
    rows = {"FVC.csv": [], "FVC_dup.csv": [], "FVC_text_queries.csv": []}
    for _, _, _, _, csv_name, cascade, url, label in VIDEOS:
        rows[csv_name].append(f"{cascade},{url},{label}")
    for csv_name, cascade, url, label in UNMATCHED_ROWS:
        rows[csv_name].append(f"{cascade},{url},{label}")
    head = "cascade_id,video_url,label"
    (meta / "FVC.csv").write_bytes(("\n".join([head, *rows["FVC.csv"]]) + "\n").encode())
    (meta / "FVC_dup.csv").write_bytes(("\r\n".join([head, *rows["FVC_dup.csv"]]) + "\r\n").encode())
    tq_head = head + ",event_title,french,spanish,russian,arabic"
    tq = [tq_head,
          # unquoted commas inside the event title: more fields than the header
          f"f1,{VIDEOS[0][6]},fake,Pope, endorses, a candidate,Le pape,El papa,Папа,البابا",
          f"r1,{VIDEOS[1][6]},real,\"Storm, in the city\",Tempête,Tormenta,Шторм,عاصفة",
          *[f"{r},Event, with commas,fr,es,ru,ar" for r in rows["FVC_text_queries.csv"]]]
    (meta / "FVC_text_queries.csv").write_bytes(("\n".join(tq) + "\n").encode("utf-8"))


def _zip(stage: Path, out: Path, folder: str, password: str) -> None:
    subprocess.run(["zip", "-q", "-r", "-P", password, str(out), folder], cwd=stage, check=True)


def build_mini_fvc(root: Path, password: str = PASSWORD) -> MiniFvc:
    """Write the mini corpus's staging tree and its four ZipCrypto archives under ``root``.

    Returns where the archives are and what the index must hold after ``fvc ingest fvc``.
    """
    stage, archives = root / "stage", root / "archives"
    archives.mkdir(parents=True, exist_ok=True)
    fixture = MiniFvc(archives=archives, password=password)
    for seed, (folder, platform, vid, suffix, _, cascade, url, label) in enumerate(VIDEOS):
        write_video(stage / folder / vid / f"video{suffix}", n=10, width=64, height=48, seed=seed)
        fixture.expected[f"fvc-{platform}-{vid}"] = {
            "label_raw": label, "label": {"real": 0, "fake": 1}.get(label), "group_id": cascade,
            "cascade_id": cascade, "platform": platform}
    folder, vid, suffix = UNMATCHED_VIDEO
    write_video(stage / folder / vid / f"video{suffix}", n=10, width=64, height=48, seed=99)
    fixture.unmatched_video = vid
    fixture.unmatched_urls = [u for _, _, u, _ in UNMATCHED_ROWS]
    _csvs(stage / "Metadata")
    for name in ("FVC1", "FVC2", "FVC3", "Metadata"):
        _zip(stage, archives / f"{name}.zip", name, password)
    return fixture
