"""Real faults for the reliability tests: a small filesystem that can be filled, and freed again.

``small_disk`` mounts a tmpfs of a few MiB (the tests run as root in CI and here); where the
machine cannot mount one the test is skipped, with the reason.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest


@contextlib.contextmanager
def small_disk(path: Path, size: str = "16m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` for the block's length."""
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs here (needs root or CAP_SYS_ADMIN): "
                    f"{(proc.stderr or proc.stdout).strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path, *, leave: int = 0) -> Path:
    """Write a filler file on ``disk`` until at most ``leave`` bytes stay free; the filler's path."""
    filler = disk / f".filler-{len(list(disk.glob('.filler-*')))}"
    block = b"\0" * 65536
    with open(filler, "wb", buffering=0) as fh:
        while True:
            st = os.statvfs(disk)
            room = st.f_bavail * st.f_frsize - leave
            if room <= 0:
                break
            try:
                fh.write(block[:min(len(block), room)])
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    return filler


def free(disk: Path) -> None:
    """Remove every filler file :func:`fill` wrote."""
    for p in disk.glob(".filler-*"):
        p.unlink()


def temporaries(root: Path) -> list[Path]:
    """Temporary and partial files under ``root`` (the store's ``*.tmp``, the video writer's
    ``.name.partial-*``, the augment stage's ``.augment-*`` folders)."""
    return [p for p in Path(root).rglob("*") if p.name.endswith(".tmp") or ".partial-" in p.name
            or p.name.startswith(".augment-")]
