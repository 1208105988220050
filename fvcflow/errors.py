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
