"""Open a video safely and describe it: ``probe`` and the error mapping the readers share.

Every failure to read a file becomes a :class:`fvcflow.errors.VideoError` whose reason a person
understands; no ``av.error.*`` or ``OSError`` leaves this package.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from fvcflow.errors import VideoError
from fvcflow.video import limits as bounds

# First bytes of the containers we can name when FFmpeg refuses the file (offset, magic, name).
_MAGIC = (
    (4, (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"), "mp4/mov"),
    (0, (b"\x1aE\xdf\xa3",), "matroska/webm"),
    (8, (b"AVI ",), "avi"),
)
# First bytes of still images (offset, magic, name): FFmpeg reads them with image demuxers, off the list.
_IMAGES = ((0, b"\x89PNG", "png"), (0, b"\xff\xd8\xff", "jpeg"), (0, b"GIF8", "gif"), (0, b"BM", "bmp"),
           (8, b"WEBP", "webp"), (0, b"II*\x00", "tiff"), (0, b"MM\x00*", "tiff"))
# First bytes of playlists and lists of other files (never opened: they name files or URLs to read).
_PLAYLISTS = ((b"#EXTM3U", "an HLS playlist (m3u8)"), (b"ffconcat", "an FFmpeg concat list"),
              (b"<?xml", "an XML document (a DASH manifest?)"), (b"<MPD", "a DASH manifest"))


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about a video, without decoding more than its first frame.

    ``n_frames`` counts the complete packets of the video stream (the frames that are really in
    the file); ``keyframes`` are the frame indices (presentation order, from 0) of its key frames
    and ``keyframe_pts`` their timestamps in the stream's time base (used for exact seeking).
    ``rotation`` is the clockwise rotation a player applies for display (0, 90, 180 or 270), as
    in the legacy ``rotate`` tag; it is reported, never applied to frames.
    """

    path: str
    container: str
    codec: str
    pix_fmt: str
    width: int
    height: int
    rotation: int
    fps: float
    duration: float
    n_frames: int
    bit_rate: int | None
    keyframes: tuple[int, ...]
    size_bytes: int
    keyframe_pts: tuple[int, ...] = field(default=(), repr=False)

    @property
    def gop(self) -> float:
        """Mean distance in frames between key frames; the frame count with fewer than two."""
        if len(self.keyframes) < 2:
            return float(self.n_frames)
        return float(np.mean(np.diff(self.keyframes)))

    def as_row(self) -> dict:
        """The index columns of ``index/videos.parquet`` (docs/ARCHITECTURE.md), without key frames.

        Examples
        --------
        >>> probe("clip.mp4").as_row()["gop"]  # doctest: +SKIP
        12.0
        """
        return {
            "codec": self.codec, "pix_fmt": self.pix_fmt, "width": self.width,
            "height": self.height, "fps": self.fps, "duration": self.duration,
            "n_frames": self.n_frames, "bit_rate": self.bit_rate, "rotation": self.rotation,
            "size_bytes": self.size_bytes, "container": self.container, "gop": self.gop,
        }


def probe(path: str | os.PathLike) -> VideoInfo:
    """Describe a video file in one demux pass (packets are read, only the first is decoded).

    Parameters
    ----------
    path : str or path-like
        The video file.

    Returns
    -------
    VideoInfo
        Container, codec, geometry, rotation, frame rate, duration, exact frame count, stream
        bit rate (None when the container has none), key-frame positions and file size.

    Raises
    ------
    VideoError
        The file is missing, unreadable, empty, not a video, truncated or has no decodable frame.

    Examples
    --------
    >>> info = probe("clip.mp4")  # doctest: +SKIP
    >>> info.codec, info.width, info.height, info.n_frames  # doctest: +SKIP
    ('h264', 640, 360, 250)
    """
    limits = bounds.current()
    with open_video(path) as (container, stream):
        scan = _scan(container, stream, limits.max_frames)
        if scan.n_frames == 0:
            raise VideoError(path, "no decodable frames (no complete key frame in the video stream)")
        first = scan.first_frame
        if first is None:
            raise VideoError(path, "no decodable frames")
        bounds.check_size(path, first.width, first.height, limits)
        fps = _fps(stream, scan)
        duration = _duration(stream, container, scan, fps)
        bounds.check_length(path, scan.n_frames, duration, limits)
        return VideoInfo(
            path=os.fspath(path),
            container=_container_name(container.format.name, path),
            codec=codec_name(stream.codec_context),
            pix_fmt=first.format.name,
            width=first.width,
            height=first.height,
            rotation=_rotation(first, stream),
            fps=fps,
            duration=duration,
            n_frames=scan.n_frames,
            bit_rate=stream.bit_rate or None,
            keyframes=scan.keyframes,
            size_bytes=os.path.getsize(path),
            keyframe_pts=scan.keyframe_pts,
        )


