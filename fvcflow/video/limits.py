"""The bounds on what one video may cost: pixels, frames, duration, decode time, chunk memory, formats.

The readers consult the bounds in force (:func:`current`): the safe defaults (:data:`DEFAULT`),
or those a caller sets around one video with :func:`bounded` (the stage runner and ``fvc predict``
pass ``Settings.limits``). ``bounded`` also starts the video's watchdog: every packet read checks
the clock, and a video read for longer than ``decode_seconds`` stops with a
:class:`~fvcflow.errors.VideoError` naming the bound. Every bound crossed is a VideoError whose
reason names the setting (``limits.<name>``), so it becomes one failure row.

>>> try:
...     check_size("clip.mp4", 16384, 16384, DEFAULT)
... except VideoError as exc:
...     print(exc.reason)
over the pixel bound: 16384x16384 frames (268435456 pixels) exceed limits.max_pixels = 35389440
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from dataclasses import dataclass
from typing import Iterator

from fvcflow.errors import VideoError

#: FFmpeg demuxers a video may be read with (names as FFmpeg gives them; the mov demuxer's aliases
#: mp4, m4a, 3gp ...): no playlist (hls, dash), concat list, image sequence or network demuxer. The
#: audio ones are there so that an audio file is named as such ("no video stream").
FORMATS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "avi", "mpegts", "mpeg",
           "flv", "asf", "ogg", "ivf", "mxf", "nut", "h264", "hevc", "m4v", "yuv4mpegpipe",
           "wav", "mp3", "flac", "aac")


@dataclass(frozen=True)
class Limits:
    """What one video may cost. ``decode_seconds`` None: no watchdog; ``chunk_mb`` None: no cap."""

    max_pixels: int = 8192 * 4320             # 8K (DCI): pixels per frame
    max_frames: int = 1_000_000               # about 4.6 hours at 60 fps
    max_duration_s: float = 6 * 3600.0
    decode_seconds: float | None = 3600.0     # one video's reading, all of it
    chunk_mb: float | None = 256.0            # RGB frames held at once by iter_rgb
    formats: tuple[str, ...] = FORMATS


DEFAULT = Limits()


@dataclass(frozen=True)
class _State:
    limits: Limits
    deadline: float | None = None             # time.monotonic() past which reading stops


_STATE: contextvars.ContextVar[_State] = contextvars.ContextVar("fvc_video_limits", default=_State(DEFAULT))


class BoundExceeded(Exception):
    """A bound crossed while a container is open; ``open_video`` makes it a VideoError of the file."""


def current() -> Limits:
    """The bounds in force in this thread (the defaults unless :func:`bounded` set others)."""
    return _STATE.get().limits


@contextlib.contextmanager
def bounded(limits: Limits | None = None, *, watchdog: bool = True) -> Iterator[Limits]:
    """Read videos within ``limits`` (default: those in force); with ``watchdog``, the clock of
    ``limits.decode_seconds`` starts now and covers everything read inside the block."""
    limits = limits or current()
    seconds = limits.decode_seconds if watchdog else None
    deadline = None if seconds is None else time.monotonic() + seconds
    token = _STATE.set(_State(limits, deadline))
    try:
        yield limits
    finally:
        _STATE.reset(token)


def watchdog() -> float | None:
    """The deadline (``time.monotonic()``) of the video being read, None when there is none."""
    return _STATE.get().deadline


def over_time() -> BoundExceeded:
    seconds = current().decode_seconds
    return BoundExceeded(f"over the decode time bound: still reading after {seconds:g} s "
                         f"(limits.decode_seconds = {seconds:g})")


def check_size(path, width: int, height: int, limits: Limits) -> None:
    """VideoError when a ``width`` x ``height`` frame has more pixels than ``limits.max_pixels``."""
    pixels = int(width) * int(height)
    if pixels > limits.max_pixels:
        raise VideoError(path, f"over the pixel bound: {width}x{height} frames ({pixels} pixels) exceed "
                               f"limits.max_pixels = {limits.max_pixels}")


def check_length(path, n_frames: int, duration: float, limits: Limits) -> None:
    """VideoError when a video has more frames or lasts longer than its bounds."""
    if n_frames > limits.max_frames:
        raise VideoError(path, f"over the frame bound: more than {limits.max_frames} frames "
                               f"(limits.max_frames = {limits.max_frames})")
    if duration > limits.max_duration_s:
        raise VideoError(path, f"over the duration bound: {duration:.0f} s exceeds "
                               f"limits.max_duration_s = {limits.max_duration_s:g}")


def chunk_frames(chunk: int, height: int, width: int, max_chunk_mb: float | None = 256) -> int:
    """Frames per chunk: ``chunk``, capped so that one RGB chunk stays within ``max_chunk_mb`` MiB.

    >>> chunk_frames(250, 256, 256), chunk_frames(250, 1080, 1920), chunk_frames(250, 4320, 7680)
    (250, 43, 2)
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if max_chunk_mb is None:
        return chunk
    return max(1, min(chunk, int(max_chunk_mb * 2**20 // (height * width * 3))))


__all__ = ["DEFAULT", "FORMATS", "BoundExceeded", "Limits", "bounded", "check_length", "check_size",
           "chunk_frames", "current", "over_time", "watchdog"]
