"""A tiny labelled folder corpus of real encoded videos, in the layout `fvc ingest folder` reads."""

from __future__ import annotations

import csv
from pathlib import Path

from tests.media import write_video

#: (relative path, label, group, width, height, frames)
TINY = [
    ("g1/real_a.mp4", "real", "g1", 64, 48, 12),
    ("g1/fake_a.mp4", "fake", "g1", 64, 48, 12),
    ("g2/real_b.webm", "real", "g2", 65, 49, 10),
    ("g2/fake_b.webm", "fake", "g2", 65, 49, 10),
    ("g3/real_c.avi", "real", "g3", 48, 64, 12),
    ("g3/fake_c.mp4", "fake", "g3", 320, 240, 8),
    ("g5/real_d.mp4", "real", "g5", 64, 64, 10),
    ("g5/fake_d.avi", "fake", "g5", 64, 64, 10),
]


def make_tiny_corpus(root: Path, *, with_bad: bool = True) -> Path:
    """Write the videos and ``labels.csv``; a text file posing as a video when ``with_bad``."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (rel, label, group, w, h, n) in enumerate(TINY):
        write_video(root / rel, n=n, width=w, height=h, seed=i, fps=10)
        rows.append((rel, label, group))
    if with_bad:
        (root / "g4").mkdir(exist_ok=True)
        (root / "g4" / "notes.mp4").write_text("this is not a video\n")
        rows.append(("g4/notes.mp4", "fake", "g4"))
    with open(root / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "group"])
        w.writerows(rows)
    return root