def codec_name(codec_context) -> str:
    """The codec's canonical FFmpeg name (``h264``, ``hevc``, ``vp9``, ``av1``, ``mpeg4`` ...), the
    same whichever decoder opened the stream (``libdav1d`` and ``libaom-av1`` both give ``av1``)."""
    return codec_context.codec.canonical_name


@contextlib.contextmanager
def open_video(path: str | os.PathLike) -> Iterator[tuple[av.container.InputContainer, av.VideoStream]]:
    """Open ``path`` and yield ``(container, video stream)``; every failure is a VideoError.

    FFmpeg errors raised inside the ``with`` block are converted too (as "truncated or corrupt").
    Within the bounds in force (:mod:`fvcflow.video.limits`): a local file only (FFmpeg gets an
    absolute path and may open nothing but files: no protocol, URL or playlist), read with a
    demuxer of ``limits.formats``; a frame size over ``limits.max_pixels`` or a declared duration
    over ``limits.max_duration_s`` is refused before a frame is decoded.
    """
    limits = bounds.current()
    head = _read_head(path)
    for magic, what in _PLAYLISTS:
        if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(magic):
            raise VideoError(path, f"container format not allowed: {what}, not a video file "
                                   f"(limits.formats)")
    options = {"format_whitelist": ",".join(limits.formats), "protocol_whitelist": "file"}
    try:
        container = av.open(os.path.abspath(os.fspath(path)), metadata_errors="replace",
                            container_options=options)
    except av.error.FFmpegError as exc:
        raise _open_error(path, head, exc) from None
    except OSError as exc:
        raise VideoError(path, f"cannot read file ({exc.strerror or exc})") from None
    try:
        stream = _video_stream(container, path)
        ctx = stream.codec_context
        if not (ctx.width and ctx.height):
            _check_refused_size(path, options, limits)
        bounds.check_size(path, ctx.width, ctx.height, limits)
        declared = container.duration / av.time_base if container.duration else 0.0
        if declared > limits.max_duration_s:
            bounds.check_length(path, 0, declared, limits)
        yield container, stream
    except bounds.BoundExceeded as exc:
        raise VideoError(path, str(exc)) from None
    except OSError as exc:                               # av.error.* I/O errors are OSErrors too
        raise VideoError(path, f"cannot read file ({exc.strerror or exc})") from None
    except av.error.FFmpegError as exc:
        raise VideoError(path, f"truncated or corrupt: {_describe(exc)}") from None
    finally:
        container.close()


_INVALID_SIZE = re.compile(r"Picture size (\d+)x(\d+) is invalid")


def _check_refused_size(path, options: dict, limits: bounds.Limits) -> None:
    """A stream whose frame size FFmpeg dropped as invalid (over what its decoders take, about
    16000x16000 pixels: it then reports 0x0) is over the pixel bound too: say so, with the size
    the file declares. FFmpeg says it only in its log, read here in this thread for one more open
    of the file (this case only; the open decodes nothing, as the decoder refuses the size)."""
    previous = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture(local=True) as logs:
            with contextlib.suppress(av.error.FFmpegError, OSError):
                av.open(os.path.abspath(os.fspath(path)), metadata_errors="replace",
                        container_options=options).close()
    finally:
        av.logging.set_level(previous)
    for _, _, message in logs:
        found = _INVALID_SIZE.search(message)
        if found:
            width, height = map(int, found.groups())
            bounds.check_size(path, width, height, limits)
            raise VideoError(path, f"over the pixel bound: {width}x{height} frames are more than FFmpeg "
                                   f"decodes (limits.max_pixels = {limits.max_pixels})")


