"""Corpora for the reliability tests: many distinct videos made cheaply, a labels CSV, lake checks.

Encoding is the slow part of making test videos, so :func:`make_corpus` encodes a few base videos
and remuxes each into several files that differ by a container tag (distinct bytes, so distinct
content hashes and video ids; no re-encoding).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import av
import numpy as np
import polars as pl

from fvcflow.stages.manifest import KEY, WRITTEN, Manifest
from fvcflow.store import Lake
from tests.media import synthetic_frames, write_video


def moving_frames(n: int, height: int, width: int, *, seed: int = 0) -> np.ndarray:
    """``n`` frames panning over a few textured ones (cheap to make, real motion to encode)."""
    base = synthetic_frames(8, height, width, seed=seed)
    return np.stack([np.roll(base[k % 8], 3 * k + seed, axis=1) for k in range(n)])


def remux_tagged(src: Path, dst: Path, tag: str) -> Path:
    """Copy ``src``'s video packets into ``dst`` with a container comment ``tag`` (new bytes, same frames)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        out.metadata["comment"] = tag
        stream = inp.streams.video[0]
        copy = out.add_stream_from_template(stream)
        for packet in inp.demux(stream):
            if packet.size:
                packet.stream = copy
                out.mux(packet)
    return dst


def make_corpus(root: Path, *, bases: int = 4, copies: int = 8, frames: int = 250,
                size: tuple[int, int] = (320, 240)) -> list[str]:
    """``bases * copies`` distinct mp4 files under ``root`` and ``root/labels.csv``; their names."""
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for b in range(bases):
        base = write_video(root / ".base" / f"b{b}.mp4",
                           frames=moving_frames(frames, size[1], size[0], seed=b))
        for c in range(copies):
            name = f"v{b}_{c:02d}.mp4"
            remux_tagged(base, root / name, f"copy {b}-{c}")
            names.append(name)
    write_labels(root, [(n, "fake" if i % 2 else "real", f"g{i % 6}") for i, n in enumerate(names)])
    return names


def write_labels(root: Path, rows: list[tuple[str, str, str]]) -> Path:
    path = root / "labels.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "group"])
        w.writerows(rows)
    return path


def cached_results(home: Path, stage: str = "features") -> dict[str, int]:
    """Every cached result of ``stage`` (a row of its manifest) -> when it was written (ns)."""
    rows = Manifest(Lake.at(home), stage).read().rows
    return dict(zip(rows[KEY].to_list(), rows[WRITTEN].to_list())) if rows.height else {}


def manifest_files(home: Path, stage: str = "features") -> list[Path]:
    """The published files of ``stage``'s manifest (shards and parts), sorted."""
    return Manifest(Lake.at(home), stage).files()


def assert_lake_sound(home: Path) -> None:
    """No temporary file left anywhere in the work dir, and every Parquet file reads whole."""
    leftovers = [p for p in Path(home).rglob("*.tmp")]
    assert not leftovers, f"temporary files left: {leftovers}"
    for p in Path(home).rglob("*.parquet"):
        pl.read_parquet(p)


def feature_table(path: Path) -> pl.DataFrame:
    """A stage table without its timing columns, rows in a fixed order."""
    return pl.read_parquet(path).drop("seconds", strict=False).sort("video_id")


def rss_tree(pid: int) -> int:
    """Resident bytes of a process (for samplers)."""
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
