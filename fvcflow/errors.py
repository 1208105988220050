"""Errors a user can cause. The CLI prints these as one line, without a traceback."""

from __future__ import annotations

from pathlib import Path


class FvcError(Exception):
    """A mistake in the user's input or setup, with a message that says what to fix."""


class ConfigError(FvcError):
    """A setting has a bad value; the message names the setting."""


class VideoError(FvcError):
    """A file is not a usable video. ``path`` names the file, ``reason`` says why."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keeps path/reason across process boundaries (Dask workers)
        return (type(self), (self.path, self.reason))


class ArchiveError(FvcError):
    """A ZIP archive was refused (bad password, unsafe entry, zip bomb, truncated ...)."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


class WorkerDied(FvcError):
    """The Dask worker running a batch of several videos died (a crash, ``os._exit``, the OOM
    killer): the batch is run again one video per task, so that only the video to blame fails."""

    def __init__(self, stage: str, video_ids: list[str]):
        self.stage = stage
        self.video_ids = list(video_ids)
        super().__init__(f"{stage}: the worker running {len(self.video_ids)} videos died; "
                         "running them one video per task")

    def __reduce__(self):
        return (type(self), (self.stage, self.video_ids))


class DiskFullError(FvcError):
    """A write ran out of space (``ENOSPC``/``EDQUOT``). ``path`` names the file being written.

    Nothing half-written is published: the write goes to a temporary file that is removed.
    """

    def __init__(self, path: str | Path, detail: str | None = None):
        self.path = str(path)
        self.detail = detail or ("free space there and rerun the same command: "
                                 "finished work is kept, only what is missing is computed")
        super().__init__(f"no space left on {self.path}: {self.detail}")

    def __reduce__(self):
        return (type(self), (self.path, self.detail))


_DISK_FULL_ERRNOS = {28, 122}   # ENOSPC, EDQUOT (Linux)
_DISK_FULL_TEXT = ("no space left on device", "os error 28", "database or disk is full",
                   "disk quota exceeded")


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or an exception it was raised from) means the disk is full.

    Libraries report it differently: ``OSError`` with ``errno`` 28, Polars' ``ComputeError``
    ("os error 28"), SQLite's "database or disk is full", FFmpeg's errno 28.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if getattr(exc, "errno", None) in _DISK_FULL_ERRNOS:
            return True
        if any(t in str(exc).lower() for t in _DISK_FULL_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class DeviceError(FvcError):
    """A deep model's device failed it: out of memory or a CUDA fault. Retrying the same settings
    cannot pass, so the task fails at once; the message names the model, device and batch size."""


class DivergedError(FvcError):
    """A deep model's loss stayed non-finite (NaN or inf) for too many steps."""