def _read_head(path) -> bytes:
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except FileNotFoundError:
        raise VideoError(path, "file not found") from None
    except PermissionError:
        raise VideoError(path, "permission denied") from None
    except IsADirectoryError:
        raise VideoError(path, "not a file (a directory)") from None
    except OSError as exc:
        raise VideoError(path, f"cannot read file ({exc.strerror or exc})") from None
    if not head:
        raise VideoError(path, "empty file (0 bytes)")
    return head


def _open_error(path, head: bytes, exc: av.error.FFmpegError) -> VideoError:
    if isinstance(exc, PermissionError):
        return VideoError(path, "permission denied")
    if getattr(exc, "errno", None) == errno.EINVAL:   # refused: a format off the allow-list
        image = next((name for off, magic, name in _IMAGES if head[off:off + len(magic)] == magic), None)
        if image:
            return VideoError(path, f"not a video (a still image, {image})")
        refused = _not_allowed(exc) or "a format off the allow-list"
        return VideoError(path, f"container format not allowed: FFmpeg reads it as {refused} "
                                f"(limits.formats: {', '.join(bounds.current().formats)})")
    kind = next((name for off, magics, name in _MAGIC if head[off:off + 4] in magics), None)
    if kind is None:
        return VideoError(path, f"not a video container (FFmpeg: {_describe(exc)})")
    if kind == "mp4/mov":
        return VideoError(path, "truncated or corrupt: mp4/mov without a readable index "
                                f"(moov atom missing; interrupted download?) (FFmpeg: {_describe(exc)})")
    return VideoError(path, f"truncated or corrupt: unreadable {kind} header (FFmpeg: {_describe(exc)})")


def _not_allowed(exc: av.error.FFmpegError) -> str | None:
    """The demuxer's name when FFmpeg refused the file for a format off the allow-list."""
    line = exc.log[2] if getattr(exc, "log", None) else ""
    if "not on whitelist" in line:
        return "'" + line.split("Format ", 1)[-1].split(" not on whitelist", 1)[0].strip() + "'"
    return None


def _describe(exc: av.error.FFmpegError) -> str:
    text = exc.strerror or type(exc).__name__
    if getattr(exc, "log", None):
        text += f": {exc.log[2].strip()}"
    return text


def _video_stream(container, path) -> av.VideoStream:
    name = container.format.name
    if name == "image2" or name.endswith("_pipe"):
        raise VideoError(path, f"not a video (a still image, FFmpeg format '{name}')")
    videos = [s for s in container.streams.video
              if not s.disposition & av.stream.Disposition.attached_pic]
    if not videos and container.streams.audio:
        raise VideoError(path, "no video stream (audio only?)")
    if not videos:
        raise VideoError(path, f"not a video container (FFmpeg reads it as "
                               f"'{container.format.name}', without audio or video)")
    if videos[0].codec_context is None:
        raise VideoError(path, "unsupported video codec (no decoder for it in this FFmpeg build)")
    return videos[0]


@dataclass
class _Scan:
    n_frames: int
    keyframes: tuple[int, ...]
    keyframe_pts: tuple[int, ...]
    pts_span: int | None          # last pts + its duration - first pts (stream time base)
    last_duration: int            # 0 when the container gives packets no duration
    first_frame: av.VideoFrame | None


def frame_packets(container, stream) -> Iterator[av.Packet]:
    """The packets to decode, from the current position: complete ones (not empty, not cut
    short) from the first key packet on (decoders drop or refuse what comes before it).

    Packets marked for discard (before the start of an mp4 edit list) are among them: they are
    decoded as references, and the decoder drops their frames; they are not frames.
    """
    started = False
    for packet in _demux_until_error(container, stream):
        if packet.size > 0 and not packet.is_corrupt:
            started = started or packet.is_keyframe
            if started:
                yield packet


