"""Encode RGB frames to a video file, atomically (a temporary name, renamed on a clean close)."""

from __future__ import annotations

import os
import socket
import uuid
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from fvcflow.errors import VideoError

#: Encoder defaults (the one place they are written); ``options`` given by the caller override
#: them. x264's macroblock-tree rate control is not bit-exact between runs in this build: without
#: it, the same frames give the same bytes, so content-hash cache keys of derived videos (stage 1,
#: stage 3) stay valid on a rerun, and the demo corpus is byte-for-byte reproducible.
DEFAULT_OPTIONS = {
    "libx264": {"preset": "veryfast", "x264-params": "mbtree=0"},
    "libx264rgb": {"preset": "veryfast", "x264-params": "mbtree=0"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "row-mt": "1", "b:v": "0"},
}
#: x264 speed preset of the videos the stages write (stage 1 copies, stage 3 letterboxes, and the
#: letterbox ``fvc predict`` makes): ultrafast encodes about 3x faster than veryfast and is as
#: bit-exact on a rerun; part of those stages' cache keys
STAGE_PRESET = "ultrafast"


class VideoWriter:
    """Write uint8 RGB frames to ``path``; use as a context manager.

    The file appears under its name only when the writer closes without error (the encoder is
    flushed, the file renamed from a temporary name in the same folder); on an error the
    partial file is removed.

    Parameters
    ----------
    path : str or path-like
        Output file; the container follows the suffix (.mp4, .webm, .avi, .mkv ...).
    width, height : int
        Frame size. libx264 with a chroma-subsampled ``pix_fmt`` (yuv420p) needs even sizes:
        odd ones raise a ValueError (nothing is padded: callers choose the size).
    fps : float
        Frame rate (29.97 is stored as 2997/100).
    codec : str
        "libx264" (default), "libvpx-vp9" (realtime deadline, cpu-used 8) or "mpeg4", or any
        FFmpeg video encoder.
    crf : int
        Constant rate factor for libx264(rgb) and libvpx-vp9; MPEG-4 has none and uses the
        fixed quantiser ``clip(round(crf / 6), 2, 31)`` instead (crf 23 gives q 4). Ignored
        when ``options`` set the rate control themselves ("crf", "qp", "b", "b:v", "qmin" or
        "qmax"; ``{"qp": "0"}`` with libx264rgb is lossless).
    pix_fmt : str
        Pixel format of the encoded stream.
    options : dict, optional
        Encoder options (strings), overriding the defaults (``{"preset": "veryfast"}`` for
        libx264).

    Examples
    --------
    >>> with VideoWriter("out.mp4", 640, 360, 25) as writer:  # doctest: +SKIP
    ...     writer.write(frames)  # uint8[n, 360, 640, 3]
    """

    def __init__(self, path, width: int, height: int, fps: float, *, codec: str = "libx264",
                 crf: int = 23, pix_fmt: str = "yuv420p", options: dict | None = None):
        self.path = Path(path)
        self.width, self.height = _check_size(width, height, codec, pix_fmt)
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.frames_written = 0
        # names its writer (host, pid) like the store's temporary files: a killed writer's is swept
        host = socket.gethostname().replace(".", "_")
        self._tmp = self.path.with_name(f".{self.path.stem}.partial-{host}.{os.getpid()}."
                                        f"{uuid.uuid4().hex[:8]}{self.path.suffix}")
        try:
            # bitexact: no random track ids or encoder strings, so equal frames give equal files
            self._container = av.open(str(self._tmp), "w", options={"fflags": "+bitexact"})
        except (av.error.FFmpegError, OSError) as exc:
            raise VideoError(self.path, f"cannot create the file ({exc})") from None
        try:
            self._stream = _add_stream(self._container, codec, width, height, fps, crf, pix_fmt, options)
        except Exception:
            self._abort()
            raise

    def write(self, frames: np.ndarray) -> None:
        """Encode one frame uint8[H, W, 3] or several uint8[n, H, W, 3] (RGB)."""
        if self._container is None:
            raise ValueError(f"{self.path}: the writer is closed")
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (self.height, self.width, 3):
            raise ValueError(f"frames must be uint8[H, W, 3] or uint8[n, H, W, 3] with H={self.height}, "
                             f"W={self.width}; got {frames.dtype}{list(frames.shape)}")
        try:
            for rgb in frames:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                self._container.mux(self._stream.encode(frame))
                self.frames_written += 1
        except (av.error.FFmpegError, OSError) as exc:
            self._abort()
            raise VideoError(self.path, f"encoding failed ({exc})") from None

    def close(self) -> None:
        """Flush the encoder, finish the file and move it to ``path``."""
        if self._container is None:
            return
        try:
            self._container.mux(self._stream.encode(None))
            self._container.close()
            self._container = None
            os.replace(self._tmp, self.path)
        except (av.error.FFmpegError, OSError) as exc:
            self._abort()
            raise VideoError(self.path, f"finishing the file failed ({exc})") from None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()

    def _abort(self) -> None:
        """Close without finishing and remove the partial file."""
        if self._container is not None:
            try:
                self._container.close()
            except (av.error.FFmpegError, OSError):
                pass                                     # the file is removed below anyway
            self._container = None
        self._tmp.unlink(missing_ok=True)


def _check_size(width, height, codec, pix_fmt) -> tuple[int, int]:
    width, height = int(width), int(height)
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be >= 1, got {width}x{height}")
    fmt = av.VideoFormat(pix_fmt)
    subsampled = fmt.chroma_width(width) != width or fmt.chroma_height(height) != height
    if codec == "libx264" and subsampled and (width % 2 or height % 2):
        raise ValueError(f"libx264 with {pix_fmt} needs an even width and height, got {width}x{height}; "
                         "choose an even size (or pix_fmt='yuv444p')")
    return width, height


def _add_stream(container, codec, width, height, fps, crf, pix_fmt, options):
    try:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
    except (av.error.FFmpegError, ValueError) as exc:
        raise ValueError(f"unknown or unsupported video codec {codec!r} ({exc})") from None
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    options = {k: str(v) for k, v in (options or {}).items()}
    opts = dict(DEFAULT_OPTIONS.get(codec, {}))
    rate_control_given = any(k in options for k in ("crf", "qp", "b", "b:v", "qmin", "qmax"))
    if codec in ("libx264", "libx264rgb", "libvpx-vp9") and not rate_control_given:
        opts["crf"] = str(crf)                           # (x264 would let crf override a qp)
    elif codec == "mpeg4" and not rate_control_given:  # a constant quantiser: qmin = qmax
        q = str(int(np.clip(round(crf / 6), 2, 31)))
        opts.update(qmin=q, qmax=q)
    opts.update(options)
    stream.options = opts
    return stream