def _scan(container, stream, max_frames: int) -> _Scan:
    """One demux pass: count frame packets, note key packets and timestamps, decode frame 0;
    stops past ``max_frames`` frames (BoundExceeded)."""
    pts, durations, keys = [], [], []
    first = None
    for packet in frame_packets(container, stream):
        if len(pts) >= max_frames:
            raise bounds.BoundExceeded(f"over the frame bound: more than {max_frames} frames "
                                       f"(limits.max_frames = {max_frames})")
        if first is None:
            first = _decode_first(stream, packet)
        if packet.is_discard:
            continue
        pts.append(packet.pts)
        durations.append(packet.duration or 0)
        keys.append(packet.is_keyframe)
    if first is None and pts:
        first = _decode_first(stream, None)
    return _keyframe_scan(pts, durations, keys, first)


def _demux_until_error(container, stream) -> Iterator[av.Packet]:
    """Packets of ``stream``; a read error ends the stream (what follows is not in the file).
    The watchdog (:func:`fvcflow.video.limits.bounded`) is checked at every packet."""
    packets = container.demux(stream)
    deadline = bounds.watchdog()
    clock = time.monotonic
    while True:
        if deadline is not None and clock() > deadline:
            raise bounds.over_time()
        try:
            packet = next(packets)
        except (StopIteration, av.error.InvalidDataError, av.error.EOFError):
            return
        yield packet


def _decode_first(stream, packet) -> av.VideoFrame | None:
    try:
        frames = stream.decode(packet)
    except av.error.FFmpegError:
        return None
    return frames[0] if frames else None


def _keyframe_scan(pts, durations, keys, first) -> _Scan:
    n = len(pts)
    keys = np.asarray(keys, bool)
    if n and all(p is not None for p in pts):
        pts_arr = np.asarray(pts, np.int64)
        order = np.argsort(pts_arr, kind="stable")      # decode order -> presentation order
        rank = np.empty(n, np.int64)
        rank[order] = np.arange(n)
        key_rank = rank[keys]
        by_rank = np.argsort(key_rank)
        last = order[-1]
        span = int(pts_arr[last] + durations[last] - pts_arr[order[0]])
        return _Scan(n, tuple(int(r) for r in key_rank[by_rank]),
                     tuple(int(p) for p in pts_arr[keys][by_rank]), span, durations[last], first)
    return _Scan(n, tuple(int(i) for i in np.flatnonzero(keys)), (), None, 0, first)


def _fps(stream, scan: _Scan) -> float:
    """The container's average (else guessed) rate, unless the timestamps disagree by over 5%
    (a variable frame rate, or a declared rate that is wrong): then frames per second of them."""
    rate = float(stream.average_rate or stream.guessed_rate or 0)
    measured = None
    if scan.pts_span and stream.time_base:
        intervals = scan.n_frames if scan.last_duration else scan.n_frames - 1
        measured = intervals / float(scan.pts_span * stream.time_base) if intervals else None
    if measured and (not rate or abs(rate - measured) > 0.05 * measured):
        return measured
    return rate


def _duration(stream, container, scan: _Scan, fps: float) -> float:
    tb = stream.time_base
    if scan.pts_span is not None and tb:
        last = 0.0 if scan.last_duration or not fps else 1.0 / fps   # no duration: one frame
        return float(scan.pts_span * tb) + last
    if fps:
        return scan.n_frames / fps
    if stream.duration and tb:
        return float(stream.duration * tb)
    return container.duration / av.time_base if container.duration else 0.0


def _rotation(frame: av.VideoFrame, stream) -> int:
    """Clockwise display rotation: display matrix first, then a ``rotate`` tag; 0/90/180/270."""
    ccw = frame.rotation
    if ccw:
        return int(round(-ccw / 90.0)) * 90 % 360
    tags = {k.lower(): v for k, v in stream.metadata.items()}
    try:
        return int(round(float(tags.get("rotate", 0)) / 90.0)) * 90 % 360
    except ValueError:
        return 0


def _container_name(format_name: str, path) -> str:
    """A short container name: the one of FFmpeg's aliases that matches the file's suffix."""
    names = format_name.split(",")
    suffix = Path(path).suffix.lower().lstrip(".")
    return suffix if suffix in names else names[0]
